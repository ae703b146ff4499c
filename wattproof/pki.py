"""The project's own certificate authority for the MQTT broker, and the broker's TLS configuration.

Owns: a PKI directory (``wattproof pki``; docs/broker.md), made with the ``cryptography`` library —
an ECDSA P-256 CA, the broker's server certificate (SANs for its host names and addresses), one
client certificate per MQTT identity (CN = the MQTT username: a device id, or ``ingest``), the
record of what was issued (``issued.json``) and a CRL the broker reads (``crlfile``); and the
Mosquitto configuration that enforces them: TLS with ``require_certificate`` and
``use_identity_as_username``, no anonymous clients, and an ACL where a device may publish only to
its own topics and ingest may only read.
Must not: start or signal a broker (``wattproof.embedded`` does), or touch the device registry.

Layout of a PKI directory (private keys 0600, the directory 0700)::

    ca.crt  ca.key            the project CA (keep ca.key off the broker host)
    crl.pem                   revoked client certificates, signed by the CA
    server.crt  server.key    the broker's certificate
    clients/<name>.crt/.key   one per MQTT identity
    issued.json               serial, name, expiry and revocation time of every certificate issued
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from device.errors import WattproofError
from device.wire import ID_PATTERN, TOPIC_PREFIX, is_valid_id

CA_DAYS = 3650
LEAF_DAYS = 825
CRL_DAYS = 365  # an expired CRL makes OpenSSL refuse every client: re-sign it (`pki crl`) before then
INGEST = "ingest"  # the MQTT identity of the ingest service; reserved, never a device id
SERVICE_IDENTITIES = (INGEST,)


class PkiError(WattproofError, RuntimeError):
    """A PKI directory is missing, incomplete or asked for something it cannot do."""


@dataclass(frozen=True)
class PkiPaths:
    """Where each file of a PKI directory lives."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    @property
    def issued(self) -> Path:
        return self.root / "issued.json"

    def client_cert(self, name: str) -> Path:
        return self.root / "clients" / f"{name}.crt"

    def client_key(self, name: str) -> Path:
        return self.root / "clients" / f"{name}.key"


# --- files --------------------------------------------------------------------------------


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically (temp file + rename) with ``mode`` from the start: a key is never readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    _write(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()), 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _load_ca(paths: PkiPaths) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if not paths.ca_cert.exists() or not paths.ca_key.exists():
        raise PkiError(f"no CA in {paths.root}: run `wattproof pki init {paths.root}` first")
    cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{paths.ca_key} is not an EC private key")
    return cert, key


def _load_issued(paths: PkiPaths) -> list[dict[str, str | None]]:
    if not paths.issued.exists():
        return []
    return list(json.loads(paths.issued.read_text())["certificates"])


def _save_issued(paths: PkiPaths, rows: list[dict[str, str | None]]) -> None:
    _write(paths.issued, json.dumps({"format": "wattproof-pki/1", "certificates": rows}, indent=1).encode(), 0o644)


# --- certificates -------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _leaf(paths: PkiPaths, subject_cn: str, days: int, *, kind: str, sans: list[x509.GeneralName] | None = None
          ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = _load_ca(paths)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if kind == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wattproof"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # a little clock skew between hosts
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    rows = _load_issued(paths)
    rows.append({"serial": format(cert.serial_number, "x"), "kind": kind, "name": subject_cn,
                 "not_after": not_after.isoformat(), "revoked": None})
    _save_issued(paths, rows)
    return cert, key


def init_ca(pki_dir: Path, *, days: int = CA_DAYS, name: str | None = None, force: bool = False) -> PkiPaths:
    """Make the project CA in ``pki_dir`` (ECDSA P-256, self-signed, CA:TRUE pathlen 0, keyCertSign+cRLSign)
    and an empty CRL. Refuses to replace an existing CA unless ``force`` (every certificate it issued
    would stop working)."""
    paths = PkiPaths(Path(pki_dir))
    if paths.ca_key.exists() and not force:
        raise PkiError(f"{paths.ca_key} exists: a new CA would invalidate every certificate issued (use --force)")
    paths.root.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.root, 0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wattproof"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name or f"wattproof project CA {secrets.token_hex(4)}")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(paths.ca_key, key)
    _write_cert(paths.ca_cert, cert)
    _save_issued(paths, [])
    write_crl(paths.root)
    return paths


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue_server(pki_dir: Path, hosts: Sequence[str], *, days: int = LEAF_DAYS) -> tuple[Path, Path]:
    """The broker's certificate for ``hosts`` (DNS names and IP addresses, each a SAN; the first is
    the CN). Returns (certificate, key) paths."""
    if not hosts:
        raise PkiError("a server certificate needs at least one --host (DNS name or IP address)")
    paths = PkiPaths(Path(pki_dir))
    cert, key = _leaf(paths, hosts[0], days, kind="server", sans=[_san(h) for h in dict.fromkeys(hosts)])
    _write_key(paths.server_key, key)
    _write_cert(paths.server_cert, cert)
    return paths.server_cert, paths.server_key


def issue_client(pki_dir: Path, name: str, *, days: int = LEAF_DAYS, force: bool = False) -> tuple[Path, Path]:
    """A client certificate whose CN is the MQTT username ``name`` (a device id, or ``ingest``).
    Refuses to overwrite an existing one unless ``force`` (the old one stays valid until revoked)."""
    if not is_valid_id(name):
        raise PkiError(f"client name {name!r} must be a device id ({ID_PATTERN}) or {INGEST!r}")
    paths = PkiPaths(Path(pki_dir))
    if paths.client_cert(name).exists() and not force:
        raise PkiError(f"{paths.client_cert(name)} exists (use --force for a new key and certificate; "
                       f"`wattproof pki revoke` the old one)")
    cert, key = _leaf(paths, name, days, kind="client")
    _write_key(paths.client_key(name), key)
    _write_cert(paths.client_cert(name), cert)
    return paths.client_cert(name), paths.client_key(name)


def revoke(pki_dir: Path, name: str) -> list[str]:
    """Revoke every unrevoked client certificate issued to ``name`` and re-sign the CRL. Returns the
    revoked serials (hex). The broker reads the CRL when it starts or is reloaded (SIGHUP)."""
    paths = PkiPaths(Path(pki_dir))
    _load_ca(paths)
    rows = _load_issued(paths)
    when = _now().isoformat()
    done = []
    for row in rows:
        if row["kind"] == "client" and row["name"] == name and row["revoked"] is None:
            row["revoked"] = when
            done.append(str(row["serial"]))
    if not done:
        raise PkiError(f"no unrevoked client certificate for {name!r} in {paths.root}")
    _save_issued(paths, rows)
    write_crl(paths.root)
    return done


def write_crl(pki_dir: Path, *, days: int = CRL_DAYS) -> Path:
    """(Re-)sign the CRL from ``issued.json``: every revoked certificate not yet expired."""
    paths = PkiPaths(Path(pki_dir))
    ca_cert, ca_key = _load_ca(paths)
    now = _now()
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(now).next_update(now + dt.timedelta(days=days))
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    for row in _load_issued(paths):
        if row["revoked"] and dt.datetime.fromisoformat(str(row["not_after"])) > now:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(int(str(row["serial"]), 16))
                .revocation_date(dt.datetime.fromisoformat(str(row["revoked"]))).build())
    _write(paths.crl, builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), 0o644)
    return paths.crl


# --- broker configuration -----------------------------------------------------------------


def acl_text(ingest_users: Sequence[str] = SERVICE_IDENTITIES) -> str:
    """Mosquitto ACL: a device (username = its certificate's CN = its device id) may write only its own
    readings and status topics (``wattproof/v1/<site>/<device>/…``); ingest may read every topic under
    ``wattproof/v1`` (plain or ``$share/…`` subscriptions) and write nothing; nobody else anything.
    A service name such as ``ingest`` is reserved, never a device id: the device pattern would give it
    the topics of a device of that name, so its own ``deny`` (checked before everything else) takes them."""
    lines = ["# generated by `wattproof pki broker-config` (docs/broker.md)",
             "# Mosquitto checks a user's own lines (deny first) before the patterns; a device's username is",
             "# its certificate's CN, its device id. Service names are reserved: no device may be called so."]
    for user in ingest_users:
        lines += [f"user {user}", f"topic deny {TOPIC_PREFIX}/+/{user}/#", f"topic read {TOPIC_PREFIX}/#", ""]
    lines += [f"pattern write {TOPIC_PREFIX}/+/%u/readings", f"pattern write {TOPIC_PREFIX}/+/%u/status", ""]
    return "\n".join(lines)


def mosquitto_tls_listener(pki_path: str | Path, acl_path: str | Path, *, port: int = 8883,
                           bind: str | None = None) -> str:
    """The security part of a mosquitto.conf: one TLS listener that requires a client certificate from the
    project CA (checked against its CRL), takes the CN as the username, refuses anonymous clients and
    applies the ACL. ``pki_path``/``acl_path`` are paths as the broker sees them."""
    pki = str(pki_path).rstrip("/")
    return (
        "per_listener_settings false\n"
        "allow_anonymous false\n"
        f"acl_file {acl_path}\n"
        f"listener {port}{f' {bind}' if bind else ''}\n"
        "protocol mqtt\n"
        f"cafile {pki}/ca.crt\n"
        f"certfile {pki}/server.crt\n"
        f"keyfile {pki}/server.key\n"
        f"crlfile {pki}/crl.pem\n"
        "require_certificate true\n"
        "use_identity_as_username true\n"
        "tls_version tlsv1.2\n"  # the minimum: TLS 1.2 and 1.3 are accepted
    )


BROKER_TUNING = ("max_inflight_messages 1000\n"
                 "max_queued_messages 1000000\n"
                 "max_packet_size 2000000\n")


def write_broker_config(pki_dir: Path, out: Path, *, port: int = 8883, bind: str | None = None,
                        pki_path: str | None = None, acl_path: str | None = None,
                        data_dir: str | None = None, log_dest: str = "stderr", user: str | None = None,
                        ingest_users: Sequence[str] = SERVICE_IDENTITIES) -> tuple[Path, Path]:
    """Write a complete mosquitto.conf to ``out`` and its ACL beside it (``out`` with suffix ``.acl``);
    returns both paths. ``pki_path``/``acl_path``: where the broker will see the PKI directory and the
    ACL (e.g. inside a container; default: where they are here). ``data_dir``: persistence directory
    (none: no persistence). ``log_dest``: Mosquitto's ``log_dest`` value. ``user``: the user Mosquitto
    switches to when started as root (its default: ``mosquitto``; it must be able to read server.key)."""
    paths = PkiPaths(Path(pki_dir))
    for need in (paths.ca_cert, paths.server_cert, paths.server_key, paths.crl):
        if not need.exists():
            raise PkiError(f"{need} is missing: run `wattproof pki init` and `wattproof pki server` first")
    out = Path(out)
    acl = out.with_suffix(".acl")
    _write(acl, acl_text(ingest_users).encode(), 0o644)
    conf = ("# generated by `wattproof pki broker-config` (docs/broker.md)\n"
            + mosquitto_tls_listener(pki_path or paths.root.resolve(), acl_path or acl.resolve(), port=port, bind=bind)
            + BROKER_TUNING
            + (f"persistence true\npersistence_location {data_dir.rstrip('/')}/\n" if data_dir else "persistence false\n")
            + (f"user {user}\n" if user else "")
            + f"log_dest {log_dest}\nlog_type error\nlog_type warning\nlog_type notice\n")
    _write(out, conf.encode(), 0o644)
    return out, acl
