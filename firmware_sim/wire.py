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
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Annotated, Any, Final, Literal, Protocol

import msgspec
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

WIRE_VERSION: Final = 1
TOPIC_PREFIX: Final = "wattproof/v1"
MAX_SAFE_INT: Final = 2**53 - 1  # RFC 8785 / I-JSON: integers beyond this are not exact
MAX_READINGS_PER_FRAME: Final = 4096
MAX_FRAME_BYTES: Final = 1 << 20

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


class WireError(ValueError):
    """A frame that cannot be accepted. ``reason`` is machine-readable, ``detail`` for people."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


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
    """RFC 8785 bytes of the frame without its ``sig`` field: what the device signs."""
    return _encoder.encode(_unsigned(frame))


def canonical_bytes_reference(frame: Frame) -> bytes:
    """The same bytes through the ``rfc8785`` library (slow; the reference in tests)."""
    return rfc8785.dumps(msgspec.to_builtins(_unsigned(frame)))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_frame(frame: Frame, key: Ed25519PrivateKey) -> Frame:
    """A copy of ``frame`` carrying the Ed25519 signature of its canonical bytes."""
    return msgspec.structs.replace(frame, sig=b64url(key.sign(canonical_bytes(frame))))


def encode_frame(frame: Frame) -> bytes:
    """Bytes on the wire (sorted compact JSON; the signed frame itself)."""
    return _encoder.encode(frame)


def frame_sha256(payload: bytes) -> bytes:
    """SHA-256 of the signed frame exactly as received: links ledger leaves to a signature."""
    return hashlib.sha256(payload).digest()


def decode_frame(payload: bytes) -> Frame:
    """Untrusted bytes → a typed frame, or ``WireError`` with a reason. Never anything else."""
    if len(payload) > MAX_FRAME_BYTES:
        raise WireError(TOO_LARGE, f"frame of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        frame = _frame_decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise WireError(SCHEMA, str(exc)) from None
    except msgspec.DecodeError as exc:
        raise WireError(BAD_JSON, str(exc)) from None
    except UnicodeDecodeError as exc:  # msgspec raises this, not DecodeError, for invalid UTF-8
        raise WireError(BAD_JSON, f"invalid UTF-8 at byte {exc.start}") from None
    if frame.sig is None:
        raise WireError(SCHEMA, "frame has no signature (`sig`)")
    return frame


class SignatureVerifier(Protocol):
    """What ``verify_signature`` needs: ``cryptography``'s Ed25519PublicKey, or ingest's libsodium
    adapter. ``verify`` raises ``cryptography.exceptions.InvalidSignature`` on a bad signature."""

    def verify(self, signature: bytes, data: bytes) -> None: ...


def verify_signature(frame: Frame, public_key: SignatureVerifier) -> None:
    """Raise ``WireError(bad_signature)`` unless ``frame.sig`` signs its canonical bytes."""
    if frame.sig is None:
        raise WireError(BAD_SIGNATURE, "frame is unsigned")
    try:
        sig = b64url_decode(frame.sig)
    except (binascii.Error, ValueError):
        raise WireError(BAD_SIGNATURE, "signature is not base64url") from None
    try:
        public_key.verify(sig, canonical_bytes(frame))
    except InvalidSignature:
        raise WireError(
            BAD_SIGNATURE, f"Ed25519 signature does not match device {frame.device!r}"
        ) from None
