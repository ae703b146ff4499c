"""The claim figures written the way an analyst would, with pandas: the reference ``compute.py`` and
``load.py`` are checked against (tests and benchmarks/bench_claims.py assert equal figures).

Owns: a second, independent implementation of docs/claims.md ("How the figures are computed") — reading the ``energy_hourly``
view into a DataFrame, pivoting, ``groupby`` sums — kept deliberately plain. Not used by verdicts.
Frames: a site-hours frame has columns ``import_wh, export_wh, pv_wh, coverage`` indexed by hour
number (0 … hours−1); the long frame of several sites has a ``site`` column too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from audit.claims import compute as c
from audit.claims.model import HOUR_MS, ClaimsError, Coverage, Figure, OnSiteGeneration, SiteHours

SERIES = {("main_meter", "import"): "import_wh", ("main_meter", "export"): "export_wh",
          ("pv_inverter", "pv"): "pv_wh"}
COLS = ["import_wh", "export_wh", "pv_wh"]


def frame(sh: SiteHours) -> pd.DataFrame:
    return pd.DataFrame({"import_wh": sh.import_wh, "export_wh": sh.export_wh, "pv_wh": sh.pv_wh,
                         "coverage": sh.coverage})


def long_frame(sites: list[SiteHours]) -> pd.DataFrame:
    return pd.concat([frame(s).rename_axis("hour").reset_index().assign(site=s.site) for s in sites],
                     ignore_index=True)


def load_site_hours(conn: psycopg.Connection[Any], sites: Sequence[str], start_ms: int, end_ms: int) -> pd.DataFrame:
    """The long site-hours frame of the period, from the ``energy_hourly`` view."""
    hours = (end_ms - start_ms) // HOUR_MS
    with conn.transaction():
        conn.execute("SET LOCAL TimeZone = 'UTC'")  # energy_hourly's date_trunc('hour') in UTC
        devices = pd.DataFrame(conn.execute(
            "SELECT device_id, site_id, kind FROM devices WHERE site_id = ANY(%s)", (list(sites),)).fetchall(),
            columns=["device_id", "site", "kind"])
        rows = conn.execute(
            "SELECT e.device_id, e.channel, (extract(epoch FROM e.bucket) * 1000)::bigint, e.energy_wh::float8, "
            "e.n_readings FROM energy_hourly e JOIN devices d USING (device_id) WHERE d.site_id = ANY(%s) "
            "AND e.bucket >= %s AND e.bucket < %s",
            (list(sites), dt.datetime.fromtimestamp(start_ms / 1000, dt.UTC),
             dt.datetime.fromtimestamp(end_ms / 1000, dt.UTC))).fetchall()
    df = pd.DataFrame(rows, columns=["device_id", "channel", "ts_ms", "energy_wh", "n"])
    df["energy_wh"] = df["energy_wh"].astype(float)
    df["hour"] = (df["ts_ms"] - start_ms) // HOUR_MS
    df.loc[df["energy_wh"] < 0, "energy_wh"] = np.nan  # the register fell: unknown
    expected = df.groupby(["device_id", "channel"])["n"].agg(lambda s: s.mode().max())
    df["coverage"] = (df["n"] / df.set_index(["device_id", "channel"]).index.map(expected)).clip(upper=1.0)
    df.loc[df["energy_wh"].isna(), "coverage"] = 0.0

    # every channel the registry says the sites have, every hour: missing hours are NaN, coverage 0
    channels = [(d, ch, site, SERIES[(kind, ch)]) for d, site, kind in devices.itertuples(index=False)
                for (k, ch) in SERIES if k == kind]
    grid = pd.DataFrame([(d, ch, site, col, h) for d, ch, site, col in channels for h in range(hours)],
                        columns=["device_id", "channel", "site", "series", "hour"])
    grid = grid.merge(df[["device_id", "channel", "hour", "energy_wh", "coverage"]],
                      on=["device_id", "channel", "hour"], how="left")
    grid["coverage"] = grid["coverage"].fillna(0.0)
    energy = grid.groupby(["site", "hour", "series"])["energy_wh"].sum(skipna=False).unstack("series")
    cover = grid.groupby(["site", "hour"])["coverage"].min()
    out = []
    for site in sites:
        kinds = set(devices.loc[devices["site"] == site, "kind"])
        f = pd.DataFrame(index=pd.RangeIndex(hours, name="hour"))
        if "main_meter" in kinds:
            e = energy.loc[site]
            f["import_wh"], f["export_wh"], f["coverage"] = e["import_wh"], e["export_wh"], cover.loc[site]
        else:  # no main meter: grid import and export unknown, nothing covered
            f["import_wh"], f["export_wh"], f["coverage"] = np.nan, np.nan, 0.0
        f["pv_wh"] = energy.loc[site, "pv_wh"] if "pv_inverter" in kinds else 0.0
        out.append(f[[*COLS, "coverage"]].reset_index().assign(site=site))
    return pd.concat(out, ignore_index=True)


def to_site_hours(long: pd.DataFrame, start_ms: int) -> list[SiteHours]:
    return [SiteHours(str(site), start_ms, *(g.sort_values("hour")[k].to_numpy(np.float64)
                                             for k in [*COLS, "coverage"]))
            for site, g in long.groupby("site", sort=False)]


def aggregate(long: pd.DataFrame) -> pd.DataFrame:
    """Organisation totals per hour (see ``compute.aggregate`` for the rule)."""
    df = long.copy()
    df["known"] = df[COLS].notna().all(axis=1)
    df["consumption_wh"] = df["import_wh"] - df["export_wh"] + df["pv_wh"]
    known = df[df["known"]]
    hours = pd.RangeIndex(int(df["hour"].max()) + 1, name="hour")
    org = known.groupby("hour")[COLS].sum().reindex(hours)
    w = known.groupby("site")["consumption_wh"].mean().clip(lower=0).reindex(df["site"].unique())
    w = w.fillna(w.mean() if w.notna().any() else 0.0)
    if w.sum() <= 0:
        w[:] = 1.0
    df["cov_w"] = df["coverage"].where(df["known"], 0.0) * df["site"].map(w)
    org["coverage"] = df.groupby("hour")["cov_w"].sum().reindex(hours) / w.sum()
    return org


def _derive(h: pd.DataFrame) -> pd.DataFrame:
    h = h.copy()
    h["known"] = h[COLS].notna().all(axis=1)
    h["consumption_wh"] = h["import_wh"] - h["export_wh"] + h["pv_wh"]
    h["self_consumed_wh"] = (h["pv_wh"] - h["export_wh"]).clip(lower=0).clip(upper=h["pv_wh"])
    return h


def coverage(h: pd.DataFrame) -> Coverage:
    h = _derive(h)
    cov = h["coverage"].clip(0, 1).where(h["known"], 0.0)
    cons = h.loc[h["known"], "consumption_wh"].clip(lower=0)
    expected = cons.mean() if len(cons) else 0.0
    w = h["consumption_wh"].clip(lower=0).where(h["known"], expected)
    mean = cov.mean()
    ew = (cov * w).sum() / w.sum() if w.sum() > 0 else mean
    full = int((cov >= 1 - c.FULL_EPS).sum())
    n, n_ok = len(h), int(h["known"].sum())
    totals = {"hours": float(n), "hours_known": float(n_ok), "hours_unknown": float(n - n_ok),
              "hours_full": float(full), "consumption_known_wh": float(cons.sum()),
              "consumption_expected_unknown_wh": float(expected * (n - n_ok))}
    return Coverage(Figure("coverage_energy_weighted", float(ew), "fraction", c.M_COVERAGE, totals),
                    Figure("coverage_hours_full", full / n, "fraction", c.M_COVERAGE, totals),
                    Figure("coverage_mean", float(mean), "fraction", c.M_COVERAGE, totals))


def renewable_share_annual(h: pd.DataFrame, certificates_wh: float) -> Figure:
    k = _derive(h).query("known")
    cons, grid, self_c = k["consumption_wh"].sum(), k["import_wh"].sum(), k["self_consumed_wh"].sum()
    if cons <= 0:
        raise ClaimsError("no known consumption")
    applied = min(certificates_wh, grid)
    totals = {"consumption_wh": cons, "grid_import_wh": grid, "self_consumed_wh": self_c,
              "certificates_usable_wh": certificates_wh, "certificates_applied_wh": applied,
              "certificates_unapplied_wh": certificates_wh - applied, "renewable_wh": applied + self_c,
              "hours_known": float(len(k))}
    return Figure("renewable_share_annual", (applied + self_c) / cons, "fraction", c.M_SHARE_ANNUAL, totals)


def renewable_share_hourly(h: pd.DataFrame, cert_supply_wh: np.ndarray) -> Figure:
    d = _derive(h)
    d["supply_wh"] = cert_supply_wh
    k = d[d["known"]]
    matched = pd.concat([k["consumption_wh"], k["self_consumed_wh"] + k["supply_wh"]], axis=1).min(axis=1)
    self_m = pd.concat([k["consumption_wh"], k["self_consumed_wh"]], axis=1).min(axis=1).sum()
    cons = k["consumption_wh"].sum()
    if cons <= 0:
        raise ClaimsError("no known consumption")
    totals = {"consumption_wh": cons, "matched_wh": matched.sum(), "self_consumed_wh": k["self_consumed_wh"].sum(),
              "self_consumed_matched_wh": self_m, "certificate_supply_wh": k["supply_wh"].sum(),
              "certificate_matched_wh": matched.sum() - self_m,
              "certificate_unmatched_wh": k["supply_wh"].sum() - (matched.sum() - self_m),
              "certificate_supply_unknown_hours_wh": d.loc[~d["known"], "supply_wh"].sum(),
              "hours_known": float(len(k)), "hours_fully_matched": float((matched >= k["consumption_wh"]).sum())}
    return Figure("renewable_share_hourly", matched.sum() / cons, "fraction", c.M_SHARE_HOURLY, totals)


def scope2_location(h: pd.DataFrame, intensity_g_per_kwh: np.ndarray) -> Figure:
    d = _derive(h)
    d["g_per_kwh"] = intensity_g_per_kwh
    k = d[d["known"]]
    g = (k["import_wh"] * k["g_per_kwh"]).sum() / 1e3
    grid = k["import_wh"].sum()
    totals = {"grid_import_wh": grid, "grid_export_wh": k["export_wh"].sum(), "emissions_g": g,
              "intensity_import_weighted_g_per_kwh": g / grid * 1e3 if grid > 0 else 0.0,
              "hours_known": float(len(k))}
    return Figure("scope2_location", g / 1e6, "tCO2e", c.M_LOCATION, totals)


def scope2_market(h: pd.DataFrame, certificates_wh: float, supplier_g_per_kwh: float | None,
                  residual_g_per_kwh: float | None, grid_average_g_per_kwh: float | None = None,
                  certificate_g_per_kwh: float = 0.0) -> Figure:
    k = _derive(h).query("known")
    grid = k["import_wh"].sum()
    applied = min(certificates_wh, grid)
    factor = next(f for f in (supplier_g_per_kwh, residual_g_per_kwh, grid_average_g_per_kwh) if f is not None)
    g = (applied * certificate_g_per_kwh + (grid - applied) * factor) / 1e3
    totals = {"grid_import_wh": grid, "grid_export_wh": k["export_wh"].sum(),
              "certificates_usable_wh": certificates_wh, "certificates_applied_wh": applied,
              "certificate_factor_g_per_kwh": certificate_g_per_kwh, "remainder_wh": grid - applied,
              "remainder_factor_g_per_kwh": factor, "emissions_g": g, "hours_known": float(len(k))}
    return Figure("scope2_market", g / 1e6, "tCO2e", c.M_MARKET, totals)


def scope2_reduction(base: Figure, current: Figure) -> Figure:
    totals = {"base_tco2e": base.value, "current_tco2e": current.value,
              "reduction_tco2e": base.value - current.value}
    return Figure("scope2_reduction", (base.value - current.value) / base.value, "fraction", c.M_REDUCTION, totals)


def onsite_generation(h: pd.DataFrame) -> OnSiteGeneration:
    d = _derive(h)
    pv = d[d["pv_wh"].notna()]
    sc = pv[pv["export_wh"].notna()]
    totals = {"produced_wh": pv["pv_wh"].sum(), "self_consumed_wh": sc["self_consumed_wh"].sum(),
              "exported_of_pv_wh": sc[["export_wh", "pv_wh"]].min(axis=1).sum(),
              "hours_pv_known": float(len(pv)), "hours_self_consumption_known": float(len(sc))}
    return OnSiteGeneration(Figure("onsite_produced", totals["produced_wh"] / 1e6, "MWh", c.M_ONSITE, totals),
                            Figure("onsite_self_consumed", totals["self_consumed_wh"] / 1e6, "MWh", c.M_ONSITE,
                                   totals))
