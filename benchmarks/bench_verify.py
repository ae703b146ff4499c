"""Verify end to end from a real PostgreSQL: every stored reading of every sealed batch re-canonicalised,
re-hashed and compared with the anchored leaves, every frame's SHA-256 and Ed25519 signature re-checked.
Ours (bulk: binary COPY, columns, 2 processes) side by side with the row-by-row replay (a sample of
batches, extrapolated), same store, same run.

    .venv/bin/python -m benchmarks.bench_verify [--quick]    # 10M readings; --quick: 1M

Setup (not timed): simulated fleet (15 readings/frame, the simulator's default) → ``ingest_payloads``
(the real validating writer) → ``seal_windows`` on a local ledger, into an embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import psycopg

from benchmarks._common import table, write_section
from firmware_sim.sim import simulate
from ingest.pipeline import ingest_payloads
from ingest.registry import register_device
from ingest.schema import upgrade
from ledger.local import LocalLedger
from ledger.seal import seal_windows
from ledger.verify import verify, verify_rows
from wattproof.embedded import Postgres

START = 1_780_272_000_000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--readings", type=int, default=None)
    args = ap.parse_args()
    target = args.readings or (1_000_000 if args.quick else 10_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        pg = Postgres(Path(tmp) / "pg").start()
        try:
            run(pg.dsn, Path(tmp), target)
        finally:
            pg.stop()


def run(dsn: str, tmp: Path, target: int) -> None:
    upgrade(dsn)
    probe = simulate(sites=1, days=1.0, seed=5, start_ms=START)
    per_site_day = sum(m.n_readings for m in probe.messages())
    sites = 10
    days = target / (per_site_day * sites)
    t0 = time.perf_counter()
    sim = simulate(sites=sites, days=days, seed=5, start_ms=START)
    for d in sim.devices:
        register_device(dsn, d.record)
    ingest_payloads(dsn, ((m.topic, m.payload) for m in sim.messages()))
    led = LocalLedger.open(tmp / "ledger")
    made = seal_windows(dsn, led, now_ms=START + int((days + 1) * 86_400_000))
    n = sum(b.header.leaf_count for b in made)
    frames = len({(d, s) for b in made for d, s, _ in b.leaf_keys})
    print(f"setup: {n:,} readings, {frames:,} frames, {len(made):,} batches in {time.perf_counter() - t0:.0f} s")
    del made

    rows = []
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        reports = verify(dsn, led)
        best = min(best, time.perf_counter() - t0)
        assert len(reports) > 0 and all(r.status == "intact" for r in reports)
    rows.append(["ours: binary COPY + column leaves (Numba, OpenSSL SHA-256) + 2 processes for frames", f"{n:,}",
                 f"{best:.1f}", f"{n / best:,.0f}"])

    site = sim.devices[0].record.site
    t0 = time.perf_counter()
    sample = verify_rows(dsn, led, site=site)
    dt = time.perf_counter() - t0
    with psycopg.connect(dsn) as conn:
        ns = conn.execute("SELECT sum(leaf_count) FROM batches WHERE site_id = %s", (site,)).fetchone()[0]  # type: ignore[index]
    assert all(r.status == "intact" for r in sample)
    rows.append([f"naive: row-by-row replay, one query + one Leaf per reading (site {site}, extrapolated)",
                 f"{ns:,}", f"{dt * n / ns:.1f}", f"{ns / dt:,.0f}"])
    body = table(["verify path", "readings", "seconds", "readings/s"], rows)
    body += (f"\n\n{n:,} stored readings in {len(reports):,} batches ({frames:,} signed frames, {n / frames:.1f} readings each: the simulator's default), "
             f"{sites} sites; best of 2 runs, timed from connect to report, reading everything from PostgreSQL. "
             f"Ours = {dt * n / ns / best:.1f}× the row-by-row replay. Target: 10M readings ≤ 30 s.")
    print(body)
    write_section("bench_verify", "Verify (store + ledger replay)", body)


if __name__ == "__main__":
    main()
