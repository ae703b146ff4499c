"""Device identity: Ed25519 key pairs on disk and the device registry record.

Owns: generating a device key pair, writing the private key (PKCS#8 PEM, mode 0600) and reading
it back with clear errors, the ``DeviceRecord`` that a registry holds (public key, kind, rated
power, location), and the file form of the registry (``registry.json``) used before a database
exists. The database registry (ingest) stores the same record. Both refuse a public key that the
Ed25519 acceptance rule refuses (``device.ed25519.key_problem``: small order, a torsion
component, not canonical), since no signature could ever verify under it.
Must not: know about MQTT, the database or the ledger.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from device import ed25519
from device.errors import WattproofError
from device.wire import b64url, b64url_decode, is_valid_id

DeviceKind = Literal["main_meter", "sub_meter", "pv_inverter"]
DEVICE_KINDS: tuple[str, ...] = ("main_meter", "sub_meter", "pv_inverter")


class IdentityError(WattproofError):
    """A key or registry file that cannot be used; the message says which and why."""


class DeviceRecord(msgspec.Struct, frozen=True, kw_only=True):
    site: str
    device: str
    kind: DeviceKind
    public_key: str  # base64url of the raw 32-byte Ed25519 public key
    rated_power_w: int
    lat: float | None = None
    lon: float | None = None
    active: bool = True

    def verifying_key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(b64url_decode(self.public_key))

    def key_problem(self) -> str | None:
        """Why ``public_key`` cannot be registered, in words (the Ed25519 acceptance rule); None if it can."""
        try:
            raw = b64url_decode(self.public_key)
        except ValueError:
            return "not base64url"
        if b64url(raw) != self.public_key:
            return "not canonical base64url (43 characters, no padding)"
        return ed25519.key_problem(raw)


def require_usable_key(record: DeviceRecord) -> None:
    """Raise ``IdentityError`` naming the device and the reason when its public key cannot be registered."""
    problem = record.key_problem()
    if problem is not None:
        raise IdentityError(f"device {record.device!r}: public key {record.public_key!r} refused: {problem}")


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return b64url(pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def key_path(keys_dir: Path, site: str, device: str) -> Path:
    return keys_dir / site / f"{device}.key"


def write_private_key(path: Path, key: Ed25519PrivateKey, overwrite: bool = False) -> None:
    """Write PKCS#8 PEM with mode 0600 from the first byte (never world-readable)."""
    if path.exists() and not overwrite:
        raise IdentityError(f"{path}: key file exists; refusing to overwrite a device identity")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(path, 0o600)


def read_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IdentityError(f"{path}: cannot read key file ({exc.strerror})") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"{path}: key is {type(key).__name__}, expected Ed25519")
    return key


def validate_ids(site: str, device: str) -> None:
    for what, value in (("site", site), ("device", device)):
        if not is_valid_id(value):
            raise IdentityError(
                f"{what} id {value!r} is invalid: use 1-64 of A-Z a-z 0-9 _ . - (not starting with . _ -)"
            )


class FileRegistry:
    """Device registry kept as a JSON file (``{"devices": [DeviceRecord, ...]}``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, DeviceRecord]:
        if not self.path.exists():
            return {}
        try:
            records = msgspec.json.decode(self.path.read_bytes(), type=dict[str, list[DeviceRecord]])
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise IdentityError(f"{self.path}: invalid device registry ({exc})") from None
        return {r.device: r for r in records.get("devices", [])}

    def save(self, records: dict[str, DeviceRecord]) -> None:
        tmp = self.path.with_suffix(".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(msgspec.json.format(msgspec.json.encode({"devices": sorted(records.values(), key=lambda r: (r.site, r.device))})))
        os.replace(tmp, self.path)

    def add(self, record: DeviceRecord, replace: bool = False) -> None:
        require_usable_key(record)
        records = self.load()
        if record.device in records and not replace:
            raise IdentityError(f"device {record.device!r} is already registered in {self.path}")
        records[record.device] = record
        self.save(records)

    def get(self, device: str) -> DeviceRecord | None:
        return self.load().get(device)
