"""What a verifier pins: the trust anchors an auditor supplies, never taken from the data verified.

Owns: the trust file (``wattproof-trust/1``, docs/proofs.md "Trust"), its strict loading, and the
questions a verifier asks of it (is this the operator's key? which keys may this device have used?
which organisation roots does a Fabric receipt chain to?). ``verify`` and ``verify-proof`` check
every key a store row or a bundle *shows* against this; a key that is only shown is a claim.
Must not: read the store or a ledger, or create keys.

```json
{"format": "wattproof-trust/1",
 "operator_keys": ["<base64url Ed25519 public key of the local ledger's operator>"],
 "devices": {"s01-main": ["<base64url Ed25519 public key>"]},
 "fabric": {"channel": "wattproof", "chaincode": "wattproof", "endorsing_orgs": ["Org1MSP", "Org2MSP"],
            "orgs": {"Org1MSP": ["-----BEGIN CERTIFICATE-----…"]},
            "orderer_orgs": {"OrdererMSP": ["-----BEGIN CERTIFICATE-----…"]}}}
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import msgspec

FORMAT: Final = "wattproof-trust/1"


class TrustError(ValueError):
    """A trust file that cannot be used; the message names the file and what is wrong."""


class FabricTrust(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    channel: str
    chaincode: str
    endorsing_orgs: list[str]
    orgs: dict[str, list[str]]  # MSP id -> PEM root CA certificates of the peers' organisation
    orderer_orgs: dict[str, list[str]]  # MSP id -> PEM root CA certificates of the orderers


class Trust(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: str
    operator_keys: list[str] = []
    devices: dict[str, list[str]] = {}
    fabric: FabricTrust | None = None

    def operator_pinned(self, key_b64: str | None) -> bool:
        return key_b64 is not None and key_b64 in self.operator_keys

    def device_keys(self, device: str) -> list[str]:
        return self.devices.get(device, [])

    def device_pinned(self, device: str, key_b64: str | None) -> bool:
        return key_b64 is not None and key_b64 in self.devices.get(device, [])

    def to_json(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self), indent=1)


def parse_trust(data: bytes, where: str = "trust file") -> Trust:
    """A trust document from bytes (strict: duplicate members, unknown fields and NaN refused)."""
    from ledger.canonical import StrictJSONError, loads_strict

    try:
        doc = loads_strict(data)  # I-JSON: duplicate members, NaN, invalid UTF-8 refused
    except StrictJSONError as exc:
        raise TrustError(f"{where}: {exc}") from None
    try:
        trust = msgspec.convert(doc, Trust)
    except msgspec.ValidationError as exc:
        raise TrustError(f"{where}: not a {FORMAT} document ({exc})") from None
    if trust.format != FORMAT:
        raise TrustError(f"{where}: format is {trust.format!r}, expected {FORMAT!r}")
    for what, key in [("operator key", k) for k in trust.operator_keys] + \
            [(f"key of device {d!r}", k) for d, ks in trust.devices.items() for k in ks]:
        why = _key_problem(key)
        if why is not None:
            raise TrustError(f"{where}: {what} {key!r} cannot be pinned: {why}")
    return trust


def _key_problem(key_b64: str) -> str | None:
    """Why a base64url Ed25519 public key cannot be trusted (wattproof's one rule: device.ed25519)."""
    from device import ed25519
    from device.wire import b64url, b64url_decode

    try:
        raw = b64url_decode(key_b64)
    except ValueError:
        return "not base64url"
    if b64url(raw) != key_b64:
        return "not canonical base64url"
    return ed25519.key_problem(raw)


def load_trust(path: Path) -> Trust:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TrustError(f"{path}: cannot read trust file ({exc.strerror})") from None
    return parse_trust(data, str(path))


def write_trust(path: Path, trust: Trust) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(trust.to_json() + b"\n")
