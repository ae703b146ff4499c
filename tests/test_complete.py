"""The frame writer that completeness and sealing rely on: a frame rebuilt from stored columns is byte for byte
its wire encoding, so "rebuilt bytes == stored bytes" means "every stored reading equals the signed one".

``ledger.framewriter.write_frames`` against ``device.wire.encode_frame`` (the RFC 8785 form with ``sig``):
for simulated frames, and under hypothesis over the whole schema domain (integers up to 2^53 − 1, negative
power, every channel, any id the schema admits, 1–40 readings); and ``equal_frames`` refuses any change.
"""

from __future__ import annotations

import hashlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from device.wire import CHANNELS as WIRE_CHANNELS
from device.wire import (
    ID_PATTERN,
    MAX_SAFE_INT,
    Frame,
    Reading,
    b64url,
    decode_frame,
    encode_frame,
)
from firmware_sim.sim import simulate
from ledger.bulk import StringTable
from ledger.framewriter import equal_frames, write_frames
from ledger.sealqueue import CHANNELS

START = 1_780_272_000_000


def _rebuild(frames: list[Frame]) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's bytes from columns, the way ``ledger.sealqueue.check`` builds them (sig from its own bytes)."""
    devices = sorted({f.device for f in frames})
    sites = sorted({f.site for f in frames})
    sig_blob = b"".join((f.sig or "").encode() for f in frames)
    sig_len = np.array([len(f.sig or "") for f in frames], np.int64)
    sig_off = np.concatenate([[0], np.cumsum(sig_len)[:-1]]).astype(np.int64)
    counts = [len(f.readings) for f in frames]
    first = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    rs = [r for f in frames for r in f.readings]
    return write_frames(
        StringTable.of_json(devices), StringTable.of_json(sites), StringTable.of_json(CHANNELS),
        np.array([devices.index(f.device) for f in frames], np.int64), np.array([sites.index(f.site) for f in frames]),
        np.array([f.seq for f in frames], np.int64), np.array([f.sent_ms for f in frames], np.int64),
        np.frombuffer(sig_blob, np.uint8), sig_off, sig_len, first,
        np.array([CHANNELS.index(r.channel) for r in rs], np.int64), np.array([r.energy_wh for r in rs], np.int64),
        np.array([r.power_w for r in rs], np.int64), np.array([r.ts_ms for r in rs], np.int64))


def _split(buf: np.ndarray, offs: np.ndarray) -> list[bytes]:
    raw = buf.tobytes()
    return [raw[offs[i]:offs[i + 1]] for i in range(len(offs) - 1)]


def test_rebuilt_simulated_frames_are_their_wire_bytes() -> None:
    run = simulate(sites=2, days=0.05, seed=7, start_ms=START, clock=lambda: START + 3_600_000)
    payloads = [m.payload for m in run.messages()]
    frames = [decode_frame(p) for p in payloads]
    assert {r.channel for f in frames for r in f.readings} == set(WIRE_CHANNELS)
    assert _split(*_rebuild(frames)) == payloads


ids = st.from_regex(ID_PATTERN, fullmatch=True)
readings = st.builds(Reading, ts_ms=st.integers(0, MAX_SAFE_INT), channel=st.sampled_from(WIRE_CHANNELS),
                     energy_wh=st.integers(0, MAX_SAFE_INT), power_w=st.integers(-MAX_SAFE_INT, MAX_SAFE_INT))
frames_st = st.builds(Frame, v=st.just(1), site=ids, device=ids, seq=st.integers(0, MAX_SAFE_INT),
                      sent_ms=st.integers(0, MAX_SAFE_INT), readings=st.lists(readings, min_size=1, max_size=40),
                      sig=st.binary(min_size=64, max_size=64).map(b64url))


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(frames_st, min_size=1, max_size=5))
def test_rebuilt_frames_equal_encode_frame_over_the_schema_domain(frames: list[Frame]) -> None:
    assert _split(*_rebuild(frames)) == [encode_frame(f) for f in frames]


@settings(max_examples=100, deadline=None)
@given(frame=frames_st, which=st.integers(0, 39), field=st.sampled_from(["ts_ms", "energy_wh", "power_w", "channel"]))
def test_any_changed_reading_makes_the_rebuilt_frame_differ(frame: Frame, which: int, field: str) -> None:
    raw = encode_frame(frame)
    r = frame.readings[which % len(frame.readings)]
    if field == "channel":
        new = WIRE_CHANNELS[(WIRE_CHANNELS.index(r.channel) + 1) % 3]
    else:
        v = getattr(r, field)
        new = v - 1 if v == MAX_SAFE_INT else v + 1
    changed = Reading(**{**{k: getattr(r, k) for k in ("ts_ms", "channel", "energy_wh", "power_w")}, field: new})
    rs = list(frame.readings)
    rs[which % len(rs)] = changed
    tampered = Frame(v=1, site=frame.site, device=frame.device, seq=frame.seq, sent_ms=frame.sent_ms, readings=rs,
                     sig=frame.sig)
    raw_arr = np.frombuffer(raw, np.uint8)
    one = np.zeros(1, np.int64)
    for f, same in ((frame, True), (tampered, False)):
        built, offs = _rebuild([f])
        assert equal_frames(built, offs, raw_arr, one, np.array([len(raw)], np.int64)).tolist() == [same]
    assert hashlib.sha256(_split(*_rebuild([tampered]))[0]).digest() != hashlib.sha256(raw).digest()
