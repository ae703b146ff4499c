"""A year of findings and sealed batches for ``bench_dashboard``'s extra sites (y01…): what the audit and the
sealing would have written for them, made without running either over 52.6M readings.

Owns: ``add_findings_year`` (the kinds and severities ``audit/`` emits, a few per site-day, COPYed into
``findings``) and ``add_sealed_year`` (one batch per site and hour: real ``BatchHeader``s chained per site,
with the window's findings digest as the sealing computes it, anchored through the store's own local ledger
with ``LocalLedger.anchor_many`` — real operator signatures — and the matching ``batches`` rows by binary
COPY). The leaf arrays are small synthetic ones (one leaf per device, no readings behind them) while
``leaf_count`` is what an hour of the site's 1-minute readings makes (≈ 300): the listings and the ledger
are at full scale, a proof of an extra site's reading is not possible (its root is of the synthetic leaves).
Must not: be imported by the product (benchmark data only).
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

HOUR_MS = 3_600_000
MINUTE_MS = 60_000
ROLES = ("main", "sub1", "sub2", "pv")
# (kind, severity, device roles it is raised on (None: the site), minutes (lo, hi), weight) — audit/detectors.py,
# audit/consistency.py, audit/run.py
FINDING_KINDS = (
    ("spike", "low", ("main", "sub1", "sub2", "pv"), (1, 1), 0.28),
    ("stl_anomaly", "low", ("main", "sub1", "sub2"), (60, 60), 0.18),
    ("gap", "medium", ("main", "sub1", "sub2", "pv"), (3, 120), 0.12),
    ("missing_frames", "medium", ("main", "sub1", "sub2", "pv"), (3, 90), 0.08),
    ("register_power_mismatch", "medium", ("main", "sub1", "sub2"), (15, 60), 0.10),
    ("clock_drift", "medium", ("main", "sub1", "sub2", "pv"), (10, 240), 0.05),
    ("power_above_rating", "medium", ("main", "sub1", "sub2"), (5, 45), 0.06),
    ("duplicate_timestamp", "medium", ("main", "sub1", "sub2", "pv"), (1, 2), 0.03),
    ("pv_above_clear_sky", "high", ("pv",), (10, 90), 0.05),
    ("energy_imbalance", "high", (None,), (60, 180), 0.05),
)


def _evidence(kind: str, rng: np.random.Generator, minutes: int) -> dict[str, Any]:
    r = float(rng.uniform(0, 1))
    return {
        "spike": {"power_w": int(4000 + 6000 * r), "rolling_median_w": round(900 * r + 300, 1), "rolling_mad_w": 80.0},
        "stl_anomaly": {"energy_wh": round(2500 + 900 * r, 1), "expected_wh": 1400.0, "residual_wh": round(1100 + 900 * r, 1),
                        "threshold_wh": 950.0, "period_h": 168},
        "gap": {"gap_s": minutes * 60, "usual_interval_s": 60, "seq_before": 1000, "seq_after": 1001},
        "missing_frames": {"gap_s": minutes * 60, "usual_interval_s": 60, "seq_before": 1000, "seq_after": 1000 + minutes},
        "register_power_mismatch": {"channel": "import", "windows": max(1, minutes // 15), "register_wh": 410.0,
                                    "integrated_power_wh": round(300 + 60 * r, 1), "sampling_band_wh": 6.0,
                                    "difference_wh": round(110 - 60 * r, 1)},
        "clock_drift": {"max_offset_s": round(120 + 600 * r, 1), "frames": minutes},
        "power_above_rating": {"max_power_w": int(5000 + 3000 * r), "rated_power_w": 4000},
        "duplicate_timestamp": {"readings": minutes, "seq_first": 2000, "seq_last": 2000 + minutes,
                                "largest_step_back_s": 0.0},
        "pv_above_clear_sky": {"max_power_w": int(5200 + 800 * r), "max_clear_sky_w": round(4100 + 500 * r, 1),
                               "excess_wh_approx": round(300 * r + 20, 1)},
        "energy_imbalance": {"hours": max(1, minutes // 60), "residual_wh": round(800 + 2000 * r, 1),
                             "max_abs_residual_wh": round(800 + 900 * r, 1), "main_net_wh": 6100.0,
                             "sub_meters_wh": 5200.0, "pv_wh": 0.0,
                             "identity": "main import - main export = sum(sub) - sum(pv)"},
    }[kind]


def add_findings_year(dsn: str, sites: list[str], days: int, start_ms: int, per_site_day: float = 3.0) -> int:
    """About ``per_site_day`` findings per site and day (Poisson), of the audit's kinds and severities; returns
    the rows written."""
    import psycopg
    from psycopg.types.json import Jsonb

    rng = np.random.default_rng(14)
    weights = np.array([k[4] for k in FINDING_KINDS])
    weights /= weights.sum()
    rows, seen = [], set()
    for site in sites:
        for day in range(days):
            for _ in range(int(rng.poisson(per_site_day))):
                kind, sev, roles, (lo, hi), _w = FINDING_KINDS[int(rng.choice(len(FINDING_KINDS), p=weights))]
                role = roles[int(rng.integers(len(roles)))]
                device = None if role is None else f"{site}-{role}"
                minutes = int(rng.integers(lo, hi + 1))
                step = HOUR_MS if minutes >= 60 and kind in ("stl_anomaly", "energy_imbalance") else MINUTE_MS
                a = start_ms + day * 86_400_000 + int(rng.integers(0, 86_400_000 // step)) * step
                key = (site, device or "", kind, a)
                if key in seen:  # findings_identity_idx: one finding per (site, device, kind, start)
                    continue
                seen.add(key)
                rows.append(("bench-year", site, device, kind, sev, datetime.fromtimestamp(a / 1000, UTC),
                             datetime.fromtimestamp((a + minutes * MINUTE_MS) / 1000, UTC),
                             Jsonb(_evidence(kind, rng, minutes)), "wattproof.audit", "1"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.cursor().copy("COPY findings (run_id, site_id, device_id, kind, severity, start_ts, end_ts, evidence, "
                                "detector, detector_version) FROM STDIN") as cp:
            for r in rows:
                cp.write_row(r)
        conn.execute("ANALYZE findings")
    return len(rows)


def add_sealed_year(dsn: str, ledger_dir: Path, sites: list[str], days: int, start_ms: int) -> dict[str, float]:
    """One sealed batch per site and hour for ``days`` days, anchored on the local ledger in ``ledger_dir`` (its
    operator key signs) and recorded in ``batches``. Returns {batches, leaves, anchor_s, copy_s, ledger_mb}."""
    import psycopg
    from psycopg.types.json import Jsonb

    from ledger import merkle
    from ledger.backend import BatchHeader, header_bytes, header_hash
    from ledger.batchcopy import TextArrays, int_array
    from ledger.local import LocalLedger
    from ledger.seal import _findings_digests  # the sealing's own digest

    n = days * 24
    windows = start_ms + np.arange(n, dtype=np.int64) * HOUR_MS
    stamps = [datetime.fromtimestamp(int(w) / 1000, UTC).strftime("%Y%m%dT%H%M%SZ") for w in windows.tolist()]
    rng = np.random.default_rng(9)
    led = LocalLedger.open(ledger_dir)
    t_anchor = t_copy = 0.0
    total = leaves = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        for site in sites:
            devices = [f"{site}-{r}" for r in ROLES]
            texts = TextArrays(devices)
            dev_arr = texts.array(np.arange(len(devices)))
            idx_arr = int_array(np.zeros(len(devices), np.int64), 23)
            # an hour of 1-minute readings: main import + export, two sub-meters, PV = 300; now and then a gap
            counts = 300 - np.where(rng.uniform(0, 1, n) < 0.02, rng.integers(1, 60, n), 0)
            digests = _findings_digests(conn, [site], [(0, int(w), 0, 0) for w in windows.tolist()], HOUR_MS)
            t0 = time.perf_counter()
            headers, hashes, prev = [], [], led.head(site)
            for i, w in enumerate(windows.tolist()):
                hs = [merkle.leaf_hash(f"synthetic {site} {stamps[i]} {d}".encode()) for d in devices]
                h = BatchHeader(batch_id=f"{site}:{stamps[i]}", site=site, kind="seal", window_start_ms=w,
                                window_end_ms=w + HOUR_MS, leaf_count=int(counts[i]),
                                root=merkle.root_from_leaf_hashes(hs).hex(), prev_hash=prev,
                                findings_digest=digests[i], sealed_ms=w + HOUR_MS + 900_000)
                prev = header_hash(h)
                headers.append(h)
                hashes.append(b"".join(hs))
            receipts = led.anchor_many(headers)
            t1 = time.perf_counter()
            with conn.cursor() as cur, cur.copy(
                    "COPY batches (batch_id, site_id, kind, amends, window_start, window_end, leaf_count, root, header, "
                    "header_hash, leaf_devices, leaf_seqs, leaf_idxs, leaf_hashes, receipt) FROM STDIN (FORMAT BINARY)"
            ) as cp:
                cp.set_types(["text", "text", "text", "text", "timestamptz", "timestamptz", "int4", "bytea", "bytea",
                              "bytea", "bytea", "bytea", "bytea", "bytea", "jsonb"])
                for i, (h, rc) in enumerate(zip(headers, receipts, strict=True)):
                    cp.write_row((h.batch_id, site, "seal", None, datetime.fromtimestamp(h.window_start_ms / 1000, UTC),
                                  datetime.fromtimestamp(h.window_end_ms / 1000, UTC), h.leaf_count,
                                  bytes.fromhex(h.root), header_bytes(h), hashlib.sha256(header_bytes(h)).digest(),
                                  dev_arr, int_array(np.full(len(devices), i, np.int64), 20), idx_arr, hashes[i],
                                  Jsonb(msgspec.to_builtins(rc))))
            t_anchor += t1 - t0
            t_copy += time.perf_counter() - t1
            total += n
            leaves += int(counts.sum())
        conn.execute("ANALYZE batches")
    led.close()
    return {"batches": total, "leaves": leaves, "anchor_s": t_anchor, "copy_s": t_copy,
            "ledger_mb": (ledger_dir / "ledger.jsonl").stat().st_size / 2**20}


def time_open_pinned(ledger_dir: Path, trust_file: Path) -> tuple[int, float]:
    """(records, seconds) of ``LocalLedger.open_pinned`` with the trust's operator keys: what the dashboard does
    once per process (and again when the file changes)."""
    from ledger.local import LocalLedger
    from ledger.trust import load_trust

    keys = load_trust(trust_file).operator_keys
    t0 = time.perf_counter()
    led = LocalLedger.open_pinned(ledger_dir, keys)
    dt = time.perf_counter() - t0
    return sum(1 for _ in led.events()), dt



def anchor_next_hour(ledger_dir: Path, sites: list[str], window_ms: int) -> int:
    """What an hourly seal appends to the ledger: one header per site for the window at ``window_ms`` (ledger
    only, not recorded in ``batches``: used to time how the dashboard takes in a grown ledger file)."""
    from ledger import merkle
    from ledger.backend import BatchHeader
    from ledger.local import LocalLedger
    from ledger.seal import EMPTY_FINDINGS_DIGEST

    led = LocalLedger.open(ledger_dir)
    stamp = datetime.fromtimestamp(window_ms / 1000, UTC).strftime("%Y%m%dT%H%M%SZ")
    headers = [BatchHeader(batch_id=f"{site}:{stamp}", site=site, kind="seal", window_start_ms=window_ms,
                           window_end_ms=window_ms + HOUR_MS, leaf_count=300,
                           root=merkle.leaf_hash(f"synthetic {site} {stamp}".encode()).hex(), prev_hash=led.head(site),
                           findings_digest=EMPTY_FINDINGS_DIGEST, sealed_ms=window_ms + HOUR_MS + 900_000)
               for site in sites]
    led.anchor_many(headers)
    led.close()
    return len(headers)
