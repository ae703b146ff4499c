"""What the dashboard reads, as plain functions: the only place with SQL for the dashboard.

Owns: read-only queries over the store (sites, ingest health, sealing status, findings and their
readings and frames, the latest claim verdict sets, batches) and the figures built on them (a site's
hourly energy from the rollup via the claims engine's loader, PV against its clear-sky envelope, the
TOWT baseline against actuals, a reading's proof bundle checked against a trust). Pages call these
through ``dashboard/cache.py``; the CLI and the reports may call them directly. Every connection is
read-only (``default_transaction_read_only``); series come from the rollup ``readings_15min``, never
from a scan of ``readings`` (only a finding's or a batch's own readings are read row by row, bounded).
Must not: import streamlit, write to the store or the ledger.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg

HOUR_MS = 3_600_000
READINGS_LIMIT = 5_000  # rows of a drill-down: a finding's or batch's readings


@contextmanager
def connect(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A read-only session in UTC: any write is refused by PostgreSQL itself."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = on")
        conn.execute("SET TIME ZONE 'UTC'")
        yield conn


def _df(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> pd.DataFrame:
    cur = conn.execute(sql, params)
    cols = [c.name for c in cur.description or []]
    return pd.DataFrame(cur.fetchall(), columns=cols)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


# --- overview ----------------------------------------------------------------------------------
def sites(dsn: str) -> pd.DataFrame:
    """Each site with its devices by kind."""
    with connect(dsn) as conn:
        return _df(conn, """
            SELECT s.site_id, coalesce(s.name, s.site_id) AS name, s.lat, s.lon,
                   count(d.device_id) AS devices,
                   count(*) FILTER (WHERE d.kind = 'main_meter') AS main_meters,
                   count(*) FILTER (WHERE d.kind = 'sub_meter') AS sub_meters,
                   count(*) FILTER (WHERE d.kind = 'pv_inverter') AS pv_inverters
            FROM sites s LEFT JOIN devices d USING (site_id) GROUP BY 1, 2, 3, 4 ORDER BY 1""")


def devices(dsn: str, site: str | None = None) -> pd.DataFrame:
    with connect(dsn) as conn:
        return _df(conn, "SELECT d.device_id, d.site_id, d.kind, d.rated_power_w, coalesce(d.lat, s.lat) AS lat, "
                         "coalesce(d.lon, s.lon) AS lon, d.active FROM devices d JOIN sites s USING (site_id) "
                         "WHERE %(s)s::text IS NULL OR d.site_id = %(s)s ORDER BY 1", {"s": site})


def register_stats(dsn: str) -> pd.DataFrame:
    """Per device and channel, from one pass over the rollup: 15-minute buckets with data, readings, first
    and last bucket. (Ingest health and the sealing status both derive from it: the rollup of a year of
    100 devices is ~4.4M rows, read once.)"""
    with connect(dsn) as conn:
        return _df(conn, "SELECT device_id, channel, count(*) AS buckets, sum(n_readings)::bigint AS readings, "
                         "min(bucket) AS first_bucket, max(bucket) AS last_bucket FROM readings_15min GROUP BY 1, 2")


def ingest_health(dsn: str, stats: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per device: readings stored, first and last 15-minute bucket with data, and the share of the
    buckets between them that hold a reading (of its best-covered channel)."""
    stats = register_stats(dsn) if stats is None else stats
    with connect(dsn) as conn:
        devs = _df(conn, "SELECT device_id, site_id, kind FROM devices ORDER BY 1")
    per = stats.groupby("device_id").agg(readings=("readings", "sum"), first_bucket=("first_bucket", "min"),
                                         last_bucket=("last_bucket", "max"), buckets=("buckets", "max")).reset_index()
    df = devs.merge(per, on="device_id", how="left")
    df["readings"] = df["readings"].fillna(0).astype("int64")
    span = (df["last_bucket"] - df["first_bucket"]).dt.total_seconds() / 900 + 1
    df["bucket_coverage"] = (df["buckets"] / span).fillna(0.0).clip(upper=1.0)
    return df


def quarantine_by_reason(dsn: str) -> pd.DataFrame:
    """Refused messages by reason (as ``ingest.pipeline.counts``: rows with their repeats, plus the dropped)."""
    with connect(dsn) as conn:
        return _df(conn, "SELECT reason, sum(n)::bigint AS messages FROM (SELECT reason, repeats AS n FROM quarantine "
                         "UNION ALL SELECT reason, messages FROM quarantine_dropped) q GROUP BY 1 ORDER BY 1")


def sealing_status(dsn: str, stats: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per site: readings stored (rollup), sealed (Σ leaf_count of its batches) and anchored (of batches
    holding a ledger receipt), batches, the last sealed window's end."""
    stats = register_stats(dsn) if stats is None else stats
    with connect(dsn) as conn:
        devs = _df(conn, "SELECT device_id, site_id FROM devices")
        sites_ = _df(conn, "SELECT site_id FROM sites ORDER BY 1")
        sealed = _df(conn, "SELECT site_id, sum(leaf_count)::bigint AS sealed, "
                           "coalesce(sum(leaf_count) FILTER (WHERE receipt ? 'header_hash'), 0)::bigint AS anchored, "
                           "count(*) AS batches, max(window_end) AS last_window_end FROM batches GROUP BY 1")
    stored = stats.merge(devs, on="device_id").groupby("site_id")["readings"].sum().rename("readings").reset_index()
    df = sites_.merge(stored, on="site_id", how="left").merge(sealed, on="site_id", how="left")
    for c in ("readings", "sealed", "anchored", "batches"):
        df[c] = df[c].fillna(0).astype("int64")
    return df[["site_id", "readings", "sealed", "anchored", "batches", "last_window_end"]]


# --- findings ----------------------------------------------------------------------------------
def finding_facets(dsn: str) -> dict[str, Any]:
    """The values the Findings filters offer, and the time span of all findings."""
    with connect(dsn) as conn:
        kinds = [r[0] for r in conn.execute("SELECT DISTINCT kind FROM findings ORDER BY 1")]
        sev = [r[0] for r in conn.execute("SELECT DISTINCT severity FROM findings ORDER BY 1")]
        site_ids = [r[0] for r in conn.execute("SELECT DISTINCT site_id FROM findings ORDER BY 1")]
        lo, hi = conn.execute("SELECT min(start_ts), max(end_ts) FROM findings").fetchone() or (None, None)
    return {"kinds": kinds, "severities": sev, "sites": site_ids, "start": lo, "end": hi}


_FINDINGS_WHERE = """
    WHERE (%(k)s::text[] IS NULL OR kind = ANY(%(k)s)) AND (%(v)s::text[] IS NULL OR severity = ANY(%(v)s))
      AND (%(s)s::text[] IS NULL OR site_id = ANY(%(s)s))
      AND (%(a)s::timestamptz IS NULL OR end_ts > %(a)s) AND (%(b)s::timestamptz IS NULL OR start_ts < %(b)s)"""


def findings(dsn: str, kinds: list[str] | None = None, severities: list[str] | None = None,
             site_ids: list[str] | None = None, start: datetime | None = None, end: datetime | None = None,
             limit: int = 10_000) -> pd.DataFrame:
    """The newest ``limit`` findings overlapping [start, end) of the given kinds, severities and sites (None:
    any), oldest first (``findings_count`` says how many match in all)."""
    with connect(dsn) as conn:
        df = _df(conn, f"""
            SELECT * FROM (
                SELECT id, site_id, device_id, kind, severity, start_ts, end_ts, detector, detector_version,
                       evidence::text AS evidence
                FROM findings {_FINDINGS_WHERE}
                ORDER BY start_ts DESC, site_id DESC, device_id DESC, kind DESC LIMIT %(n)s) newest
            ORDER BY start_ts, site_id, device_id, kind""",
                 {"k": kinds, "v": severities, "s": site_ids, "a": start, "b": end, "n": limit})
    return df


def findings_count(dsn: str, kinds: list[str] | None = None, severities: list[str] | None = None,
                   site_ids: list[str] | None = None, start: datetime | None = None,
                   end: datetime | None = None) -> int:
    """How many findings ``findings`` would list without its limit."""
    with connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM findings {_FINDINGS_WHERE}",
                           {"k": kinds, "v": severities, "s": site_ids, "a": start, "b": end}).fetchone()
    return int(row[0]) if row else 0


def findings_summary(dsn: str) -> pd.DataFrame:
    with connect(dsn) as conn:
        return _df(conn, "SELECT kind, severity, count(*) AS findings, count(DISTINCT site_id) AS sites "
                         "FROM findings GROUP BY 1, 2 ORDER BY 1, 2")


def finding(dsn: str, finding_id: int) -> dict[str, Any] | None:
    with connect(dsn) as conn:
        df = _df(conn, "SELECT id, site_id, device_id, kind, severity, start_ts, end_ts, evidence::text AS evidence, "
                       "detector, detector_version FROM findings WHERE id = %s", (finding_id,))
    return None if df.empty else df.iloc[0].to_dict()


def readings_between(dsn: str, device: str, start: datetime, end: datetime,
                     limit: int = READINGS_LIMIT) -> pd.DataFrame:
    """A device's readings in [start, end) with the frame each came in (seq, SHA-256, sent, received)."""
    with connect(dsn) as conn:
        return _df(conn, """
            SELECT r.ts, r.channel, r.energy_wh, r.power_w, r.seq, r.idx, encode(f.frame_sha256, 'hex') AS frame_sha256,
                   to_timestamp(f.sent_ms / 1000.0) AS frame_sent, f.received_at AS frame_received
            FROM readings r LEFT JOIN frames f USING (device_id, seq)
            WHERE r.device_id = %s AND r.ts >= %s AND r.ts < %s ORDER BY r.ts, r.channel, r.seq, r.idx LIMIT %s""",
                 (device, start, end, limit))


def frame_text(dsn: str, device: str, seq: int) -> str | None:
    """The signed frame as received (the exact bytes, decompressed), or None."""
    import zstandard

    with connect(dsn) as conn:
        row = conn.execute("SELECT raw_zstd FROM frames WHERE device_id = %s AND seq = %s", (device, seq)).fetchone()
    return None if row is None else zstandard.ZstdDecompressor().decompress(bytes(row[0])).decode("utf-8", "replace")


# --- a site's energy ---------------------------------------------------------------------------
def site_span(dsn: str, site: str) -> tuple[int, int] | None:
    """[first hour, end of last hour) in ms with rollup data for the site's devices."""
    with connect(dsn) as conn:
        row = conn.execute("SELECT min(bucket), max(bucket) FROM readings_15min r JOIN devices d USING (device_id) "
                           "WHERE d.site_id = %s", (site,)).fetchone()
    if row is None or row[0] is None:
        return None
    a = int(row[0].timestamp() * 1000) // HOUR_MS * HOUR_MS
    b = (int(row[1].timestamp() * 1000) // HOUR_MS + 1) * HOUR_MS
    return a, b


def site_hours(dsn: str, site: str, start_ms: int, end_ms: int) -> pd.DataFrame:
    """Hourly import, export, generation and consumption (Wh) of a site, from the rollup through the
    claims engine's loader (``audit.claims.load.load_site_hours``): unknown hours are NaN, never 0.
    Consumption = import − export + PV."""
    from audit.claims.load import load_site_hours

    with connect(dsn) as conn:
        h = load_site_hours(conn, [site], start_ms, end_ms)[0]
    hour = pd.to_datetime(h.start_ms + np.arange(h.hours, dtype=np.int64) * HOUR_MS, unit="ms", utc=True)
    return pd.DataFrame({"hour": hour, "import_wh": h.import_wh, "export_wh": h.export_wh, "pv_wh": h.pv_wh,
                         "consumption_wh": h.import_wh - h.export_wh + h.pv_wh, "coverage": h.coverage})


def pv_against_envelope(dsn: str, site: str, start_ms: int, end_ms: int) -> pd.DataFrame:
    """Per hour and PV inverter of the site: mean power (hourly energy, from the rollup) and the mean of
    its clear-sky envelope (``audit.run.clear_sky_envelope_w``, the bound the audit holds PV to)."""
    from audit.claims.load import hourly_energy, hourly_registers
    from audit.run import clear_sky_envelope_w

    out = []
    devs = devices(dsn, site)
    hours = (end_ms - start_ms) // HOUR_MS
    with connect(dsn) as conn:
        for d in devs[devs["kind"] == "pv_inverter"].itertuples():
            rows = conn.execute("SELECT bucket, last_wh, n_readings FROM readings_15min WHERE device_id = %s AND "
                                "channel = 'pv' AND bucket >= %s AND bucket < %s ORDER BY bucket",
                                (d.device_id, _dt(start_ms - HOUR_MS), _dt(end_ms))).fetchall()
            if not rows:
                continue
            b = np.array([int(r[0].timestamp() * 1000) for r in rows], dtype=np.int64)
            last = np.array([r[1] for r in rows], dtype=np.int64)
            n = np.array([r[2] for r in rows], dtype=np.int64)
            reg, cnt = hourly_registers(b, last, n, np.zeros(b.size, np.int64), 1, start_ms - HOUR_MS, hours + 1)
            energy, _ = hourly_energy(reg, cnt, np.full(1, np.nan))
            hour_ms = start_ms + np.arange(hours, dtype=np.int64) * HOUR_MS
            quarters = (hour_ms[:, None] + np.arange(4) * 900_000 + 450_000).ravel()
            env = clear_sky_envelope_w(quarters, float(d.lat), float(d.lon), float(d.rated_power_w)) \
                if d.lat is not None and d.lon is not None else np.full(quarters.size, np.nan)
            out.append(pd.DataFrame({"hour": pd.to_datetime(hour_ms, unit="ms", utc=True), "device_id": d.device_id,
                                     "pv_w": energy[0, 1:], "envelope_w": env.reshape(-1, 4).mean(axis=1)}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(
        columns=["hour", "device_id", "pv_w", "envelope_w"])


def baseline_vs_actual(hours: pd.DataFrame, weather: Path, site: str, split: datetime) -> tuple[pd.DataFrame, dict]:
    """The site's TOWT baseline (``audit.baselines.fit_towt``, ASHRAE G14 fit metrics) fitted on the hours
    before ``split`` and predicted over all hours with consumption and temperature; (frame, fit metrics)."""
    from audit.baselines import fit_towt
    from audit.weather import read_weather

    w_ms, temp = read_weather(weather, site)
    h_ms = ((hours["hour"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)).to_numpy(dtype=np.int64)
    y = hours["consumption_wh"].to_numpy(dtype=float)
    pos = np.searchsorted(w_ms, h_ms)
    has_t = (pos < w_ms.size) & (w_ms[np.minimum(pos, max(w_ms.size - 1, 0))] == h_ms) if w_ms.size else \
        np.zeros(h_ms.size, bool)
    t = np.where(has_t, temp[np.minimum(pos, max(w_ms.size - 1, 0))] if w_ms.size else np.nan, np.nan)
    ok = np.isfinite(y) & has_t & (hours["coverage"].to_numpy() >= 0.8)
    split_ms = int(split.timestamp() * 1000)
    base = ok & (h_ms < split_ms)
    model = fit_towt(h_ms[base], y[base], t[base])
    pred = np.full(h_ms.size, np.nan)
    pred[ok] = model.predict(h_ms[ok], t[ok])
    frame = pd.DataFrame({"hour": hours["hour"], "actual_wh": np.where(ok, y, np.nan), "baseline_wh": pred,
                          "temperature_c": t, "period": np.where(h_ms < split_ms, "baseline", "reporting")})
    fit = {"cv_rmse": model.hourly.cv_rmse, "nmbe": model.hourly.nmbe, "r2": model.hourly.r2, "hours": model.n,
           "segmentation": model.segmentation}
    return frame, fit


# --- claims ------------------------------------------------------------------------------------
def verdict_sets(dsn: str) -> list[dict[str, Any]]:
    """The latest verdict set of each (organisation, period, claim file), newest first, through
    ``ledger.verdict_sets.latest_set``: {set_id, org, period_start/_end, kind, supersedes, created_at,
    receipt, verdicts (parsed leaves), context (parsed)}."""
    from ledger.backend import decode_header
    from ledger.verdict_sets import latest_set

    out = []
    with connect(dsn) as conn:
        keys = conn.execute("SELECT DISTINCT org_id, period_start, period_end, claim_file_sha256 "
                            "FROM claim_verdict_sets").fetchall()
        for org, p0, p1, sha in keys:
            got = latest_set(conn, org, int(p0.timestamp() * 1000), int(p1.timestamp() * 1000), sha)
            if got is None:
                continue
            set_id, header_raw, leaves, _ = got
            row = conn.execute("SELECT context, receipt, created_at, supersedes FROM claim_verdict_sets "
                               "WHERE set_id = %s", (set_id,)).fetchone()
            header = decode_header(header_raw)
            out.append({"set_id": set_id, "org": org, "period_start": p0, "period_end": p1, "claim_file_sha256": sha,
                        "kind": header.kind, "supersedes": row[3], "created_at": row[2], "receipt": row[1],
                        "verdicts": [json.loads(v) for v in leaves], "context": json.loads(bytes(row[0]))})
    return sorted(out, key=lambda s: s["created_at"], reverse=True)


# --- ledger ------------------------------------------------------------------------------------
def batches(dsn: str, site: str | None = None, start: datetime | None = None, end: datetime | None = None,
            limit: int = 2_000) -> pd.DataFrame:
    """Sealed batches with their anchor receipts (newest window first)."""
    with connect(dsn) as conn:
        return _df(conn, """
            SELECT batch_id, site_id, kind, amends, window_start, window_end, leaf_count, encode(root, 'hex') AS root,
                   encode(header_hash, 'hex') AS header_hash, receipt->>'backend' AS backend,
                   receipt->>'anchored_ms' AS anchored_ms, coalesce(receipt->>'ref', receipt->>'tx_id') AS receipt_ref,
                   receipt::text AS receipt, sealed_at
            FROM batches WHERE (%(s)s::text IS NULL OR site_id = %(s)s)
              AND (%(a)s::timestamptz IS NULL OR window_end > %(a)s) AND (%(b)s::timestamptz IS NULL OR window_start < %(b)s)
            ORDER BY window_start DESC, batch_id LIMIT %(n)s""", {"s": site, "a": start, "b": end, "n": limit})


def batch_leaves(dsn: str, batch_id: str) -> pd.DataFrame:
    """The readings a batch sealed (its leaf keys joined to the stored readings of its window)."""
    with connect(dsn) as conn:
        return _df(conn, """
            SELECT k.device_id, r.ts, r.channel, r.energy_wh, r.power_w, k.seq, k.idx
            FROM batches b CROSS JOIN LATERAL unnest(b.leaf_devices, b.leaf_seqs, b.leaf_idxs) AS k(device_id, seq, idx)
            LEFT JOIN readings r ON r.device_id = k.device_id AND r.seq = k.seq AND r.idx = k.idx
                                AND r.ts >= b.window_start AND r.ts < b.window_end
            WHERE b.batch_id = %s ORDER BY k.device_id, r.ts, r.channel LIMIT %s""", (batch_id, READINGS_LIMIT))


def batch_window(dsn: str, batch_id: str) -> tuple[datetime, datetime] | None:
    with connect(dsn) as conn:
        row = conn.execute("SELECT window_start, window_end FROM batches WHERE batch_id = %s", (batch_id,)).fetchone()
    return None if row is None else (row[0], row[1])


def open_ledger(kind: str, path: Path | None, trust: Any) -> Any:
    """The ledger as a verifier opens it: nothing created; a local ledger's records checked against the
    pinned operator keys when a trust is given (``LocalLedger.open_pinned``)."""
    if path is None:
        raise ValueError("no ledger configured: set [dashboard] ledger_path in the dashboard config")
    if kind == "fabric":
        from ledger.fabric.backend import FabricLedger

        return FabricLedger.from_profile(path)
    from ledger.local import LocalLedger

    if trust is not None and trust.operator_keys:
        return LocalLedger.open_pinned(path, trust.operator_keys)
    return LocalLedger.open(path, create=False)


def proof_of_reading(dsn: str, backend: Any, device: str, start: datetime, end: datetime,
                     trust: Any) -> tuple[bytes, list[str], int]:
    """The proof bundle of a device's sealed readings in [start, end) (``ledger.proofs.export_bundle``:
    read-only) and what ``verify_bundle`` says of its bytes against ``trust`` (empty: verified; without
    a trust never empty: ``NOT_VERIFIED``). Returns (bundle bytes, problems, readings proven)."""
    from ledger.proofs import export_bundle, verify_bundle

    bundle = export_bundle(dsn, backend, device, start, end)
    raw = (json.dumps(bundle, indent=1) + "\n").encode()
    return raw, verify_bundle(raw, trust), sum(len(b["readings"]) for b in bundle["batches"])
