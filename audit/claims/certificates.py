"""The double-counting guard: findings on an organisation's energy attribute certificates.

Owns: ``certificate_findings`` (the five certificate finding kinds and their rules, docs/claims.md ("The claim file and the inputs")
"Certificate findings"), ``usable_certificates`` (the rows no refusing finding names) and
``hourly_certificate_supply`` (a certificate's MWh spread uniformly over the hours of its production
interval, as hourly matching needs it). Pure functions over ``Certificate`` rows; metered production
comes in through a callable so this module never touches the store.
Must not: read files (``inputs.py``) or decide verdicts.

Sources: GHG Protocol Scope 2 Guidance (2015), chapter 7 "Scope 2 Quality Criteria" (a contractual
instrument conveys its attributes to one claimant only, is retired/cancelled for it, and is issued and
redeemed close to the consumption period); EnergyTag Granular Certificate Scheme Standard (hourly
matching: a certificate matches consumption only in the hour it was produced).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np

from audit.claims.model import Certificate

HOUR_MS: Final = 3_600_000
DOUBLE_COUNTED: Final = "cert_double_counted"
OVER_VOLUME: Final = "cert_over_volume"
INTERVAL_MISMATCH: Final = "cert_interval_mismatch"
INFLATED: Final = "cert_inflated"
NOT_CANCELLED_FOR_ORG: Final = "cert_not_cancelled_for_org"
KINDS: Final = (DOUBLE_COUNTED, OVER_VOLUME, INTERVAL_MISMATCH, INFLATED, NOT_CANCELLED_FOR_ORG)

#: A certificate from one of our devices may exceed the device's metered production by this much
#: before it is inflated: 1 % relative (class-1 meter accuracy, IEC 62053-21) plus 1 kWh absolute
#: (register resolution, readings missing at the interval's edges).
INFLATED_REL: Final = 0.01
INFLATED_ABS_WH: Final = 1_000.0

MeteredProduction = Callable[[str, int, int], "float | None"]


@dataclass(frozen=True)
class CertFinding:
    """One finding on a certificate. ``severity`` high = the certificate is refused (not usable);
    medium = usable for the volumetric (annual) figure but not, or only partly, for hourly matching.
    ``figures`` always holds ``cert_ids`` (list) and ``lines`` (register lines, 0 when unknown)."""

    kind: str
    cert_id: str
    severity: str
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)


def _iso(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


def _line(c: Certificate) -> int:
    return int(getattr(c, "line", 0) or 0)


def _year_bounds(start_ms: int, end_ms: int) -> tuple[int, int]:
    """[1 January of the year the period starts in, 1 January after the year it ends in)."""
    y0 = datetime.fromtimestamp(start_ms / 1000, UTC).year
    y1 = datetime.fromtimestamp((end_ms - 1) / 1000, UTC).year
    return (int(datetime(y0, 1, 1, tzinfo=UTC).timestamp() * 1000), int(datetime(y1 + 1, 1, 1, tzinfo=UTC).timestamp() * 1000))


def certificate_findings(certs: Sequence[Certificate], org: str, period_start_ms: int, period_end_ms: int,
                         metered_production: MeteredProduction) -> list[CertFinding]:
    """Every finding on the register ``certs`` for organisation ``org`` and reporting period
    [period_start_ms, period_end_ms). ``metered_production(device_id, start_ms, end_ms)`` returns the
    Wh that device's anchored readings show it produced in [start, end), or None if the producer is
    not one of our metered devices. Findings are in register order, by kind within a row."""
    out: list[CertFinding] = []
    by_id: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(certs):
        by_id[c.cert_id].append(i)

    reported: set[str] = set()
    y0, y1 = _year_bounds(period_start_ms, period_end_ms)
    for c in certs:
        rows = by_id[c.cert_id]
        if len(rows) > 1 and c.cert_id not in reported:
            reported.add(c.cert_id)
            out.extend(_double_counting(c.cert_id, [certs[j] for j in rows], org))
        base = {"cert_ids": [c.cert_id], "lines": [_line(c)], "mwh": c.mwh}
        if c.cancelled_for != org:
            why = (f"not cancelled: still held by {c.holder!r}" if c.cancelled_for is None
                   else f"cancelled for {c.cancelled_for!r}, not for {org!r}")
            out.append(CertFinding(NOT_CANCELLED_FOR_ORG, c.cert_id, "high", why + "; not usable for its claims",
                                   {**base, "holder": c.holder, "cancelled_for": c.cancelled_for,
                                    "claim_ids": list(c.claim_ids)}))
        else:
            f = _interval_finding(c, period_start_ms, period_end_ms, y0, y1, base)
            if f is not None:
                out.append(f)
        f = _inflated(c, metered_production, base)
        if f is not None:
            out.append(f)
    out.extend(_inflated_together(certs, metered_production))
    return out


def _double_counting(cert_id: str, rows: list[Certificate], org: str) -> list[CertFinding]:
    lines = [_line(r) for r in rows]
    orgs = sorted({r.cancelled_for or "(not cancelled)" for r in rows})
    claims = sorted({cid for r in rows for cid in r.claim_ids})
    if len(orgs) > 1:
        how = f"cancelled for {len(orgs)} organisations ({', '.join(orgs)})"
    elif len({r.claim_ids for r in rows}) > 1:
        how = f"used for different claims ({', '.join(claims)})"
    else:
        how = "listed twice"
    figures = {"cert_ids": [cert_id], "lines": lines, "rows": len(rows), "organisations": orgs, "claim_ids": claims,
               "mwh_per_row": [r.mwh for r in rows]}
    out = [CertFinding(DOUBLE_COUNTED, cert_id, "high",
                       f"certificate {cert_id} is on {len(rows)} register rows: {how}; no row of it is usable", figures)]
    cert_mwh = max(r.mwh for r in rows)
    used = sum(r.mwh for r in rows if r.cancelled_for == org)
    if used > cert_mwh * (1 + 1e-9):
        out.append(CertFinding(OVER_VOLUME, cert_id, "high",
                               f"{org} uses {used:.3f} MWh of certificate {cert_id}, which has {cert_mwh:.3f} MWh",
                               {"cert_ids": [cert_id], "lines": lines, "used_mwh": used, "certificate_mwh": cert_mwh,
                                "excess_mwh": used - cert_mwh}))
    return out


def _interval_finding(c: Certificate, p0: int, p1: int, y0: int, y1: int, base: dict[str, Any]) -> CertFinding | None:
    c0, c1 = c.cancelled_period_start_ms, c.cancelled_period_end_ms
    s, e = c.production_start_ms, c.production_end_ms
    reasons, severity = [], "medium"
    if c0 is None or c1 is None or c0 < p0 or c1 > p1:
        reasons.append(f"cancelled for {_iso(c0)} … {_iso(c1)}, not inside the reporting period {_iso(p0)} … {_iso(p1)}")
        severity = "high"
    if s < y0 or e > y1:
        reasons.append(f"produced {_iso(s)} … {_iso(e)}, outside the reporting year(s) {_iso(y0)} … {_iso(y1)}")
        severity = "high"
    inside = max(0, min(e, p1) - max(s, p0)) / (e - s)
    if inside < 1:
        reasons.append(f"{1 - inside:.0%} of its production lies outside the reporting period: "
                       "not hourly-matchable to the period's consumption")
    if c0 is not None and c1 is not None and (c0 < s or c1 > e):
        reasons.append("cancelled for hours in which it was not produced (EnergyTag hourly matching needs the same hour)")
    if not reasons:
        return None
    return CertFinding(INTERVAL_MISMATCH, c.cert_id, severity, "; ".join(reasons),
                       {**base, "production": [s, e], "cancelled_period": [c0, c1], "period": [p0, p1],
                        "hourly_matchable_mwh": c.mwh * inside, "not_hourly_matchable_mwh": c.mwh * (1 - inside),
                        "usable_annual": severity != "high"})


def _excess(cert_wh: float, metered_wh: float) -> bool:
    return cert_wh > metered_wh * (1 + INFLATED_REL) + INFLATED_ABS_WH


def _inflated(c: Certificate, metered: MeteredProduction, base: dict[str, Any]) -> CertFinding | None:
    wh = metered(c.producer, c.production_start_ms, c.production_end_ms)
    if wh is None or not _excess(c.mwh * 1e6, wh):
        return None
    return CertFinding(INFLATED, c.cert_id, "high",
                       f"certificate {c.cert_id} is for {c.mwh:.3f} MWh but {c.producer}'s metered production over "
                       f"{_iso(c.production_start_ms)} … {_iso(c.production_end_ms)} is {wh / 1e6:.3f} MWh",
                       {**base, "producer": c.producer, "certificate_mwh": c.mwh, "metered_mwh": wh / 1e6,
                        "excess_mwh": c.mwh - wh / 1e6, "ratio": c.mwh * 1e6 / wh if wh > 0 else None})


def _inflated_together(certs: Sequence[Certificate], metered: MeteredProduction) -> list[CertFinding]:
    """Certificates of one metered device whose production intervals overlap: together they must not
    exceed the device's production over the union of their intervals (each alone may pass)."""
    out = []
    by_producer: dict[str, dict[str, Certificate]] = defaultdict(dict)
    for c in certs:
        by_producer[c.producer].setdefault(c.cert_id, c)  # a cert listed twice is double counting, not this
    for producer, group in by_producer.items():
        if len(group) < 2:
            continue
        ordered = sorted(group.values(), key=lambda c: c.production_start_ms)
        cluster = [ordered[0]]
        end = ordered[0].production_end_ms
        for c in [*ordered[1:], None]:
            if c is not None and c.production_start_ms < end:
                cluster.append(c)
                end = max(end, c.production_end_ms)
                continue
            if len(cluster) > 1:
                start = cluster[0].production_start_ms
                wh = metered(producer, start, end)
                total = sum(x.mwh for x in cluster)
                if wh is not None and _excess(total * 1e6, wh):
                    ids = [x.cert_id for x in cluster]
                    out.append(CertFinding(INFLATED, ";".join(ids), "high",
                                           f"{len(ids)} certificates with overlapping production intervals from "
                                           f"{producer} total {total:.3f} MWh but its metered production over "
                                           f"{_iso(start)} … {_iso(end)} is {wh / 1e6:.3f} MWh",
                                           {"cert_ids": ids, "lines": [_line(x) for x in cluster], "producer": producer,
                                            "certificate_mwh": total, "metered_mwh": wh / 1e6,
                                            "excess_mwh": total - wh / 1e6}))
            if c is not None:
                cluster, end = [c], c.production_end_ms
    return out


def usable_certificates(certs: Sequence[Certificate], findings: Sequence[CertFinding]) -> list[Certificate]:
    """The rows no high-severity finding names (by cert id), in register order.

    Rule: a certificate is refused when it is not cancelled for the organisation, cancelled for another
    period, produced outside the reporting year(s), on two register rows (every row of that id is
    refused: the register cannot say which use is the genuine one), over-used, or inflated beyond its
    metered device's production. ``certificate_findings`` reports each of these as high."""
    refused = {cid for f in findings if f.severity == "high" for cid in f.figures.get("cert_ids", [f.cert_id])}
    return [c for c in certs if c.cert_id not in refused]


def hourly_certificate_supply(certs: Sequence[Certificate], start_ms: int, hours: int) -> tuple[np.ndarray, np.ndarray]:
    """(supply_wh, outside_wh): certificate energy per hour of [start_ms, start_ms + hours·1 h) and,
    per certificate, the Wh produced outside that window (not hourly-matchable to it).

    Each certificate's MWh is spread uniformly over its production interval [start, end) (per ms, so a
    partial hour gets its share); the hours of the interval that fall in the window receive their part.
    Pass ``usable_certificates(...)``. Vectorised: O(certificates + hours)."""
    if start_ms % HOUR_MS or hours < 0:
        raise ValueError("start_ms must be on a whole hour and hours ≥ 0")
    n = len(certs)
    if n == 0:
        return np.zeros(hours), np.zeros(0)
    s = np.fromiter((c.production_start_ms for c in certs), np.int64, n)
    e = np.fromiter((c.production_end_ms for c in certs), np.int64, n)
    wh = np.fromiter((c.mwh for c in certs), np.float64, n) * 1e6
    rate = wh / np.maximum(e - s, 1)  # Wh per ms
    w1 = start_ms + hours * HOUR_MS
    a, b = np.clip(s, start_ms, w1), np.clip(e, start_ms, w1)
    inside = (b > a) & (e > s)
    outside_wh = wh - np.where(inside, rate * (b - a), 0.0)
    a, b, r = a[inside] - start_ms, b[inside] - start_ms, rate[inside]
    ha, hb = a // HOUR_MS, b // HOUR_MS  # hour holding a; hour holding b (b on a boundary: its partial is 0)
    same = ha == hb
    acc = np.zeros(hours + 2)
    # Certificates inside one hour.
    acc += np.bincount(ha[same], r[same] * (b[same] - a[same]), minlength=hours + 2)
    a, b, r, ha, hb = a[~same], b[~same], r[~same], ha[~same], hb[~same]
    acc += np.bincount(ha, r * ((ha + 1) * HOUR_MS - a), minlength=hours + 2)  # first, partial hour
    acc += np.bincount(hb, r * (b - hb * HOUR_MS), minlength=hours + 2)  # last, partial hour
    # Whole hours ha+1 … hb-1 at r·1 h each, as a difference array.
    diff = np.bincount(ha + 1, r * HOUR_MS, minlength=hours + 2) - np.bincount(hb, r * HOUR_MS, minlength=hours + 2)
    supply = acc[:hours] + np.cumsum(diff)[:hours]
    return supply, np.maximum(outside_wh, 0.0)
