"""Wire format v1: vectors, canonical bytes (RFC 8785), one reading of the signed bytes, the reading
window, and a decoder that never crashes."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import msgspec
import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device import wire
from device.wire import Frame, Reading, WireError

VECTORS = sorted((Path(__file__).parent / "vectors" / "wire").glob("*.json"))
NEGATIVE = sorted((Path(__file__).parent / "vectors" / "wire" / "negative").glob("*.json"))
DECODER_REASONS = {wire.BAD_JSON, wire.SCHEMA, wire.TOO_LARGE, wire.DUPLICATE_MEMBER, wire.NON_CANONICAL}
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
    payload = json.dumps(doc["signed_frame"], sort_keys=True, separators=(",", ":")).encode()  # the RFC 8785 form
    frame = wire.decode_frame(payload)
    assert wire.reading_window_problem(frame) is None
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
        frame = wire.decode_frame(payload)
    except WireError as err:
        assert err.reason in DECODER_REASONS and err.detail
        return
    assert wire.encode_frame(frame) == payload  # whatever is accepted is its own RFC 8785 form


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
    except WireError as err:
        assert err.reason in DECODER_REASONS and err.detail
        return
    assert wire.encode_frame(frame) == bytes(data)  # accepted: exactly its own RFC 8785 form
    try:  # decoded: then the signature decides, cleanly
        wire.verify_signature(frame, KEY.public_key())
    except WireError as err:
        assert err.reason == wire.BAD_SIGNATURE


def test_topics_roundtrip() -> None:
    assert wire.parse_readings_topic(wire.readings_topic("s01", "s01-main")) == ("s01", "s01-main")
    assert wire.parse_readings_topic("wattproof/v1/s01/s01-main/status") is None
    assert wire.parse_readings_topic("other/v1/s01/d/readings") is None


# --- one reading of every signed byte (TEAM decision 2, issue 12 invariant 5) ----------------


def _payload(doc: dict) -> bytes:  # type: ignore[type-arg]
    return base64.b64decode(doc["payload_b64"]) if "payload_b64" in doc else doc["payload"].encode("utf-8")


def test_there_are_negative_vectors_for_every_new_reason() -> None:
    reasons = {json.loads(p.read_text())["reason"] for p in NEGATIVE}
    assert {wire.DUPLICATE_MEMBER, wire.NON_CANONICAL, wire.READING_WINDOW, wire.BAD_JSON} <= reasons


@pytest.mark.parametrize("path", NEGATIVE, ids=lambda p: p.stem)
def test_negative_vector_is_refused_by_the_wire_format_with_its_reason(path: Path) -> None:
    doc = json.loads(path.read_text())
    assert doc["desc"]
    payload = _payload(doc)
    if doc["reason"] in DECODER_REASONS:
        with pytest.raises(WireError) as err:
            wire.decode_frame(payload)
        assert err.value.reason == doc["reason"], err.value.detail
    else:  # the frame decodes; the reading window refuses it (offline checks apply the same function)
        assert doc["reason"] == wire.READING_WINDOW
        problem = wire.reading_window_problem(wire.decode_frame(payload))
        assert problem is not None


def _dup_frame() -> tuple[bytes, bytes]:
    good = wire.encode_frame(wire.sign_frame(Frame(v=1, site="s01", device="s01-main", seq=7, sent_ms=1000, readings=[
        Reading(ts_ms=1000, channel="import", energy_wh=12345, power_w=250)]), KEY))
    return good, good.replace(b'"seq":7', b'"seq":8,"seq":7', 1)


def test_frame_with_duplicate_member_is_refused_with_reason_duplicate_member_though_its_signature_verifies() -> None:
    good, dup = _dup_frame()
    last_wins = msgspec.json.decode(dup, type=Frame)  # what the decoder alone would have stored
    wire.verify_signature(last_wins, KEY.public_key())
    assert json.loads(dup, object_pairs_hook=lambda kv: dict(reversed(kv)))["seq"] == 8  # first-wins reads 8
    with pytest.raises(WireError) as err:
        wire.decode_frame(dup)
    assert err.value.reason == wire.DUPLICATE_MEMBER and "'seq'" in err.value.detail
    assert wire.decode_frame(good).seq == 7


@pytest.mark.parametrize("edit", [
    lambda b: b + b" ", lambda b: b.replace(b",", b", ", 1), lambda b: b.replace(b'"seq":7', b'"seq":7.0', 1),
    lambda b: b.replace(b'"seq":7', b'"seq":7e0', 1), lambda b: b.replace(b'"site":"s01"', rb'"site":"s0\u0031"', 1),
    lambda b: b.replace(b'{"device":"s01-main",', b"{", 1).replace(b'"v":1}', b'"v":1,"device":"s01-main"}', 1),
], ids=["trailing-space", "space-after-comma", "1.0", "7e0", "escaped-id", "key-order"])
def test_any_other_spelling_of_a_signed_frame_is_refused_with_reason_non_canonical(edit) -> None:  # type: ignore[no-untyped-def]
    good, _ = _dup_frame()
    with pytest.raises(WireError) as err:
        wire.decode_frame(edit(good))
    assert err.value.reason == wire.NON_CANONICAL


def test_a_deeply_nested_refused_payload_is_still_a_wire_error() -> None:
    for payload in (b'{"v":1,"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", b"[" * 200_000):
        with pytest.raises(WireError):
            wire.decode_frame(payload)


# --- the reading window ---------------------------------------------------------------------


def _frame(*ts: int, sent: int = 10**12) -> Frame:
    return Frame(v=1, site="s", device="d", seq=1, sent_ms=sent,
                 readings=[Reading(ts_ms=t, channel="import", energy_wh=1, power_w=1) for t in ts])


def test_reading_window_admits_a_day_of_readings_up_to_a_minute_after_sent_ms() -> None:
    s = 10**12
    assert wire.reading_window_problem(_frame(s - wire.READING_SPAN_MS, s, sent=s)) is None
    assert wire.reading_window_problem(_frame(s + wire.READING_AFTER_SEND_MS, sent=s)) is None
    assert wire.reading_window_problem(_frame(s - wire.READING_HISTORY_MS, sent=s)) is None  # a backfilled day


@pytest.mark.parametrize("ts, words", [
    ((0,), "days before"), ((10**12 + 60_001,), "after"), ((10**12 - 86_400_001, 10**12), "span"),
    ((10**12 - wire.READING_HISTORY_MS - 1,), "days before"),
], ids=["reading-at-epoch", "after-sent-plus-60s", "span-over-a-day", "older-than-the-history-limit"])
def test_reading_outside_the_window_is_named(ts: tuple[int, ...], words: str) -> None:
    problem = wire.reading_window_problem(_frame(*ts))
    assert problem is not None and words in problem


# --- frames built in code: what RFC 8785 cannot write exactly is refused, not written ------------


@pytest.mark.parametrize("bad", [
    {"power_w": math.nan}, {"power_w": math.inf}, {"energy_wh": 1.5}, {"energy_wh": True},
    {"ts_ms": 2**53}, {"power_w": -(2**53)}, {"energy_wh": 2**64}, {"channel": "heat"},
], ids=["nan", "inf", "float", "bool", "ts-2^53", "power-minus-2^53", "2^64", "channel"])
def test_a_reading_built_with_a_value_rfc8785_cannot_carry_is_refused_when_signed_or_encoded(bad: dict) -> None:  # type: ignore[type-arg]
    fields = {"ts_ms": 1000, "channel": "import", "energy_wh": 1, "power_w": 1} | bad
    frame = Frame(v=1, site="s", device="d", seq=1, sent_ms=1000, readings=[Reading(**fields)])
    with pytest.raises(wire.FrameEncodingError):
        wire.sign_frame(frame, KEY)
    with pytest.raises(wire.FrameEncodingError):
        wire.encode_frame(msgspec.structs.replace(frame, sig="A" * 86))


@pytest.mark.parametrize("bad", [
    {"site": "s/1"}, {"device": 'd"'}, {"device": "d\u00e9"}, {"device": "dé"}, {"seq": True}, {"seq": -1},
    {"sent_ms": 2**53}, {"v": 2}, {"readings": []}, {"seq": 1.0},
], ids=["slash", "quote", "backslash", "non-ascii", "bool-seq", "negative-seq", "sent-2^53", "v2", "no-readings",
        "float-seq"])
def test_a_frame_built_outside_the_schema_is_refused_when_signed(bad: dict) -> None:  # type: ignore[type-arg]
    fields = {"v": 1, "site": "s", "device": "d", "seq": 1, "sent_ms": 1000,
              "readings": [Reading(ts_ms=1000, channel="import", energy_wh=1, power_w=1)]} | bad
    with pytest.raises(wire.FrameEncodingError):
        wire.sign_frame(Frame(**fields), KEY)


def test_decoding_a_60_reading_frame_stays_fast() -> None:
    import time

    frame = wire.sign_frame(Frame(v=1, site="s01", device="s01-main", seq=1, sent_ms=1780272060000, readings=[
        Reading(ts_ms=1780272000000 + i, channel="import", energy_wh=2900217 + i, power_w=263) for i in range(60)]), KEY)
    payload = wire.encode_frame(frame)
    t0 = time.perf_counter()
    for _ in range(2000):
        wire.decode_frame(payload)
    assert (time.perf_counter() - t0) / 2000 < 500e-6  # ~20 µs here; generous for a loaded machine
