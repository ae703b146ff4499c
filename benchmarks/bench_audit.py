"""Audit: each Numba kernel's readings/s side by side with pandas and plain numpy on the same
synthetic arrays, the memory-bandwidth ceiling (a numpy sum over the same bytes), and a full
audit (`run_audit`: binary-COPY loading from PostgreSQL, every detector, findings stored) of a
simulated fleet, one year at 1-minute resolution.

    .venv/bin/python -m benchmarks.bench_audit [--quick] [--sites N] [--days D] [--pgdata DIR]

Kernels: 50M readings (5M with --quick), best of 2 for ours and numpy; pandas best of 2 too,
except where said (a sample, extrapolated). Each row says what it computes.
Full audit: the store is built by binary COPY of the simulated readings and frames straight into a
database made by ``ingest.schema.upgrade`` on ``wattproof.embedded.Postgres`` (as bench_ingest's
ceiling does; the rollup trigger is disabled while loading: the audit does not read rollups).
``--pgdata DIR`` keeps that cluster and reuses it on the next run (the build takes minutes).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg

from audit.kernels import bucket_energy, register_vs_power, rolling_median_mad, runs
from audit.run import run_audit
from benchmarks._common import table, timed, write_section

BUCKET_MS = 900_000
HOUR_MS = 3_600_000
PG_EPOCH_MS = 946_684_800_000


def rate(n: int, seconds: float) -> str:
    r = n / seconds / 1e6
    return f"{r:,.1f}" if r >= 1 else f"{r:.3g}"


def kernel_rows(n: int) -> tuple[list[list[str]], str]:
    rng = np.random.default_rng(0)
    ts = np.arange(n, dtype=np.int64) * 60_000 + rng.integers(-2_000, 2_000, n)  # 1-minute readings, jitter
    ts.sort()
    e = np.cumsum(rng.integers(0, 40, n)).astype(np.int64)  # a register that never falls
    p = (rng.gamma(2.0, 400.0, n)).round()  # W, float as the detectors use it
    rows: list[list[str]] = []
    notes = []

    # bucketing: energy per 15 minutes, each register step apportioned across bucket edges by time
    bucket_energy(ts[:1000], e[:1000], BUCKET_MS)
    t_k = timed(lambda: bucket_energy(ts, e, BUCKET_MS), 2)
    starts, ours = bucket_energy(ts, e, BUCKET_MS)
    edges = np.arange(starts[0], starts[-1] + 2 * BUCKET_MS, BUCKET_MS)

    def numpy_bucket() -> np.ndarray:  # the register interpolated at every edge, differenced
        return np.diff(np.interp(edges, ts, e))

    def pandas_bucket() -> pd.Series:  # what a pandas user writes for the same apportioned answer
        s = pd.Series(e.astype(np.float64), index=pd.to_datetime(ts, unit="ms"))
        grid = pd.to_datetime(edges, unit="ms")
        at_edges = s.reindex(s.index.union(grid)).interpolate(method="time").reindex(grid)
        return at_edges.diff().iloc[1:]

    t_np = timed(numpy_bucket, 2)
    t_pd = timed(pandas_bucket, 2)
    inner = slice(1, -2)  # edges before the first / after the last reading are extrapolated differently
    assert np.allclose(numpy_bucket()[inner], ours[inner], rtol=1e-9, atol=1e-6)
    assert np.allclose(pandas_bucket().to_numpy()[inner], ours[inner], rtol=1e-9, atol=1e-6)
    rows += [
        ["bucket_energy (15 min, apportioned across edges)", "Numba kernel, one core", rate(n, t_k), "1.0×"],
        ["", "numpy: `np.interp` of the register at each edge + `np.diff` (same answer only if the register never falls)",
         rate(n, t_np), f"{t_k / t_np:.2f}×"],
        ["", "pandas: union index with the edges, `interpolate(method='time')`, reindex to edges, `diff` (same caveat)",
         rate(n, t_pd), f"{t_k / t_pd:.3f}×"],
    ]
    notes.append(f"bucket_energy = {t_pd / t_k:.0f}× pandas (same apportioned answer, checked equal to 1e-9 on "
                 f"every inner bucket)")

    # register vs ∫power dt per hour (trapezoid, band, coverage; gaps, rollbacks, NaN skipped)
    register_vs_power(ts[:1000], e[:1000], p[:1000], HOUR_MS, 300_000)
    t_k = timed(lambda: register_vs_power(ts, e, p, HOUR_MS, 300_000), 2)

    def numpy_rvp() -> tuple[np.ndarray, ...]:
        dt = np.diff(ts)
        de = np.diff(e)
        ok = (dt > 0) & (dt <= 300_000) & (de >= 0) & ~np.isnan(p[1:]) & ~np.isnan(p[:-1])
        w = ts[:-1][ok] // HOUR_MS
        w -= w[0]
        dth = dt[ok] / 3_600_000.0
        return (np.bincount(w, de[ok]), np.bincount(w, 0.5 * (p[1:][ok] + p[:-1][ok]) * dth),
                np.bincount(w, 0.5 * np.abs(p[1:][ok] - p[:-1][ok]) * dth), np.bincount(w, dt[ok]))

    def pandas_rvp() -> pd.DataFrame:
        df = pd.DataFrame({"ts": ts, "e": e, "p": p})
        d = df.diff()
        d["p_mean"] = 0.5 * (df["p"] + df["p"].shift())
        d["hour"] = df["ts"].shift() // HOUR_MS
        d = d[(d.ts > 0) & (d.ts <= 300_000) & (d.e >= 0) & d.p_mean.notna()]
        return pd.DataFrame({"register": d.e, "power": d.p_mean * d.ts / 3.6e6, "band": 0.5 * d.p.abs() * d.ts / 3.6e6,
                             "covered": d.ts, "hour": d.hour}).groupby("hour").sum()

    t_np = timed(numpy_rvp, 2)
    t_pd = timed(pandas_rvp, 2)
    rows += [
        ["register_vs_power (per hour: register, trapezoid ∫p dt, band, coverage)", "Numba kernel, one core",
         rate(n, t_k), "1.0×"],
        ["", "numpy: diffs, mask, four `np.bincount`", rate(n, t_np), f"{t_k / t_np:.2f}×"],
        ["", "pandas: `diff`, mask, `groupby(hour).sum()`", rate(n, t_pd), f"{t_k / t_pd:.2f}×"],
    ]

    # rolling median and MAD over 61 readings (the spike detector)
    rolling_median_mad(p[:1000], 30)
    t_k = timed(lambda: rolling_median_mad(p, 30), 2)
    m_np, m_pd = 500_000, 50_000
    sample = p[:m_np]

    def numpy_rmm() -> tuple[np.ndarray, np.ndarray]:  # full windows only (edges shrink in ours)
        w = np.lib.stride_tricks.sliding_window_view(sample, 61)
        med = np.median(w, axis=1)
        return med, np.median(np.abs(w - med[:, None]), axis=1)

    def pandas_rmm() -> tuple[pd.Series, pd.Series]:
        s = pd.Series(p[:m_pd])
        roll = s.rolling(61, center=True, min_periods=1)
        return roll.median(), roll.apply(lambda w: np.median(np.abs(w - np.median(w))), raw=True)

    t_np = timed(numpy_rmm, 2)
    t_pd = timed(pandas_rmm, 1)
    t_pd_median = timed(lambda: pd.Series(p).rolling(61, center=True, min_periods=1).median(), 2)
    rows += [
        ["rolling_median_mad (61 readings, centred)", "Numba kernel (sorted window slides; MAD by merging), one core",
         rate(n, t_k), "1.0×"],
        ["", f"numpy: `sliding_window_view` + `np.median` twice (sample of {m_np:,}, extrapolated)", rate(m_np, t_np),
         f"{t_k / (t_np * n / m_np):.3f}×"],
        ["", f"pandas: `rolling(61, center=True).median()` + `.apply(MAD, raw=True)` (sample of {m_pd:,}, one run, "
         "extrapolated)", rate(m_pd, t_pd), f"{t_k / (t_pd * n / m_pd):.4f}×"],
        ["", "pandas: `rolling(61, center=True).median()` alone (no MAD: pandas has no rolling MAD)",
         rate(n, t_pd_median), f"{t_k / t_pd_median:.2f}×"],
    ]

    # runs of True (stuck registers, over-rating, night PV, ...)
    mask = p > np.quantile(p[:100_000], 0.9)
    runs(mask[:100], 3)
    t_k = timed(lambda: runs(mask, 3), 2)

    def numpy_runs() -> np.ndarray:
        d = np.diff(np.concatenate(([0], mask.view(np.int8), [0])))
        a, b = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
        keep = b - a >= 3
        return np.stack([a[keep], b[keep]], axis=1)

    t_np = timed(numpy_runs, 2)
    assert np.array_equal(numpy_runs(), runs(mask, 3))
    rows += [
        ["runs (≥ 3 consecutive True)", "Numba kernel, one core", rate(n, t_k), "1.0×"],
        ["", "numpy: `diff` of the padded mask, `flatnonzero`", rate(n, t_np), f"{t_k / t_np:.2f}×"],
    ]

    t_ceiling = timed(lambda: (ts.sum(), e.sum(), p.sum()), 2)
    rows.append(["ceiling", "numpy sum over ts, energy and power (24 bytes a reading)", rate(n, t_ceiling), ""])
    return rows, "; ".join(notes)


# --- the store -----------------------------------------------------------------------------------

def _copy_block(fields: list[tuple[str, np.ndarray | bytes]], n: int) -> bytes:
    """Rows of a binary COPY (PostgreSQL docs, "COPY — Binary Format") from constant text or int columns."""
    dtype: list[tuple[str, str]] = [("nf", ">i2")]
    for k, (kind, val) in enumerate(fields):
        dtype.append((f"l{k}", ">i4"))
        dtype.append((f"v{k}", f"S{len(val)}" if isinstance(val, bytes) else kind))
    rec = np.empty(n, dtype=dtype)
    rec["nf"] = len(fields)
    for k, (kind, val) in enumerate(fields):
        rec[f"l{k}"] = len(val) if isinstance(val, bytes) else np.dtype(kind).itemsize
        rec[f"v{k}"] = val
    return rec.tobytes()


def build_store(dsn: str, sites: int, days: float) -> tuple[int, float]:
    """Simulate the fleet and COPY its readings and frames in; (readings, seconds)."""
    from firmware_sim.sim import simulate

    t0 = time.perf_counter()
    run = simulate(sites=sites, days=days, seed=5, start_ms=1_735_689_600_000, frame_readings=15)  # 2025-01-01
    plans = run._plans  # the simulator's arrays: readings are written here without signing frames
    with psycopg.connect(dsn) as conn:
        for m in run.sites:
            conn.execute("INSERT INTO sites (site_id, lat, lon) VALUES (%s, %s, %s)", (m.site, m.lat, m.lon))
        for pl in plans:
            r = pl.dev.record
            conn.execute("INSERT INTO devices (device_id, site_id, kind, public_key, rated_power_w, lat, lon) "
                         "VALUES (%s, %s, %s, %s, %s, %s, %s)", (r.device, r.site, r.kind, bytes(32), r.rated_power_w,
                                                                r.lat, r.lon))
        t = plans[0].ts_ms
        for month in pd.date_range(pd.Timestamp(int(t[0]), unit="ms").to_period("M").to_timestamp(),
                                   pd.Timestamp(int(t[-1]), unit="ms"), freq="MS"):
            conn.execute("SELECT ensure_readings_partition(%s)", (month.tz_localize("UTC").to_pydatetime(),))
        conn.execute("ALTER TABLE readings DISABLE TRIGGER readings_rollup_insert")
        conn.commit()

    def load(part: list) -> None:  # type: ignore[type-arg]
        with psycopg.connect(dsn) as conn, conn.cursor() as cur:
            for pl in part:
                dev = pl.dev.device.encode()
                k = np.arange(pl.ts_ms.size, dtype=np.int64)
                seq = pl.seq0 + k // run.frame_readings
                nch = len(pl.channels)
                ts_pg = (pl.ts_ms - PG_EPOCH_MS) * 1000
                last = np.minimum((np.unique(seq) - pl.seq0 + 1) * run.frame_readings, k.size) - 1
                fseq = np.unique(seq)
                sent = pl.ts_ms[last] + 500
                with cur.copy("COPY frames (device_id, seq, sent_ms, received_at, frame_sha256, raw_zstd, n_readings) "
                              "FROM STDIN (FORMAT BINARY)") as cp:
                    cp.write(b"PGCOPY\n\xff\r\n\x00" + bytes(8))
                    cp.write(_copy_block([("", dev), (">i8", fseq), (">i8", sent), (">i8", (sent + 200 - PG_EPOCH_MS) * 1000),
                                          ("", bytes(32)), ("", b"\x28\xb5\x2f\xfd"),
                                          (">i4", np.bincount(seq - pl.seq0).astype(np.int64) * nch)], fseq.size))
                    cp.write(b"\xff\xff")
                with cur.copy("COPY readings (device_id, seq, idx, ts, channel, energy_wh, power_w) "
                              "FROM STDIN (FORMAT BINARY)") as cp:
                    cp.write(b"PGCOPY\n\xff\r\n\x00" + bytes(8))
                    for ci, ch in enumerate(pl.channels):
                        idx = (k % run.frame_readings) * nch + ci
                        cp.write(_copy_block([("", dev), (">i8", seq), (">i4", idx), (">i8", ts_pg),
                                              ("", ch.name.encode()), (">i8", ch.energy_wh),
                                              (">i8", np.rint(ch.power_w).astype(np.int64))], k.size))
                    cp.write(b"\xff\xff")
                conn.commit()

    threads = [threading.Thread(target=load, args=(plans[i::2],)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE readings")
        conn.execute("VACUUM ANALYZE frames")
        n = int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])  # type: ignore[index]
    return n, time.perf_counter() - t0


def audit_rows(args: argparse.Namespace) -> tuple[list[list[str]], str]:
    from wattproof.embedded import Postgres

    keep = args.pgdata is not None
    root = Path(args.pgdata) if keep else Path(tempfile.mkdtemp(prefix="bench-audit-"))
    pg = Postgres(root / "pg").start()
    try:
        dsn = pg.dsn.rsplit("/", 1)[0] + "/bench_audit"
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'bench_audit'").fetchone() is not None
        if exists:
            with psycopg.connect(dsn) as conn:
                n = int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])  # type: ignore[index]
            build = "reused"
        else:
            from ingest.schema import upgrade

            with psycopg.connect(pg.dsn, autocommit=True) as conn:
                conn.execute("CREATE DATABASE bench_audit")
            upgrade(dsn)
            n, build_s = build_store(dsn, args.sites, args.days)
            build = f"built in {build_s:.0f} s"
        with psycopg.connect(dsn) as conn:
            n_dev = int(conn.execute("SELECT count(*) FROM devices").fetchone()[0])  # type: ignore[index]
            device = conn.execute("SELECT device_id FROM devices WHERE kind = 'main_meter' ORDER BY 1 LIMIT 1").fetchone()[0]  # type: ignore[index]

        def clean() -> None:
            with psycopg.connect(dsn) as conn:
                conn.execute("DELETE FROM findings")

        times, found = {}, {}
        for workers in (2, 1):
            best = float("inf")
            for _ in range(2):
                clean()
                t0 = time.perf_counter()
                found[workers] = run_audit(dsn, workers=workers)
                best = min(best, time.perf_counter() - t0)
            times[workers] = best
        assert found[1] == found[2]

        def naive_load() -> int:  # the previous loader: a plain SELECT, rows to Python tuples, then numpy
            with psycopg.connect(dsn) as conn:
                rows = conn.execute("SELECT (extract(epoch FROM ts) * 1000)::bigint, channel, energy_wh, power_w, seq "
                                    "FROM readings WHERE device_id = %s ORDER BY channel, seq, idx", (device,)).fetchall()
                np.array([(r[0], r[2], r[3], r[4]) for r in rows], dtype=np.int64)
                return len(rows)

        n_naive = naive_load()
        t_naive = timed(naive_load, 2)
    finally:
        pg.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    rows = [
        [f"full audit, 2 worker processes: {n_dev} devices, {n:,} readings", f"{times[2]:.1f}", f"{n / times[2]:,.0f}"],
        ["full audit, 1 process (same store, same findings)", f"{times[1]:.1f}", f"{n / times[1]:,.0f}"],
        [f"previous loader alone: plain SELECT ORDER BY channel, seq, idx → tuples → numpy (1 device, {n_naive:,} "
         "readings, extrapolated)", f"{t_naive * n / n_naive:.0f}", f"{n_naive / t_naive:,.0f}"],
    ]
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(found[2].items())) or "none"
    note = (f"store: {args.sites} simulated sites × 4 devices (main meter: import and export registers), {args.days:g} days "
            f"at 1 minute, frames of 15 readings ({build}); findings on this clean fleet: {kinds}")
    return rows, note


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sites", type=int, default=None, help="simulated sites (4 devices, 5 registers each)")
    ap.add_argument("--days", type=float, default=None)
    ap.add_argument("--pgdata", default=None, help="keep the store's cluster here and reuse it")
    ap.add_argument("--skip-kernels", action="store_true")
    args = ap.parse_args()
    args.sites = args.sites or (2 if args.quick else 20)
    args.days = args.days or (30 if args.quick else 365)
    n = 5_000_000 if args.quick else 50_000_000
    body = ""
    if not args.skip_kernels:
        krows, knote = kernel_rows(n)
        body += table([f"kernel ({n:,} synthetic readings)", "implementation", "M readings/s", "speed vs ours"], krows)
        body += f"\n\n{knote}.\n\n"
    arows, anote = audit_rows(args)
    body += table(["full audit from PostgreSQL (`run_audit`: load by binary COPY, all detectors, store findings)",
                   "seconds (best of 2)", "readings/s"], arows)
    body += (f"\n\n{anote}. Targets: bucketing ≥ 100M readings/s on one core and ≥ 20× pandas; a full audit of 1 year × "
             "100 devices at 1 minute (≈ 52.6M readings) ≤ 60 s including loading from PostgreSQL. The store is warm "
             "(just written or read: it fits in the page cache); the machine has 2 cores shared by PostgreSQL and the "
             "workers.")
    print(body)
    write_section("bench_audit", "Audit", body)


if __name__ == "__main__":
    main()
