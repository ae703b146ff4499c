"""``audit run``: load each device's columns from the store, run the detectors, store findings.

Owns: loading (one query per device, ordered by time), the pvlib clear-sky envelope for PV
inverters, and the idempotent write of findings (a unique index makes re-runs add nothing).
Reads readings and frames; writes only the findings table.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import psycopg
import pvlib

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
from audit.kernels import bucket_energy, register_vs_power


class AuditError(Exception):
    """The audit was asked for something impossible (unknown site, nothing to audit)."""


def clear_sky_envelope_w(ts_ms: np.ndarray, lat: float, lon: float, rated_w: float) -> np.ndarray:
    times = pd.DatetimeIndex(pd.to_datetime(ts_ms, unit="ms", utc=True))
    ghi = pvlib.location.Location(lat, lon, tz="UTC").get_clearsky(times, model="ineichen")["ghi"]
    return np.asarray(ghi, dtype=float) / 1000.0 * rated_w


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


def run_audit(dsn: str, site: str | None = None, th: Thresholds = Thresholds(), since_ms: int | None = None,
              stl: bool = False) -> Counter[str]:
    """Audit every device (of ``site``); return the number of *new* findings by kind.

    ``since_ms``: incremental run — load readings from a little before it and keep only findings
    that start at or after it (earlier ones belong to the runs that covered that time).
    ``stl``: also report ``stl_anomaly`` (opt-in; see docs/audit.md).
    """
    run_id = uuid.uuid4().hex[:12]
    found: list[Finding] = []
    lo_ms = None if since_ms is None else since_ms - (STL_LOOKBACK_MS if stl else LOOKBACK_MS)
    lo = None if lo_ms is None else pd.Timestamp(lo_ms, unit="ms", tz="UTC").to_pydatetime()
    sites: dict[str, _SiteHours] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        devices = conn.execute(
            "SELECT d.device_id, d.site_id, d.kind, d.rated_power_w, coalesce(d.lat, s.lat), coalesce(d.lon, s.lon) "
            "FROM devices d JOIN sites s USING (site_id) WHERE %s::text IS NULL OR d.site_id = %s ORDER BY 1",
            (site, site)).fetchall()
        if site is not None and not devices:
            raise AuditError(f"unknown site {site!r} (no devices registered there)")
        for device, site_id, kind, rated, lat, lon in devices:
            rows = conn.execute(
                "SELECT (extract(epoch FROM ts) * 1000)::bigint, channel, energy_wh, power_w, seq FROM readings "
                "WHERE device_id = %s AND (%s::timestamptz IS NULL OR ts >= %s) ORDER BY channel, seq, idx",
                (device, lo, lo)).fetchall()  # device order: registers count up along it
            if not rows:
                if lo is None or conn.execute("SELECT 1 FROM readings WHERE device_id = %s LIMIT 1", (device,)).fetchone() is None:
                    found.append(Finding(site_id, device, "no_data", "medium", 0, 0, {"readings": 0}))
                continue
            hours = sites.setdefault(site_id, _SiteHours())
            arr = np.array([(r[0], r[2], r[3], r[4]) for r in rows], dtype=np.int64)
            channels = np.array([r[1] for r in rows])
            for ch in np.unique(channels):
                m = channels == ch
                ts, e, p, seq = arr[m, 0], arr[m, 1], arr[m, 2], arr[m, 3]
                found += register_findings(site_id, device, ts, e, p, seq, th)
                if ch == "import":  # PV is held to its clear-sky envelope instead (stricter than the rating)
                    found += power_findings(site_id, device, ts, p, float(rated), th)
                if ch == "pv" and lat is not None and lon is not None:
                    found += pv_findings(site_id, device, ts, p, clear_sky_envelope_w(ts, lat, lon, float(rated)), th)
                usual = float(np.median(np.diff(ts))) if ts.size > 1 else 0.0
                w0, reg, pw, band, cov = register_vs_power(ts, e, p, MS_PER_HOUR, int(th.gap_factor * max(usual, 1.0)))
                found += register_power_findings(site_id, device, str(ch), w0, reg, pw, band, cov, MS_PER_HOUR, th)
                h0, energy = bucket_energy(ts, e, MS_PER_HOUR)
                hours.add(kind, str(ch), (h0, energy), (w0, cov))
                if stl and kind in CONSUMPTION and ch == "import":
                    found += stl_findings(site_id, device, h0, energy)
            frames = conn.execute(
                "SELECT min(extract(epoch FROM r.ts) * 1000)::bigint, max(extract(epoch FROM r.ts) * 1000)::bigint, "
                "(f.sent_ms - extract(epoch FROM f.received_at) * 1000) / 1000.0 FROM frames f "
                "JOIN readings r USING (device_id, seq) WHERE f.device_id = %s AND (%s::timestamptz IS NULL OR r.ts >= %s) "
                "GROUP BY f.seq, f.sent_ms, f.received_at ORDER BY f.seq", (device, lo, lo)).fetchall()
            if frames:
                fa = np.array(frames, dtype=np.float64)
                found += clock_findings(site_id, device, fa[:, 0].astype(np.int64), fa[:, 1].astype(np.int64), fa[:, 2], th)
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
