"""Wire format v1: the signed reading frame that devices publish and ingest accepts.

Owns: the frame and reading types, topic names, the canonical bytes that are signed
(RFC 8785 JSON Canonicalization Scheme), Ed25519 signing and verification, and the decoder
that turns untrusted bytes into a typed frame or a ``WireError`` with a reason code.
Must not: touch the network, a database or the ledger. Specified in ``docs/wire-format.md``.

Canonicalisation: the frame schema only admits integers within the I-JSON safe range and
ASCII strings from a restricted alphabet (no characters that JSON would escape). On that
domain, compact JSON with lexicographically sorted keys *is* the RFC 8785 output, so we
produce it with msgspec's compiled encoder (``order="sorted"``). ``canonical_bytes_reference``
uses the ``rfc8785`` library on the same object; the test suite proves the two agree on
every frame the schema admits (hypothesis) and on the vectors in ``tests/vectors/``.

One reading of the signed bytes: a frame on the wire must *be* its RFC 8785 encoding (with
``sig``), so ``decode_frame`` re-encodes what it decoded and refuses any other spelling
(``non_canonical``), naming duplicate member names (``duplicate_member``) on that failure path.
Frames built in code are checked where they are signed or encoded (``FrameEncodingError``);
``canonical_bytes`` itself stays unchecked: ingest calls it on decoded frames, already valid.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Final, Literal, Protocol

import msgspec
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device.errors import WattproofError

WIRE_VERSION: Final = 1
TOPIC_PREFIX: Final = "wattproof/v1"
MAX_SAFE_INT: Final = 2**53 - 1  # RFC 8785 / I-JSON: integers beyond this are not exact
MAX_READINGS_PER_FRAME: Final = 4096
MAX_FRAME_BYTES: Final = 1 << 20

# The reading window (docs/wire-format.md, "Reading window"): where a frame's readings may lie.
READING_AFTER_SEND_MS: Final = 60_000  # no reading later than sent_ms + 60 s
READING_SPAN_MS: Final = 86_400_000  # a frame covers at most a day: newest - oldest reading <= 24 h
READING_HISTORY_MS: Final = 3660 * 86_400_000  # no reading earlier than sent_ms - 3660 days (a backfill)

ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
_ID_RE: Final = re.compile(ID_PATTERN)

Channel = Literal["import", "export", "pv"]
CHANNELS: Final[tuple[str, ...]] = ("import", "export", "pv")

Ident = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
SafeUInt = Annotated[int, msgspec.Meta(ge=0, le=MAX_SAFE_INT)]
SafeInt = Annotated[int, msgspec.Meta(ge=-MAX_SAFE_INT, le=MAX_SAFE_INT)]
Signature = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_\-]{86}$")]


class Reading(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One measurement of one channel at one instant."""

    ts_ms: SafeUInt  # UTC, milliseconds since the Unix epoch
    channel: Channel
    energy_wh: SafeUInt  # cumulative register, watt-hours
    power_w: SafeInt  # instantaneous power, watts (signed: some meters report net power)


class Frame(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A signed batch of readings from one device. ``sig`` is absent while unsigned."""

    v: Literal[1]
    site: Ident
    device: Ident
    seq: SafeUInt  # per device, strictly increasing, persisted across restarts
    sent_ms: SafeUInt
    readings: Annotated[list[Reading], msgspec.Meta(min_length=1, max_length=MAX_READINGS_PER_FRAME)]
    sig: Signature | None = None


class StatusMessage(msgspec.Struct, frozen=True):
    """Retained device status (also the MQTT last will, with ``state="offline"``)."""

    v: Literal[1]
    device: str
    state: Literal["online", "offline"]
    ts_ms: int


# --- reason codes of the decoder (documented in docs/wire-format.md) -------------------
BAD_JSON: Final = "bad_json"
SCHEMA: Final = "schema"
TOO_LARGE: Final = "too_large"
BAD_SIGNATURE: Final = "bad_signature"
VALUE_OUT_OF_RANGE: Final = "value_out_of_range"
DUPLICATE_MEMBER: Final = "duplicate_member"
NON_CANONICAL: Final = "non_canonical"
READING_WINDOW: Final = "reading_window"


class WireError(WattproofError, ValueError):
    """A frame that cannot be accepted. ``reason`` is machine-readable, ``detail`` for people."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class FrameEncodingError(WattproofError, ValueError):
    """A frame built in code that RFC 8785 cannot carry exactly (NaN, a bool or an out-of-range
    integer, an id outside the alphabet...): refused instead of writing bytes no decoder accepts."""


def readings_topic(site: str, device: str) -> str:
    return f"{TOPIC_PREFIX}/{site}/{device}/readings"


def status_topic(site: str, device: str) -> str:
    return f"{TOPIC_PREFIX}/{site}/{device}/status"


def parse_readings_topic(topic: str) -> tuple[str, str] | None:
    """``(site, device)`` of a readings topic, or ``None`` when it is not one."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_PREFIX or parts[4] != "readings":
        return None
    return parts[2], parts[3]


def is_valid_id(value: str) -> bool:
    return bool(_ID_RE.match(value))


_encoder = msgspec.json.Encoder(order="sorted")
_frame_decoder = msgspec.json.Decoder(Frame)


def _unsigned(frame: Frame) -> dict[str, Any]:
    return {
        "v": frame.v,
        "site": frame.site,
        "device": frame.device,
        "seq": frame.seq,
        "sent_ms": frame.sent_ms,
        "readings": frame.readings,
    }


def canonical_bytes(frame: Frame) -> bytes:
    """RFC 8785 bytes of the frame without its ``sig`` field: what the device signs.

    Unchecked (the ingest hot path calls it on decoded frames); frames built in code go through
    ``sign_frame`` / ``encode_frame``, which refuse what the schema does not admit."""
    return _encoder.encode(_unsigned(frame))


def canonical_bytes_reference(frame: Frame) -> bytes:
    """The same bytes through the ``rfc8785`` library (slow; the reference in tests)."""
    return rfc8785.dumps(msgspec.to_builtins(_unsigned(frame)))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _checked_encoding(frame: Frame) -> bytes:
    """Sorted compact JSON of a frame built in code, after proving the schema admits it exactly:
    the bytes decode back to an equal frame (msgspec checks constraints on decode, not on build)."""
    if not isinstance(frame, Frame):
        raise FrameEncodingError(f"not a Frame: {type(frame).__name__}")
    try:
        data = _encoder.encode(frame)
        back = _frame_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, msgspec.EncodeError, OverflowError, TypeError) as exc:
        raise FrameEncodingError(f"frame cannot be encoded exactly (RFC 8785, wire format v1): {exc}") from None
    if back != frame or any(type(r) is not Reading for r in frame.readings):
        raise FrameEncodingError("frame does not survive its own encoding (a value of the wrong type?)")
    return data


def sign_frame(frame: Frame, key: Ed25519PrivateKey) -> Frame:
    """A copy of ``frame`` carrying the Ed25519 signature of its canonical bytes.

    Raises ``FrameEncodingError`` for a frame the schema does not admit (checked before signing)."""
    _checked_encoding(msgspec.structs.replace(frame, sig=None))
    return msgspec.structs.replace(frame, sig=b64url(key.sign(canonical_bytes(frame))))


def encode_frame(frame: Frame) -> bytes:
    """Bytes on the wire: the RFC 8785 form of the frame with its ``sig`` (sorted compact JSON).

    Raises ``FrameEncodingError`` for a frame the schema does not admit."""
    return _checked_encoding(frame)


def frame_sha256(payload: bytes) -> bytes:
    """SHA-256 of the signed frame exactly as received: links ledger leaves to a signature."""
    return hashlib.sha256(payload).digest()


def decode_frame(payload: bytes) -> Frame:
    """Untrusted bytes → a typed frame, or ``WireError`` with a reason. Never anything else.

    Fast path: one typed decode, one encode, one comparison (the payload must be the frame's RFC
    8785 encoding). Only a refused payload is parsed again, to word the reason precisely."""
    if len(payload) > MAX_FRAME_BYTES:
        raise WireError(TOO_LARGE, f"frame of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        frame = _frame_decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise _refusal(payload, SCHEMA, str(exc)) from None
    except msgspec.DecodeError as exc:
        raise WireError(BAD_JSON, str(exc)) from None
    except UnicodeDecodeError as exc:  # msgspec raises this, not DecodeError, for invalid UTF-8
        raise WireError(BAD_JSON, f"invalid UTF-8 at byte {exc.start}") from None
    if frame.sig is None:
        raise _refusal(payload, SCHEMA, "frame has no signature (`sig`)")
    canonical = _encoder.encode(frame)
    if canonical != payload:
        at = next((i for i, (a, b) in enumerate(zip(canonical, payload, strict=False)) if a != b), min(len(canonical), len(payload)))
        raise _refusal(payload, NON_CANONICAL, f"frame is not in its RFC 8785 form (first difference at byte {at}: "
                                               f"{payload[at:at + 12]!r}, expected {canonical[at:at + 12]!r})")
    return frame


class _Duplicate(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _Duplicate(k)
            seen.add(k)
    return out


def _integral(text: str) -> int | float:
    """A JSON number with a fraction or exponent: its integer when it is one (``1.0``, ``1e3``)."""
    try:
        d = Decimal(text)
    except InvalidOperation:
        return float("nan")
    if d.is_finite() and d.adjusted() <= 20 and d == d.to_integral_value():
        return int(d)
    return float(text)


def _refusal(payload: bytes, reason: str, detail: str) -> WireError:
    """The precise reason for a payload the fast path refused (failure path only): duplicate member
    names first (``duplicate_member``); a schema failure that is only a spelling of a valid frame
    (``1.0`` for ``1``) becomes ``non_canonical``; otherwise ``reason`` stands."""
    try:
        doc = json.loads(payload.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_float=_integral)
    except _Duplicate as dup:
        return WireError(DUPLICATE_MEMBER, f"member name {dup.name!r} appears twice in one object (RFC 7493 §2.3)")
    except (ValueError, RecursionError):
        return WireError(reason, detail)
    if reason == SCHEMA:
        try:
            frame = msgspec.convert(doc, Frame)
        except (msgspec.ValidationError, TypeError):
            return WireError(reason, detail)
        if frame.sig is not None:
            return WireError(NON_CANONICAL, "frame is not in its RFC 8785 form (a number is not written as the "
                                            f"shortest integer: {detail})")
    return WireError(reason, detail)


def reading_window_problem(frame: Frame, *, after_ms: int = READING_AFTER_SEND_MS, span_ms: int = READING_SPAN_MS,
                           history_ms: int = READING_HISTORY_MS) -> str | None:
    """Why the frame's readings are not within the reading window of its ``sent_ms``, or ``None``.

    The window (docs/wire-format.md, "Reading window"): every reading at most ``after_ms`` after
    ``sent_ms`` and at most ``history_ms`` before it, and the readings of one frame within
    ``span_ms`` of each other. Part of the wire format: ingest (reason ``reading_window``) and
    offline checks of stored frames apply the same function."""
    ts = [r.ts_ms for r in frame.readings]
    lo, hi = min(ts), max(ts)
    if hi > frame.sent_ms + after_ms:
        return f"a reading is {(hi - frame.sent_ms) / 1000:.0f} s after the frame's sent_ms (limit {after_ms / 1000:g} s)"
    if lo < frame.sent_ms - history_ms:
        return (f"a reading is {(frame.sent_ms - lo) / 86_400_000:.1f} days before the frame's sent_ms "
                f"(limit {history_ms / 86_400_000:g} days)")
    if hi - lo > span_ms:
        return f"the readings span {(hi - lo) / 3_600_000:.1f} h (a frame covers at most {span_ms / 3_600_000:g} h)"
    return None


class SignatureVerifier(Protocol):
    """A device key as ``verify_signature`` takes it (besides its raw 32 bytes): ``cryptography``'s
    Ed25519PublicKey or ingest's ``SodiumKey``. Only its bytes are used: the verdict is the rule's."""

    def public_bytes_raw(self) -> bytes: ...


def verify_signature(frame: Frame, public_key: SignatureVerifier | bytes) -> None:
    """Raise ``WireError(bad_signature)`` unless ``frame.sig`` (canonical base64url) signs the frame's
    canonical bytes under the Ed25519 acceptance rule (``device.ed25519``; docs/wire-format.md)."""
    from device import ed25519

    if frame.sig is None:
        raise WireError(BAD_SIGNATURE, "frame is unsigned")
    try:
        sig = b64url_decode(frame.sig)
    except (binascii.Error, ValueError):
        raise WireError(BAD_SIGNATURE, "signature is not base64url") from None
    if b64url(sig) != frame.sig:  # unused low bits set: another spelling of the same signature
        raise WireError(BAD_SIGNATURE, "signature is not canonical base64url")
    raw = public_key if isinstance(public_key, bytes) else public_key.public_bytes_raw()
    problem = ed25519.key_problem(raw)
    if problem is not None:
        raise WireError(BAD_SIGNATURE, f"device {frame.device!r} has an unusable public key: {problem}")
    if not ed25519.verify(raw, sig, canonical_bytes(frame)):
        raise WireError(BAD_SIGNATURE, f"Ed25519 signature does not match device {frame.device!r}")


def verify_signed_frame(frame: Frame, public_key: SignatureVerifier | bytes) -> None:
    """The evidence reading of a decoded frame (sealing, ``verify``, proof bundles): the device's signature
    and the reading window. Raises ``WireError`` (``bad_signature`` or ``reading_window``). Ingest checks the
    same two in its own order (the window after the clock checks), so a frame it stored passes this."""
    verify_signature(frame, public_key)
    why = reading_window_problem(frame)
    if why is not None:
        raise WireError(READING_WINDOW, why)
