"""The report's energy figures from the hourly energy of each site (``audit.claims.load.load_site_hours``).

Owns: per-site, per-month and organisation totals and the hourly table (pure: arrays in, numbers out).
Every total is over the **known** hours of a site (import, export and PV all known), as the claims
engine sums them (docs/claims.md, "Unknown hours and period coverage"): the hourly CSV/Parquet rows whose
three values are present add up to exactly these totals. The organisation's totals are the sums of its
sites' (``audit.claims.compute.aggregate`` sums the known site-hours), its coverage the energy-weighted one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from audit.claims import compute as c
from audit.claims.model import SiteHours
from audit.reports.model import HOUR_MS


def _totals(sh: SiteHours) -> dict[str, Any]:
    ok = c.known(sh)
    return {"hours": int(sh.hours), "hours_known": int(ok.sum()),
            "import_wh": float(sh.import_wh[ok].sum()), "export_wh": float(sh.export_wh[ok].sum()),
            "pv_wh": float(sh.pv_wh[ok].sum()), "consumption_wh": float(c.consumption_wh(sh)[ok].sum()),
            "self_consumed_wh": float(c.self_consumed_wh(sh)[ok].sum()),
            "coverage_mean": float(np.where(ok, np.clip(sh.coverage, 0, 1), 0.0).mean()) if sh.hours else 0.0}


def month_keys(start_ms: int, hours: int) -> np.ndarray:
    """'YYYY-MM' (UTC) of every hour of the period."""
    t = start_ms + np.arange(hours, dtype=np.int64) * HOUR_MS
    return np.datetime_as_string(t.astype("datetime64[ms]"), unit="M")


def energy(site_hours: list[SiteHours]) -> dict[str, Any]:
    """``{"sites": {site: totals}, "org": totals + coverage, "months": [{month, totals}]}``."""
    org = c.aggregate(site_hours)
    cov = c.coverage(org)
    out_org = _totals(org)
    out_org["coverage_energy_weighted"] = cov.energy_weighted.value
    out_org["coverage_hours_full"] = cov.hours_full.value
    months = []
    keys = month_keys(org.start_ms, org.hours)
    ok = c.known(org)
    cons, selfc = c.consumption_wh(org), c.self_consumed_wh(org)
    for m in sorted(set(keys.tolist())):
        sel = (keys == m) & ok
        months.append({"month": m, "hours": int((keys == m).sum()), "hours_known": int(sel.sum()),
                       "import_wh": float(org.import_wh[sel].sum()), "export_wh": float(org.export_wh[sel].sum()),
                       "pv_wh": float(org.pv_wh[sel].sum()), "consumption_wh": float(cons[sel].sum()),
                       "self_consumed_wh": float(selfc[sel].sum())})
    return {"sites": {s.site: _totals(s) for s in site_hours}, "org": out_org, "months": months}


def daily(site_hours: list[SiteHours]) -> list[dict[str, Any]]:
    """The organisation's known consumption, import and PV per UTC day (for a short period's chart)."""
    org = c.aggregate(site_hours)
    ok = c.known(org)
    day = (org.start_ms + np.arange(org.hours, dtype=np.int64) * HOUR_MS) // (24 * HOUR_MS)
    out = []
    for d in np.unique(day):
        sel = (day == d) & ok
        out.append({"day": datetime.fromtimestamp(int(d) * 86400, UTC).strftime("%Y-%m-%d"),
                    "consumption_wh": float(c.consumption_wh(org)[sel].sum()),
                    "import_wh": float(org.import_wh[sel].sum()), "pv_wh": float(org.pv_wh[sel].sum())})
    return out


def hourly_columns(site_hours: list[SiteHours]) -> dict[str, np.ndarray]:
    """The hourly table, site by site and hour by hour: NaN where unknown (empty in CSV, null in Parquet)."""
    n = sum(s.hours for s in site_hours)
    sites = np.empty(n, dtype=object)
    hour_ms = np.empty(n, dtype=np.int64)
    cols = {k: np.empty(n) for k in ("import_wh", "export_wh", "pv_wh", "consumption_wh", "coverage")}
    i = 0
    for s in site_hours:
        j = i + s.hours
        sites[i:j] = s.site
        hour_ms[i:j] = s.start_ms + np.arange(s.hours, dtype=np.int64) * HOUR_MS
        cols["import_wh"][i:j] = s.import_wh
        cols["export_wh"][i:j] = s.export_wh
        cols["pv_wh"][i:j] = s.pv_wh
        cols["consumption_wh"][i:j] = c.consumption_wh(s)
        cols["coverage"][i:j] = s.coverage
        i = j
    return {"site": sites, "hour_start_ms": hour_ms, **cols}
