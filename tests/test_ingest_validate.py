"""The validator is pure: every input gets Accepted or a Rejected with a documented reason."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from device import wire
from device.identity import DeviceRecord, public_key_b64
from device.wire import Frame, Reading, b64url
from ingest import reasons
from ingest.validate import Accepted, Limits, Rejected, validate, validate_many

KEY = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
OTHER = Ed25519PrivateKey.from_private_bytes(b"\x08" * 32)
NOW = 1_780_000_000_000
REG = {"s1-main": DeviceRecord(site="s1", device="s1-main", kind="main_meter", public_key=public_key_b64(KEY),
                               rated_power_w=10_000),
       "s1-old": DeviceRecord(site="s1", device="s1-old", kind="sub_meter", public_key=public_key_b64(KEY),
                              rated_power_w=1000, active=False)}
TOPIC = wire.readings_topic("s1", "s1-main")


def frame(device: str = "s1-main", sent_ms: int = NOW, ts_ms: int = NOW - 60_000, power_w: int = 500,
          key: Ed25519PrivateKey = KEY, site: str = "s1") -> bytes:
    f = Frame(v=1, site=site, device=device, seq=5, sent_ms=sent_ms,
              readings=[Reading(ts_ms=ts_ms, channel="import", energy_wh=1000, power_w=power_w)])
    return wire.encode_frame(wire.sign_frame(f, key))


def reason(topic: str, payload: bytes) -> str:
    v = validate(topic, payload, REG, NOW)
    return "accepted" if isinstance(v, Accepted) else v.reason


def test_a_good_frame_is_accepted() -> None:
    assert reason(TOPIC, frame()) == "accepted"


def test_each_check_rejects_with_its_reason_code() -> None:
    assert reason("wattproof/v1/s1/s1-main/status", frame()) == reasons.BAD_TOPIC
    assert reason(TOPIC, b"{") == reasons.BAD_JSON
    assert reason(TOPIC, b"{}") == reasons.SCHEMA
    assert reason(wire.readings_topic("s1", "s1-other"), frame()) == reasons.TOPIC_MISMATCH
    assert reason(wire.readings_topic("s1", "s1-ghost"), frame(device="s1-ghost")) == reasons.UNKNOWN_DEVICE
    assert reason(wire.readings_topic("s1", "s1-old"), frame(device="s1-old")) == reasons.INACTIVE_DEVICE
    assert reason(wire.readings_topic("s2", "s1-main"), frame(site="s2")) == reasons.TOPIC_MISMATCH
    assert reason(TOPIC, frame(key=OTHER)) == reasons.BAD_SIGNATURE
    assert reason(TOPIC, frame(sent_ms=NOW + 3 * 3600_000)) == reasons.CLOCK_SKEW
    assert reason(TOPIC, frame(sent_ms=NOW - 30 * 86_400_000, ts_ms=NOW - 31 * 86_400_000)) == reasons.CLOCK_SKEW
    assert reason(TOPIC, frame(ts_ms=NOW + 3600_000)) == reasons.READING_WINDOW
    assert reason(TOPIC, frame(ts_ms=0)) == reasons.READING_WINDOW
    assert reason(TOPIC, frame(power_w=10_000 * 101)) == wire.VALUE_OUT_OF_RANGE


def test_backfilled_history_sent_now_is_accepted() -> None:
    assert reason(TOPIC, frame(ts_ms=NOW - 200 * 86_400_000)) == "accepted"


def test_reading_at_ts_zero_in_a_frame_sent_now_is_quarantined_with_reason_reading_window() -> None:
    v = validate(TOPIC, frame(ts_ms=0), REG, NOW)
    assert isinstance(v, Rejected) and v.reason == reasons.READING_WINDOW and "days before" in v.detail


def test_reading_after_the_window_is_quarantined_with_reason_reading_window() -> None:
    assert reason(TOPIC, frame(ts_ms=NOW + 60_000)) == "accepted"
    assert reason(TOPIC, frame(ts_ms=NOW + 60_001)) == reasons.READING_WINDOW


def test_frame_with_duplicate_member_is_quarantined_with_reason_duplicate_member() -> None:
    dup = GOOD.replace(b'"seq":5', b'"seq":6,"seq":5', 1)
    assert reason(TOPIC, dup) == reasons.DUPLICATE_MEMBER


def test_a_signed_frame_respelled_is_quarantined_with_reason_non_canonical() -> None:
    assert reason(TOPIC, GOOD.replace(b'"seq":5', b'"seq":5.0', 1)) == reasons.NON_CANONICAL
    assert reason(TOPIC, GOOD + b"\n") == reasons.NON_CANONICAL


NEGATIVE = sorted((Path(__file__).parent / "vectors" / "wire" / "negative").glob("*.json"))


@pytest.mark.parametrize("path", NEGATIVE, ids=lambda p: p.stem)
def test_negative_wire_vector_is_quarantined_with_its_reason(path: Path) -> None:
    doc = json.loads(path.read_text())
    payload = base64.b64decode(doc["payload_b64"]) if "payload_b64" in doc else doc["payload"].encode("utf-8")
    key = b64url(bytes.fromhex(doc["public_key_hex"]))
    reg = {"s01-main": DeviceRecord(site="s01", device="s01-main", kind="main_meter", public_key=key,
                                    rated_power_w=10_000)}
    topic = wire.readings_topic("s01", "s01-main")
    v = validate(topic, payload, reg, doc["received_ms"])
    assert isinstance(v, Rejected) and v.reason == doc["reason"], v
    assert doc["reason"] in reasons.ALL
    (many,) = validate_many([(topic, payload)], reg, doc["received_ms"])
    assert isinstance(many, Rejected) and many.reason == doc["reason"]


def test_limits_are_configurable() -> None:
    late = frame(sent_ms=NOW - 10 * 86_400_000, ts_ms=NOW - 10 * 86_400_000)
    assert reason(TOPIC, late) == reasons.CLOCK_SKEW
    assert isinstance(validate(TOPIC, late, REG, NOW, Limits(max_age_ms=30 * 86_400_000)), Accepted)


GOOD = frame()


@given(st.one_of(st.binary(max_size=600),
                 st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), min_size=1, max_size=5)
                 .map(lambda muts: bytes(_mutate(GOOD, muts)))),
       st.sampled_from([TOPIC, "wattproof/v1/s1/s1-old/readings", "x/y", ""]))
@settings(max_examples=600)
def test_fuzz_never_crashes_and_always_names_a_documented_reason(payload: bytes, topic: str) -> None:
    v = validate(topic, payload, REG, NOW)
    if isinstance(v, Rejected):
        assert v.reason in reasons.ALL and v.detail
    else:
        assert isinstance(v.frame, Frame) and msgspec.json.decode(v.payload)


def _verdict(v: Accepted | Rejected) -> tuple[str, str, str | None, int | None]:
    return ("accepted", "", None, None) if isinstance(v, Accepted) else (v.reason, v.detail, v.device, v.seq)


def test_validating_a_batch_gives_each_message_the_verdict_it_gets_alone() -> None:
    from ledger import nativelib

    assert nativelib.LIB is not None  # otherwise validate_many is validate in a loop and this tests little
    cases = [(TOPIC, frame(sent_ms=NOW - i)) for i in range(300)]
    odd = [("wattproof/v1/s1/s1-main/status", frame()), (TOPIC, b"{"), (TOPIC, b"{}"),
           (wire.readings_topic("s1", "s1-ghost"), frame(device="s1-ghost")), (TOPIC, frame(key=OTHER)),
           (TOPIC, frame(sent_ms=NOW + 3 * 3600_000)), (TOPIC, frame(power_w=10_000 * 101)),
           (TOPIC, GOOD.replace(b'"sig":"', b'"sig":"A', 1)), (TOPIC, GOOD.replace(b"1000", b"1001", 1))]
    for k, item in enumerate(odd):
        cases.insert(k * 31 + 7, item)
    got = validate_many(cases, REG, NOW)
    assert [_verdict(v) for v in got] == [_verdict(validate(t, p, REG, NOW)) for t, p in cases]
    assert sum(isinstance(v, Accepted) for v in got) == 300


@given(st.lists(st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), max_size=3)
                .map(lambda muts: bytes(_mutate(GOOD, muts))), min_size=1, max_size=20))
@settings(max_examples=200)
def test_validate_many_equals_validate_on_mutated_frames(payloads: list[bytes]) -> None:
    items = [(TOPIC, p) for p in payloads]
    assert ([_verdict(v) for v in validate_many(items, REG, NOW)]
            == [_verdict(validate(t, p, REG, NOW)) for t, p in items])


def _mutate(data: bytes, muts: list[tuple[int, int]]) -> bytearray:
    out = bytearray(data)
    for pos, byte in muts:
        out[pos] = byte
    return out


def test_the_libsodium_verifier_agrees_with_cryptography_on_good_and_bad_signatures() -> None:
    import os

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ingest.validate import SodiumKey

    L = 2**252 + 27742317777372353535851937790883648493
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    msg = os.urandom(500)
    sig = key.sign(msg)
    s = int.from_bytes(sig[32:], "little")
    cases = {
        "valid": (sig, msg),
        "flipped signature bit": (sig[:10] + bytes([sig[10] ^ 1]) + sig[11:], msg),
        "flipped message bit": (sig, bytes([msg[0] ^ 0x80]) + msg[1:]),
        "other key's signature": (other.sign(msg), msg),
        "short signature": (sig[:63], msg),
        "non-canonical S (S + L)": (sig[:32] + (s + L).to_bytes(32, "little"), msg),
    }

    def ok(verifier, sig_: bytes, msg_: bytes) -> bool:  # type: ignore[no-untyped-def]
        try:
            verifier.verify(sig_, msg_)
            return True
        except InvalidSignature:
            return False

    for name, (sg, m) in cases.items():
        assert ok(SodiumKey(raw), sg, m) == ok(key.public_key(), sg, m) == (name == "valid"), name


def test_a_message_that_makes_validation_raise_is_rejected_alone_and_its_neighbours_pass(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """No input stops ingest (DESIGN invariant 8): should validation itself raise (a bug), the batch is
    validated message by message and only the message that raises is refused, with `validator_error`."""
    import ingest.validate as v

    poison = b'{"poison":true}'
    real_validate = v.validate

    def exploding(topic, payload, *a, **k):  # type: ignore[no-untyped-def]
        if payload == poison:
            raise RuntimeError("boom")
        return real_validate(topic, payload, *a, **k)

    def batch_raises(*a, **k):  # type: ignore[no-untyped-def]
        raise RuntimeError("batch boom")

    monkeypatch.setattr(v, "validate", exploding)
    monkeypatch.setattr(v, "validate_many", batch_raises)
    out = v.validate_batch([(TOPIC, frame()), (TOPIC, poison), (TOPIC, frame(power_w=7))], REG, NOW)
    assert [type(x).__name__ for x in out] == ["Accepted", "Rejected", "Accepted"]
    assert out[1].reason == reasons.VALIDATOR_ERROR and "boom" in out[1].detail  # type: ignore[union-attr]
