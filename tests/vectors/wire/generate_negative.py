"""Regenerate the negative wire-format vectors (run from the repository root):

    .venv/bin/python -m tests.vectors.wire.generate_negative

Each file in ``negative/`` is one payload that must be refused, ``{"desc", "payload" | "payload_b64",
"reason", "received_ms", "public_key_hex"}``: ``reason`` is the code ``decode_frame`` raises (or, for
``reading_window``, the code ingest gives a frame that decodes), ``received_ms`` the receive time to
validate it at, ``public_key_hex`` the registered key of device ``s01-main`` (a TEST key: its seed is
``sha256("wattproof negative wire vectors")``). Frames are validly signed wherever the point is that
the signature is not what refuses them (duplicates, spellings, the reading window).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device.wire import Frame, Reading, encode_frame, sign_frame

HERE = Path(__file__).parent / "negative"
SEED = hashlib.sha256(b"wattproof negative wire vectors").digest()
KEY = Ed25519PrivateKey.from_private_bytes(SEED)
PUB = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
SENT = 1_780_272_060_000  # 2026-06-01T00:01:00Z


def signed(readings: list[tuple[int, str, int, int]], seq: int = 7, sent: int = SENT) -> bytes:
    frame = Frame(v=1, site="s01", device="s01-main", seq=seq, sent_ms=sent,
                  readings=[Reading(ts_ms=t, channel=c, energy_wh=e, power_w=p) for t, c, e, p in readings])  # type: ignore[arg-type]
    return encode_frame(sign_frame(frame, KEY))


GOOD = signed([(SENT - 60_000, "import", 12345, 250), (SENT - 60_000, "export", 500, 0)])


def once(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) >= 1, old
    return data.replace(old, new, 1)


def spaced(data: bytes) -> bytes:
    return json.dumps(json.loads(data), sort_keys=True).encode()


def unsorted(data: bytes) -> bytes:
    doc = json.loads(data)
    return json.dumps({k: doc[k] for k in sorted(doc, reverse=True)}, separators=(",", ":")).encode()


CASES: list[tuple[str, str, bytes, str]] = [
    ("duplicate-seq", "duplicate `seq` before the signed one: last-wins reads 7 (and the signature verifies), "
     "first-wins reads 8", once(GOOD, b'"seq":7', b'"seq":8,"seq":7'), "duplicate_member"),
    ("duplicate-seq-same-value", "duplicate `seq` with the same value: still two members of one name",
     once(GOOD, b'"seq":7', b'"seq":7,"seq":7'), "duplicate_member"),
    ("duplicate-in-reading", "duplicate `energy_wh` inside the first reading (first-wins reads 999999)",
     once(GOOD, b'"energy_wh":12345', b'"energy_wh":999999,"energy_wh":12345'), "duplicate_member"),
    ("duplicate-sig", "two `sig` members: the first is another frame's signature, the second the valid one",
     once(GOOD, b'"sig":"', b'"sig":"' + b"A" * 86 + b'","sig":"'), "duplicate_member"),
    ("duplicate-escaped-name", "`\\u0073eq` is the member name `seq`: a duplicate once unescaped",
     once(GOOD, b'"seq":7', b'"\\u0073eq":8,"seq":7'), "duplicate_member"),
    ("duplicate-top-level-after-readings", "duplicate `device` member at the end of the object",
     once(GOOD, b'"v":1}', b'"v":1,"device":"s01-main"}'), "duplicate_member"),
    ("whitespace", "the signed frame with a space after every separator (json.dumps defaults)", spaced(GOOD),
     "non_canonical"),
    ("trailing-newline", "the signed frame followed by a newline", GOOD + b"\n", "non_canonical"),
    ("leading-space", "a space before the signed frame", b" " + GOOD, "non_canonical"),
    ("key-order", "members in reverse order (RFC 8785 sorts them by code point)", unsorted(GOOD), "non_canonical"),
    ("integer-as-1.0", "`seq` written as 7.0", once(GOOD, b'"seq":7', b'"seq":7.0'), "non_canonical"),
    ("integer-with-exponent", "`energy_wh` written as 1.2345e4", once(GOOD, b'"energy_wh":12345', b'"energy_wh":1.2345e4'),
     "non_canonical"),
    ("integer-with-capital-exponent", "`sent_ms` written with an exponent (1.78027206E12)",
     once(GOOD, b'"sent_ms":1780272060000', b'"sent_ms":1.78027206E12'), "non_canonical"),
    ("negative-zero", "`power_w` 0 written as -0", once(GOOD, b'"power_w":0', b'"power_w":-0'), "non_canonical"),
    ("escaped-id", "`site` written with \\u escapes (\"s\\u0030\\u0031\" is \"s01\")",
     once(GOOD, b'"site":"s01"', b'"site":"s\\u0030\\u0031"'), "non_canonical"),
    ("escaped-member-name", "the member name `seq` written as \"\\u0073eq\"",
     once(GOOD, b'"seq":7', b'"\\u0073eq":7'), "non_canonical"),
    ("nan-token", "NaN as a number", once(GOOD, b'"power_w":250', b'"power_w":NaN'), "bad_json"),
    ("infinity-token", "Infinity as a number", once(GOOD, b'"power_w":250', b'"power_w":Infinity'), "bad_json"),
    ("minus-infinity-token", "-Infinity as a number", once(GOOD, b'"power_w":250', b'"power_w":-Infinity'), "bad_json"),
    ("huge-exponent", "1e400 (beyond IEEE 754 double)", once(GOOD, b'"power_w":250', b'"power_w":1e400'), "schema"),
    ("lone-surrogate-escape", "a lone surrogate written as an escape in `site`",
     once(GOOD, b'"site":"s01"', b'"site":"\\ud800"'), "bad_json"),
    ("surrogate-utf8-bytes", "a surrogate encoded as UTF-8 bytes (ED A0 80: not UTF-8)",
     once(GOOD, b'"site":"s01"', b'"site":"s\xed\xa0\x80"'), "bad_json"),
    ("byte-order-mark", "a UTF-8 byte order mark before the frame", b"\xef\xbb\xbf" + GOOD, "bad_json"),
    ("sig-null", "`sig` is null", once(GOOD, GOOD[GOOD.index(b'"sig":'):GOOD.index(b'"site"')], b'"sig":null,'),
     "schema"),
    ("reading-at-epoch", "a validly signed frame sent now holding a reading at ts_ms = 0",
     signed([(0, "import", 12345, 250), (SENT - 60_000, "import", 12346, 250)]), "reading_window"),
    ("reading-after-window", "a reading 61 s after the frame's sent_ms (limit 60 s)",
     signed([(SENT + 61_000, "import", 12345, 250)]), "reading_window"),
    ("readings-span-over-a-day", "readings 24 h + 1 ms apart (a frame covers at most a day)",
     signed([(SENT - 86_400_001, "import", 12345, 250), (SENT, "import", 12400, 250)]), "reading_window"),
    ("readings-span-three-months", "readings spread over three months in one frame",
     signed([(SENT - 92 * 86_400_000, "import", 1, 250), (SENT - 46 * 86_400_000, "import", 2, 250),
             (SENT, "import", 3, 250)]), "reading_window"),
]


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for old in HERE.glob("*.json"):
        old.unlink()
    for name, desc, payload, reason in CASES:
        doc: dict[str, object] = {"desc": desc, "reason": reason, "received_ms": SENT, "public_key_hex": PUB}
        try:
            text = payload.decode("utf-8")
            text.encode("utf-8")
            doc["payload"] = text
        except UnicodeError:
            doc["payload_b64"] = base64.b64encode(payload).decode()
        (HERE / f"{name}.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
