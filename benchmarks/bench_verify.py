"""Verify end to end from a real PostgreSQL: every stored reading of every sealed batch re-canonicalised,
re-hashed and compared with the anchored leaves, every frame's SHA-256 and Ed25519 signature re-checked.
Ours (bulk: binary COPY, columns, 2 processes) side by side with the row-by-row replay (a sample of
batches, extrapolated), same store, same run.

    .venv/bin/python -m benchmarks.bench_verify [--quick]    # 10M readings; --quick: 1M

Setup (not timed, but reported): simulated fleet (15 samples/frame, the simulator's default; real
Ed25519-signed frames) written straight into frames/readings by binary COPY from 2 processes (what
the ingest writer stores, without re-validating each frame), ANALYZE, then ``seal_windows`` (the
bulk store-side sealing) on a local ledger, into an embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import zstandard

from benchmarks._common import table, write_section
from device.wire import decode_frame
from firmware_sim.sim import SimRun, _device_messages, simulate
from ingest.copybin import readings_copy
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
    ap.add_argument("--frame-readings", type=int, default=None,
                    help="Readings per signed frame (default: the simulator's); writes its own RESULTS section.")
    args = ap.parse_args()
    global _FRAME_READINGS
    _FRAME_READINGS = args.frame_readings
    target = args.readings or (1_000_000 if args.quick else 10_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        pg = Postgres(Path(tmp) / "pg").start()
        try:
            run(pg.dsn, Path(tmp), target)
        finally:
            pg.stop()


_SIM: SimRun | None = None
_FRAME_READINGS: int | None = None  # None: the simulator's default
DEFAULT_NOTE = ": the simulator's default"


def _sim_kw() -> dict[str, int]:
    return {} if _FRAME_READINGS is None else {"frame_readings": _FRAME_READINGS}


def _sent_clock(plan: Any) -> Callable[[], int]:
    """The device's clock as each frame leaves: one second after the frame's last reading (the wire format
    bounds a frame's readings to a window before its ``sent_ms``; the simulator asks once per frame, in order)."""
    sends = iter([int(plan.ts_ms[chunk[-1]]) + 1000 for chunk in plan.frames])
    return lambda: next(sends)


def _load_part(args: tuple[str, int, int]) -> tuple[int, int]:
    """COPY the frames and readings of every ``parts``-th device of the fork-inherited simulation."""
    dsn, part, parts = args
    assert _SIM is not None
    z = zstandard.ZstdCompressor(level=3)
    n_frames = n_readings = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        for plan in _SIM._plans[part::parts]:
            frames, readings, queue = [], [], []
            for m in _device_messages(plan, _sent_clock(plan)):
                f = decode_frame(m.payload)
                frames.append((f.device, f.seq, f.sent_ms, hashlib.sha256(m.payload).digest(), z.compress(m.payload),
                               len(f.readings)))
                ts = [r.ts_ms for r in f.readings]
                queue.append((f.device, f.seq, min(ts), max(ts)))
                readings.append((f.device, f.seq, f.readings))
            data, n = readings_copy(readings)
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy("COPY frames (device_id, seq, sent_ms, frame_sha256, raw_zstd, n_readings) "
                              "FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(["text", "int8", "int8", "bytea", "bytea", "int4"])
                    for row in frames:
                        cp.write_row(row)
                with cur.copy("COPY readings (device_id, seq, idx, ts, channel, energy_wh, power_w) "
                              "FROM STDIN (FORMAT BINARY)") as cp:
                    cp.write(data)
                with cur.copy("COPY unsealed_frames (device_id, seq, min_ts_ms, max_ts_ms) FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(["text", "int8", "int8", "int8"])  # as the ingest writer queues each frame
                    for row in queue:
                        cp.write_row(row)
            n_frames += len(frames)
            n_readings += n
    return n_frames, n_readings


def build_store(dsn: str, sites: int, days: float) -> tuple[SimRun, float]:
    """The store of a simulated fleet, frames and readings COPYed directly (2 processes); seconds taken."""
    global _SIM
    t0 = time.perf_counter()
    sim = simulate(sites=sites, days=days, seed=5, start_ms=START, **_sim_kw())
    for d in sim.devices:
        register_device(dsn, d.record)
    with psycopg.connect(dsn, autocommit=True) as conn:
        m = datetime.fromtimestamp(START / 1000, UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = datetime.fromtimestamp((START + (days + 1) * 86_400_000) / 1000, UTC)
        while m < end:
            conn.execute("SELECT ensure_readings_partition(%s)", (m,))
            m = m.replace(year=m.year + m.month // 12, month=m.month % 12 + 1)
    _SIM = sim
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        pool.map(_load_part, [(dsn, k, 2) for k in range(2)])
    _SIM = None
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE")
    return sim, time.perf_counter() - t0


def fresh_process_verify(dsn: str, ledger_dir: Path, trust_file: Path) -> float:
    """Seconds for one full verify in a new Python process, as `wattproof verify --trust` runs it: the replay
    and the completeness checks against the pinned trust (imports and opening the ledger not counted; any
    per-process compilation counted)."""
    code = ("import sys, time; from pathlib import Path; from ledger.local import LocalLedger; "
            "from ledger.trust import load_trust; from ledger.verify import verify_all; "
            "trust = load_trust(Path(sys.argv[3])); led = LocalLedger.open_pinned(Path(sys.argv[2]), trust.operator_keys); "
            "t = time.perf_counter(); r = verify_all(sys.argv[1], led, trust); "
            "assert r.intact and r.pinned, (r.store_problems[:3], [x for x in r.reports if x.status != 'intact'][:3]); "
            "print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code, dsn, str(ledger_dir), str(trust_file)], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    return float(out.stdout.strip().splitlines()[-1])


def run(dsn: str, tmp: Path, target: int) -> None:
    upgrade(dsn)
    probe = simulate(sites=1, days=1.0, seed=5, start_ms=START, **_sim_kw())
    per_site_day = sum(m.n_readings for m in probe.messages())
    sites = 10
    days = target / (per_site_day * sites)
    sim, t_load = build_store(dsn, sites, days)
    led = LocalLedger.open(tmp / "ledger")
    t0 = time.perf_counter()
    made = seal_windows(dsn, led, now_ms=START + int((days + 1) * 86_400_000))
    t_seal = time.perf_counter() - t0
    n = sum(b.header.leaf_count for b in made)
    frames = len({(d, s) for b in made for d, s, _ in b.leaf_keys})
    n_batches = len(made)
    print(f"setup: {n:,} readings, {frames:,} frames; store written in {t_load:.0f} s; {n_batches:,} batches "
          f"sealed from the store (seal_windows, local ledger) in {t_seal:.1f} s ({n / t_seal:,.0f} readings/s)",
          flush=True)
    del made
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")  # as a store that has been running for a while would be
        conn.execute("CHECKPOINT")  # the pages sealing and VACUUM dirtied are written now, not during the timings

    from device.identity import public_key_b64
    from ledger.trust import FORMAT, Trust, write_trust
    from ledger.verify import verify_all

    trust = Trust(format=FORMAT, operator_keys=[public_key_b64(led.pub)],
                  devices={d.device: [d.record.public_key] for d in sim.devices})
    write_trust(tmp / "trust.json", trust)
    rows = []
    fresh = fresh_process_verify(dsn, tmp / "ledger", tmp / "trust.json")
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        res = verify_all(dsn, LocalLedger.open_pinned(tmp / "ledger", trust.operator_keys), trust)
        best = min(best, time.perf_counter() - t0)
        assert res.intact and res.pinned
    reports = res.reports
    t0 = time.perf_counter()
    assert all(r.status == "intact" for r in verify(dsn, led))
    replay_only = time.perf_counter() - t0
    rows.append(["ours, `wattproof verify --trust` in a fresh process: replay + completeness (every reading against "
                 "its signed frame, ledger ↔ store, pinned keys)", f"{n:,}", f"{fresh:.1f}", f"{n / fresh:,.0f}"])
    rows.append(["ours, the same, best of 2 more in one process", f"{n:,}", f"{best:.1f}", f"{n / best:,.0f}"])
    rows.append(["ours, the replay alone (batches ↔ ledger, readings ↔ leaves, every frame's signature)", f"{n:,}",
                 f"{replay_only:.1f}", f"{n / replay_only:,.0f}"])

    site = sim.devices[0].record.site
    upto = datetime.fromtimestamp((START + 86_400_000) / 1000, UTC)  # a sample: the site's first day
    t0 = time.perf_counter()
    sample = verify_rows(dsn, led, site=site, end=upto)
    dt = time.perf_counter() - t0
    with psycopg.connect(dsn) as conn:
        ns = conn.execute("SELECT sum(leaf_count) FROM batches WHERE site_id = %s AND window_start < %s",
                          (site, upto)).fetchone()[0]  # type: ignore[index]
    assert all(r.status == "intact" for r in sample)
    rows.append([f"naive: row-by-row replay, one query + one Leaf per reading (site {site}, first day, extrapolated)",
                 f"{ns:,}", f"{dt * n / ns:.1f}", f"{ns / dt:,.0f}"])
    body = table(["verify path", "readings", "seconds", "readings/s"], rows)
    per10 = 10_000_000 / n
    body += (f"\n\n{n:,} stored readings in {len(reports):,} batches ({frames:,} signed frames, {n / frames:.1f} readings "
             f"each{DEFAULT_NOTE if _FRAME_READINGS is None else ''}), {sites} sites; timed from connect to report, reading "
             f"everything from PostgreSQL. `wattproof verify --trust` = the replay (batch ↔ ledger, stored leaves ↔ root, "
             f"today's readings ↔ leaves) + the completeness checks (every reading against its signed frame by rebuilding "
             f"each frame from its stored readings, duplicates, signed readings missing, pending, ledger ↔ store, pinned "
             f"keys), every frame's signature checked once. Ours = {dt * n / ns / best:.1f}× the row-by-row replay "
             f"(which does less). Target: 10M readings ≤ 30 s — "
             f"{'met' if n >= 10_000_000 and max(best, fresh) * per10 <= 30 else 'NOT met'} "
             f"({fresh * per10:.1f} s per 10M in a fresh process, {best * per10:.1f} s warm; replay alone "
             f"{replay_only * per10:.1f} s).\n\n**Sealing from the store** (`seal_windows`: the queued frames and all their "
             f"readings in bulk, each frame's signature checked and the frame rebuilt from its stored readings, leaves, "
             f"roots, one local-ledger append per site, one COPY of the batches): {n:,} readings in {t_seal:.1f} s = "
             f"{n / t_seal:,.0f} readings/s ({n_batches:,} windows). Target ≥ 500,000 readings/s — "
             f"{'met' if n / t_seal >= 500_000 else 'NOT met'}. Store written by binary COPY in {t_load:.0f} s (setup).")
    body += (f"\n\nWhere the time goes on 2 cores: each frame's Ed25519 signature costs ~14 µs alone (the verdict of "
             f"`verify_strict` after admitting each key once — the one acceptance rule, docs/proofs.md \"Fast frame check\" — "
             f"computed without decompressing R, 64 R' encoded with one inversion, curve25519-dalek's AVX-512 IFMA "
             f"backend), ~19 µs per frame with zstd and SHA-256, so {frames:,} frames are ~{frames * 19e-6 / 2:.1f} s of "
             "both cores in sealing and again in verify, overlapped with loading and comparing; PostgreSQL builds the "
             "arrays (~0.7 µs per reading); `verify` loads every reading and frame once (the replay reuses the "
             "completeness pass's columns, in the same snapshot, while the signatures are checked). The machine is "
             "shared with other work: figures vary by up to 2× between runs.")
    print(body)
    if _FRAME_READINGS is None:
        write_section("bench_verify", "Verify (store + ledger replay)", body)
    else:
        write_section(f"bench_verify_f{_FRAME_READINGS}",
                      f"Verify (store + ledger replay), frames of {_FRAME_READINGS} readings", body)


if __name__ == "__main__":
    main()
