"""Energy-savings claims: the organisation's metered consumption against its baseline's prediction.

Owns: assembling the hourly series a savings verdict needs — the organisation's consumption in the
baseline and reporting periods (known hours only, compute.consumption_wh of the aggregate) and the
sites' outdoor temperature (their mean; audit/weather.py) — and turning ``audit.baselines.
savings_verdict_inputs`` (the TOWT/CalTRACK-style baseline and ASHRAE Guideline 14's savings gate) into
a measured figure with its interval: fractional savings ± the FSU at 68 % confidence. A gate that
refuses makes the claim UNVERIFIABLE with the gate's reasons (docs/claims.md, "Energy savings").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audit.baselines import BaselineError, align_weather, savings_verdict_inputs
from audit.claims import compute as c
from audit.claims.decide import Measured
from audit.claims.model import HOUR_MS
from audit.weather import WeatherError, read_weather


@dataclass
class SavingsResult:
    figures: dict[str, Any]
    recheck_inputs: dict[str, Any]
    measured: Measured
    method: str
    gate_reasons: list[str] = field(default_factory=list)


def _series(pr: Any, weather: Path | None, sites: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    org = pr.org
    ok = c.known(org)
    hour_ms = pr.start_ms + np.arange(pr.hours, dtype=np.int64) * HOUR_MS
    if weather is None:
        raise BaselineError("no weather file: a savings claim needs hourly outdoor temperature (`weather:`)")
    temps = []
    for site in sites:
        wms, t = read_weather(weather, site)
        temps.append(align_weather(hour_ms[ok], wms, t, f"{weather} ({site})"))
    return hour_ms[ok], c.consumption_wh(org)[ok], np.mean(temps, axis=0)


def savings_figures(cf: Any, claim: Any, period: Callable[[int, int], Any], inputs: Any,
                    claim_dir: Path | None = None) -> SavingsResult:
    p0, p1 = cf.period.start_ms, cf.period.end_ms
    b0, b1 = claim.baseline_period.start_ms, claim.baseline_period.end_ms
    weather = (claim_dir / claim.weather if claim_dir and claim.weather else
               Path(claim.weather) if claim.weather else inputs.weather)
    base, rep = period(b0, b1), period(p0, p1)
    nan = Measured(float("nan"), float("nan"), float("nan"), "%", "higher", 0.5)
    try:
        bh, by, bt = _series(base, weather, list(cf.sites))
        rh, ry, rt = _series(rep, weather, list(cf.sites))
    except (BaselineError, WeatherError) as exc:
        return SavingsResult({}, {}, nan, "energy_savings/1", [f"savings: {exc}"])
    sv = savings_verdict_inputs(bh, by, bt, rh, ry, rt)
    figures: dict[str, Any] = {
        "baseline_fit": {"value": sv.cv_rmse, "unit": "CV(RMSE)", "method": sv.method,
                         "totals": {"cv_rmse": sv.cv_rmse, "nmbe": sv.nmbe, "r2": sv.r2, "n": sv.n, "p": sv.p,
                                    "rho": sv.rho, "baseline_hours": sv.baseline_hours}, "notes": []},
        "base_coverage_energy_weighted": {"value": base.coverage.energy_weighted.value, "unit": "fraction",
                                          "method": base.coverage.energy_weighted.method, "totals": {}, "notes": []},
    }
    reasons = [f"savings gate: {r}" for r in sv.gate_reasons]
    reasons += [f"baseline period: {r}" for r in base.blockers(cf.coverage_min).reasons()]
    if sv.predicted_wh is None or sv.metered_wh is None or not sv.predicted_wh:
        return SavingsResult(figures, {}, nan, sv.method, reasons or ["savings: no prediction"])
    fs = (sv.predicted_wh - sv.metered_wh) / sv.predicted_wh
    figures["savings_metered"] = {"value": sv.metered_wh / 1e6, "unit": "MWh", "method": sv.method,
                                  "totals": {"metered_wh": sv.metered_wh, "predicted_wh": sv.predicted_wh,
                                             "avoided_wh": sv.avoided_wh, "fsu_68": sv.fsu_68, "fsu_90": sv.fsu_90,
                                             "half_width_68_wh": sv.half_width_68_wh}, "notes": []}
    figures["savings_fraction"] = {"value": fs, "unit": "fraction", "method": sv.method, "totals": {}, "notes": []}
    value = fs * 100.0
    half = abs(sv.half_width_68_wh or 0.0) / sv.predicted_wh * 100.0 if sv.half_width_68_wh is not None else 0.0
    m = Measured(value, value - half, value + half, "%", "higher", 0.5)
    return SavingsResult(figures, {"savings_predicted_wh": sv.predicted_wh}, m, sv.method, reasons)
