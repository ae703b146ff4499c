"""Baselines: the TOWT savings model (CalTRACK hourly method), the savings gate's inputs, STL residuals.

Owns: the time-of-week-and-temperature (TOWT) regression of CalTRACK 2.0's hourly method —
occupied/unoccupied time-of-week classes from the residuals of a degree-hour model, separate
piecewise-linear temperature terms per class, and "three-month weighted" month-by-month models —
fitted by weighted least squares with numpy; predicted vs. metered energy over a reporting period
with the fractional savings uncertainty; ``savings_verdict_inputs``, everything a savings verdict
needs including the gate's decision (audit.g14.gate_reasons); and robust STL residual outliers.
Pure functions on numpy arrays, plus ``load_site_hourly`` (the thin loader from the store).
Must not: write to the store, or admit savings the gate refuses.
Formulas and sources: audit/g14.py, docs/audit.md ("Baselines"), docs/claims.md ("Energy savings").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC as _UTC

import numpy as np
from statsmodels.tsa.seasonal import STL

from audit import g14
from device.errors import WattproofError

MS_PER_HOUR = 3_600_000
#: Temperature change points (°C) of the piecewise-linear terms: CalTRACK 2.0 §3.9.1.1's 30/45/55/65/75/90 °F.
DEFAULT_KNOTS_C: tuple[float, ...] = (-1.111, 7.222, 12.778, 18.333, 23.889, 32.222)
MIN_HOURS_PER_SEGMENT = 20  # a temperature segment with fewer baseline hours is merged into its neighbour
CONFIDENCES = (0.68, 0.90)
#: Degree-hour balance points of the occupancy regression (CalTRACK 2.0 §3.8.3: 50 °F and 65 °F).
OCC_HEAT_C, OCC_COOL_C = 10.0, 18.333
MIN_OWN_MONTH_HOURS = 7 * 24  # a calendar month's model gets a level of its own from a week of its own data
OCC_THRESHOLD = 0.65  # a time of week is "occupied" when > 65 % of its residuals are under-predictions (§3.8.4)


class BaselineError(WattproofError, ValueError):
    """The baseline cannot be fitted or used (too little data, unfit model, times it never saw)."""


def time_of_week(hour_ms: np.ndarray) -> np.ndarray:
    """Hour of the week, 0 = Monday 00:00 UTC … 167 = Sunday 23:00 (1970-01-01 was a Thursday)."""
    return ((np.asarray(hour_ms, dtype=np.int64) // MS_PER_HOUR) + 72) % 168


def usable_knots(temp_c: np.ndarray, knots: tuple[float, ...], min_count: int = MIN_HOURS_PER_SEGMENT) -> tuple[float, ...]:
    """Drop change points until every temperature segment holds ≥ ``min_count`` points."""
    if temp_c.size == 0:
        return ()
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


def _weighted_lstsq(X: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """WLS by SVD of √w·X: (params, leverage of each row, rank). Rank-deficient X: minimum-norm solution."""
    sw = np.sqrt(w)
    U, s, Vt = np.linalg.svd(X * sw[:, None], full_matrices=False)
    keep = s > (s[0] if s.size else 0.0) * max(X.shape) * np.finfo(float).eps
    U, s, Vt = U[:, keep], s[keep], Vt[keep]
    params = Vt.T @ ((U.T @ (sw * y)) / s)
    return params, np.einsum("ij,ij->i", U, U), int(keep.sum())


def _occupancy(tow: np.ndarray, y: np.ndarray, t: np.ndarray, w: np.ndarray) -> np.ndarray:
    """168 booleans: occupied = more than 65 % of the hour-of-week's residuals of a WLS of y on
    heating/cooling degree-hours (10 °C / 18.3 °C) are under-predictions (CalTRACK 2.0 §3.8)."""
    X = np.column_stack([np.ones_like(t), np.maximum(OCC_HEAT_C - t, 0), np.maximum(t - OCC_COOL_C, 0)])
    params, _, _ = _weighted_lstsq(X, y, w)
    under = (y - X @ params) > 0
    count = np.bincount(tow, minlength=168)
    share = np.bincount(tow, under.astype(float), minlength=168) / np.maximum(count, 1)
    return share > OCC_THRESHOLD


@dataclass(frozen=True)
class Segment:
    """One WLS model: all months (``month`` None) or one calendar month fitted on its three-month window."""
    month: int | None
    tow_levels: np.ndarray  # hours of the week with an indicator column
    occupied: np.ndarray  # 168 booleans
    knots_occ: tuple[float, ...]
    knots_unocc: tuple[float, ...]
    params: np.ndarray
    rank: int
    own_level: bool = False  # a column for the month's own level (months with a week of their own data)

    def design(self, tow: np.ndarray, t: np.ndarray, own_month: np.ndarray | None = None) -> np.ndarray:
        unseen = np.setdiff1d(np.unique(tow), self.tow_levels)
        if unseen.size:
            raise BaselineError(f"{unseen.size} hour(s) of the week never occur in the baseline"
                                + ("" if self.month is None else f" window of month {self.month}")
                                + f" (first: hour {int(unseen[0])} of the week); the baseline needs every hour of the week")
        occ = self.occupied[tow][:, None]
        ind = (tow[:, None] == self.tow_levels[None, :]).astype(float)
        cols = [ind, occ * temperature_basis(t, self.knots_occ), ~occ * temperature_basis(t, self.knots_unocc)]
        if self.own_level and own_month is not None:  # the month's own level (its rows only): no bias from the neighbours
            cols.append(own_month[:, None].astype(float))
        return np.hstack(cols)


def _fit_segment(month: int | None, tow: np.ndarray, y: np.ndarray, t: np.ndarray, w: np.ndarray,
                 knots: tuple[float, ...], own_level: bool = True) -> tuple[Segment, np.ndarray, np.ndarray]:
    """Fit on the rows with w > 0; returns (segment, fitted values, leverages) for those rows."""
    occupied = _occupancy(tow, y, t, w)
    occ = occupied[tow]
    seg = Segment(month, np.unique(tow), occupied, usable_knots(t[occ], knots), usable_knots(t[~occ], knots),
                  np.empty(0), 0, own_level and month is not None)
    X = seg.design(tow, t, None if month is None else w == 1.0)
    params, lev, rank = _weighted_lstsq(X, y, w)
    seg = Segment(seg.month, seg.tow_levels, occupied, seg.knots_occ, seg.knots_unocc, params, rank, seg.own_level)
    return seg, X @ params, lev


def _month(hour_ms: np.ndarray) -> np.ndarray:
    """Calendar month 1–12 (UTC) of each hour."""
    m = np.asarray(hour_ms, dtype="datetime64[ms]").astype("datetime64[M]").astype(np.int64)
    return m % 12 + 1


@dataclass(frozen=True)
class TowtModel:
    segments: dict[int | None, Segment]  # {None: one model} or {1: …, 12: …}
    hourly: g14.FitMetrics  # in-sample, p = trace of the hat matrix (effective parameters)
    monthly: g14.FitMetrics | None  # sums per calendar month; None: fewer than 3 months of baseline
    rho: float  # lag-1 autocorrelation of the residuals
    hours_of_week_seen: int
    temp_range_c: tuple[float, float]
    fitted: np.ndarray = field(repr=False)

    @property
    def n(self) -> int:
        return self.hourly.n

    @property
    def p(self) -> float:
        return self.hourly.p

    @property
    def segmentation(self) -> str:
        """"three_month_weighted" (a model per calendar month), "single", or "mixed" (months with no
        data of their own, or a window missing some hour of the week, use the all-baseline model)."""
        own = sum(1 for m in self.segments if m is not None)
        return "three_month_weighted" if own == 12 else "single" if own == 0 else f"mixed ({own} monthly models)"

    @property
    def knots(self) -> tuple[float, ...]:
        """The change points of the first segment's occupied class (for display)."""
        return next(iter(self.segments.values())).knots_occ

    def predict(self, hour_ms: np.ndarray, temp_c: np.ndarray) -> np.ndarray:
        h = np.asarray(hour_ms, dtype=np.int64)
        t = np.asarray(temp_c, dtype=float)
        tow = time_of_week(h)
        out = np.empty(h.size)
        month = _month(h)
        for m in np.unique(month):
            sel = month == m
            seg = self.segments.get(int(m)) or self.segments[None]
            own = None if seg.month is None else np.ones(int(sel.sum()), bool)
            out[sel] = seg.design(tow[sel], t[sel], own) @ seg.params
        return out


def _monthly(hour_ms: np.ndarray, y: np.ndarray, y_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    month = np.asarray(hour_ms, dtype="datetime64[ms]").astype("datetime64[M]")
    keys, inv = np.unique(month, return_inverse=True)
    return np.bincount(inv, y, keys.size), np.bincount(inv, y_hat, keys.size)


def fit_towt(hour_ms: np.ndarray, energy_wh: np.ndarray, temp_c: np.ndarray,
             knots: tuple[float, ...] = DEFAULT_KNOTS_C, segmentation: str = "auto") -> TowtModel:
    """Fit the CalTRACK-hourly TOWT model. ``segmentation``: "three_month_weighted" (a model per calendar
    month, weight 1 for the month and 0.5 for its neighbours, plus a level of the month's own; every month
    needs a week of data), "single" (one model), or "auto": a monthly model for each month with a
    week of its own data; a month with less (but some) gets CalTRACK's window model (1 / 0.5, no own
    level: a few days cannot set a month's level); the all-baseline model for months without data or
    whose window misses an hour of the week (and for reporting months without a model).

    Raises ``BaselineError`` only when no model can be estimated at all; whether the model may carry a
    savings claim is the gate's question (``savings_verdict_inputs``).
    """
    h = np.asarray(hour_ms, dtype=np.int64)
    y = np.asarray(energy_wh, dtype=float)
    t = np.asarray(temp_c, dtype=float)
    if not h.shape == y.shape == t.shape:
        raise BaselineError("hour_ms, energy_wh and temp_c differ in length")
    if h.size == 0:
        raise BaselineError("the baseline period has no hours with both energy and temperature")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(t))):
        raise BaselineError("the baseline has non-finite energy or temperature values")
    order = np.argsort(h, kind="stable")
    h, y, t = h[order], y[order], t[order]
    tow = time_of_week(h)
    seen = int(np.unique(tow).size)
    if seen < 168:
        raise BaselineError(f"the baseline period covers {seen} of the 168 hours of the week; "
                            "it needs at least one full week (several are better)")
    month = _month(h)
    if segmentation not in ("auto", "single", "three_month_weighted"):
        raise BaselineError(f"segmentation must be 'auto', 'single' or 'three_month_weighted', not {segmentation!r}")
    fitted, lev = np.empty(h.size), np.empty(h.size)
    segments: dict[int | None, Segment] = {}
    for m in (range(1, 13) if segmentation != "single" else ()):
        prev, nxt = (m - 2) % 12 + 1, m % 12 + 1
        w = np.where(month == m, 1.0, np.where((month == prev) | (month == nxt), 0.5, 0.0))
        rows = w > 0
        own_hours = int(np.sum(month == m))
        if own_hours < MIN_OWN_MONTH_HOURS or np.unique(tow[rows]).size < 168:
            if segmentation == "three_month_weighted":
                raise BaselineError(f"month {m} has too little baseline data for a model of its own "
                                    f"({own_hours} hours; at least {MIN_OWN_MONTH_HOURS} and every hour of the week)")
            if own_hours == 0 or np.unique(tow[rows]).size < 168:
                continue
        seg, f, lv = _fit_segment(m, tow[rows], y[rows], t[rows], w[rows], knots, own_hours >= MIN_OWN_MONTH_HOURS)
        own = month[rows] == m
        fitted[month == m], lev[month == m] = f[own], lv[own]
        segments[m] = seg
    rest = ~np.isin(month, [m for m in segments if m is not None])
    if len(segments) < 12:  # the all-baseline model, for the months that have no model of their own
        seg, f, lv = _fit_segment(None, tow, y, t, np.ones(h.size), knots)
        fitted[rest], lev[rest] = f[rest], lv[rest]
        segments[None] = seg
    p_eff = float(lev.sum())  # trace of the hat matrix: ŷ = H y
    if h.size - p_eff < 1:
        raise BaselineError(f"{h.size} baseline hours for {p_eff:.0f} parameters: no degrees of freedom left")
    try:
        hourly = g14.fit_metrics(y, fitted, p_eff, "hourly")
        ym, ym_hat = _monthly(h, y, fitted)
        monthly = g14.fit_metrics(ym, ym_hat, 1, "monthly") if ym.size >= 3 else None
    except g14.G14Error as exc:
        raise BaselineError(str(exc)) from None
    return TowtModel(segments, hourly, monthly, g14.lag1_autocorrelation(y - fitted), seen,
                     (float(t.min()), float(t.max())), fitted)


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
    """Avoided energy over a reporting period: Σ predicted − Σ metered, with G14's uncertainty.

    Figures only: whether they may support a claim is ``savings_verdict_inputs``' gate.
    """
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


@dataclass(frozen=True)
class SavingsVerdictInputs:
    """What a savings verdict rests on. Energies in the unit of the input (Wh); fractions as fractions.

    ``gate_passed`` False (with ``gate_reasons``) means: UNVERIFIABLE. Fields the gate could not get to
    (no model, no reporting figures) are None.
    """
    gate_passed: bool
    gate_reasons: list[str]
    baseline_hours: int
    reporting_hours: int
    cv_rmse: float | None  # hourly, baseline, sqrt(Σ(y−ŷ)²/(n−p))/ȳ
    nmbe: float | None  # hourly, baseline, Σ(ŷ−y)/Σy (positive: over-predicts)
    r2: float | None
    n: int | None
    p: float | None  # effective parameters (trace of the hat matrix)
    rho: float | None
    segmentation: str | None
    predicted_wh: float | None  # reporting period, the baseline model's prediction
    metered_wh: float | None
    avoided_wh: float | None  # predicted − metered
    fractional_savings: float | None  # avoided / predicted
    fsu_68: float | None  # ΔE_save/E_save at 68 % (inf: no savings)
    fsu_90: float | None
    half_width_68_wh: float | None  # ΔE_save at 68 %
    half_width_90_wh: float | None
    method: str = "wattproof-towt-caltrack-hourly/1 + ASHRAE G14-2014 Annex B FSU"


def savings_verdict_inputs(baseline_hour_ms: np.ndarray, baseline_wh: np.ndarray, baseline_temp_c: np.ndarray,
                           report_hour_ms: np.ndarray, report_wh: np.ndarray, report_temp_c: np.ndarray,
                           ) -> SavingsVerdictInputs:
    """Fit the baseline, predict the reporting period, and gate the savings (audit.g14.gate_reasons).

    Never raises on data: a baseline that cannot be fitted, or a reporting period the model cannot
    predict, comes back with ``gate_passed`` False and the reason.
    """
    bh = np.asarray(baseline_hour_ms, dtype=np.int64)
    rh, ry, rt = (np.asarray(report_hour_ms, dtype=np.int64), np.asarray(report_wh, dtype=float),
                  np.asarray(report_temp_c, dtype=float))
    seen = int(np.unique(time_of_week(bh)).size)
    none = dict.fromkeys(("cv_rmse", "nmbe", "r2", "n", "p", "rho", "segmentation", "predicted_wh", "metered_wh",
                          "avoided_wh", "fractional_savings", "fsu_68", "fsu_90", "half_width_68_wh",
                          "half_width_90_wh"))
    try:
        model = fit_towt(bh, baseline_wh, baseline_temp_c)
    except BaselineError as exc:
        reasons = g14.gate_reasons(baseline_hours=int(bh.size), hours_of_week_seen=seen, extrapolated_share=None,
                                   hourly=None, fsu_68=None, savings=None)
        return SavingsVerdictInputs(False, [*reasons, f"baseline: {exc}"], int(bh.size), int(rh.size), **none)
    fit = dict(none, cv_rmse=model.hourly.cv_rmse, nmbe=model.hourly.nmbe, r2=model.hourly.r2, n=model.n,
               p=model.p, rho=model.rho, segmentation=model.segmentation)
    lo, hi = model.temp_range_c
    margin = 0.1 * (hi - lo)
    extrap = float(np.mean((rt < lo - margin) | (rt > hi + margin))) if rt.size else None
    try:
        if not (rh.shape == ry.shape == rt.shape):
            raise BaselineError("report_hour_ms, report_wh and report_temp_c differ in length")
        sv = savings(model, rh, ry, rt, CONFIDENCES)
    except (BaselineError, g14.G14Error) as exc:
        reasons = g14.gate_reasons(baseline_hours=model.n, hours_of_week_seen=seen, extrapolated_share=extrap,
                                   hourly=model.hourly, fsu_68=None, savings=None)
        return SavingsVerdictInputs(False, [*reasons, f"reporting period: {exc}"], model.n, int(rh.size), **fit)
    fsu68, fsu90 = sv.fsu(0.68), sv.fsu(0.90)
    reasons = g14.gate_reasons(baseline_hours=model.n, hours_of_week_seen=seen, extrapolated_share=extrap,
                               hourly=model.hourly, fsu_68=fsu68, savings=sv.savings_wh)
    fit.update(predicted_wh=sv.predicted_wh, metered_wh=sv.metered_wh, avoided_wh=sv.savings_wh,
               fractional_savings=sv.fractional_savings, fsu_68=fsu68, fsu_90=fsu90,
               half_width_68_wh=sv.uncertainty_wh[0.68], half_width_90_wh=sv.uncertainty_wh[0.90])
    return SavingsVerdictInputs(not reasons, reasons, model.n, sv.hours, **fit)


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
