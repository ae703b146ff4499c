"""Validation of one received message: pure, no I/O. Decides accept or reject with a reason.

Owns: the checks a frame must pass before it may be stored, in this order (cheap and
attacker-independent first; the signature before anything that trusts the frame's content):
topic shape → decode (size, JSON, schema) → topic matches frame → device known, not revoked, active →
Ed25519 signature by the device's key valid at the frame's signed ``sent_ms`` → clock (send time vs receive time, readings vs send time) → value sanity.
Sequence checks (duplicate / replay / gap) need the store and happen in the writer.
Must not: touch the network or the database.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from cryptography.exceptions import InvalidSignature

from device import ed25519
from device.identity import DeviceRecord
from device.wire import (
    BAD_SIGNATURE,
    VALUE_OUT_OF_RANGE,
    Frame,
    WireError,
    b64url,
    b64url_decode,
    canonical_bytes,
    decode_frame,
    parse_readings_topic,
    reading_window_problem,
    verify_signature,
)
from ingest import reasons
from ingest.registry import RegisteredDevice

log = logging.getLogger("wattproof.ingest")


@dataclass(frozen=True)
class Limits:
    future_skew_ms: int = 5 * 60_000  # send time may be at most this far ahead of receive time
    max_age_ms: int = 7 * 86_400_000  # ... and at most this old (a device's offline spool)
    reading_after_send_ms: int = 60_000  # a reading may not be later than its frame's send time + this
    power_factor: int = 100  # |power_w| > factor × rated power is not a measurement


@dataclass(frozen=True)
class Accepted:
    topic: str
    payload: bytes
    frame: Frame


@dataclass(frozen=True)
class Rejected:
    topic: str
    payload: bytes
    reason: str
    detail: str
    device: str | None = None
    seq: int | None = None


class SodiumKey:
    """A device's Ed25519 public key, checked under the acceptance rule (``device.ed25519``: libsodium
    through PyNaCl, about twice as fast as OpenSSL here). In place of ``cryptography``'s key:
    ``verify_signature`` reads ``public_bytes_raw``; ``verify`` raises ``InvalidSignature``."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        self._raw = bytes(raw)

    def public_bytes_raw(self) -> bytes:
        return self._raw

    def verify(self, signature: bytes, data: bytes) -> None:
        if not ed25519.verify(self._raw, signature, data):
            raise InvalidSignature


@lru_cache(maxsize=65536)
def _raw_key(b64: str) -> bytes:
    """The registered key's bytes; empty when not base64url (the rule refuses it and says why)."""
    try:
        return b64url_decode(b64)
    except ValueError:
        return b""


@lru_cache(maxsize=65536)
def _public_key(b64: str) -> SodiumKey:
    return SodiumKey(_raw_key(b64))


def validate(topic: str, payload: bytes, registry: dict[str, DeviceRecord], now_ms: int,
             limits: Limits = Limits()) -> Accepted | Rejected:
    """One message, every check in order; the signature by the Ed25519 reference (``device.ed25519``,
    libsodium), whose verdicts ``validate_many`` follows."""
    pre = _before_signature(topic, payload, registry)
    if isinstance(pre, Rejected):
        return pre
    frame, rec = pre
    err = _signature_problem(frame, rec)
    if err is not None:
        return Rejected(topic, payload, err.reason, err.detail, frame.device, frame.seq)
    return _after_signature(topic, payload, frame, rec, now_ms, limits)


def _keys_at(rec: DeviceRecord, sent_ms: int) -> list[str]:
    """The device's keys valid for a frame signed with this ``sent_ms`` (a record without key history: its key)."""
    return rec.keys_at(sent_ms) if isinstance(rec, RegisteredDevice) else [rec.public_key]


def _signature_problem(frame: Frame, rec: DeviceRecord) -> WireError | None:
    """None when a key of the device valid at the frame's signed ``sent_ms`` signed it (docs/device-identity.md);
    ``retired_key`` when only a key of the device valid at another time did (it cannot be forged without that
    key); else ``bad_signature``."""
    valid = _keys_at(rec, frame.sent_ms)
    first: WireError | None = None
    for key in valid:
        try:
            verify_signature(frame, _public_key(key))
            return None
        except WireError as err:
            first = first or err
    for key, lo, hi in rec.keys if isinstance(rec, RegisteredDevice) else ():
        if key in valid:
            continue
        try:
            verify_signature(frame, _public_key(key))
        except WireError:
            continue
        return WireError(reasons.RETIRED_KEY, f"signed by key {key} of device {frame.device!r}, valid for frames sent "
                         f"in [{lo if lo is not None else '…'}, {hi if hi is not None else '…'}) ms, not at sent_ms "
                         f"{frame.sent_ms}")
    return first or WireError(BAD_SIGNATURE, f"device {frame.device!r} has no key valid at sent_ms {frame.sent_ms}")


def validate_many(items: list[tuple[str, bytes]], registry: dict[str, DeviceRecord], now_ms: int,
                  limits: Limits = Limits()) -> list[Accepted | Rejected]:
    """``validate`` of each ``(topic, payload)``, same verdicts in the same order, with the signatures of
    the whole list checked in one call to the native library (ledger/native, the same acceptance rule,
    each signature alone; docs/store.md, "Signatures"). A signature it does not prove is checked by
    ``validate``'s reference, which decides and words the rejection. Without the library: ``validate``."""
    from ledger import nativelib

    if nativelib.LIB is None:
        return [validate(t, p, registry, now_ms, limits) for t, p in items]
    pre = [_before_signature(t, p, registry) for t, p in items]
    todo: list[int] = []
    msgs: list[bytes] = []
    sigs: list[bytes] = []
    keys: list[bytes] = []
    for i, v in enumerate(pre):
        if isinstance(v, Rejected):
            continue
        frame, rec = v
        try:
            sig = b64url_decode(frame.sig or "")
        except (ValueError, TypeError):
            continue  # not proven: the reference words it
        valid = _keys_at(rec, frame.sent_ms)
        if len(valid) != 1:
            continue  # no key, or several, valid at its time: the reference decides
        key = _raw_key(valid[0])
        if b64url(sig) != frame.sig or ed25519.key_problem(key) is not None:
            continue  # refused by verify_signature, which words why
        todo.append(i)
        msgs.append(canonical_bytes(frame))
        sigs.append(sig)
        keys.append(key)
    proven = set(np.asarray(todo)[nativelib.verify_batch(msgs, sigs, keys)].tolist()) if todo else set()
    out: list[Accepted | Rejected] = []
    for i, ((topic, payload), v) in enumerate(zip(items, pre, strict=True)):
        if isinstance(v, Rejected):
            out.append(v)
        elif i in proven:
            out.append(_after_signature(topic, payload, v[0], v[1], now_ms, limits))
        else:
            out.append(validate(topic, payload, registry, now_ms, limits))
    return out


def validate_batch(items: list[tuple[str, bytes]], registry: dict[str, DeviceRecord], now_ms: int,
                   limits: Limits = Limits()) -> list[Accepted | Rejected]:
    """``validate_many``, but no input can stop the caller (DESIGN invariant 8): should the batch path raise
    (a bug — the decoders are fuzzed so that it does not), each message is validated alone, and one that
    still raises is rejected with ``validator_error`` and the exception's text, so it is quarantined and
    acknowledged like any other refused message while its neighbours are stored."""
    try:
        return validate_many(items, registry, now_ms, limits)
    except Exception:  # noqa: BLE001 — isolate the message that breaks it, below
        log.exception("batch validation raised; validating the %d messages one by one", len(items))
    out: list[Accepted | Rejected] = []
    for topic, payload in items:
        try:
            out.append(validate(topic, payload, registry, now_ms, limits))
        except Exception as exc:  # noqa: BLE001
            log.exception("validation raised on a message of %s", topic)
            out.append(Rejected(topic, payload, reasons.VALIDATOR_ERROR, f"{type(exc).__name__}: {exc}"[:500]))
    return out


def split_verdicts(verdicts: list[Accepted | Rejected]) -> tuple[list[Accepted], list[Rejected]]:
    """The accepted and the rejected of a batch's verdicts, each in order."""
    return [v for v in verdicts if isinstance(v, Accepted)], [v for v in verdicts if isinstance(v, Rejected)]


def _before_signature(topic: str, payload: bytes,
                      registry: dict[str, DeviceRecord]) -> Rejected | tuple[Frame, DeviceRecord]:
    where = parse_readings_topic(topic)
    if where is None:
        return Rejected(topic, payload, reasons.BAD_TOPIC, f"topic {topic!r} is not wattproof/v1/<site>/<device>/readings")
    t_site, t_device = where
    try:
        frame = decode_frame(payload)
    except WireError as err:
        return Rejected(topic, payload, err.reason, err.detail, device=t_device)
    ref = (frame.device, frame.seq)
    if (frame.site, frame.device) != (t_site, t_device):
        return Rejected(topic, payload, reasons.TOPIC_MISMATCH,
                        f"frame says {frame.site}/{frame.device}, topic says {t_site}/{t_device}", *ref)
    rec = registry.get(frame.device)
    if rec is None:
        return Rejected(topic, payload, reasons.UNKNOWN_DEVICE, f"device {frame.device!r} is not registered", *ref)
    if isinstance(rec, RegisteredDevice) and rec.revoked_at_ms is not None:
        return Rejected(topic, payload, reasons.REVOKED_DEVICE,
                        f"device {frame.device!r} was revoked at {rec.revoked_at_ms} ms (UTC); its frames are not accepted",
                        *ref)
    if not rec.active:
        return Rejected(topic, payload, reasons.INACTIVE_DEVICE, f"device {frame.device!r} is deactivated", *ref)
    if rec.site != frame.site:
        return Rejected(topic, payload, reasons.TOPIC_MISMATCH,
                        f"device {frame.device!r} belongs to site {rec.site!r}, not {frame.site!r}", *ref)
    return frame, rec


def _after_signature(topic: str, payload: bytes, frame: Frame, rec: DeviceRecord, now_ms: int,
                     limits: Limits) -> Accepted | Rejected:
    ref = (frame.device, frame.seq)
    if frame.sent_ms > now_ms + limits.future_skew_ms:
        return Rejected(topic, payload, reasons.CLOCK_SKEW,
                        f"sent_ms is {(frame.sent_ms - now_ms) / 1000:.0f} s ahead of the receive time", *ref)
    if frame.sent_ms < now_ms - limits.max_age_ms:
        return Rejected(topic, payload, reasons.CLOCK_SKEW,
                        f"sent_ms is {(now_ms - frame.sent_ms) / 86_400_000:.1f} days old (limit "
                        f"{limits.max_age_ms / 86_400_000:g})", *ref)
    window = reading_window_problem(frame, after_ms=limits.reading_after_send_ms)
    if window is not None:
        return Rejected(topic, payload, reasons.READING_WINDOW, window, *ref)
    cap = rec.rated_power_w * limits.power_factor
    for i, r in enumerate(frame.readings):
        if abs(r.power_w) > cap:
            return Rejected(topic, payload, VALUE_OUT_OF_RANGE,
                            f"reading {i}: power_w {r.power_w} exceeds {limits.power_factor}× the rating "
                            f"({rec.rated_power_w} W)", *ref)
    return Accepted(topic, payload, frame)
