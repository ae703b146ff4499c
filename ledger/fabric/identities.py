"""Fabric identities checked against pinned organisation roots, offline (what a Fabric MSP does when a
peer validates a block, reduced to what a verifier with only a trust file can check).

Owns: reading a ``SerializedIdentity`` (MSP id + PEM certificate), checking that its certificate
chains to a root pinned for *that* MSP at a given time (``cryptography.x509.verification``), that
it is an end-entity ECDSA P-256 certificate with the role asked for (NodeOU in the subject's OU), and
Fabric's signature rule: ECDSA over SHA-256, DER, ``s`` in the lower half of the group order (Fabric's
``bccsp/sw`` refuses high-S; so do we). Pure: no I/O. Roots come from the caller (the trust file),
never from the data checked. Intermediate CAs are not supported (the pinned roots issue directly).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID
from fabric_protos.msp import identities_pb2
from google.protobuf.message import DecodeError

from device.errors import WattproofError

P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def signature_problem(key: ec.EllipticCurvePublicKey, message: bytes, signature: bytes) -> str | None:
    """None if ``signature`` is Fabric's ECDSA P-256/SHA-256 signature of ``message`` by ``key``:
    canonical DER, 0 < r, s < n, low-S (s ≤ n/2), and the curve equation holds."""
    try:
        r, s = decode_dss_signature(signature)
    except ValueError:
        return "is not a DER ECDSA signature"
    if encode_dss_signature(r, s) != signature:
        return "is not in canonical DER"
    if not (0 < r < P256_N and 0 < s < P256_N):
        return "has r or s out of range"
    if s > P256_N // 2:
        return "has a high S (Fabric accepts only low-S signatures)"
    try:
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return "does not verify"
    return None


@dataclass(frozen=True)
class Signer:
    """An identity that passed the checks: its MSP id, certificate and the roles (OUs) it carries."""

    msp_id: str
    cert: x509.Certificate
    roles: frozenset[str]

    @property
    def name(self) -> str:
        cn = self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return f"{self.msp_id}:{cn[0].value if cn else '?'}"


class IdentityError(WattproofError, ValueError):
    """An identity that does not chain to a pinned root (the message says why)."""


class PinnedRoots:
    """Root CA certificates per MSP id (from the trust file) and the time at which certificates
    must be valid (the transaction's timestamp). Results are cached per serialized identity."""

    def __init__(self, roots_pem: dict[str, list[str]], at: dt.datetime) -> None:
        self.at = at
        self.roots: dict[str, list[x509.Certificate]] = {}
        self.bad_roots: list[str] = []
        for msp, pems in roots_pem.items():
            certs = []
            for i, pem in enumerate(pems):
                try:
                    certs.append(x509.load_pem_x509_certificate(pem.encode()))
                except ValueError:
                    self.bad_roots.append(f"pinned root {i} of {msp} is not a PEM certificate")
            if certs:
                self.roots[msp] = certs
        self._cache: dict[tuple[bytes, str | None], Signer | IdentityError] = {}

    def identity(self, serialized: bytes, role: str | None = None) -> Signer:
        """The signer named by ``serialized`` (a SerializedIdentity); raises IdentityError."""
        hit = self._cache.get((serialized, role))
        if hit is None:
            try:
                hit = self._identity(serialized, role)
            except IdentityError as exc:
                hit = exc
            except Exception as exc:  # noqa: BLE001 - hostile certificates fail in many ways (lazy parsing)
                hit = IdentityError(f"identity cannot be read ({type(exc).__name__}: {exc})")
            self._cache[(serialized, role)] = hit
        if isinstance(hit, IdentityError):
            raise hit
        return hit

    def _identity(self, serialized: bytes, role: str | None) -> Signer:
        try:
            sid = identities_pb2.SerializedIdentity.FromString(serialized)
        except DecodeError:
            raise IdentityError("identity is not a SerializedIdentity") from None
        if sid.SerializeToString() != serialized:
            raise IdentityError("identity is not canonically encoded")
        msp = sid.mspid
        roots = self.roots.get(msp)
        if not roots:
            raise IdentityError(f"MSP {msp!r} has no pinned root")
        try:
            cert = x509.load_pem_x509_certificate(bytes(sid.id_bytes))
        except ValueError:
            raise IdentityError(f"{msp}: identity is not a PEM certificate") from None
        builder = (verification.PolicyBuilder().store(verification.Store(roots)).time(self.at)
                   .extension_policies(ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                                       ee_policy=verification.ExtensionPolicy.permit_all()))
        try:
            builder.build_client_verifier().verify(cert, [])
        except verification.VerificationError as exc:
            raise IdentityError(f"{msp}: certificate {cert.subject.rfc4514_string()} does not chain to a pinned "
                                f"root of {msp} valid at {self.at.isoformat()} ({exc})") from None
        try:
            if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                raise IdentityError(f"{msp}: a CA certificate cannot be an identity")
        except x509.ExtensionNotFound:
            pass
        try:
            if not cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature:
                raise IdentityError(f"{msp}: certificate may not sign (key usage)")
        except x509.ExtensionNotFound:
            pass
        key = cert.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            raise IdentityError(f"{msp}: certificate key is not ECDSA P-256")
        roles = frozenset(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME))
        if role is not None and role not in roles:
            raise IdentityError(f"{msp}: certificate {cert.subject.rfc4514_string()} is not a {role} (OU)")
        return Signer(msp, cert, roles)

    def signed_by(self, serialized: bytes, message: bytes, signature: bytes, role: str | None = None) -> Signer:
        """The signer if ``signature`` over ``message`` verifies with a pinned identity; raises IdentityError."""
        signer = self.identity(serialized, role)
        key = signer.cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        problem = signature_problem(key, message, signature)
        if problem:
            raise IdentityError(f"signature of {signer.name} {problem}")
        return signer
