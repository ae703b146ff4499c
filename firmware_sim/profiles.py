"""Physical models of a site: weather, electrical load and PV generation, as numpy arrays.

Owns: the outdoor temperature model, household and commercial load profiles (power in W on a
regular time grid), clear-sky PV from pvlib with cloud variability, and the cumulative register
that integrates power. Everything is a pure function of its inputs and a ``numpy.random.Generator``,
so a seed fixes the output.
Must not: build frames, sign or publish.

Load shapes follow the structure of the German BDEW standard load profiles (H0 household, G0
commercial): a weekday/weekend daily shape, a seasonal factor, plus a temperature term
(heating below 15 °C, cooling above 22 °C) so the audit's temperature regression has something
real to find. ``demandlib`` implements BDEW but fails on pandas 3 (it calls the removed
``inplace=`` API), so the shapes are parametrised here from the published profile shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pvlib
from scipy.signal import lfilter

MS_PER_HOUR = 3_600_000
SiteKind = Literal["household", "commercial"]


@dataclass(frozen=True)
class SiteModel:
    site: str
    kind: SiteKind
    lat: float
    lon: float
    annual_kwh: float  # yearly consumption of the site
    pv_kwp: float  # installed PV peak power (0: no PV)


def _hour_of_day(ts_ms: np.ndarray) -> np.ndarray:
    return (ts_ms % 86_400_000) / MS_PER_HOUR


def _day_of_week(ts_ms: np.ndarray) -> np.ndarray:
    return ((ts_ms // 86_400_000) + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday


def _day_of_year(ts_ms: np.ndarray) -> np.ndarray:
    return (ts_ms // 86_400_000) % 365.25


def temperature_c(ts_ms: np.ndarray, lat: float, rng: np.random.Generator) -> np.ndarray:
    """Outdoor temperature: annual and daily cycles (colder further from the equator) + AR noise."""
    doy = _day_of_year(ts_ms)
    hod = _hour_of_day(ts_ms)
    mean = 24.0 - 0.3 * abs(lat)
    annual = 9.0 * np.cos(2 * np.pi * (doy - 200) / 365.25) * np.sign(lat or 1.0)
    daily = 4.0 * np.cos(2 * np.pi * (hod - 15) / 24)
    # Weather systems: a slow random walk over hours, interpolated onto the grid.
    hours = max(2, int(np.ceil((ts_ms[-1] - ts_ms[0]) / MS_PER_HOUR)) + 2) if len(ts_ms) else 2
    walk = np.cumsum(rng.normal(0, 0.35, hours))
    walk -= np.linspace(0, walk[-1], hours)  # no long drift
    base = ts_ms[0] if len(ts_ms) else 0
    weather = np.interp((ts_ms - base) / MS_PER_HOUR, np.arange(hours), walk)
    return mean + annual + daily + weather


def _daily_shape(kind: SiteKind, hod: np.ndarray, weekend: np.ndarray) -> np.ndarray:
    if kind == "household":
        morning = np.exp(-0.5 * ((hod - 7.5) / 1.2) ** 2)
        evening = np.exp(-0.5 * ((hod - 19.5) / 2.0) ** 2)
        midday = np.exp(-0.5 * ((hod - 13.0) / 2.5) ** 2) * np.where(weekend, 0.6, 0.25)
        return 0.35 + 0.6 * morning + 1.1 * evening + midday
    open_hours = (hod >= 7.5) & (hod < 18.5) & ~weekend
    ramp = np.clip(np.minimum(hod - 6.5, 19.5 - hod), 0, 1)
    return 0.3 + np.where(open_hours, 1.4, 0.0) + 0.3 * ramp * ~weekend


def load_w(model: SiteModel, ts_ms: np.ndarray, temp_c: np.ndarray,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Site load split in two sub-metered circuits: (hvac_w, other_w), both >= 0."""
    hod = _hour_of_day(ts_ms)
    weekend = _day_of_week(ts_ms) >= 5
    shape = _daily_shape(model.kind, hod, weekend)
    mean_w = model.annual_kwh * 1000 / 8766
    other = mean_w * shape / 0.85
    # Multiplicative AR(1) noise: appliances switching, minute to minute.
    noise = lfilter([1.0], [1.0, -0.9], rng.normal(0, 0.08, len(ts_ms)))
    other = other * np.exp(noise - 0.5 * 0.08**2 / (1 - 0.81))
    heating = np.clip(15.0 - temp_c, 0, None)
    cooling = np.clip(temp_c - 22.0, 0, None)
    occupied = 1.0 if model.kind == "household" else np.where((hod >= 7) & (hod < 19) & ~weekend, 1.0, 0.35)
    hvac = mean_w * (0.045 * heating + 0.07 * cooling) * occupied
    return np.maximum(hvac, 0.0), np.maximum(other, 0.0)


def clear_sky_pv_w(model: SiteModel, ts_ms: np.ndarray) -> np.ndarray:
    """PV power under a clear sky (pvlib Ineichen GHI, performance ratio 0.85)."""
    if model.pv_kwp <= 0 or len(ts_ms) == 0:
        return np.zeros(len(ts_ms))
    times = pd.DatetimeIndex(pd.to_datetime(ts_ms, unit="ms", utc=True))
    ghi = pvlib.location.Location(model.lat, model.lon, tz="UTC").get_clearsky(times, model="ineichen")["ghi"]
    return np.asarray(ghi, dtype=float) / 1000.0 * model.pv_kwp * 1000.0 * 0.85


def cloud_factor(ts_ms: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fraction of clear-sky irradiance reaching the panels: overcast days and passing clouds."""
    n = len(ts_ms)
    if n == 0:
        return np.zeros(0)
    days = int((ts_ms[-1] - ts_ms[0]) // 86_400_000) + 2
    day_cover = rng.beta(2.0, 1.6, days)  # per-day mean clearness
    day_idx = ((ts_ms - ts_ms[0]) // 86_400_000).astype(int)
    passing = np.clip(1 - np.abs(rng.normal(0, 0.12, n)), 0.3, 1)
    return np.clip(0.25 + 0.75 * day_cover[day_idx], 0, 1) * passing


def integrate_register_wh(power_w: np.ndarray, dt_s: float, start_wh: int = 0) -> np.ndarray:
    """Cumulative register in whole Wh (floor): never decreases, tracks the integral of power."""
    energy = np.cumsum(np.clip(power_w, 0, None)) * (dt_s / 3600.0)
    return (start_wh + np.floor(energy)).astype(np.int64)
