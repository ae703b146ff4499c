"""Validation of one received message: pure, no I/O. Decides accept or reject with a reason.

Owns: the checks a frame must pass before it may be stored, in this order (cheap and
attacker-independent first; the signature before anything that trusts the frame's content):
topic shape → decode (size, JSON, schema) → topic matches frame → device known and active →
Ed25519 signature → clock (send time vs receive time, readings vs send time) → value sanity.
Sequence checks (duplicate / replay / gap) need the store and happen in the writer.
Must not: touch the network or the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from cryptography.exceptions import InvalidSignature
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from firmware_sim.identity import DeviceRecord
from firmware_sim.wire import (
    VALUE_OUT_OF_RANGE,
    Frame,
    WireError,
    b64url_decode,
    canonical_bytes,
    decode_frame,
    parse_readings_topic,
    verify_signature,
)
from ingest import reasons


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
    """An Ed25519 public key verified by libsodium (PyNaCl): about twice as fast as OpenSSL through
    ``cryptography`` here, and at least as strict (canonical S, small-order points refused). Same
    interface and exception as ``cryptography``'s key, so ``verify_signature`` takes either."""

    __slots__ = ("_key",)

    def __init__(self, raw: bytes) -> None:
        self._key = VerifyKey(raw)

    def verify(self, signature: bytes, data: bytes) -> None:
        try:
            self._key.verify(data, signature)
        except (BadSignatureError, ValueError, TypeError):
            raise InvalidSignature from None


@lru_cache(maxsize=65536)
def _raw_key(b64: str) -> bytes:
    return b64url_decode(b64)


@lru_cache(maxsize=65536)
def _public_key(b64: str) -> SodiumKey:
    return SodiumKey(_raw_key(b64))


def validate(topic: str, payload: bytes, registry: dict[str, DeviceRecord], now_ms: int,
             limits: Limits = Limits()) -> Accepted | Rejected:
    """One message, every check in order; the signature by libsodium (the reference ``validate_many`` follows)."""
    pre = _before_signature(topic, payload, registry)
    if isinstance(pre, Rejected):
        return pre
    frame, rec = pre
    try:
        verify_signature(frame, _public_key(rec.public_key))
    except WireError as err:
        return Rejected(topic, payload, err.reason, err.detail, frame.device, frame.seq)
    return _after_signature(topic, payload, frame, rec, now_ms, limits)


def validate_many(items: list[tuple[str, bytes]], registry: dict[str, DeviceRecord], now_ms: int,
                  limits: Limits = Limits()) -> list[Accepted | Rejected]:
    """``validate`` of each ``(topic, payload)``, same verdicts in the same order, with the signatures of
    the whole list checked together by the native batch verification (ledger/native; docs/store.md,
    "Signatures"). A signature the batch does not prove is checked alone by ``validate``'s reference,
    which decides and words the rejection. Without the native library: ``validate`` for each."""
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
            key = _raw_key(rec.public_key)
        except (ValueError, TypeError):
            continue  # not proven: the reference words it
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
    latest = max(r.ts_ms for r in frame.readings)
    if latest > frame.sent_ms + limits.reading_after_send_ms:
        return Rejected(topic, payload, reasons.CLOCK_SKEW,
                        f"a reading is {(latest - frame.sent_ms) / 1000:.0f} s after the frame's send time", *ref)
    cap = rec.rated_power_w * limits.power_factor
    for i, r in enumerate(frame.readings):
        if abs(r.power_w) > cap:
            return Rejected(topic, payload, VALUE_OUT_OF_RANGE,
                            f"reading {i}: power_w {r.power_w} exceeds {limits.power_factor}× the rating "
                            f"({rec.rated_power_w} W)", *ref)
    return Accepted(topic, payload, frame)
