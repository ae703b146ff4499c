"""Quarantine reason codes: the one list, documented in docs/reason-codes.md and used by tests."""

from __future__ import annotations

from typing import Final

from device.wire import (
    BAD_JSON,
    BAD_SIGNATURE,
    DUPLICATE_MEMBER,
    NON_CANONICAL,
    READING_WINDOW,
    SCHEMA,
    TOO_LARGE,
    VALUE_OUT_OF_RANGE,
)

UNKNOWN_DEVICE: Final = "unknown_device"
INACTIVE_DEVICE: Final = "inactive_device"
REVOKED_DEVICE: Final = "revoked_device"
RETIRED_KEY: Final = "retired_key"
TOPIC_MISMATCH: Final = "topic_mismatch"
REPLAYED_SEQ: Final = "replayed_seq"
CLOCK_SKEW: Final = "clock_skew"
BAD_TOPIC: Final = "bad_topic"
STORE_FAILED: Final = "store_failed"
VALIDATOR_ERROR: Final = "validator_error"

ALL: Final[dict[str, str]] = {
    BAD_JSON: "payload is not JSON (or not UTF-8)",
    SCHEMA: "JSON does not match wire format v1 (missing/extra field, wrong type, bad id, no signature)",
    TOO_LARGE: "frame exceeds the size limit",
    DUPLICATE_MEMBER: "a JSON object of the frame names a member twice (I-JSON, RFC 7493 §2.3)",
    NON_CANONICAL: "the frame's bytes are not its RFC 8785 form (whitespace, key order, escapes, number spelling)",
    BAD_TOPIC: "message arrived on a topic that is not wattproof/v1/{site}/{device}/readings",
    TOPIC_MISMATCH: "the frame's site/device differ from its topic's",
    UNKNOWN_DEVICE: "device is not in the registry",
    INACTIVE_DEVICE: "device is registered but deactivated",
    REVOKED_DEVICE: "device was revoked (wattproof device revoke): none of its frames is accepted any more",
    RETIRED_KEY: "signed by a key of the device that is not valid at the frame's sent_ms (rotated out, or not yet valid)",
    BAD_SIGNATURE: "Ed25519 signature does not verify with the registered public key",
    REPLAYED_SEQ: "a different frame with this (device, seq) was already accepted",
    CLOCK_SKEW: "send time too far from receive time",
    READING_WINDOW: "a reading outside the frame's reading window around its sent_ms (docs/wire-format.md)",
    VALUE_OUT_OF_RANGE: "a value no meter of this rating can report",
    STORE_FAILED: "a valid frame the database refused to store after bounded attempts (detail: the error)",
    VALIDATOR_ERROR: "validation itself failed on this message (a bug: report it); quarantined so ingest goes on",
}
