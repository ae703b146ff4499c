"""The simulated fleet: deterministic, physically sane, and every fault leaves its mark and its truth."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from device import wire
from firmware_sim.scenarios import EXPECT, ScenarioError, load_scenario, parse_scenario
from firmware_sim.sim import simulate

ROOT = Path(__file__).resolve().parents[1]
FIXED_CLOCK = lambda: 1_780_000_000_000  # noqa: E731
START = 1_780_272_000_000  # 2026-06-01T00:00Z


def decode_all(run):  # type: ignore[no-untyped-def]
    out = []
    for m in run.messages():
        try:
            out.append((m, wire.decode_frame(m.payload)))
        except wire.WireError:
            out.append((m, None))
    return out


def test_same_seed_gives_byte_identical_frames() -> None:
    a = [m.payload for m in simulate(sites=2, days=0.5, seed=5, start_ms=START, clock=FIXED_CLOCK).messages()]
    b = [m.payload for m in simulate(sites=2, days=0.5, seed=5, start_ms=START, clock=FIXED_CLOCK).messages()]
    c = [m.payload for m in simulate(sites=2, days=0.5, seed=6, start_ms=START, clock=FIXED_CLOCK).messages()]
    assert a == b
    assert a != c


def test_clean_run_is_physically_sane() -> None:
    run = simulate(sites=3, days=2, seed=3, start_ms=START, clock=FIXED_CLOCK)
    series: dict[tuple[str, str], list[tuple[int, int, int]]] = defaultdict(list)
    keys = {d.device: d.record.verifying_key() for d in run.devices}
    for _m, frame in decode_all(run):
        assert frame is not None
        wire.verify_signature(frame, keys[frame.device])
        for r in frame.readings:
            series[(frame.device, r.channel)].append((r.ts_ms, r.energy_wh, r.power_w))
    assert len(series) == 3 * 5  # main import+export, sub1, sub2, pv per site
    solar_noon_seen = False
    for (device, channel), rows in series.items():
        ts, reg, pw = (np.array(c) for c in zip(*rows, strict=True))
        assert np.all(np.diff(ts) > 0)
        assert np.all(np.diff(reg) >= 0), f"{device}/{channel} register went down"
        assert np.all(pw >= 0)
        integral_wh = float(np.sum(pw[1:]) * 60 / 3600)
        measured_wh = float(reg[-1] - reg[0])
        assert abs(measured_wh - integral_wh) <= max(0.02 * integral_wh, 2 + len(ts) * 0.01), (device, channel)
        if channel == "pv":
            hours = (ts % 86_400_000) / 3_600_000
            site = next(s for s in run.sites if device.startswith(s.site))
            local_solar_hour = (hours + site.lon / 15) % 24
            night = (local_solar_hour < 3) | (local_solar_hour > 22)
            assert np.all(pw[night] == 0), f"{device} produces at night"
            solar_noon_seen |= bool(np.any(pw[(local_solar_hour > 11) & (local_solar_hour < 13)] > 0))
    assert solar_noon_seen


def test_greenwash_scenario_has_a_truth_record_for_every_fault_kind() -> None:
    sc = load_scenario(ROOT / "scenarios" / "greenwash.yaml")
    run = simulate(scenario=sc, clock=FIXED_CLOCK)
    assert {t.kind for t in run.truth} == set(EXPECT)
    for t in run.truth:
        assert t.expect == EXPECT[t.kind]
        assert t.start_ms < t.end_ms


@pytest.fixture(scope="module")
def greenwash():  # type: ignore[no-untyped-def]
    sc = load_scenario(ROOT / "scenarios" / "greenwash.yaml")
    run = simulate(scenario=sc, clock=FIXED_CLOCK)
    return run, decode_all(run)


def frames_of(decoded, device):  # type: ignore[no-untyped-def]
    return [(m, f) for m, f in decoded if f is not None and m.device == device]


def test_each_quarantine_fault_produces_the_frame_that_ingest_must_refuse(greenwash) -> None:  # type: ignore[no-untyped-def]
    run, decoded = greenwash
    keys = {d.device: d.record.verifying_key() for d in run.devices}
    for t in run.truth:
        if t.kind in ("malformed_json", "malformed_schema"):
            bad = [m for m, f in decoded if m.device == t.device and m.seq is None]
            assert bad, t.kind
            with pytest.raises(wire.WireError) as err:
                wire.decode_frame(bad[0].payload)
            assert err.value.reason == t.expect.split(":")[1]
        elif t.kind in ("forged_signature", "impersonation"):
            same_seq = [f for m, f in frames_of(decoded, t.device) if f.seq == t.seqs[0]]
            assert len(same_seq) == 2  # the genuine frame and the fake one
            verdicts = []
            for f in same_seq:
                try:
                    wire.verify_signature(f, keys[t.device])
                    verdicts.append("ok")
                except wire.WireError as err:
                    verdicts.append(err.reason)
            assert sorted(verdicts) == ["bad_signature", "ok"]
        elif t.kind == "replayed_frame":
            same_seq = [f for m, f in frames_of(decoded, t.device) if f.seq == t.seqs[0]]
            assert len(same_seq) == 2 and same_seq[0].readings != same_seq[1].readings
        elif t.kind == "duplicate_frame":
            payloads = [m.payload for m, f in frames_of(decoded, t.device) if f.seq == t.seqs[0]]
            assert len(payloads) == 2 and payloads[0] == payloads[1]
        elif t.kind == "clock_skew":
            (f,) = [f for m, f in frames_of(decoded, t.device) if f.seq == t.seqs[0]]
            assert f.sent_ms - FIXED_CLOCK() >= 3600_000


def test_each_data_fault_leaves_its_mark_in_the_readings(greenwash) -> None:  # type: ignore[no-untyped-def]
    run, decoded = greenwash
    rated = {d.device: d.record.rated_power_w for d in run.devices}
    for t in run.truth:
        if not t.expect.startswith("finding:"):
            continue
        rows = sorted((r.ts_ms, r.energy_wh, r.power_w) for m, f in frames_of(decoded, t.device)
                      for r in f.readings if r.channel in ("import", "pv"))
        ts, reg, pw = (np.array(col) for col in zip(*rows, strict=True))
        inside = (ts >= t.start_ms) & (ts < t.end_ms)
        if t.kind == "register_rollback":
            assert np.any(np.diff(reg) < 0)
        elif t.kind == "stuck_register":
            assert np.all(np.diff(reg[inside]) == 0) and np.all(pw[inside] > 0)
        elif t.kind == "gap":
            assert not np.any(inside)
        elif t.kind == "spike":
            assert pw[inside].max() > 5 * np.median(pw)
        elif t.kind == "over_rating":
            assert np.all(pw[inside] > rated[t.device])
        elif t.kind == "pv_at_night":
            assert np.any(pw[inside] > 0)
        elif t.kind == "pv_inflated":
            assert pw[inside].max() > 0
        elif t.kind == "clock_drift":
            off = (ts[inside] - t.start_ms) % 60_000
            assert off.max() > 0  # readings no longer on the minute grid


def test_fault_outside_the_period_is_refused() -> None:
    sc = parse_scenario("name: x\ndays: 1\nfaults:\n  - {kind: spike, start_h: 30}\n")
    with pytest.raises(ScenarioError, match="after the simulated period"):
        simulate(scenario=sc)


@pytest.mark.parametrize("text, where", [
    ("name: x\nsites: many\n", ":2: field `sites`"),
    ("name: x\nfaults:\n  - kind: spike\n    start_h: 1\n  - kind: teleport\n    start_h: 2\n", ":5: field `faults.1.kind`"),
    ("name: x\nfaults:\n  - kind: spike\n", "`faults.0`"),
    ("name: x\nbogus: 1\n", "bogus"),
    ("name: [unclosed\n", "not valid YAML"),
])
def test_malformed_scenarios_name_file_line_and_field(text: str, where: str) -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(text, "bad.yaml")
    assert str(err.value).startswith("bad.yaml:")
    assert where in str(err.value)
