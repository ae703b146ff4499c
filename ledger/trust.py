"""What a verifier pins: the trust anchors an auditor supplies, never taken from the data verified.

Owns: the trust file (``wattproof-trust/1``, docs/proofs.md "Trust"), its strict loading, and the
questions a verifier asks of it (is this the operator's key? which keys may this device have used, and
which one was valid at a frame's signed ``sent_ms``? which organisation roots does a Fabric receipt chain
to?), and ``DeviceKeys``: a device's keys with their validity intervals (docs/device-identity.md), as
the pinned trust or the store's registry gives them. ``verify`` and ``verify-proof`` check
every key a store row or a bundle *shows* against this; a key that is only shown is a claim.
Must not: read the store or a ledger, or create keys.

```json
{"format": "wattproof-trust/1",
 "operator_keys": ["<base64url Ed25519 public key of the local ledger's operator>"],
 "devices": {"s01-main": ["<base64url Ed25519 public key>"],
             "s02-main": [{"key": "<old key>", "until_ms": 1780272000000},
                          {"key": "<rotated key>", "from_ms": 1780272000000}]},
 "fabric": {"channel": "wattproof", "chaincode": "wattproof", "endorsing_orgs": ["Org1MSP", "Org2MSP"],
            "orgs": {"Org1MSP": ["-----BEGIN CERTIFICATE-----…"]},
            "orderer_orgs": {"OrdererMSP": ["-----BEGIN CERTIFICATE-----…"]}}}
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import msgspec
import numpy as np

from device.errors import WattproofError

if TYPE_CHECKING:
    from device.wire import Frame

FORMAT: Final = "wattproof-trust/1"


class TrustError(WattproofError, ValueError):
    """A trust file that cannot be used; the message names the file and what is wrong."""


class FabricTrust(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    channel: str
    chaincode: str
    endorsing_orgs: list[str]
    orgs: dict[str, list[str]]  # MSP id -> PEM root CA certificates of the peers' organisation
    orderer_orgs: dict[str, list[str]]  # MSP id -> PEM root CA certificates of the orderers


class KeyPeriod(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A device key valid for the frames whose signed ``sent_ms`` lies in ``[from_ms, until_ms)`` (UTC ms; an
    absent bound is open). A plain key string in a trust file is a key valid at every time."""

    key: str
    from_ms: int | None = None
    until_ms: int | None = None


@dataclass(frozen=True)
class DeviceKeys:
    """One device's keys with their validity intervals: ``(raw 32-byte key, from_ms, until_ms)``, ``None`` for an
    open bound. A frame is the device's when its signature verifies under a key valid at its signed ``sent_ms``
    (docs/device-identity.md)."""

    periods: tuple[tuple[bytes, int | None, int | None], ...]

    @classmethod
    def always(cls, key: bytes) -> DeviceKeys:
        return cls(((bytes(key), None, None),))

    def at(self, sent_ms: int) -> list[bytes]:
        """The keys valid for a frame sent at ``sent_ms``."""
        return [k for k, lo, hi in self.periods if (lo is None or sent_ms >= lo) and (hi is None or sent_ms < hi)]

    @property
    def only(self) -> bytes | None:
        """The key when the device has exactly one, valid at every time (no frame's time need be looked at)."""
        if len(self.periods) == 1 and self.periods[0][1] is None and self.periods[0][2] is None:
            return self.periods[0][0]
        return None

    def slot(self, sent_ms: int) -> int:
        """The index in ``periods`` of the first key valid at ``sent_ms``; -1 when none is."""
        for i, (_, lo, hi) in enumerate(self.periods):
            if (lo is None or sent_ms >= lo) and (hi is None or sent_ms < hi):
                return i
        return -1

    def verify_signature(self, frame: Frame) -> None:
        """``device.wire.verify_signature`` under a key valid at the frame's signed ``sent_ms``; raises
        ``WireError(bad_signature)``, saying so when a key of the device valid at another time signed it."""
        from device import ed25519
        from device.wire import BAD_SIGNATURE, WireError, canonical_bytes, verify_signature

        valid = self.at(frame.sent_ms)
        first: WireError | None = None
        for key in valid:
            try:
                return verify_signature(frame, key)
            except WireError as exc:
                first = first or exc
        others = [k for k, _, _ in self.periods if k not in valid]
        if others and frame.sig is not None:
            from device.wire import b64url_decode

            try:
                sig = b64url_decode(frame.sig)
            except ValueError:
                sig = b""
            signed = canonical_bytes(frame)
            for k in others:
                if ed25519.key_problem(k) is None and ed25519.verify(k, sig, signed):
                    raise WireError(BAD_SIGNATURE, f"signed by key {_b64(k)} of device {frame.device!r}, which is "
                                    f"not valid at the frame's sent_ms {frame.sent_ms} (keys: {self.describe()})")
        if first is not None:
            raise first
        raise WireError(BAD_SIGNATURE, f"no key of device {frame.device!r} is valid at the frame's sent_ms "
                        f"{frame.sent_ms} (keys: {self.describe()})")

    def describe(self) -> str:
        return ", ".join(f"{_b64(k)} [{'…' if lo is None else lo}, {'…' if hi is None else hi})"
                         for k, lo, hi in self.periods)


def as_device_keys(key: bytes | DeviceKeys | None) -> DeviceKeys | None:
    """A bare key (callers that know one key per device) as a key valid at every time."""
    return DeviceKeys.always(key) if isinstance(key, bytes | bytearray | memoryview) else key


def key_slots(keys: list[bytes | DeviceKeys | None], dev: np.ndarray,
              sent_ms: np.ndarray) -> tuple[list[bytes | None], np.ndarray]:
    """For a bulk frame check (``ledger.nativelib``: one key per frame): a table of keys and, per frame (device
    code ``dev[i]``, stored ``sent_ms[i]``), the index of the key valid at that time (-1: none). A device with
    one key valid at every time keeps its device code as its index. The stored ``sent_ms`` is a claim: a frame
    the check proves is backed only when its signed bytes carry the same ``sent_ms`` (the caller compares them)."""
    dks = [as_device_keys(k) for k in keys]
    table: list[bytes | None] = [k.only if k is not None else None for k in dks]
    dev_a = np.asarray(dev, np.int64)
    idx = dev_a.astype(np.int32)
    for d, k in enumerate(dks):
        if k is None or k.only is not None:
            continue
        rows = np.flatnonzero(dev_a == d)
        if rows.size == 0:
            continue
        base = len(table)
        table.extend(key for key, _, _ in k.periods)
        sent = np.asarray(sent_ms, np.int64)[rows].tolist()
        idx[rows] = np.array([base + s if s >= 0 else -1 for s in map(k.slot, sent)], np.int32)
    return table, idx


class Trust(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: str
    operator_keys: list[str] = []
    devices: dict[str, list[str | KeyPeriod]] = {}
    fabric: FabricTrust | None = None

    def operator_pinned(self, key_b64: str | None) -> bool:
        return key_b64 is not None and key_b64 in self.operator_keys

    def device_keys(self, device: str) -> list[str]:
        """Every key pinned for the device, whatever its validity interval."""
        return [e if isinstance(e, str) else e.key for e in self.devices.get(device, [])]

    def device_pinned(self, device: str, key_b64: str | None) -> bool:
        return key_b64 is not None and key_b64 in self.device_keys(device)

    def device_periods(self, device: str) -> DeviceKeys | None:
        """The device's pinned keys with their validity intervals; None when none is pinned."""
        from device.wire import b64url_decode

        entries = self.devices.get(device, [])
        if not entries:
            return None
        return DeviceKeys(tuple((b64url_decode(e), None, None) if isinstance(e, str)
                                else (b64url_decode(e.key), e.from_ms, e.until_ms) for e in entries))

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
            [(f"key of device {d!r}", k) for d in trust.devices for k in trust.device_keys(d)]:
        why = _key_problem(key)
        if why is not None:
            raise TrustError(f"{where}: {what} {key!r} cannot be pinned: {why}")
    for d, entries in trust.devices.items():
        for e in entries:
            if isinstance(e, KeyPeriod) and e.from_ms is not None and e.until_ms is not None \
                    and e.from_ms >= e.until_ms:
                raise TrustError(f"{where}: key {e.key!r} of device {d!r}: from_ms {e.from_ms} is not before "
                                 f"until_ms {e.until_ms}")
    return trust


def _b64(raw: bytes) -> str:
    from device.wire import b64url

    return b64url(raw)


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
