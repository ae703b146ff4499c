"""``audit run``: load each device's columns from the store, run the detectors, store findings.

Owns: the run — devices audited in parallel worker processes (each loads its device by binary
COPY, ``audit.load``, and runs the detectors), the site balance over their hourly energies, the
clear-sky envelope for PV inverters, and the idempotent write of findings (a unique index makes
re-runs add nothing). Reads readings and frames; writes only the findings table.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import os
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import psycopg

from audit.baselines import stl_anomalies
from audit.consistency import balance_findings, register_power_findings
from audit.detectors import (
    Finding,
    Thresholds,
    clock_findings,
    power_findings,
    pv_findings,
    register_findings,
)
from audit.kernels import bucket_energy, frame_spans, register_vs_power
from audit.load import load_frames, load_readings
from audit.solar import clear_sky_ghi
from device.errors import WattproofError


class AuditError(WattproofError):
    """The audit was asked for something impossible (unknown site, nothing to audit)."""


def clear_sky_envelope_w(ts_ms: np.ndarray, lat: float, lon: float, rated_w: float) -> np.ndarray:
    return clear_sky_ghi(ts_ms, lat, lon) / 1000.0 * rated_w


MS_PER_HOUR = 3_600_000
LOOKBACK_MS = 2 * MS_PER_HOUR  # context loaded before --since: rolling windows, the step into the first reading
STL_LOOKBACK_MS = 21 * 24 * MS_PER_HOUR  # STL (period 168) needs two weeks before the first hour it judges
CONSUMPTION = ("main_meter", "sub_meter")


@dataclass
class _SiteHours:
    """Hourly energy and coverage of a site's registers, keyed by (device kind, channel)."""

    energy: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    covered: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)

    def add(self, kind: str, channel: str, energy: tuple[np.ndarray, np.ndarray], covered: tuple[np.ndarray, np.ndarray]) -> None:
        self.energy.setdefault((kind, channel), []).append(energy)
        self.covered.setdefault((kind, channel), []).append(covered)


def _on_grid(grid0: int, k: int, series: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    out = np.zeros(k)
    for starts, values in series:
        np.add.at(out, (starts - grid0) // MS_PER_HOUR, values)
    return out


def site_balance(site: str, hours: _SiteHours, th: Thresholds) -> list[Finding]:
    need = [("main_meter", "import"), ("sub_meter", "import")]
    if any(key not in hours.energy for key in need):
        return []  # no main meter or no sub-meter: no identity to check
    all_starts = np.concatenate([s for lst in hours.energy.values() for s, _ in lst])
    if all_starts.size == 0:
        return []
    grid0, grid1 = int(all_starts.min()), int(all_starts.max())
    k = (grid1 - grid0) // MS_PER_HOUR + 1
    e = {key: _on_grid(grid0, k, lst) for key, lst in hours.energy.items()}
    complete = np.ones(k, bool)
    for lst in hours.covered.values():
        for starts, cov in lst:  # every register of the site must cover the hour
            c = np.zeros(k)
            np.add.at(c, (starts - grid0) // MS_PER_HOUR, cov)
            complete &= c >= th.min_coverage * MS_PER_HOUR
    zero = np.zeros(k)
    hour_ms = grid0 + np.arange(k, dtype=np.int64) * MS_PER_HOUR
    return balance_findings(site, hour_ms, e[("main_meter", "import")], e.get(("main_meter", "export"), zero),
                            e[("sub_meter", "import")], e.get(("pv_inverter", "pv"), zero), complete, th)


def stl_findings(site: str, device: str, starts: np.ndarray, energy: np.ndarray) -> list[Finding]:
    return [Finding(site, device, "stl_anomaly", "low", int(starts[a.index]), int(starts[a.index]) + MS_PER_HOUR,
                    {"energy_wh": round(a.value_wh, 1), "expected_wh": round(a.expected_wh, 1),
                     "residual_wh": round(a.residual_wh, 1), "threshold_wh": round(a.threshold_wh, 1), "period_h": 168})
            for a in stl_anomalies(energy, period=168)]


@dataclass(frozen=True)
class _Device:
    device: str
    site: str
    kind: str
    rated_w: float
    lat: float | None
    lon: float | None


@dataclass
class _DeviceResult:
    findings: list[Finding]
    hours: list[tuple[str, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]]  # channel, energy, coverage
    readings: int


def audit_device(conn: psycopg.Connection[Any], d: _Device, lo: dt.datetime | None, th: Thresholds,
                 stl: bool) -> _DeviceResult:
    """Load one device (binary COPY) and run every per-device detector on each of its channels."""
    data = load_readings(conn, d.device, lo)
    found: list[Finding] = []
    if data.n_readings == 0:
        if lo is None or conn.execute("SELECT 1 FROM readings WHERE device_id = %s LIMIT 1", (d.device,)).fetchone() is None:
            found.append(Finding(d.site, d.device, "no_data", "medium", 0, 0, {"readings": 0}))
        return _DeviceResult(found, [], 0)
    hours = []
    for c in data.channels:
        ts, e, p, seq = c.ts_ms, c.energy_wh, c.power_w, c.seq
        found += register_findings(d.site, d.device, ts, e, p, seq, th)
        if c.name == "import":  # PV is held to its clear-sky envelope instead (stricter than the rating)
            found += power_findings(d.site, d.device, ts, p, d.rated_w, th)
        if c.name == "pv" and d.lat is not None and d.lon is not None:
            found += pv_findings(d.site, d.device, ts, p, clear_sky_envelope_w(ts, d.lat, d.lon, d.rated_w), th)
        usual = float(np.median(np.diff(ts))) if ts.size > 1 else 0.0
        w0, reg, pw, band, cov = register_vs_power(ts, e, p, MS_PER_HOUR, int(th.gap_factor * max(usual, 1.0)))
        found += register_power_findings(d.site, d.device, c.name, w0, reg, pw, band, cov, MS_PER_HOUR, th)
        h0, energy = bucket_energy(ts, e, MS_PER_HOUR)
        hours.append((c.name, (h0, energy), (w0, cov)))
        if stl and d.kind in CONSUMPTION and c.name == "import":
            found += stl_findings(d.site, d.device, h0, energy)
    frame_seq, offset_s = load_frames(conn, d.device)
    first, last, count = frame_spans(frame_seq, data.seq, data.ts_ms)
    has = count > 0  # frames with readings in the loaded window (an inner join of frames and readings)
    if has.any():
        found += clock_findings(d.site, d.device, first[has], last[has], offset_s[has], th)
    return _DeviceResult(found, hours, data.n_readings)


# One connection per worker process, opened by its initializer: the pool's workers outlive a task.
_worker: dict[str, Any] = {}


def _connect(dsn: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("SET work_mem = '256MB'")  # the loader's hash aggregate holds a device's arrays: no spill
    return conn


def _worker_init(dsn: str, lo: dt.datetime | None, th: Thresholds, stl: bool) -> None:
    _worker.update(conn=_connect(dsn), lo=lo, th=th, stl=stl)


def _worker_audit(d: _Device) -> _DeviceResult:
    return audit_device(_worker["conn"], d, _worker["lo"], _worker["th"], _worker["stl"])


def default_workers() -> int:
    """Processes for ``run_audit``: one per core, at most 2 (devices are independent; PostgreSQL
    serves each worker's COPY on a backend of its own, so more workers than cores only contend)."""
    return max(1, min(2, os.cpu_count() or 1))


def run_audit(dsn: str, site: str | None = None, th: Thresholds = Thresholds(), since_ms: int | None = None,
              stl: bool = False, workers: int | None = None,
              progress: Callable[[int, int], None] | None = None) -> Counter[str]:
    """Audit every device (of ``site``); return the number of *new* findings by kind.

    ``since_ms``: incremental run — load readings from a little before it and keep only findings
    that start at or after it (earlier ones belong to the runs that covered that time).
    ``stl``: also report ``stl_anomaly`` (opt-in; see docs/audit.md).
    ``workers``: processes auditing devices in parallel (default ``default_workers()``; 1 = in this
    process). The findings do not depend on it: results are gathered in device order.
    ``progress(done, total)``: devices audited so far.
    """
    run_id = uuid.uuid4().hex[:12]
    found: list[Finding] = []
    lo_ms = None if since_ms is None else since_ms - (STL_LOOKBACK_MS if stl else LOOKBACK_MS)
    lo = None if lo_ms is None else pd.Timestamp(lo_ms, unit="ms", tz="UTC").to_pydatetime()
    sites: dict[str, _SiteHours] = {}
    with _connect(dsn) as conn:
        rows = conn.execute(
            "SELECT d.device_id, d.site_id, d.kind, d.rated_power_w, coalesce(d.lat, s.lat), coalesce(d.lon, s.lon) "
            "FROM devices d JOIN sites s USING (site_id) WHERE %s::text IS NULL OR d.site_id = %s ORDER BY 1",
            (site, site)).fetchall()
        if site is not None and not rows:
            raise AuditError(f"unknown site {site!r} (no devices registered there)")
        devices = [_Device(r[0], r[1], r[2], float(r[3]), r[4], r[5]) for r in rows]
        n = min(workers or default_workers(), len(devices))
        tick = progress or (lambda done, total: None)
        results = []
        if n <= 1:
            for d in devices:
                results.append(audit_device(conn, d, lo, th, stl))
                tick(len(results), len(devices))
        else:
            ctx = mp.get_context("fork")  # workers inherit the imported modules and Numba's loaded kernels
            with ProcessPoolExecutor(n, mp_context=ctx, initializer=_worker_init, initargs=(dsn, lo, th, stl)) as pool:
                for res in pool.map(_worker_audit, devices):  # in device order, as they finish
                    results.append(res)
                    tick(len(results), len(devices))
        for d, res in zip(devices, results, strict=True):
            found += res.findings
            for ch, energy, covered in res.hours:
                sites.setdefault(d.site, _SiteHours()).add(d.kind, ch, energy, covered)
        for site_id, hours in sites.items():
            found += site_balance(site_id, hours, th)
        if since_ms is not None:
            found = [f for f in found if f.kind == "no_data" or f.start_ms >= since_ms]
        return _store(conn, run_id, found)


def _store(conn: psycopg.Connection[Any], run_id: str, found: list[Finding]) -> Counter[str]:
    new: Counter[str] = Counter()
    with conn.transaction():
        for f in found:
            row = conn.execute(
                "INSERT INTO findings (run_id, site_id, device_id, kind, severity, start_ts, end_ts, evidence, detector, "
                "detector_version) VALUES (%s, %s, %s, %s, %s, to_timestamp(%s / 1000.0), to_timestamp(%s / 1000.0), "
                "%s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
                (run_id, f.site, f.device, f.kind, f.severity, f.start_ms, f.end_ms,
                 msgspec.json.encode(f.evidence).decode(), f.detector, f.detector_version)).fetchone()
            if row:
                new[f.kind] += 1
    return new
