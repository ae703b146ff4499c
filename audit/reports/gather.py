"""What a report rests on, read from the store and the ledger: sites, verdict set, findings, coverage, batches.

Owns: the queries of a report (reads only; nothing here writes). The figures are computed from the hourly
energy by ``figures.py``; the verdicts are the claims engine's, as anchored in ``claim_verdict_sets``.

* **Sites** of an organisation: the claim file's, else those of its latest verdict set (its context).
* **Verdict set**: the newest set of the organisation not superseded by a restatement whose claim period
  overlaps the report period (with a claim file: the set that ``check_claims`` just anchored or found unchanged).
* **Findings**: every stored finding on the sites overlapping the period.
* **Coverage** per site: readings expected (per device and channel, the mode of its hourly counts over the
  period's hours with data, the largest on a tie — the claims engine's rule — times the period's hours),
  stored (the rollup's counts), sealed (Σ leaf_count of the sites' batches of the period's windows) and
  anchored (those batches whose header the ledger holds with the same hash).
* **Batches** the figures rest on: every batch of the sites' windows in [from − 1 h, to) (hour 0's energy
  starts from the hour before), with its receipt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import psycopg

from audit.reports.model import HOUR_MS, ReportError
from ledger.backend import LedgerBackend


def ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def ms(t: datetime) -> int:
    return int(round(t.timestamp() * 1000))


def verdict_set(conn: psycopg.Connection[Any], org: str, p0: int, p1: int,
                set_id: str | None = None) -> dict[str, Any] | None:
    """The verdict set a report shows (see the module docstring), or None."""
    sql = ("SELECT set_id, period_start, period_end, claim_file_sha256, context_sha256, context, verdicts, header, "
           "receipt, supersedes, created_at FROM claim_verdict_sets s WHERE ")
    if set_id is not None:
        row = conn.execute(sql + "set_id = %s", (set_id,)).fetchone()
    else:
        row = conn.execute(
            sql + "org_id = %s AND period_start < %s AND period_end > %s AND NOT EXISTS "
            "(SELECT 1 FROM claim_verdict_sets n WHERE n.supersedes = s.set_id) ORDER BY created_at DESC LIMIT 1",
            (org, ts(p1), ts(p0))).fetchone()
    if row is None:
        return None
    sid, a, b, claim_sha, ctx_sha, ctx, leaves, header, receipt, supersedes, created = row
    return {"set_id": sid, "period": [ms(a), ms(b)], "claim_file_sha256": claim_sha, "context_sha256": ctx_sha,
            "context": json.loads(bytes(ctx)), "verdicts": [json.loads(bytes(v)) for v in leaves],
            "header": bytes(header).decode(), "receipt": receipt, "supersedes": supersedes,
            "created_ms": ms(created)}


def org_sites(conn: psycopg.Connection[Any], org: str) -> list[str]:
    """The sites of the organisation's latest verdict set (any period)."""
    row = conn.execute("SELECT context FROM claim_verdict_sets WHERE org_id = %s ORDER BY created_at DESC LIMIT 1",
                       (org,)).fetchone()
    if row is None:
        raise ReportError(f"organisation {org!r} has no verdict set to take its sites from: pass a claim file "
                          f"(or the sites)")
    return list(json.loads(bytes(row[0]))["sites"])


def site_names(conn: psycopg.Connection[Any], sites: list[str]) -> dict[str, dict[str, Any]]:
    rows = conn.execute("SELECT s.site_id, s.name, count(d.device_id), array_remove(array_agg(d.device_id ORDER BY "
                        "d.device_id), NULL) FROM sites s LEFT JOIN devices d USING (site_id) WHERE s.site_id = ANY(%s) "
                        "GROUP BY 1, 2", (sites,)).fetchall()
    found = {r[0]: {"name": r[1], "devices": list(r[3])} for r in rows}
    missing = [s for s in sites if s not in found]
    if missing:
        raise ReportError(f"unknown site(s) {', '.join(missing)}")
    return found


FINDINGS = ("SELECT id, site_id, device_id, kind, severity, start_ts, end_ts, detector, detector_version, evidence "
            "FROM findings WHERE site_id = ANY(%s) AND start_ts < %s AND end_ts >= %s "
            "ORDER BY start_ts, site_id, coalesce(device_id, ''), kind, id")


def findings(conn: psycopg.Connection[Any], sites: list[str], p0: int, p1: int) -> list[dict[str, Any]]:
    return [{"id": int(i), "site": s, "device": d, "kind": k, "severity": sev, "start_ms": ms(a), "end_ms": ms(b),
             "detector": det, "detector_version": ver, "evidence": ev}
            for i, s, d, k, sev, a, b, det, ver, ev in conn.execute(FINDINGS, (sites, ts(p1), ts(p0)))]


#: Per device and channel: readings stored in the period, hours with data and the mode of the hourly counts
#: (the largest on a tie: ``mode()`` takes the first of equally frequent values in its order).
COUNTS = """
WITH h AS (SELECT r.device_id, r.channel, date_trunc('hour', r.bucket, 'UTC') AS hr, sum(r.n_readings) AS n
           FROM readings_15min r WHERE r.device_id = ANY(%s) AND r.bucket >= %s AND r.bucket < %s GROUP BY 1, 2, 3)
SELECT device_id, channel, sum(n)::bigint, count(*)::bigint, mode() WITHIN GROUP (ORDER BY n DESC)::bigint
FROM h GROUP BY 1, 2"""

BATCHES = ("SELECT batch_id, site_id, kind, amends, window_start, window_end, leaf_count, encode(root, 'hex'), "
           "encode(header_hash, 'hex'), receipt::text FROM batches WHERE site_id = ANY(%s) AND window_start >= %s "
           "AND window_start < %s ORDER BY site_id, window_start, batch_id")


def batches(conn: psycopg.Connection[Any], sites: list[str], p0: int, p1: int) -> list[tuple[Any, ...]]:
    """Rows of the sites' batches whose window starts in [p0 − 1 h, p1), receipt as JSON text."""
    return conn.execute(BATCHES, (sites, ts(p0 - HOUR_MS), ts(p1))).fetchall()


def on_ledger(backend: LedgerBackend, wanted: dict[str, str]) -> set[str]:
    """The batch ids of ``wanted`` ({batch_id: header_hash hex}) that the ledger holds with that header hash.

    Few batches: one ``get`` each; many (a year of windows): one pass over the ledger's events."""
    if len(wanted) <= 2000:
        out = set()
        for bid, hh in wanted.items():
            got = backend.get(bid)
            if got is not None and got[1].header_hash == hh:
                out.add(bid)
        return out
    return {ev.header.batch_id for ev in backend.events()
            if wanted.get(ev.header.batch_id) == ev.receipt.header_hash}


def coverage(conn: psycopg.Connection[Any], sites: list[str], devices: dict[str, list[str]], p0: int, p1: int,
             batch_rows: Iterable[tuple[Any, ...]], anchored: set[str]) -> list[dict[str, Any]]:
    """Per site: readings expected, stored, sealed and anchored over [p0, p1) (module docstring)."""
    hours = (p1 - p0) // HOUR_MS
    all_devices = [d for s in sites for d in devices[s]]
    per_dev: dict[str, list[tuple[str, int, int, int]]] = {}
    for dev, ch, n, hrs, mode in conn.execute(COUNTS, (all_devices, ts(p0), ts(p1))):
        per_dev.setdefault(dev, []).append((ch, int(n), int(hrs), int(mode)))
    sealed: dict[str, int] = dict.fromkeys(sites, 0)
    anch: dict[str, int] = dict.fromkeys(sites, 0)
    for bid, site, _k, _a, w0, _w1, leaf_count, *_ in batch_rows:
        if ms(w0) < p0:
            continue  # the hour before the period: the figures use it, the period's coverage does not
        sealed[site] += int(leaf_count)
        if bid in anchored:
            anch[site] += int(leaf_count)
    out = []
    for s in sites:
        expected = stored = 0
        channels = []
        silent = []
        for dev in devices[s]:
            rows = per_dev.get(dev, [])
            if not rows:
                silent.append(dev)
            for ch, n, hrs, mode in rows:
                channels.append({"device": dev, "channel": ch, "stored": n, "hours_with_data": hrs,
                                 "expected_per_hour": mode, "expected": mode * hours})
                expected += mode * hours
                stored += n
        out.append({"site": s, "hours": hours, "readings_expected": expected, "readings_stored": stored,
                    "readings_sealed": sealed[s], "readings_anchored": anch[s],
                    "stored_share": stored / expected if expected else None,
                    "sealed_share": sealed[s] / stored if stored else None,
                    "anchored_share": anch[s] / stored if stored else None,
                    "silent_devices": silent, "channels": channels})
    return out
