"""Claims: every claim figure for an organisation of 100 sites × 1 year of hourly data, from the store,
ours (``audit.claims.load`` binary COPY of ``readings_15min`` + ``audit.claims.compute`` in numpy)
side by side with the pandas reference (``audit.claims.reference``: ``energy_hourly`` read into a
DataFrame, pivots and groupbys) in the same run, asserting both give the same numbers.

    .venv/bin/python -m benchmarks.bench_claims [--quick] [--sites N] [--days D] [--pgdata DIR] [--no-results]

Figures computed (both implementations): site hours of every site; the organisation's hourly
totals; coverage; renewable share annual volumetric and hourly matched (24/7 CFE); Scope 2
location- and market-based for the reporting year and a base year, and both reductions; on-site
generation; plus per site: coverage, Scope 2 location-based and on-site generation.
Store (not timed, reported): the simulator's fleet at one reading an hour (main meter import/export,
PV inverter), readings written by binary COPY straight into ``readings`` with the rollup trigger on, so
``readings_15min`` is what the triggers make of them (a benchmark of claims, not of ingest).
Inputs are synthetic: a diurnal grid intensity (base year 15 % higher), certificates for 60 % of the
import with an hourly supply shaped like wind, a residual mix of 420 g/kWh.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from audit.claims import compute as c
from audit.claims import reference as ref
from audit.claims.load import PG_EPOCH_MS, load_site_hours
from audit.claims.model import HOUR_MS, Figure, SiteHours
from benchmarks._common import table, write_section

START = 1_767_225_600_000  # 2026-01-01T00:00Z: the reporting period; data start one hour earlier
RESIDUAL_G_PER_KWH = 420.0


def _copy_block(fields: list[tuple[str, np.ndarray | bytes]], n: int) -> bytes:
    """Rows of a binary COPY (PostgreSQL docs, "COPY — Binary Format") from constant text or int columns."""
    dtype: list[tuple[str, str]] = [("nf", ">i2")]
    for k, (kind, val) in enumerate(fields):
        dtype += [(f"l{k}", ">i4"), (f"v{k}", f"S{len(val)}" if isinstance(val, bytes) else kind)]
    rec = np.empty(n, dtype=dtype)
    rec["nf"] = len(fields)
    for k, (kind, val) in enumerate(fields):
        rec[f"l{k}"] = len(val) if isinstance(val, bytes) else np.dtype(kind).itemsize
        rec[f"v{k}"] = val
    return rec.tobytes()


def build_store(dsn: str, sites: int, days: float) -> tuple[list[str], int, float]:
    """Simulate the fleet at 1 reading/hour and COPY main and PV registers in: (site ids, readings, s)."""
    from firmware_sim.sim import simulate

    t0 = time.perf_counter()
    run = simulate(sites=sites, days=days + 1 / 24, seed=13, start_ms=START - HOUR_MS, interval_s=3600)
    plans = [p for p in run._plans if p.dev.role in ("main", "pv")]  # the simulator's arrays, unsigned
    with psycopg.connect(dsn) as conn:
        for m in run.sites:
            conn.execute("INSERT INTO sites (site_id, lat, lon) VALUES (%s, %s, %s)", (m.site, m.lat, m.lon))
        for pl in run._plans:
            r = pl.dev.record
            conn.execute("INSERT INTO devices (device_id, site_id, kind, public_key, rated_power_w, lat, lon) "
                         "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                         (r.device, r.site, r.kind, bytes(32), r.rated_power_w, r.lat, r.lon))
        t = plans[0].ts_ms
        for month in pd.date_range(pd.Timestamp(int(t[0]), unit="ms").to_period("M").to_timestamp(),
                                   pd.Timestamp(int(t[-1]), unit="ms"), freq="MS"):
            conn.execute("SELECT ensure_readings_partition(%s)", (month.tz_localize("UTC").to_pydatetime(),))
        conn.commit()

    def load(part: list[Any]) -> None:
        with psycopg.connect(dsn) as conn, conn.cursor() as cur:
            for pl in part:
                dev, n = pl.dev.device.encode(), pl.ts_ms.size
                with cur.copy("COPY readings (device_id, seq, idx, ts, channel, energy_wh, power_w) "
                              "FROM STDIN (FORMAT BINARY)") as cp:
                    cp.write(b"PGCOPY\n\xff\r\n\x00" + bytes(8))
                    for ci, ch in enumerate(pl.channels):
                        cp.write(_copy_block([("", dev), (">i8", np.arange(n, dtype=np.int64)),
                                              (">i4", np.full(n, ci, np.int32)),
                                              (">i8", (pl.ts_ms - PG_EPOCH_MS) * 1000), ("", ch.name.encode()),
                                              (">i8", ch.energy_wh), (">i8", np.rint(ch.power_w).astype(np.int64))],
                                             n))
                    cp.write(b"\xff\xff")
                conn.commit()  # the statement trigger folds this device's readings into readings_15min

    threads = [threading.Thread(target=load, args=(plans[i::2],)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE readings_15min")
        n = int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])  # type: ignore[index]
    return [m.site for m in run.sites], n, time.perf_counter() - t0


def inputs(hours: int, import_wh: float) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    hod = np.arange(hours) % 24
    ci = 300 + 120 * np.sin((hod - 13) / 24 * 2 * np.pi) + rng.normal(0, 20, hours)
    wind = rng.gamma(0.8, 1.0, hours // 24 + 1).repeat(24)[:hours] * rng.uniform(0.6, 1.4, hours)
    certs = 0.6 * import_wh
    return {"ci": ci, "ci_base": ci * 1.15, "certs": certs, "supply": wind / wind.sum() * certs}


def ours(dsn: str, site_ids: list[str], end_ms: int, inp: dict[str, Any]) -> tuple[list[SiteHours], dict[str, Figure]]:
    sites = load_site_hours(dsn, site_ids, START, end_ms)
    return sites, figures(c, c.aggregate(sites), sites, inp)


def pandas_reference(dsn: str, site_ids: list[str], end_ms: int,
                     inp: dict[str, Any]) -> tuple[list[SiteHours], dict[str, Figure]]:
    with psycopg.connect(dsn) as conn:
        long = ref.load_site_hours(conn, site_ids, START, end_ms)
    per_site = [g.set_index("hour").drop(columns="site") for _, g in long.groupby("site", sort=False)]
    figs = figures(ref, ref.aggregate(long), per_site, inp)
    return ref.to_site_hours(long, START), figs


def figures(m: Any, org: Any, sites: list[Any], inp: dict[str, Any]) -> dict[str, Figure]:
    """Every figure, by module ``m`` (compute or reference) on its own organisation and site data."""
    out: dict[str, Figure] = {}
    cov = m.coverage(org)
    out |= {"coverage_energy_weighted": cov.energy_weighted, "coverage_hours_full": cov.hours_full}
    out["share_annual"] = m.renewable_share_annual(org, inp["certs"])
    out["share_hourly"] = m.renewable_share_hourly(org, inp["supply"])
    loc, loc_base = m.scope2_location(org, inp["ci"]), m.scope2_location(org, inp["ci_base"])
    mkt = m.scope2_market(org, inp["certs"], None, RESIDUAL_G_PER_KWH)
    mkt_base = m.scope2_market(org, 0.0, None, RESIDUAL_G_PER_KWH * 1.15)
    out |= {"scope2_location": loc, "scope2_market": mkt, "reduction_location": m.scope2_reduction(loc_base, loc),
            "reduction_market": m.scope2_reduction(mkt_base, mkt)}
    gen = m.onsite_generation(org)
    out |= {"onsite_produced": gen.produced, "onsite_self_consumed": gen.self_consumed}
    for i, s in enumerate(sites):
        out[f"site{i}.coverage"] = m.coverage(s).energy_weighted
        out[f"site{i}.scope2_location"] = m.scope2_location(s, inp["ci"])
        out[f"site{i}.onsite_produced"] = m.onsite_generation(s).produced
    return out


def assert_same(a: dict[str, Figure], b: dict[str, Figure]) -> int:
    """Every figure and every total equal to 1e-9 relative; returns how many numbers were compared."""
    assert a.keys() == b.keys()
    n = 0
    for k in a:
        fa, fb = a[k], b[k]
        assert np.isclose(fa.value, fb.value, rtol=1e-9, atol=1e-12), (k, fa.value, fb.value)
        for t in fa.totals:
            assert np.isclose(fa.totals[t], fb.totals[t], rtol=1e-9, atol=1e-6), (k, t, fa.totals[t], fb.totals[t])
        n += 1 + len(fa.totals)
    return n


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    t, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        t = min(t, time.perf_counter() - t0)
    return t, out


def run(args: argparse.Namespace) -> str:
    from wattproof.embedded import Postgres

    keep = args.pgdata is not None
    root = Path(args.pgdata) if keep else Path(tempfile.mkdtemp(prefix="bench-claims-"))
    pg = Postgres(root / "pg").start()
    db = f"bench_claims_{args.sites}_{int(args.days)}"
    try:
        dsn = pg.dsn.rsplit("/", 1)[0] + "/" + db
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone() is not None
        if exists:
            with psycopg.connect(dsn) as conn:
                site_ids = [r[0] for r in conn.execute("SELECT site_id FROM sites ORDER BY 1").fetchall()]
                n_read = int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])  # type: ignore[index]
            build = "reused"
        else:
            from ingest.schema import upgrade

            with psycopg.connect(pg.dsn, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {db}")
            upgrade(dsn)
            site_ids, n_read, build_s = build_store(dsn, args.sites, args.days)
            build = f"built in {build_s:.0f} s"
        with psycopg.connect(dsn) as conn:
            n_roll = int(conn.execute("SELECT count(*) FROM readings_15min").fetchone()[0])  # type: ignore[index]
        end_ms = START + int(args.days * 24) * HOUR_MS
        hours = (end_ms - START) // HOUR_MS
        warm = load_site_hours(dsn, site_ids, START, end_ms)  # JIT-compiled COPY parser, warm page cache
        inp = inputs(hours, float(np.nansum(c.aggregate(warm).import_wh)))
        t_ours, (s_ours, f_ours) = best(lambda: ours(dsn, site_ids, end_ms, inp), 3)
        t_load, _ = best(lambda: load_site_hours(dsn, site_ids, START, end_ms), 3)
        t_pd, (s_pd, f_pd) = best(lambda: pandas_reference(dsn, site_ids, end_ms, inp), 1)
    finally:
        pg.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    for a, b in zip(s_ours, s_pd, strict=True):
        for k in ("import_wh", "export_wh", "pv_wh", "coverage"):
            np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=f"{a.site} {k}")
    n_cmp = assert_same(f_ours, f_pd)
    site_hours = len(site_ids) * hours
    rows: list[list[object]] = [
        ["ours: load (binary COPY of readings_15min, numpy differences) + every figure", f"{t_ours:.2f}",
         f"{site_hours / t_ours:,.0f}", "1.0×"],
        ["  of which load_site_hours", f"{t_load:.2f}", f"{site_hours / t_load:,.0f}", ""],
        ["pandas reference: energy_hourly → DataFrame, pivot/groupby, every figure", f"{t_pd:.2f}",
         f"{site_hours / t_pd:,.0f}", f"{t_pd / t_ours:.1f}× slower"],
    ]
    f = f_ours
    body = table(["claims from PostgreSQL", "seconds", "site-hours/s", "vs ours"], rows)
    body += (f"\n\n{len(site_ids)} sites × {hours:,} hours ({args.days:g} days): {n_read:,} hourly readings "
             f"(main import/export, PV), {n_roll:,} rollup rows; store {build}. Both give the same site hours "
             f"(exactly) and the same {len(f)} figures ({n_cmp:,} numbers with their totals, 1e-9 relative). "
             f"Ours best of 3, pandas one run. Target: ≤ 10 s for ours. Figures: renewable share annual "
             f"{f['share_annual'].value:.3f} / hourly {f['share_hourly'].value:.3f}; Scope 2 location "
             f"{f['scope2_location'].value:,.1f} t, market {f['scope2_market'].value:,.1f} t; on-site "
             f"{f['onsite_produced'].value:,.1f} MWh produced, {f['onsite_self_consumed'].value:,.1f} MWh "
             f"self-consumed; coverage {f['coverage_energy_weighted'].value:.4f}.")
    return body


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sites", type=int, default=None)
    ap.add_argument("--days", type=float, default=None)
    ap.add_argument("--pgdata", default=None, help="keep the store's cluster here and reuse it")
    ap.add_argument("--no-results", action="store_true", help="print only; leave RESULTS.md alone")
    args = ap.parse_args()
    args.sites = args.sites or (10 if args.quick else 100)
    args.days = args.days or (30 if args.quick else 365)
    body = run(args)
    print(body)
    if not args.no_results:
        write_section("bench_claims", "Claims", body)


if __name__ == "__main__":
    main()
