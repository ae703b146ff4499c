"""``audit run``: load each device's columns from the store, run the detectors, store findings.

Owns: loading (one query per device, ordered by time), the pvlib clear-sky envelope for PV
inverters, and the idempotent write of findings (a unique index makes re-runs add nothing).
Reads readings and frames; writes only the findings table.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import psycopg
import pvlib

from audit.detectors import (
    Finding,
    Thresholds,
    clock_findings,
    power_findings,
    pv_findings,
    register_findings,
)


class AuditError(Exception):
    """The audit was asked for something impossible (unknown site, nothing to audit)."""


def clear_sky_envelope_w(ts_ms: np.ndarray, lat: float, lon: float, rated_w: float) -> np.ndarray:
    times = pd.DatetimeIndex(pd.to_datetime(ts_ms, unit="ms", utc=True))
    ghi = pvlib.location.Location(lat, lon, tz="UTC").get_clearsky(times, model="ineichen")["ghi"]
    return np.asarray(ghi, dtype=float) / 1000.0 * rated_w


def run_audit(dsn: str, site: str | None = None, th: Thresholds = Thresholds()) -> Counter[str]:
    """Audit every device (of ``site``); return the number of *new* findings by kind."""
    run_id = uuid.uuid4().hex[:12]
    found: list[Finding] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        devices = conn.execute(
            "SELECT d.device_id, d.site_id, d.kind, d.rated_power_w, coalesce(d.lat, s.lat), coalesce(d.lon, s.lon) "
            "FROM devices d JOIN sites s USING (site_id) WHERE %s::text IS NULL OR d.site_id = %s ORDER BY 1",
            (site, site)).fetchall()
        if site is not None and not devices:
            raise AuditError(f"unknown site {site!r} (no devices registered there)")
        for device, site_id, _kind, rated, lat, lon in devices:
            rows = conn.execute(
                "SELECT (extract(epoch FROM ts) * 1000)::bigint, channel, energy_wh, power_w, seq FROM readings "
                "WHERE device_id = %s ORDER BY channel, seq, idx", (device,)).fetchall()  # device order: registers count up along it
            if not rows:
                found.append(Finding(site_id, device, "no_data", "medium", 0, 0, {"readings": 0}))
                continue
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
            frames = conn.execute(
                "SELECT min(extract(epoch FROM r.ts) * 1000)::bigint, max(extract(epoch FROM r.ts) * 1000)::bigint, "
                "(f.sent_ms - extract(epoch FROM f.received_at) * 1000) / 1000.0 FROM frames f "
                "JOIN readings r USING (device_id, seq) WHERE f.device_id = %s GROUP BY f.seq, f.sent_ms, f.received_at "
                "ORDER BY f.seq", (device,)).fetchall()
            if frames:
                fa = np.array(frames, dtype=np.float64)
                found += clock_findings(site_id, device, fa[:, 0].astype(np.int64), fa[:, 1].astype(np.int64), fa[:, 2], th)
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
