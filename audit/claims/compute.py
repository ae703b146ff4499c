"""The claim figures from hourly energy: renewable share (annual volumetric and hourly matched),
Scope 2 (location- and market-based, reduction), on-site generation and coverage.

Owns: the maths of docs/claims.md ("How the figures are computed"), vectorised numpy over ``SiteHours`` arrays; every
function returns its figure with the named totals it comes from and the method id/version.
Pure: no I/O (the store is read by ``load.py``, certificates by ``certificates.py``); no verdicts
(``verdict.py`` compares these figures with the claims).

Unknown hours: an hour whose import, export or PV energy is NaN has unknown consumption; it is
left out of every sum and counts against coverage (``coverage``) — never read as zero.
"""

from __future__ import annotations

import numpy as np

from audit.claims.model import (
    ClaimsError,
    Coverage,
    Figure,
    OnSiteGeneration,
    RenewableShare,
    Scope2,
    SiteHours,
)

WH_PER_MWH = 1e6
FULL_EPS = 1e-9  # an hour is fully covered at coverage ≥ 1 − ε (weighted means round: 0.9999999999999999)
G_PER_T = 1e6

M_COVERAGE = "coverage/1"
M_SHARE_ANNUAL = "renewable_share.annual/1"
M_SHARE_HOURLY = "renewable_share.hourly/1"
M_LOCATION = "scope2.location/1"
M_MARKET = "scope2.market/1"
M_REDUCTION = "scope2.reduction/1"
M_ONSITE = "onsite_generation/1"


# --- per-hour series ------------------------------------------------------------------------------

def known(sh: SiteHours) -> np.ndarray:
    """Hours whose consumption is known: import, export and PV all present."""
    return np.isfinite(sh.import_wh) & np.isfinite(sh.export_wh) & np.isfinite(sh.pv_wh)


def consumption_wh(sh: SiteHours) -> np.ndarray:
    """The site's electricity use per hour: import − export + pv (Wh; NaN where unknown).
    This is the series the savings baseline (audit/baselines.py) is fitted on."""
    return sh.import_wh - sh.export_wh + sh.pv_wh


def self_consumed_wh(sh: SiteHours) -> np.ndarray:
    """On-site PV used on site per hour: clip(pv − export, 0, pv) (Wh; NaN where unknown)."""
    return np.clip(sh.pv_wh - sh.export_wh, 0.0, sh.pv_wh)


def aggregate(sites: list[SiteHours], name: str = "org") -> SiteHours:
    """An organisation's hourly totals: per hour, the sum over the sites whose hour is known.

    A site-hour counts only whole (import, export and PV all known), so the sums stay consistent;
    an hour no site knows is NaN. Coverage is consumption-weighted: Σ_s w_s·c_s,h / Σ_s w_s, where
    c_s,h is the site's coverage (0 where its hour is unknown) and w_s the site's mean hourly
    consumption over its known hours (a site with no known hour gets the mean weight of the others;
    if no site has a positive weight, equal weights)."""
    if not sites:
        raise ClaimsError("no sites to aggregate")
    start, hours = sites[0].start_ms, sites[0].hours
    for s in sites:
        if s.start_ms != start or s.hours != hours:
            raise ClaimsError(f"site {s.site} covers [{s.start_ms}, {s.end_ms}), not the period "
                              f"[{start}, {sites[0].end_ms}) of site {sites[0].site}")
    imp = np.stack([s.import_wh for s in sites])
    exp = np.stack([s.export_wh for s in sites])
    pv = np.stack([s.pv_wh for s in sites])
    ok = np.isfinite(imp) & np.isfinite(exp) & np.isfinite(pv)
    cov = np.where(ok, np.stack([s.coverage for s in sites]), 0.0)
    any_ok = ok.any(axis=0)
    sums = [np.where(any_ok, np.where(ok, a, 0.0).sum(axis=0), np.nan) for a in (imp, exp, pv)]
    w = site_weights(np.where(ok, imp - exp + pv, 0.0).sum(axis=1), ok.sum(axis=1))
    coverage = (w[:, None] * cov).sum(axis=0) / w.sum()
    return SiteHours(name, start, sums[0], sums[1], sums[2], coverage)


def site_weights(consumption_wh_sum: np.ndarray, hours_known: np.ndarray) -> np.ndarray:
    """Coverage weights of ``aggregate``: mean hourly consumption over known hours, clipped at 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(hours_known > 0, np.maximum(consumption_wh_sum / np.maximum(hours_known, 1), 0.0), np.nan)
    has = np.isfinite(w)
    w = np.where(has, w, w[has].mean() if has.any() else 0.0)
    return w if w.sum() > 0 else np.ones_like(w)


# --- coverage -------------------------------------------------------------------------------------

def coverage(sh: SiteHours) -> Coverage:
    """Period coverage from per-hour coverage; unknown hours count as 0.

    energy-weighted: Σ_h c_h·w_h / Σ_h w_h with w_h the hour's consumption (clipped at 0) where known
    and the mean known consumption where unknown (the energy expected there); hours_full: the
    fraction of hours with c_h = 1 (to 1e-9); mean: the time-weighted mean of c_h."""
    ok = known(sh)
    c = np.where(ok, np.clip(sh.coverage, 0.0, 1.0), 0.0)
    cons = np.where(ok, np.maximum(consumption_wh(sh), 0.0), 0.0)
    n_ok = int(ok.sum())
    expected = cons.sum() / n_ok if n_ok else 0.0
    w = np.where(ok, cons, expected)
    hours = max(sh.hours, 1)
    mean = float(c.sum() / hours)
    ew = float((c * w).sum() / w.sum()) if w.sum() > 0 else mean
    full = int((c >= 1.0 - FULL_EPS).sum())
    totals = {"hours": float(sh.hours), "hours_known": float(n_ok), "hours_unknown": float(sh.hours - n_ok),
              "hours_full": float(full), "consumption_known_wh": float(cons.sum()),
              "consumption_expected_unknown_wh": float(expected * (sh.hours - n_ok))}
    return Coverage(
        energy_weighted=Figure("coverage_energy_weighted", ew, "fraction", M_COVERAGE, totals),
        hours_full=Figure("coverage_hours_full", full / hours, "fraction", M_COVERAGE, totals),
        mean=Figure("coverage_mean", mean, "fraction", M_COVERAGE, totals))


# --- renewable share ------------------------------------------------------------------------------

def _known_consumption(sh: SiteHours) -> tuple[np.ndarray, float]:
    ok = known(sh)
    total = float(consumption_wh(sh)[ok].sum())
    if not ok.any() or total <= 0:
        raise ClaimsError(f"{sh.site}: no known consumption in the period (hours known: {int(ok.sum())})")
    return ok, total


def _nonneg(name: str, value: float) -> float:
    if not np.isfinite(value) or value < 0:
        raise ClaimsError(f"{name} must be a finite number ≥ 0, got {value}")
    return float(value)


def renewable_share_annual(sh: SiteHours, certificates_wh: float) -> Figure:
    """(applied certificates + on-site self-consumption) / consumption over the known hours.

    Cap rule: certificates are applied to grid electricity only, at most the grid import of the
    known hours (applied = min(usable, Σ import)); the rest is reported as unapplied."""
    usable = _nonneg("usable certificate volume", certificates_wh)
    ok, cons = _known_consumption(sh)
    grid = float(sh.import_wh[ok].sum())
    self_c = float(self_consumed_wh(sh)[ok].sum())
    applied = min(usable, grid)
    notes: tuple[str, ...] = ()
    if usable > grid:
        notes = (f"certificates capped at grid import: {applied / WH_PER_MWH:.3f} of "
                 f"{usable / WH_PER_MWH:.3f} MWh applied",)
    totals = {"consumption_wh": cons, "grid_import_wh": grid, "self_consumed_wh": self_c,
              "certificates_usable_wh": usable, "certificates_applied_wh": applied,
              "certificates_unapplied_wh": usable - applied, "renewable_wh": applied + self_c,
              "hours_known": float(ok.sum())}
    return Figure("renewable_share_annual", (applied + self_c) / cons, "fraction", M_SHARE_ANNUAL, totals, notes)


def renewable_share_hourly(sh: SiteHours, cert_supply_wh: np.ndarray) -> Figure:
    """24/7 CFE score: Σ_h min(consumption_h, self_consumed_h + cert_supply_h) / Σ_h consumption_h
    over the known hours. ``cert_supply_wh[h]``: certificate Wh whose production covers hour h
    (``certificates.hourly_certificate_supply``)."""
    supply = np.asarray(cert_supply_wh, dtype=np.float64)
    if supply.shape != (sh.hours,):
        raise ClaimsError(f"hourly certificate supply has shape {supply.shape}, the period has {sh.hours} hours")
    if not np.all(np.isfinite(supply)) or np.any(supply < 0):
        raise ClaimsError("hourly certificate supply must be finite and ≥ 0 in every hour")
    ok, cons = _known_consumption(sh)
    c, s, q = consumption_wh(sh)[ok], self_consumed_wh(sh)[ok], supply[ok]
    matched = np.minimum(c, s + q)
    self_matched = float(np.minimum(c, s).sum())
    matched_sum = float(matched.sum())
    totals = {"consumption_wh": cons, "matched_wh": matched_sum, "self_consumed_wh": float(s.sum()),
              "self_consumed_matched_wh": self_matched, "certificate_supply_wh": float(q.sum()),
              "certificate_matched_wh": matched_sum - self_matched,
              "certificate_unmatched_wh": float(q.sum()) - (matched_sum - self_matched),
              "certificate_supply_unknown_hours_wh": float(supply[~ok].sum()),
              "hours_known": float(ok.sum()), "hours_fully_matched": float((matched >= c).sum())}
    return Figure("renewable_share_hourly", matched_sum / cons, "fraction", M_SHARE_HOURLY, totals)


def renewable_share(sh: SiteHours, certificates_wh: float, cert_supply_wh: np.ndarray) -> RenewableShare:
    """Both renewable shares side by side and the gap (annual − hourly) in percentage points."""
    annual = renewable_share_annual(sh, certificates_wh)
    hourly = renewable_share_hourly(sh, cert_supply_wh)
    return RenewableShare(annual, hourly, (annual.value - hourly.value) * 100.0)


# --- Scope 2 --------------------------------------------------------------------------------------

def scope2_location(sh: SiteHours, intensity_g_per_kwh: np.ndarray) -> Figure:
    """Location-based Scope 2: Σ_h import_h × intensity_h over the known hours, in tCO2e
    (Wh × g/kWh / 1e3 = g). Exports are not netted (reported in the totals)."""
    ci = np.asarray(intensity_g_per_kwh, dtype=np.float64)
    if ci.shape != (sh.hours,):
        raise ClaimsError(f"grid intensity has shape {ci.shape}, the period has {sh.hours} hours")
    ok = known(sh)
    bad = ok & ~(np.isfinite(ci) & (ci >= 0))
    if bad.any():
        h = int(np.flatnonzero(bad)[0])
        raise ClaimsError(f"grid intensity missing or negative in {int(bad.sum())} hour(s) with consumption, "
                          f"first at hour {h} ({sh.start_ms + h * 3_600_000} ms)")
    grid = float(sh.import_wh[ok].sum())
    g = float((sh.import_wh[ok] * ci[ok]).sum() / 1e3)
    totals = {"grid_import_wh": grid, "grid_export_wh": float(sh.export_wh[ok].sum()), "emissions_g": g,
              "intensity_import_weighted_g_per_kwh": g / grid * 1e3 if grid > 0 else 0.0,
              "hours_known": float(ok.sum())}
    return Figure("scope2_location", g / G_PER_T, "tCO2e", M_LOCATION, totals,
                  ("exports not netted against import: reported separately (grid_export_wh)",))


def scope2_market(sh: SiteHours, certificates_wh: float, supplier_g_per_kwh: float | None,
                  residual_g_per_kwh: float | None, grid_average_g_per_kwh: float | None = None,
                  certificate_g_per_kwh: float = 0.0) -> Figure:
    """Market-based Scope 2 (GHG Protocol Scope 2 Guidance, hierarchy of emission factors): grid
    import covered by usable certificates at the certificates' factor (0 for renewables), at most
    the import; the remainder at the supplier-specific factor if the organisation has one, else the
    residual mix, else (no residual mix published) the grid average. tCO2e; exports not netted."""
    usable = _nonneg("usable certificate volume", certificates_wh)
    ok = known(sh)
    grid = float(sh.import_wh[ok].sum())
    applied = min(usable, grid)
    choices = [(f, src) for f, src in ((supplier_g_per_kwh, "supplier-specific"), (residual_g_per_kwh, "residual mix"),
                                       (grid_average_g_per_kwh, "grid average (no residual mix)")) if f is not None]
    if not choices:
        raise ClaimsError(f"{sh.site}: no supplier-specific, residual-mix or grid-average factor for the remainder")
    source = choices[0][1]
    factor = _nonneg(f"{source} factor (g/kWh)", choices[0][0])
    cert_factor = _nonneg("certificate factor (g/kWh)", certificate_g_per_kwh)
    g = (applied * cert_factor + (grid - applied) * factor) / 1e3
    totals = {"grid_import_wh": grid, "grid_export_wh": float(sh.export_wh[ok].sum()),
              "certificates_usable_wh": usable, "certificates_applied_wh": applied,
              "certificate_factor_g_per_kwh": cert_factor, "remainder_wh": grid - applied,
              "remainder_factor_g_per_kwh": factor, "emissions_g": g, "hours_known": float(ok.sum())}
    return Figure("scope2_market", g / G_PER_T, "tCO2e", M_MARKET, totals,
                  (f"remainder at the {source} factor", "exports not netted"))


def scope2(sh: SiteHours, intensity_g_per_kwh: np.ndarray, certificates_wh: float,
           supplier_g_per_kwh: float | None, residual_g_per_kwh: float | None) -> Scope2:
    """Both Scope 2 figures (dual reporting); the market-based remainder falls back to the
    location figure's import-weighted intensity when neither supplier nor residual factor exists."""
    loc = scope2_location(sh, intensity_g_per_kwh)
    avg = loc.totals["intensity_import_weighted_g_per_kwh"]
    return Scope2(loc, scope2_market(sh, certificates_wh, supplier_g_per_kwh, residual_g_per_kwh, avg))


def scope2_reduction(base: Figure, current: Figure) -> Figure:
    """(base − current) / base for two Scope 2 figures of the same method (location or market)."""
    if base.method != current.method or base.unit != current.unit:
        raise ClaimsError(f"reduction compares {current.method} with {base.method}: use the same method")
    if not base.value > 0:
        raise ClaimsError(f"base-period emissions are {base.value} {base.unit}: no reduction can be computed")
    totals = {"base_tco2e": base.value, "current_tco2e": current.value,
              "reduction_tco2e": base.value - current.value}
    return Figure("scope2_reduction", (base.value - current.value) / base.value, "fraction", M_REDUCTION, totals,
                  (f"both periods by {current.method}",))


# --- on-site generation ---------------------------------------------------------------------------

def onsite_generation(sh: SiteHours) -> OnSiteGeneration:
    """MWh produced (Σ pv over hours with PV known) and self-consumed (Σ clip(pv − export, 0, pv)
    over hours with PV and export known)."""
    pv_ok = np.isfinite(sh.pv_wh)
    sc_ok = pv_ok & np.isfinite(sh.export_wh)
    produced = float(sh.pv_wh[pv_ok].sum())
    self_c = float(self_consumed_wh(sh)[sc_ok].sum())
    totals = {"produced_wh": produced, "self_consumed_wh": self_c,
              "exported_of_pv_wh": float(np.minimum(sh.export_wh[sc_ok], sh.pv_wh[sc_ok]).sum()),
              "hours_pv_known": float(pv_ok.sum()), "hours_self_consumption_known": float(sc_ok.sum())}
    return OnSiteGeneration(Figure("onsite_produced", produced / WH_PER_MWH, "MWh", M_ONSITE, totals),
                            Figure("onsite_self_consumed", self_c / WH_PER_MWH, "MWh", M_ONSITE, totals))
