"""Wire format v1: vectors, canonical bytes (RFC 8785) and a decoder that never crashes."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_sim import wire
from firmware_sim.wire import Frame, Reading, WireError

VECTORS = sorted((Path(__file__).parent / "vectors" / "wire").glob("*.json"))
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,20}", fullmatch=True)
safe = st.integers(min_value=0, max_value=wire.MAX_SAFE_INT)
readings = st.builds(Reading, ts_ms=safe, channel=st.sampled_from(wire.CHANNELS), energy_wh=safe,
                     power_w=st.integers(min_value=-wire.MAX_SAFE_INT, max_value=wire.MAX_SAFE_INT))
frames = st.builds(Frame, v=st.just(1), site=ids, device=ids, seq=safe, sent_ms=safe,
                   readings=st.lists(readings, min_size=1, max_size=8))


def test_there_are_vectors() -> None:
    assert len(VECTORS) >= 3


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_vector_canonical_bytes_signature_and_key_agree(path: Path) -> None:
    doc = json.loads(path.read_text())
    payload = json.dumps(doc["signed_frame"]).encode()  # any JSON layout: canonicalisation fixes it
    frame = wire.decode_frame(payload)
    assert wire.canonical_bytes(frame) == doc["canonical_utf8"].encode()
    unsigned = {k: v for k, v in doc["signed_frame"].items() if k != "sig"}
    assert rfc8785.dumps(unsigned) == doc["canonical_utf8"].encode()
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(doc["private_key_seed_hex"]))
    assert wire.sign_frame(msgspec.structs.replace(frame, sig=None), key).sig == doc["signature_b64url"]
    wire.verify_signature(frame, Ed25519PublicKey.from_public_bytes(bytes.fromhex(doc["public_key_hex"])))


@given(frames)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_fast_canonical_bytes_equal_the_rfc8785_library(frame: Frame) -> None:
    assert wire.canonical_bytes(frame) == wire.canonical_bytes_reference(frame)


@given(frames)
@settings(max_examples=100)
def test_signed_frame_roundtrips_and_verifies(frame: Frame) -> None:
    signed = wire.sign_frame(frame, KEY)
    decoded = wire.decode_frame(wire.encode_frame(signed))
    assert decoded == signed
    wire.verify_signature(decoded, KEY.public_key())


def test_changed_register_breaks_the_signature() -> None:
    frame = wire.sign_frame(Frame(v=1, site="s", device="d", seq=1, sent_ms=1,
                                  readings=[Reading(ts_ms=1, channel="import", energy_wh=10, power_w=1)]), KEY)
    tampered = msgspec.structs.replace(frame, readings=[Reading(ts_ms=1, channel="import", energy_wh=11, power_w=1)])
    with pytest.raises(WireError) as err:
        wire.verify_signature(tampered, KEY.public_key())
    assert err.value.reason == wire.BAD_SIGNATURE


@pytest.mark.parametrize("payload, reason", [
    (b"", wire.BAD_JSON),
    (b"{not json", wire.BAD_JSON),
    (b"[]", wire.SCHEMA),
    (b'{"v":1}', wire.SCHEMA),
    (b'{"v":2,"site":"s","device":"d","seq":1,"sent_ms":1,"readings":[{"ts_ms":1,"channel":"import","energy_wh":1,"power_w":1}],"sig":"' + b"A" * 86 + b'"}', wire.SCHEMA),
    (b'{"v":1,"site":"s","device":"d","seq":1,"sent_ms":1,"readings":[{"ts_ms":1,"channel":"import","energy_wh":-1,"power_w":1}],"sig":"' + b"A" * 86 + b'"}', wire.SCHEMA),
    (b'{"v":1,"site":"s","device":"d","seq":1,"sent_ms":1,"readings":[{"ts_ms":1,"channel":"import","energy_wh":1.5,"power_w":1}],"sig":"' + b"A" * 86 + b'"}', wire.SCHEMA),
    (b'{"v":1,"site":"s","device":"d","seq":1,"sent_ms":1,"readings":[],"sig":"' + b"A" * 86 + b'"}', wire.SCHEMA),
    (b'{"v":1,"site":"s","device":"d","seq":1,"sent_ms":1,"readings":[{"ts_ms":1,"channel":"import","energy_wh":1,"power_w":1}]}', wire.SCHEMA),
    (b'{"v":1,"site":"s/x","device":"d","seq":1,"sent_ms":1,"readings":[{"ts_ms":1,"channel":"import","energy_wh":1,"power_w":1}],"sig":"' + b"A" * 86 + b'"}', wire.SCHEMA),
    (b"x" * (wire.MAX_FRAME_BYTES + 1), wire.TOO_LARGE),
])
def test_bad_frames_are_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(WireError) as err:
        wire.decode_frame(payload)
    assert err.value.reason == reason
    assert err.value.detail


@given(st.binary(max_size=2048))
@settings(max_examples=500)
def test_decoder_fuzz_random_bytes_only_ever_raise_wire_error(payload: bytes) -> None:
    try:
        wire.decode_frame(payload)
    except WireError as err:
        assert err.reason in (wire.BAD_JSON, wire.SCHEMA, wire.TOO_LARGE)


VALID = wire.encode_frame(wire.sign_frame(Frame(v=1, site="s01", device="s01-main", seq=7, sent_ms=1000, readings=[
    Reading(ts_ms=1000, channel="import", energy_wh=12345, power_w=250),
    Reading(ts_ms=1000, channel="export", energy_wh=5, power_w=0)]), KEY))


@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=6))
@settings(max_examples=500)
def test_decoder_fuzz_mutated_valid_frames_decode_or_reject_cleanly(mutations: list[tuple[int, int]]) -> None:
    data = bytearray(VALID)
    for pos, byte in mutations:
        data[pos] = byte
    try:
        frame = wire.decode_frame(bytes(data))
    except WireError:
        return
    try:  # decoded: then the signature decides, cleanly
        wire.verify_signature(frame, KEY.public_key())
    except WireError as err:
        assert err.reason == wire.BAD_SIGNATURE


def test_topics_roundtrip() -> None:
    assert wire.parse_readings_topic(wire.readings_topic("s01", "s01-main")) == ("s01", "s01-main")
    assert wire.parse_readings_topic("wattproof/v1/s01/s01-main/status") is None
    assert wire.parse_readings_topic("other/v1/s01/d/readings") is None
