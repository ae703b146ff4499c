"""statsmodels baselines: TOWT savings model (ASHRAE Guideline 14 metrics) and STL residuals.

Owns: the time-of-week-and-temperature (TOWT) regression in the spirit of CalTRACK's hourly
method, its G14 fit check, predicted vs. metered energy over a reporting period with the
fractional savings uncertainty, and robust STL decomposition residual outliers. Pure functions on
numpy arrays, plus ``load_site_hourly`` (the thin loader from the store) at the bottom.
Must not: write to the store, or report savings from a model that failed the G14 check.
Formulas: audit/g14.py and docs/audit.md ("Baselines").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC as _UTC

import numpy as np
import statsmodels.api as sm
from statsmodels.tsa.seasonal import STL

from audit import g14

MS_PER_HOUR = 3_600_000
#: Temperature change points (°C) of the piecewise-linear term, about CalTRACK's 30/45/55/65/75/90 °F.
DEFAULT_KNOTS_C: tuple[float, ...] = (0.0, 7.0, 13.0, 18.0, 24.0, 32.0)
MIN_HOURS_PER_SEGMENT = 20  # a temperature segment with fewer baseline hours is merged into its neighbour
CONFIDENCES = (0.68, 0.90)


class BaselineError(ValueError):
    """The baseline cannot be fitted or used (too little data, unfit model, times it never saw)."""


def time_of_week(hour_ms: np.ndarray) -> np.ndarray:
    """Hour of the week, 0 = Monday 00:00 UTC … 167 = Sunday 23:00 (1970-01-01 was a Thursday)."""
    return ((np.asarray(hour_ms, dtype=np.int64) // MS_PER_HOUR) + 72) % 168


def usable_knots(temp_c: np.ndarray, knots: tuple[float, ...], min_count: int = MIN_HOURS_PER_SEGMENT) -> tuple[float, ...]:
    """Drop change points until every temperature segment holds ≥ ``min_count`` points."""
    ks = [k for k in sorted(knots) if temp_c.min() < k < temp_c.max()]
    while ks:
        edges = [-np.inf, *ks, np.inf]
        counts = [int(np.sum((temp_c >= a) & (temp_c < b))) for a, b in zip(edges, edges[1:], strict=False)]
        sparse = next((i for i, c in enumerate(counts) if c < min_count), None)
        if sparse is None:
            break
        ks.pop(min(sparse, len(ks) - 1))  # merge the sparse segment with the one above (the last: below)
    return tuple(ks)


def temperature_basis(temp_c: np.ndarray, knots: tuple[float, ...]) -> np.ndarray:
    """Piecewise-linear temperature columns: min(T, k₁), clip(T − kⱼ, 0, kⱼ₊₁ − kⱼ), max(T − kₘ, 0).

    They sum to T, so their coefficients are the slopes (Wh/°C) of a continuous piecewise-linear
    function with change points at the knots.
    """
    t = np.asarray(temp_c, dtype=float)
    if not knots:
        return t[:, None]
    cols = [np.minimum(t, knots[0])]
    for a, b in zip(knots, knots[1:], strict=False):
        cols.append(np.clip(t - a, 0, b - a))
    cols.append(np.maximum(t - knots[-1], 0))
    return np.column_stack(cols)


def design_matrix(hour_ms: np.ndarray, temp_c: np.ndarray, tow_levels: np.ndarray,
                  knots: tuple[float, ...]) -> np.ndarray:
    tow = time_of_week(hour_ms)
    unseen = np.setdiff1d(np.unique(tow), tow_levels)
    if unseen.size:
        raise BaselineError(f"{unseen.size} hour(s) of the week never occur in the baseline period "
                            f"(first: hour {int(unseen[0])} of the week); the baseline needs every hour of the week")
    ind = (tow[:, None] == tow_levels[None, :]).astype(float)
    return np.hstack([ind, temperature_basis(temp_c, knots)])


@dataclass(frozen=True)
class TowtModel:
    params: np.ndarray
    tow_levels: np.ndarray
    knots: tuple[float, ...]
    hourly: g14.FitMetrics
    monthly: g14.FitMetrics | None  # None: fewer than 3 months of baseline
    rho: float  # lag-1 autocorrelation of the residuals
    reasons: list[str] = field(default_factory=list)  # why the model is unfit (empty: fit)

    @property
    def n(self) -> int:
        return self.hourly.n

    @property
    def p(self) -> int:
        return self.hourly.p

    @property
    def fit(self) -> bool:
        return not self.reasons

    def predict(self, hour_ms: np.ndarray, temp_c: np.ndarray) -> np.ndarray:
        return design_matrix(hour_ms, temp_c, self.tow_levels, self.knots) @ self.params


def _monthly(hour_ms: np.ndarray, y: np.ndarray, y_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    month = np.asarray(hour_ms, dtype="datetime64[ms]").astype("datetime64[M]")
    keys, inv = np.unique(month, return_inverse=True)
    return np.bincount(inv, y, keys.size), np.bincount(inv, y_hat, keys.size)


def fit_towt(hour_ms: np.ndarray, energy_wh: np.ndarray, temp_c: np.ndarray,
             knots: tuple[float, ...] = DEFAULT_KNOTS_C) -> TowtModel:
    """OLS of hourly energy on 168 time-of-week indicators + piecewise-linear temperature.

    Always returns a model; ``model.fit`` is False (with ``reasons``) when it misses the G14 limits.
    Raises ``BaselineError`` only when no model can be estimated at all.
    """
    h = np.asarray(hour_ms, dtype=np.int64)
    y = np.asarray(energy_wh, dtype=float)
    t = np.asarray(temp_c, dtype=float)
    if not h.shape == y.shape == t.shape:
        raise BaselineError("hour_ms, energy_wh and temp_c differ in length")
    if h.size == 0:
        raise BaselineError("the baseline period has no hours with both energy and temperature")
    tow_levels = np.unique(time_of_week(h))
    if tow_levels.size < 168:
        raise BaselineError(f"the baseline period covers {tow_levels.size} of the 168 hours of the week; "
                            "it needs at least one full week (several are better)")
    ks = usable_knots(t, knots)
    X = design_matrix(h, t, tow_levels, ks)
    res = sm.OLS(y, X).fit()
    p = int(res.model.rank)
    if h.size - p < 1:
        raise BaselineError(f"{h.size} baseline hours for {p} parameters: no degrees of freedom left")
    y_hat = res.fittedvalues
    try:
        hourly = g14.fit_metrics(y, y_hat, p, "hourly")
    except g14.G14Error as exc:
        raise BaselineError(str(exc)) from None
    ym, ym_hat = _monthly(h, y, y_hat)
    monthly = g14.fit_metrics(ym, ym_hat, 1, "monthly") if ym.size >= 3 else None
    reasons = []
    for m in (hourly, monthly):
        if m is not None and not m.passes:
            cv_max, nmbe_max = m.limits
            reasons.append(f"{m.resolution} CV(RMSE) {m.cv_rmse:.1%} (limit {cv_max:.0%}), "
                           f"NMBE {m.nmbe:+.2%} (limit ±{nmbe_max:.0%})")
    return TowtModel(np.asarray(res.params), tow_levels, ks, hourly, monthly,
                     g14.lag1_autocorrelation(y - y_hat), reasons)


@dataclass(frozen=True)
class Savings:
    hours: int  # m
    predicted_wh: float  # what the baseline model says the site would have used
    metered_wh: float
    uncertainty_wh: dict[float, float]  # confidence → ± half-width of the savings (ΔE_save)

    @property
    def savings_wh(self) -> float:
        return self.predicted_wh - self.metered_wh

    @property
    def fractional_savings(self) -> float:
        return self.savings_wh / self.predicted_wh

    def fsu(self, confidence: float) -> float:
        """ΔE_save / E_save (inf when there are no savings)."""
        s = abs(self.savings_wh)
        return float("inf") if s == 0 else self.uncertainty_wh[confidence] / s


def savings(model: TowtModel, hour_ms: np.ndarray, energy_wh: np.ndarray, temp_c: np.ndarray,
            confidences: tuple[float, ...] = CONFIDENCES) -> Savings:
    """Avoided energy over a reporting period: Σ predicted − Σ metered, with G14's uncertainty."""
    if not model.fit:
        raise BaselineError("the baseline model fails ASHRAE Guideline 14 (" + "; ".join(model.reasons)
                            + "): it cannot support a savings claim")
    y = np.asarray(energy_wh, dtype=float)
    if y.size == 0:
        raise BaselineError("the reporting period has no hours with both energy and temperature")
    pred = model.predict(hour_ms, temp_c)
    total = float(pred.sum())
    if total <= 0:
        raise BaselineError("the model predicts no energy use in the reporting period")
    unc = {c: g14.savings_uncertainty(model.hourly.cv_rmse, model.n, model.p, model.rho, y.size, total, c)
           for c in confidences}
    return Savings(int(y.size), total, float(y.sum()), unc)


# --- STL: residuals that no daily/weekly pattern explains -------------------------------------


@dataclass(frozen=True)
class StlAnomaly:
    index: int  # position in the hourly series
    value_wh: float
    expected_wh: float  # trend + seasonal
    residual_wh: float
    threshold_wh: float


def stl_anomalies(energy_wh: np.ndarray, period: int = 24, k: float = 5.0, min_abs_wh: float = 100.0,
                  min_fraction: float = 0.5) -> list[StlAnomaly]:
    """Hours whose robust-STL residual exceeds max(k · 1.4826 · MAD, min_abs_wh, min_fraction · expected).

    ``period``: 24 (daily) or 168 (weekly: needs ≥ 2 weeks). Fewer than two periods: no result
    (STL cannot separate a season it has seen once) — an empty list, never a guess.
    """
    y = np.asarray(energy_wh, dtype=float)
    if y.size < 2 * period + 1 or not np.all(np.isfinite(y)):
        return []
    res = STL(y, period=period, robust=True).fit()
    resid = np.asarray(res.resid)
    expected = y - resid
    mad = float(np.median(np.abs(resid - np.median(resid))))
    base = max(k * 1.4826 * mad, min_abs_wh)
    thr = np.maximum(base, min_fraction * np.abs(expected))
    return [StlAnomaly(int(i), float(y[i]), float(expected[i]), float(resid[i]), float(thr[i]))
            for i in np.flatnonzero(np.abs(resid) > thr)]


# --- thin loaders from the store -----------------------------------------------------------------


def load_site_hourly(dsn: str, site: str, from_ms: int, to_ms: int, min_coverage: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """(hour start ms, site consumption Wh) for the hours in [from_ms, to_ms) that every register covers.

    Consumption = main import − main export + PV generation (the load the sub-meters also add up
    to, docs/audit.md "Consistency"); a site without a main meter: the sum of its sub-meters.
    Hours that some register covers for less than ``min_coverage`` of the hour are left out.
    """
    import psycopg

    from audit.kernels import bucket_energy, register_vs_power

    if to_ms <= from_ms:
        raise BaselineError("the period is empty (its end is not after its start)")
    k = (to_ms - from_ms + MS_PER_HOUR - 1) // MS_PER_HOUR
    grid0 = from_ms - from_ms % MS_PER_HOUR
    load = np.zeros(k + 1)
    covered = np.ones(k + 1, bool)
    lo, hi = (np.datetime64(from_ms - MS_PER_HOUR, "ms").item(), np.datetime64(to_ms + MS_PER_HOUR, "ms").item())
    with psycopg.connect(dsn) as conn:
        devices = conn.execute("SELECT device_id, kind FROM devices WHERE site_id = %s ORDER BY 1", (site,)).fetchall()
        if not devices:
            raise BaselineError(f"unknown site {site!r} (no devices registered there)")
        has_main = any(kind == "main_meter" for _, kind in devices)
        use = {("main_meter", "import"): 1.0, ("main_meter", "export"): -1.0, ("pv_inverter", "pv"): 1.0} if has_main \
            else {("sub_meter", "import"): 1.0}
        n_series = 0
        for device, kind in devices:
            rows = conn.execute(
                "SELECT (extract(epoch FROM ts) * 1000)::bigint, channel, energy_wh, power_w FROM readings "
                "WHERE device_id = %s AND ts >= %s AND ts < %s ORDER BY channel, seq, idx",
                (device, lo.replace(tzinfo=_UTC), hi.replace(tzinfo=_UTC))).fetchall()
            arr = np.array([(r[0], r[2], r[3]) for r in rows], dtype=np.int64).reshape(-1, 3)
            chans = np.array([r[1] for r in rows])
            for (want_kind, ch), sign in use.items():
                if kind != want_kind:
                    continue
                m = chans == ch
                if not m.any():
                    covered[:] = False
                    continue
                ts, e, p = arr[m, 0], arr[m, 1], arr[m, 2]
                h0, energy = bucket_energy(ts, e, MS_PER_HOUR)
                usual = float(np.median(np.diff(ts))) if ts.size > 1 else 0.0
                w0, _, _, _, cov = register_vs_power(ts, e, p, MS_PER_HOUR, int(5 * max(usual, 1.0)))
                c = np.zeros(k + 1)
                for starts, vals, dest in ((h0, energy, load), (w0, cov, c)):
                    idx = (starts - grid0) // MS_PER_HOUR
                    ok = (idx >= 0) & (idx <= k)
                    np.add.at(dest, idx[ok], sign * vals[ok] if dest is load else vals[ok])
                covered &= c >= min_coverage * MS_PER_HOUR
                n_series += 1
    hours = grid0 + np.arange(k + 1, dtype=np.int64) * MS_PER_HOUR
    keep = covered & (hours >= from_ms) & (hours + MS_PER_HOUR <= to_ms) & (n_series > 0)
    return hours[keep], load[keep]


def align_weather(hour_ms: np.ndarray, weather_ms: np.ndarray, temp_c: np.ndarray, source: str) -> np.ndarray:
    """Temperature at each hour; a missing hour is an error naming the first one (never interpolated)."""
    pos = np.searchsorted(weather_ms, hour_ms)
    found = (pos < weather_ms.size) & (weather_ms[np.minimum(pos, weather_ms.size - 1)] == hour_ms)
    if not found.all():
        first = np.datetime_as_string(np.datetime64(int(hour_ms[~found][0]), "ms"), unit="s")
        raise BaselineError(f"{source}: no temperature for {first}Z ({int((~found).sum())} hour(s) of the period "
                            "have energy but no weather row)")
    return temp_c[pos]
