"""Baseline-model fit metrics, the savings uncertainty, and the savings gate (pure: numbers in, numbers out).

Owns: CV(RMSE), NMBE and R² of a baseline model; the fractional savings uncertainty (FSU) of
ASHRAE Guideline 14-2014 Annex B with the autocorrelation-adjusted number of observations; and
``gate_reasons``, the criteria a baseline and its reported savings must meet before a savings
claim can rest on them. Sources and the exact wording are in docs/claims.md ("Energy savings"); the
formulas are written out in docs/audit.md ("Baselines"). Must not: fit models
(audit.baselines does) or read the store.

    y   metered values of the baseline period (n of them)    ŷ  the model's fitted values
    p   parameters (for a weighted/segmented model: the trace of its hat matrix)
    ȳ   mean of y

    CV(RMSE) = sqrt( Σ(y − ŷ)² / (n − p) ) / ȳ                         (Guideline 14)
    NMBE     = Σ(ŷ − y) / Σy      positive: the model over-predicts    (CalTRACK / OpenEEmeter sign
                                                                        and denominator, used everywhere here)
    R²       = 1 − Σ(y − ŷ)² / Σ(y − ȳ)²
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from device.errors import WattproofError

#: Empirical factor of Guideline 14-2014 Annex B's FSU equation for hourly (and daily/weekly) data.
FSU_FACTOR = 1.26

# --- the gate (docs/claims.md ("Energy savings") gives each source and what could not be confirmed) ----------
#: G14-2014 §4 compliance: savings uncertainty < 50 % of the reported savings at 68 % confidence.
MAX_FSU = 0.50
FSU_CONFIDENCE = 0.68
#: G14 whole-building path: net determination bias of the baseline model within ±0.5 % (0.005).
MAX_ABS_NMBE = 0.005
#: Too little data: fewer baseline hours than two full weeks, or some hour of the week never seen.
MIN_BASELINE_HOURS = 2 * 168
#: Reporting hours whose temperature lies outside the baseline's range widened by 10 % of it
#: (CalTRACK 2.0 §3.7.5.2's margin) may be at most this share: the model would extrapolate.
MAX_EXTRAPOLATED_SHARE = 0.10


class G14Error(WattproofError, ValueError):
    """The metric cannot be computed (no degrees of freedom, zero mean, mismatched arrays)."""


def _checked(y: np.ndarray, y_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float)
    y_hat = np.asarray(y_hat, dtype=float)
    if y.shape != y_hat.shape or y.ndim != 1:
        raise G14Error(f"y and ŷ must be 1-d arrays of the same length (got {y.shape} and {y_hat.shape})")
    if float(y.sum()) == 0:
        raise G14Error("the metered mean is zero: CV(RMSE) and NMBE are undefined")
    return y, y_hat


def cv_rmse(y: np.ndarray, y_hat: np.ndarray, p: float) -> float:
    """sqrt(Σ(y − ŷ)² / (n − p)) / ȳ, as a fraction (0.30 = 30 %)."""
    y, y_hat = _checked(y, y_hat)
    if y.size - p <= 0:
        raise G14Error(f"no degrees of freedom: n = {y.size} observations for p = {p:g} parameters")
    return float(np.sqrt(np.sum((y - y_hat) ** 2) / (y.size - p)) / y.mean())


def nmbe(y: np.ndarray, y_hat: np.ndarray) -> float:
    """Σ(ŷ − y) / Σy, as a fraction. Positive: the model over-predicts (CalTRACK's convention)."""
    y, y_hat = _checked(y, y_hat)
    return float(np.sum(y_hat - y) / np.sum(y))


def r_squared(y: np.ndarray, y_hat: np.ndarray) -> float:
    y, y_hat = _checked(y, y_hat)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return float("nan") if ss_tot == 0 else 1.0 - float(np.sum((y - y_hat) ** 2)) / ss_tot


@dataclass(frozen=True)
class FitMetrics:
    resolution: str  # "hourly" | "monthly"
    n: int
    p: float  # parameters (trace of the hat matrix for weighted/segmented fits)
    cv_rmse: float
    nmbe: float  # Σ(ŷ − y)/Σy
    r2: float


def fit_metrics(y: np.ndarray, y_hat: np.ndarray, p: float, resolution: str = "hourly") -> FitMetrics:
    return FitMetrics(resolution, int(np.size(y)), float(p), cv_rmse(y, y_hat, p), nmbe(y, y_hat), r_squared(y, y_hat))


def lag1_autocorrelation(residuals: np.ndarray) -> float:
    """ρ: lag-1 autocorrelation of the baseline residuals (in time order, gaps ignored)."""
    r = np.asarray(residuals, dtype=float)
    if r.size < 3:
        return 0.0
    r = r - r.mean()
    den = float(np.sum(r * r))
    return 0.0 if den == 0 else float(np.sum(r[1:] * r[:-1]) / den)


def effective_n(n: int, rho: float) -> float:
    """n′ = n · (1 − ρ) / (1 + ρ) (Reddy & Claridge 2000; G14-2014 Annex B).

    A negative ρ would make n′ exceed n; it is clipped at 0 (n′ ≤ n), as is usual.
    """
    rho = min(max(rho, 0.0), 0.999999)
    return n * (1 - rho) / (1 + rho)


def t_statistic(confidence: float, dof: float) -> float:
    """Two-sided Student t for ``confidence`` (0.68, 0.90, ...) with ``dof`` degrees of freedom."""
    if not 0 < confidence < 1:
        raise G14Error(f"confidence must be in (0, 1), not {confidence}")
    if dof <= 0:
        raise G14Error(f"no degrees of freedom for the t-statistic ({dof})")
    return float(stats.t.ppf(0.5 + confidence / 2, dof))


def _fsu_width(cv: float, n: int, p: float, rho: float, m: int, confidence: float) -> float:
    """t · 1.26 · CV · sqrt((n / n′) · (1 + 2 / n′) · (1 / m)): the FSU numerator."""
    if m <= 0:
        raise G14Error("the reporting period has no points")
    n_eff = effective_n(n, rho)
    if n_eff <= 0:
        raise G14Error("no effective baseline observations (ρ ≈ 1)")
    t = t_statistic(confidence, n - p)
    return float(t * FSU_FACTOR * cv * np.sqrt((n / n_eff) * (1 + 2 / n_eff) / m))


def fractional_savings_uncertainty(cv: float, n: int, p: float, rho: float, m: int, fractional_savings: float,
                                   confidence: float = 0.90) -> float:
    """ΔE_save / E_save, G14-2014 Annex B's equation for data with autocorrelated residuals:

        FSU = t · 1.26 · CV · sqrt( (n / n′) · (1 + 2 / n′) · (1 / m) ) / F

    CV: the baseline's CV(RMSE) (fraction); n: baseline points; n′ = n(1 − ρ)/(1 + ρ);
    m: reporting-period points; F: fractional savings (savings / predicted reporting energy);
    t: two-sided Student t at ``confidence`` with n − p degrees of freedom (CalTRACK 2.0 §4.3.2.4.2).
    Infinite when F is 0 (no savings: any uncertainty is infinitely large relative to them).
    """
    width = _fsu_width(cv, n, p, rho, m, confidence)
    return float("inf") if fractional_savings == 0 else width / abs(fractional_savings)


def savings_uncertainty(cv: float, n: int, p: float, rho: float, m: int, predicted_total: float,
                        confidence: float = 0.90) -> float:
    """ΔE_save in the unit of ``predicted_total``: FSU · |E_save| = (FSU · |F|) · E_predicted.

    The same equation multiplied out, so that it stays finite when the savings are zero.
    """
    return _fsu_width(cv, n, p, rho, m, confidence) * abs(predicted_total)


def gate_reasons(*, baseline_hours: int, hours_of_week_seen: int, extrapolated_share: float | None,
                 hourly: FitMetrics | None, fsu_68: float | None, savings: float | None) -> list[str]:
    """Why savings cannot be claimed from this baseline (empty: the gate admits them).

    Data sufficiency, then the model criteria, then the savings uncertainty; every failed
    criterion is listed (not only the first), each naming its value and its limit.
    """
    out = []
    if baseline_hours < MIN_BASELINE_HOURS:
        out.append(f"too little data: {baseline_hours} baseline hours (at least {MIN_BASELINE_HOURS}, two weeks)")
    if hours_of_week_seen < 168:
        out.append(f"too little data: the baseline covers {hours_of_week_seen} of the 168 hours of the week")
    if extrapolated_share is not None and extrapolated_share > MAX_EXTRAPOLATED_SHARE:
        out.append(f"temperature outside the baseline's range in {extrapolated_share:.0%} of reporting hours "
                   f"(limit {MAX_EXTRAPOLATED_SHARE:.0%}): the model would extrapolate")
    if hourly is None:
        out.append("no baseline model could be fitted")
    else:
        if not np.isfinite(hourly.cv_rmse):
            out.append("the baseline model's CV(RMSE) is not finite")
        if not abs(hourly.nmbe) <= MAX_ABS_NMBE:
            out.append(f"NMBE {hourly.nmbe:+.2%} (limit ±{MAX_ABS_NMBE:.1%})")
    if savings is not None and savings <= 0:
        out.append("no savings: the metered energy is not below the baseline's prediction")
    elif fsu_68 is not None and not fsu_68 < MAX_FSU:
        out.append(f"fractional savings uncertainty {fsu_68:.0%} at 68 % confidence (limit < {MAX_FSU:.0%})")
    return out
