"""What a verdict must know besides the figures: anchoring of the period's readings, and findings.

Owns: ``anchoring`` (the anchored batches of the claim's sites and period — the figures rest on them —,
and how many stored readings of the period no batch holds yet) and ``findings_considered`` (the audit
findings on the devices whose data a claim uses, in its period). Reads the store; never writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

#: Roles whose data the claim figures use (main meter: import/export; inverter: pv). Sub-meters are
#: loads inside the main meter: their findings do not touch any figure.
FIGURE_KINDS = ("main_meter", "pv_inverter")


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(frozen=True)
class Anchoring:
    batches: list[tuple[str, str]]  # (batch_id, header_hash hex), sorted
    anchored_readings: int  # Σ leaf_count of those batches
    stored_readings: int  # readings of the sites' devices in the period
    windows: int  # distinct (site, window) sealed

    @property
    def unanchored(self) -> int:
        return max(self.stored_readings - self.anchored_readings, 0)


def anchoring(conn: psycopg.Connection[Any], sites: list[str], start_ms: int, end_ms: int) -> Anchoring:
    """The batches whose windows lie in [start, end) for the sites, against the stored readings.

    The period is taken in whole windows (claims periods are hour-aligned; windows are hours)."""
    rows = conn.execute(
        "SELECT batch_id, header_hash, leaf_count, site_id, window_start FROM batches "
        "WHERE site_id = ANY(%s) AND window_start >= %s AND window_start < %s ORDER BY batch_id",
        (sites, _ts(start_ms), _ts(end_ms))).fetchall()
    stored = conn.execute(
        "SELECT count(*) FROM readings r JOIN devices d USING (device_id) "
        "WHERE d.site_id = ANY(%s) AND r.ts >= %s AND r.ts < %s", (sites, _ts(start_ms), _ts(end_ms))).fetchone()[0]
    return Anchoring(batches=[(r[0], bytes(r[1]).hex()) for r in rows], anchored_readings=sum(r[2] for r in rows),
                     stored_readings=int(stored), windows=len({(r[3], r[4]) for r in rows}))


@dataclass(frozen=True)
class FindingsConsidered:
    by_kind: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> {severity, count, devices}

    @property
    def high(self) -> list[str]:
        return sorted(k for k, v in self.by_kind.items() if v["severity"] == "high")

    def as_json(self) -> list[dict[str, Any]]:
        return [{"kind": k, **v} for k, v in sorted(self.by_kind.items())]


def findings_considered(conn: psycopg.Connection[Any], sites: list[str], start_ms: int, end_ms: int,
                        kinds: tuple[str, ...] = FIGURE_KINDS) -> FindingsConsidered:
    """Findings of the latest audit on the sites' figure devices (or site-wide) overlapping [start, end)."""
    rows = conn.execute(
        "SELECT f.kind, f.severity, count(*), array_agg(DISTINCT coalesce(f.device_id, f.site_id)) FROM findings f "
        "LEFT JOIN devices d ON d.device_id = f.device_id "
        "WHERE f.site_id = ANY(%s) AND f.start_ts < %s AND f.end_ts >= %s "
        "AND (f.device_id IS NULL OR d.kind = ANY(%s)) GROUP BY 1, 2",
        (sites, _ts(end_ms), _ts(start_ms), list(kinds))).fetchall()
    out: dict[str, dict[str, Any]] = {}
    for kind, severity, n, devices in rows:
        cur = out.setdefault(kind, {"severity": severity, "count": 0, "devices": []})
        cur["count"] += int(n)
        cur["devices"] = sorted(set(cur["devices"]) | set(devices))
        if severity == "high":
            cur["severity"] = "high"
    return FindingsConsidered(out)
