"""Regenerate the wire-format test vectors (run from the repository root):

    .venv/bin/python -m tests.vectors.wire.generate

Each vector file holds a frame, the RFC 8785 canonical bytes that are signed, the Ed25519 key pair
(a TEST key: its 32-byte seed is published here on purpose) and the signature, so that another
implementation can check that it canonicalises, signs and verifies the same way. Every frame lies
in the reading window (docs/wire-format.md). Negative vectors: ``generate_negative.py``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device.wire import Frame, Reading, canonical_bytes, encode_frame, sign_frame

HERE = Path(__file__).parent

CASES = [
    ("single-reading", Frame(v=1, site="s01", device="s01-main", seq=1, sent_ms=1780272060000,
                             readings=[Reading(ts_ms=1780272000000, channel="import", energy_wh=2900217, power_w=263)])),
    ("import-export", Frame(v=1, site="s01", device="s01-main", seq=2, sent_ms=1780272960000, readings=[
        Reading(ts_ms=1780272900000, channel="import", energy_wh=2900221, power_w=246),
        Reading(ts_ms=1780272900000, channel="export", energy_wh=935023, power_w=0),
        Reading(ts_ms=1780272960000, channel="import", energy_wh=2900225, power_w=240),
        Reading(ts_ms=1780272960000, channel="export", energy_wh=935023, power_w=0)])),
    ("pv-large-values", Frame(v=1, site="plant.7", device="inv-A_01", seq=9007199254740991,
                              sent_ms=9007199254740991, readings=[
        Reading(ts_ms=9007199254740991 - 86_400_000, channel="pv", energy_wh=9007199254740991,
                power_w=-9007199254740991)])),  # the oldest reading the window admits (24 h span)
]


def main() -> None:
    for name, frame in CASES:
        seed = hashlib.sha256(f"wattproof test vector {name}".encode()).digest()
        key = Ed25519PrivateKey.from_private_bytes(seed)
        pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        signed = sign_frame(frame, key)
        doc = {
            "description": f"wire format v1 vector: {name}",
            "private_key_seed_hex": seed.hex(),
            "public_key_hex": pub.hex(),
            "canonical_utf8": canonical_bytes(frame).decode(),
            "canonical_sha256_hex": hashlib.sha256(canonical_bytes(frame)).hexdigest(),
            "signature_b64url": signed.sig,
            "signed_frame": json.loads(encode_frame(signed)),
        }
        (HERE / f"{name}.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
