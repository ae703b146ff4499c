"""Site energy balance and register vs. integrated power: pure rules, then against a real PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import psycopg

from audit.consistency import balance_findings, register_power_findings
from audit.detectors import Thresholds
from audit.run import run_audit
from firmware_sim.fleet import write_truth
from firmware_sim.scenarios import FaultSpec, Scenario
from firmware_sim.sim import simulate
from ingest.pipeline import ingest_payloads
from ingest.registry import register_device

HOUR = 3_600_000
TH = Thresholds()


def test_balance_holds_to_the_identity_and_flags_a_run_of_bad_hours() -> None:
    hours = np.arange(6, dtype=np.int64) * HOUR
    sub = np.array([1000.0, 1000, 1000, 1000, 1000, 1000])
    pv = np.array([0.0, 400, 1600, 1600, 400, 0])
    imp, exp = np.maximum(sub - pv, 0), np.maximum(pv - sub, 0)
    complete = np.ones(6, bool)
    assert balance_findings("s", hours, imp + 3, exp, sub, pv, complete, TH) == []  # register resolution: quiet
    pv_claimed = pv.copy()
    pv_claimed[2:4] *= 1.3  # PV claims 480 Wh/h the main meter never exported
    found = balance_findings("s", hours, imp, exp, sub, pv_claimed, complete, TH)
    assert [(f.kind, f.start_ms, f.end_ms, f.evidence["hours"]) for f in found] == [("energy_imbalance", 2 * HOUR, 4 * HOUR, 2)]
    assert found[0].evidence["residual_wh"] == 960.0
    complete[2] = False  # an hour some register did not cover is not judged
    assert [f.start_ms for f in balance_findings("s", hours, imp, exp, sub, pv_claimed, complete, TH)] == [3 * HOUR]


def test_register_power_flags_a_register_that_undercounts_beyond_the_sampling_band() -> None:
    w = np.arange(3, dtype=np.int64) * HOUR
    power = np.array([1000.0, 1000.0, 1000.0])
    cov = np.full(3, HOUR)
    band = np.array([30.0, 30.0, 30.0])
    assert register_power_findings("s", "d", "import", w, np.array([1000.0, 960, 1040]), power, band, cov, HOUR, TH) == []
    found = register_power_findings("s", "d", "import", w, np.array([1000.0, 700, 1000]), power, band, cov, HOUR, TH)
    assert [(f.kind, f.start_ms, f.evidence["difference_wh"]) for f in found] == [("register_power_mismatch", HOUR, -300.0)]
    cov[1] = HOUR // 2  # half the hour unseen: no verdict
    assert register_power_findings("s", "d", "import", w, np.array([1000.0, 700, 1000]), power, band, cov, HOUR, TH) == []


# --- against a real PostgreSQL -----------------------------------------------------------------

START = int(np.datetime64("2026-06-01", "ms").astype(np.int64))
PV_WINDOW = (START + 32 * HOUR, START + 36 * HOUR)  # day 2, 08:00–12:00 UTC
TAMPER_WINDOW = (START + 20 * HOUR, START + 26 * HOUR)


def _load_with_synthetic_faults(dsn: str, truth: Path | None = None) -> None:
    """Two sites, two days. s01: PV inflated to 90 % of clear sky — below the clear-sky envelope,
    so only the balance can catch it. s02: sub2's register under-counts by 30 % for six hours
    (written into the store afterwards, as a tampered meter would report it)."""
    pv = FaultSpec(kind="pv_inflated", site=0, device="pv", start_h=32, duration_h=4, factor=0.9)
    run = simulate(scenario=Scenario(name="synthetic", sites=2, days=2, seed=5, start="2026-06-01", faults=[pv]))
    for d in run.devices:
        register_device(dsn, d.record)
    ingest_payloads(dsn, [(m.topic, m.payload) for m in run.messages()])
    if truth is not None:
        write_truth(run, truth)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT seq, idx, (extract(epoch FROM ts) * 1000)::bigint, energy_wh FROM readings "
                            "WHERE device_id = 's02-sub2' ORDER BY seq, idx").fetchall()
        ts = np.array([r[2] for r in rows])
        e = np.array([r[3] for r in rows], dtype=np.int64)
        i0, i1 = np.searchsorted(ts, TAMPER_WINDOW[0]), np.searchsorted(ts, TAMPER_WINDOW[1])
        tampered = e.copy()
        tampered[i0:i1] = e[i0] + ((e[i0:i1] - e[i0]) * 0.7).astype(np.int64)
        tampered[i1:] -= int(e[i1 - 1] - tampered[i1 - 1])
        with conn.cursor() as cur:
            cur.executemany("UPDATE readings SET energy_wh = %s WHERE device_id = 's02-sub2' AND seq = %s AND idx = %s",
                            [(int(v), r[0], r[1]) for v, r, old in zip(tampered, rows, e, strict=True) if v != old])


def _findings(dsn: str) -> list[tuple[str, str, str | None, int, int]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT kind, site_id, device_id, (extract(epoch FROM start_ts) * 1000)::bigint, "
                            "(extract(epoch FROM end_ts) * 1000)::bigint FROM findings ORDER BY 4, 1, 2").fetchall()


def _within(f: tuple, window: tuple[int, int]) -> bool:  # type: ignore[type-arg]
    return f[3] >= window[0] - HOUR and f[4] <= window[1] + HOUR


def test_balance_and_register_power_catch_synthetic_faults_and_nothing_else(store_db: str, tmp_path: Path) -> None:
    _load_with_synthetic_faults(store_db, tmp_path / "truth.jsonl")
    run_audit(store_db)
    found = _findings(store_db)
    pv_imbalance = [f for f in found if f[0] == "energy_imbalance" and f[1] == "s01"]
    assert pv_imbalance and all(_within(f, PV_WINDOW) for f in pv_imbalance)
    assert not any(f[0] == "pv_above_clear_sky" for f in found)  # the inflation hides under the clear-sky envelope
    mismatch = [f for f in found if f[0] == "register_power_mismatch"]
    assert mismatch and all(f[2] == "s02-sub2" and _within(f, TAMPER_WINDOW) for f in mismatch)
    s02_imbalance = [f for f in found if f[0] == "energy_imbalance" and f[1] == "s02"]
    assert s02_imbalance and all(_within(f, TAMPER_WINDOW) for f in s02_imbalance)
    assert {f[0] for f in found} == {"energy_imbalance", "register_power_mismatch"}  # nothing else on this fleet
    # `audit score` keeps its table for the truth's kinds and lists the rest as other findings
    res = subprocess.run([sys.executable, "-m", "wattproof", "audit", "score", "--db", store_db, "--truth",
                          str(tmp_path / "truth.jsonl")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    table, others = res.stdout.split("other findings")
    assert "pv_above_clear_sky" in table and "energy_imbalance" not in table
    n_pv = len(pv_imbalance)  # the tampered register was not injected by the simulator: not "near" a truth record
    assert any(line.split() == ["energy_imbalance", str(n_pv + len(s02_imbalance)), "near", str(n_pv)] for line in others.splitlines())


def test_since_audits_only_from_then_on_and_stays_idempotent(store_db: str) -> None:
    _load_with_synthetic_faults(store_db)
    since = START + 24 * HOUR
    first = run_audit(store_db, since_ms=since)
    assert all(f[3] >= since for f in _findings(store_db))
    assert run_audit(store_db, since_ms=since) == {}
    full = run_audit(store_db)
    after = _findings(store_db)
    assert sum(full.values()) == sum(1 for f in after if f[3] < since)  # the full run added only the earlier part
    assert sum(first.values()) == sum(1 for f in after if f[3] >= since) > 0
    assert run_audit(store_db, site="s02", since_ms=since) == {} and run_audit(store_db) == {}
    res = subprocess.run([sys.executable, "-m", "wattproof", "audit", "run", "--db", store_db, "--site", "s02",
                          "--since", "2026-06-02T00:00"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("0 new findings"), res.stderr
    assert Counter(f[0] for f in after)["register_power_mismatch"] >= 1
