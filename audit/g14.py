"""ASHRAE Guideline 14 model-fit metrics and savings uncertainty (pure: arrays in, numbers out).

Owns: CV(RMSE), NMBE, the Guideline 14 acceptance limits, and the fractional savings
uncertainty (FSU) of Annex B with the autocorrelation-adjusted number of observations. The
formulas are written out in docs/audit.md ("Baselines"); the code below follows them term by term.
Must not: fit models (audit.baselines does) or read the store.

    y     metered values of the baseline period (n of them)
    ŷ     the model's fitted values on the same points
    p     number of model parameters (columns of the design matrix actually estimated)
    ȳ     mean of y

    CV(RMSE) = sqrt( Σ(y − ŷ)² / (n − p) ) / ȳ
    NMBE     = Σ(y − ŷ) / ( (n − p) · ȳ )

Guideline 14-2014 accepts a baseline model for whole-building savings when, with hourly
data, CV(RMSE) ≤ 30 % and |NMBE| ≤ 10 %; with monthly data, CV(RMSE) ≤ 15 % and |NMBE| ≤ 5 %.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

#: (max CV(RMSE), max |NMBE|) as fractions, by data resolution.
LIMITS: dict[str, tuple[float, float]] = {"hourly": (0.30, 0.10), "monthly": (0.15, 0.05)}

#: Reddy & Claridge's empirical correction carried by Guideline 14's FSU equation.
FSU_FACTOR = 1.26


class G14Error(ValueError):
    """The metric cannot be computed (no degrees of freedom, zero mean, mismatched arrays)."""


def _checked(y: np.ndarray, y_hat: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray, int, float]:
    y = np.asarray(y, dtype=float)
    y_hat = np.asarray(y_hat, dtype=float)
    if y.shape != y_hat.shape or y.ndim != 1:
        raise G14Error(f"y and ŷ must be 1-d arrays of the same length (got {y.shape} and {y_hat.shape})")
    n = y.size
    if n - p <= 0:
        raise G14Error(f"no degrees of freedom: n = {n} observations for p = {p} parameters")
    mean = float(y.mean())
    if mean == 0:
        raise G14Error("the metered mean is zero: CV(RMSE) and NMBE are undefined")
    return y, y_hat, n, mean


def cv_rmse(y: np.ndarray, y_hat: np.ndarray, p: int) -> float:
    """sqrt(Σ(y − ŷ)² / (n − p)) / ȳ, as a fraction (0.30 = 30 %)."""
    y, y_hat, n, mean = _checked(y, y_hat, p)
    return float(np.sqrt(np.sum((y - y_hat) ** 2) / (n - p)) / mean)


def nmbe(y: np.ndarray, y_hat: np.ndarray, p: int) -> float:
    """Σ(y − ŷ) / ((n − p) · ȳ), as a fraction. Positive: the model under-predicts."""
    y, y_hat, n, mean = _checked(y, y_hat, p)
    return float(np.sum(y - y_hat) / ((n - p) * mean))


@dataclass(frozen=True)
class FitMetrics:
    resolution: str  # "hourly" | "monthly"
    n: int
    p: int
    cv_rmse: float
    nmbe: float

    @property
    def limits(self) -> tuple[float, float]:
        return LIMITS[self.resolution]

    @property
    def passes(self) -> bool:
        cv_max, nmbe_max = self.limits
        return self.cv_rmse <= cv_max and abs(self.nmbe) <= nmbe_max


def fit_metrics(y: np.ndarray, y_hat: np.ndarray, p: int, resolution: str = "hourly") -> FitMetrics:
    if resolution not in LIMITS:
        raise G14Error(f"resolution must be one of {sorted(LIMITS)}, not {resolution!r}")
    return FitMetrics(resolution, int(np.size(y)), p, cv_rmse(y, y_hat, p), nmbe(y, y_hat, p))


def lag1_autocorrelation(residuals: np.ndarray) -> float:
    """ρ: lag-1 autocorrelation of the baseline residuals (in time order, gaps ignored)."""
    r = np.asarray(residuals, dtype=float)
    if r.size < 3:
        return 0.0
    r = r - r.mean()
    den = float(np.sum(r * r))
    return 0.0 if den == 0 else float(np.sum(r[1:] * r[:-1]) / den)


def effective_n(n: int, rho: float) -> float:
    """n′ = n · (1 − ρ) / (1 + ρ): observations worth of independent information (G14 Annex B).

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


def _fsu_width(cv: float, n: int, p: int, rho: float, m: int, confidence: float) -> float:
    """t · 1.26 · CV · sqrt((n / n′) · (1 + 2 / n′) · (1 / m)): the FSU numerator."""
    if m <= 0:
        raise G14Error("the reporting period has no points")
    n_eff = effective_n(n, rho)
    if n_eff <= 0:
        raise G14Error("no effective baseline observations (ρ ≈ 1)")
    t = t_statistic(confidence, n - p)
    return float(t * FSU_FACTOR * cv * np.sqrt((n / n_eff) * (1 + 2 / n_eff) / m))


def fractional_savings_uncertainty(cv: float, n: int, p: int, rho: float, m: int, fractional_savings: float,
                                   confidence: float = 0.90) -> float:
    """ΔE_save / E_save (G14 Annex B, the FSU equation for models with autocorrelated residuals):

        FSU = t · 1.26 · CV · sqrt( (n / n′) · (1 + 2 / n′) · (1 / m) ) / F

    CV: the baseline's CV(RMSE) (fraction); n: baseline points; n′ = n(1 − ρ)/(1 + ρ);
    m: reporting-period points; F: fractional savings (savings / predicted reporting energy);
    t: two-sided Student t at ``confidence`` with n − p degrees of freedom.
    Infinite when F is 0 (no savings: any uncertainty is infinitely large relative to them).
    """
    width = _fsu_width(cv, n, p, rho, m, confidence)
    return float("inf") if fractional_savings == 0 else width / abs(fractional_savings)


def savings_uncertainty(cv: float, n: int, p: int, rho: float, m: int, predicted_total: float,
                        confidence: float = 0.90) -> float:
    """ΔE_save in the unit of ``predicted_total``: FSU · |E_save| = (FSU · |F|) · E_predicted.

    The same equation multiplied out, so that it stays finite when the savings are zero.
    """
    return _fsu_width(cv, n, p, rho, m, confidence) * abs(predicted_total)
