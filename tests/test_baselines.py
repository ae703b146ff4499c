"""Baselines: metric formulas by hand, the savings gate, TOWT fit and savings, FSU, STL, weather CSV, `audit baseline`."""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from audit import g14
from audit.baselines import (
    BaselineError,
    fit_towt,
    savings,
    savings_verdict_inputs,
    stl_anomalies,
    temperature_basis,
    time_of_week,
    usable_knots,
)
from audit.weather import WeatherError, read_weather
from firmware_sim.fleet import write_weather
from firmware_sim.scenarios import Scenario
from firmware_sim.sim import simulate
from ingest.pipeline import ingest_payloads
from ingest.registry import register_device

HOUR = 3_600_000
MONDAY = int(np.datetime64("2026-01-05", "ms").astype(np.int64))  # a Monday


# --- G14 formulas on arrays small enough to compute by hand ---------------------------------


def test_cv_rmse_nmbe_and_r2_by_hand() -> None:
    y = np.array([10.0, 12.0, 14.0, 16.0])  # ȳ = 13, Σy = 52, Σ(y − ȳ)² = 20
    y_hat = np.array([11.0, 11.0, 15.0, 15.0])  # residuals -1, +1, -1, +1: Σ = 0, Σ² = 4
    assert g14.cv_rmse(y, y_hat, p=2) == pytest.approx(math.sqrt(4 / 2) / 13)
    assert g14.nmbe(y, y_hat) == 0.0
    assert g14.r_squared(y, y_hat) == pytest.approx(1 - 4 / 20)
    y_hat = np.array([9.0, 11.0, 13.0, 15.0])  # the model under-predicts every hour by 1: Σ(ŷ − y) = −4
    assert g14.nmbe(y, y_hat) == pytest.approx(-4 / 52)  # CalTRACK's sign and denominator: Σ(ŷ − y)/Σy
    assert g14.cv_rmse(y, y_hat, p=1) == pytest.approx(math.sqrt(4 / 3) / 13)


def test_metrics_refuse_what_they_cannot_compute() -> None:
    with pytest.raises(g14.G14Error, match="degrees of freedom"):
        g14.cv_rmse(np.ones(3), np.ones(3), p=3)
    with pytest.raises(g14.G14Error, match="mean is zero"):
        g14.nmbe(np.array([-1.0, 1.0]), np.zeros(2))
    with pytest.raises(g14.G14Error, match="same length"):
        g14.cv_rmse(np.ones(3), np.ones(4), p=1)


# --- the savings gate, criterion by criterion (numbers chosen to be checked by eye) ------------

GOOD_FIT = g14.FitMetrics("hourly", 8760, 400.0, 0.60, 0.0, 0.5)


def gate(**kw: object) -> list[str]:
    args: dict[str, object] = {"baseline_hours": 8760, "hours_of_week_seen": 168, "extrapolated_share": 0.0,
                               "hourly": GOOD_FIT, "fsu_68": 0.20, "savings": 1000.0}
    args.update(kw)
    return g14.gate_reasons(**args)  # type: ignore[arg-type]


def test_gate_admits_a_fitted_baseline_with_savings_well_above_their_uncertainty() -> None:
    assert gate() == []
    assert gate(fsu_68=0.499, hourly=g14.FitMetrics("hourly", 8760, 400.0, 0.6, -0.005, 0.5)) == []  # limits inclusive/strict as documented


def test_gate_refuses_fsu_of_50_percent_or_more_at_68_percent_confidence() -> None:
    assert gate(fsu_68=0.50) == ["fractional savings uncertainty 50% at 68 % confidence (limit < 50%)"]
    assert gate(fsu_68=float("inf"), savings=0.0) == ["no savings: the metered energy is not below the baseline's prediction"]


def test_gate_refuses_too_little_data() -> None:
    assert gate(baseline_hours=335) == ["too little data: 335 baseline hours (at least 336, two weeks)"]
    assert gate(hours_of_week_seen=167) == ["too little data: the baseline covers 167 of the 168 hours of the week"]
    assert gate(extrapolated_share=0.11)[0].startswith("temperature outside the baseline's range in 11% of reporting hours")


def test_gate_refuses_a_biased_baseline_model() -> None:
    biased = g14.FitMetrics("hourly", 8760, 400.0, 0.60, 0.006, 0.5)  # over-predicts the baseline by 0.6 %
    assert gate(hourly=biased) == ["NMBE +0.60% (limit ±0.5%)"]
    assert gate(hourly=None) == ["no baseline model could be fitted"]
    assert len(gate(hourly=biased, fsu_68=0.7, baseline_hours=100)) == 3  # every failed criterion is named


def test_effective_n_and_fsu_formula() -> None:
    assert g14.effective_n(100, 0.0) == 100
    assert g14.effective_n(100, 0.5) == pytest.approx(100 * 0.5 / 1.5)
    assert g14.effective_n(100, -0.3) == 100  # negative ρ is clipped
    t = g14.t_statistic(0.90, 100 - 2)
    n_eff = 100 * 0.6 / 1.4
    expected = t * 1.26 * 0.2 * math.sqrt((100 / n_eff) * (1 + 2 / n_eff) / 50) / 0.1
    assert g14.fractional_savings_uncertainty(0.2, 100, 2, 0.4, 50, 0.1, 0.90) == pytest.approx(expected)
    assert g14.t_statistic(0.68, 10_000) == pytest.approx(0.994, abs=1e-3)  # ~1 σ
    assert g14.t_statistic(0.90, 10_000) == pytest.approx(1.645, abs=1e-3)


def test_fsu_decreases_with_more_data() -> None:
    base = g14.fractional_savings_uncertainty(0.2, 500, 170, 0.3, 168, 0.1)
    assert g14.fractional_savings_uncertainty(0.2, 500, 170, 0.3, 4 * 168, 0.1) < base  # longer reporting period
    assert g14.fractional_savings_uncertainty(0.2, 2000, 170, 0.3, 168, 0.1) < base  # longer baseline
    assert g14.fractional_savings_uncertainty(0.2, 500, 170, 0.3, 168, 0.2) < base  # larger savings
    assert g14.fractional_savings_uncertainty(0.2, 500, 170, 0.6, 168, 0.1) > base  # more autocorrelation
    assert g14.fractional_savings_uncertainty(0.2, 500, 170, 0.3, 168, 0.0) == math.inf


# --- TOWT ------------------------------------------------------------------------------------


def test_time_of_week_starts_monday_midnight_utc() -> None:
    assert time_of_week(np.array([MONDAY, MONDAY + HOUR, MONDAY + 167 * HOUR, MONDAY + 168 * HOUR])).tolist() == [0, 1, 167, 0]


def test_temperature_basis_is_continuous_piecewise_linear_summing_to_t() -> None:
    t = np.array([-5.0, 0.0, 3.0, 10.0, 20.0, 40.0])
    b = temperature_basis(t, (0.0, 7.0, 13.0))
    assert np.allclose(b.sum(axis=1), t)
    assert b[3].tolist() == [0.0, 7.0, 3.0, 0.0]
    assert usable_knots(np.linspace(0, 10, 100), (5.0, 9.9)) == (5.0,)  # 9.9–10 holds 1 point: merged away


def _site_hourly(days: int, seed: int = 11) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """A clean simulated site's hourly load (sub1 + sub2, Wh) and temperature, straight from the simulator."""
    run = simulate(sites=1, days=days, seed=seed, start_ms=MONDAY, interval_s=300)
    plans = {p.dev.role: p for p in run._plans}
    load_w = plans["sub1"].channels[0].power_w + plans["sub2"].channels[0].power_w
    ts, temp = run._temps["s01"]
    hours, inv = np.unique(ts // HOUR * HOUR, return_inverse=True)
    per_hour = np.bincount(inv)
    return hours, np.bincount(inv, load_w) / per_hour, np.bincount(inv, temp) / per_hour, run.sites[0].kind


def test_towt_on_a_clean_simulated_site_fits_and_finds_no_savings() -> None:
    hours, y, temp, _ = _site_hourly(35)
    nb = 28 * 24
    model = fit_towt(hours[:nb], y[:nb], temp[:nb])
    # January has its own model; February (one day, 1 February) gets CalTRACK's window model (January at
    # weight 0.5, no level of its own from a single Sunday); the months without data fall back
    assert model.segmentation == "mixed (2 monthly models)"
    assert model.hourly.cv_rmse < 0.30 and abs(model.hourly.nmbe) < 0.005
    assert model.p > 168  # 168 time-of-week levels + temperature slopes (trace of the hat matrix)
    sv = savings(model, hours[nb:], y[nb:], temp[nb:])
    assert sv.hours == 7 * 24
    assert abs(sv.savings_wh) < sv.uncertainty_wh[0.90]  # nothing changed: no savings beyond the uncertainty
    assert sv.uncertainty_wh[0.68] < sv.uncertainty_wh[0.90]
    v = savings_verdict_inputs(hours[:nb], y[:nb], temp[:nb], hours[nb:], y[nb:], temp[nb:])
    assert not v.gate_passed  # no savings to verify: the FSU is far above 50 % (or the savings negative)


def test_towt_finds_injected_savings_and_the_gate_admits_them() -> None:
    hours, y, temp, _ = _site_hourly(42)
    nb = 35 * 24  # (with 28 days, 11 % of the next week's hours are warmer than the baseline ever was: refused)
    v = savings_verdict_inputs(hours[:nb], y[:nb], temp[:nb], hours[nb:], y[nb:] * 0.8, temp[nb:])  # a 20 % retrofit
    assert v.gate_passed, v.gate_reasons
    assert v.fractional_savings == pytest.approx(0.2, abs=0.03)
    assert v.avoided_wh == pytest.approx(v.predicted_wh - v.metered_wh)
    assert v.fsu_68 < v.fsu_90 < 0.5 and v.half_width_68_wh < v.half_width_90_wh
    assert v.n == nb and v.r2 > 0.5 and abs(v.nmbe) < 0.005 and v.reporting_hours == 7 * 24


def test_a_baseline_of_a_few_days_makes_savings_unverifiable_without_raising() -> None:
    hours, y, temp, _ = _site_hourly(14)
    v = savings_verdict_inputs(hours[:100], y[:100], temp[:100], hours[200:], y[200:] * 0.5, temp[200:])
    assert not v.gate_passed and v.cv_rmse is None and v.avoided_wh is None
    assert "too little data: 100 baseline hours (at least 336, two weeks)" in v.gate_reasons
    assert any("168 hours of the week" in r for r in v.gate_reasons)


def test_pure_noise_shows_no_savings_and_is_refused() -> None:
    rng = np.random.default_rng(3)
    hours = MONDAY + np.arange(6 * 168, dtype=np.int64) * HOUR
    y = rng.exponential(100.0, hours.size)  # CV(RMSE) of exponential noise is ~100 %
    nb = 4 * 168
    t = rng.normal(10, 5, hours.size)
    v = savings_verdict_inputs(hours[:nb], y[:nb], t[:nb], hours[nb:], y[nb:], t[nb:])
    assert v.cv_rmse > 0.9
    assert not v.gate_passed and any("savings" in r for r in v.gate_reasons)


def _occupied_series(weeks: int, seed: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weekdays 08–18 h are occupied and cooled (40 Wh/°C above 18 °C); the other hours are heated
    (30 Wh/°C below 18 °C). Temperatures wander from day to day, so time of week cannot stand in for them."""
    rng = np.random.default_rng(seed)
    hours = MONDAY + np.arange(weeks * 168, dtype=np.int64) * HOUR
    tow = time_of_week(hours)
    occupied = (tow // 24 < 5) & (tow % 24 >= 8) & (tow % 24 < 18)
    day = np.repeat(rng.normal(0, 6, weeks * 7), 24)
    temp = 18 + day + 4 * np.sin(2 * np.pi * (hours / HOUR) / 24 - 2) + rng.normal(0, 1, hours.size)
    y = (300 + occupied * (500 + 40 * np.maximum(temp - 18, 0)) + ~occupied * 30 * np.maximum(18 - temp, 0)
         + rng.normal(0, 20, hours.size))
    return hours, y, temp


def test_occupancy_classes_fit_what_one_shared_temperature_term_cannot() -> None:
    hours, y, temp = _occupied_series(6)
    model = fit_towt(hours, y, temp)
    # the previous model, written out: 168 time-of-week indicators + one piecewise-linear temperature term
    tow = time_of_week(hours)
    X = np.hstack([(tow[:, None] == np.arange(168)[None, :]).astype(float),
                   temperature_basis(temp, usable_knots(temp, (-1.111, 7.222, 12.778, 18.333, 23.889, 32.222)))])
    old = X @ np.linalg.lstsq(X, y, rcond=None)[0]
    r2_old = g14.r_squared(y, old)
    seg = model.segments[None] if None in model.segments else next(iter(model.segments.values()))
    work = (np.arange(168) // 24 < 5) & (np.arange(168) % 24 >= 8) & (np.arange(168) % 24 < 18)
    assert seg.occupied[work].all() and seg.occupied[~work].sum() <= 2  # the 50 working hours (a heated night hour may join)
    assert model.hourly.r2 > 0.95 and model.hourly.r2 > r2_old + 0.05, (model.hourly.r2, r2_old)


def test_month_by_month_models_weight_the_neighbouring_months_by_half() -> None:
    rng = np.random.default_rng(8)
    hours = int(np.datetime64("2025-01-06", "ms").astype(np.int64)) + np.arange(365 * 24, dtype=np.int64) * HOUR
    month = (hours.astype("datetime64[ms]").astype("datetime64[M]").astype(int) % 12) + 1
    temp = rng.normal(10, 5, hours.size)
    y = 100 + 10 * month + rng.normal(0, 5, hours.size)  # a level that steps each month
    model = fit_towt(hours, y, temp)
    assert model.segmentation == "three_month_weighted" and sorted(model.segments) == list(range(1, 13))
    assert abs(model.hourly.nmbe) < 1e-9  # each month's own level: no bias leaks in from the neighbours
    july = int(np.datetime64("2026-07-06", "ms").astype(np.int64)) + np.arange(168, dtype=np.int64) * HOUR
    assert model.predict(july, np.full(168, 10.0)).mean() == pytest.approx(170, abs=2)
    with pytest.raises(BaselineError, match="month 3 has too little baseline data"):  # 40 days: January, February
        fit_towt(hours[: 24 * 40], y[: 24 * 40], temp[: 24 * 40], segmentation="three_month_weighted")


def test_towt_needs_every_hour_of_the_week() -> None:
    hours = MONDAY + np.arange(100, dtype=np.int64) * HOUR
    with pytest.raises(BaselineError, match="168 hours of the week"):
        fit_towt(hours, np.ones(100), np.ones(100))


# --- a CalTRACK sample (tests/vectors/caltrack): our model against CalTRACK's recorded predictions -------


def test_caltrack_sample_gate_admits_and_predictions_agree_with_caltrack() -> None:
    f = Path(__file__).parent / "vectors" / "caltrack" / "uk-electricity-hdd-only-hourly-sample-0.csv.gz"
    with gzip.open(f, "rt", encoding="ascii") as fh:
        rows = [line.split(",") for line in fh.read().splitlines()[1:]]
    cols = {k: [r for r in rows if r[0] == k] for k in ("baseline", "reporting")}
    get = {k: (np.array([int(r[1]) for r in v]), *(np.array([float(r[i]) for r in v]) for i in (2, 3, 4)))
           for k, v in cols.items()}
    (bh, by, bt, bct), (rh, ry, rt, rct) = get["baseline"], get["reporting"]
    v = savings_verdict_inputs(bh, by, bt, rh, ry, rt)
    assert v.gate_passed, v.gate_reasons
    assert v.segmentation == "three_month_weighted"
    model = fit_towt(bh, by, bt)
    assert np.sqrt(np.mean((by - model.fitted) ** 2)) <= np.sqrt(np.mean((by - bct) ** 2))  # no worse than CalTRACK
    assert v.predicted_wh == pytest.approx(rct.sum(), rel=0.01)  # recorded CalTRACK prediction: 1565.3 kWh
    assert abs(v.avoided_wh - (rct.sum() - ry.sum())) < v.half_width_90_wh  # savings within each other's band
    assert np.corrcoef(model.predict(rh, rt), rct)[0, 1] > 0.97


# --- STL ------------------------------------------------------------------------------------


def test_stl_weekly_is_quiet_on_eight_clean_weeks_and_finds_a_hidden_load() -> None:
    hours, y, _, _ = _site_hourly(56)
    assert stl_anomalies(y, period=168) == []
    assert stl_anomalies(y[: 13 * 24], period=168) == []  # under two weeks: no verdict at all
    tampered = y.copy()
    tampered[500] += 3000.0  # 3 kWh in one hour that no pattern explains
    found = stl_anomalies(tampered, period=168)
    assert [a.index for a in found] == [500]
    assert found[0].residual_wh > found[0].threshold_wh


# --- weather CSV ----------------------------------------------------------------------------


def test_weather_csv_errors_name_file_line_and_column(tmp_path: Path) -> None:
    f = tmp_path / "w.csv"
    f.write_text("site,timestamp,temperature_c\ns01,2026-01-05T00:00:00Z,3.5\ns01,2026-01-05T01:00:00Z,warm\n")
    with pytest.raises(WeatherError, match=r"w.csv:3: column temperature_c: 'warm' is not a number"):
        read_weather(f, "s01")
    f.write_text("site,timestamp,temperature_c\ns01,yesterday,3.5\n")
    with pytest.raises(WeatherError, match=r"w.csv:2: column timestamp"):
        read_weather(f, "s01")
    f.write_text("site,time,temp\n")
    with pytest.raises(WeatherError, match=r"w.csv:1: missing column\(s\) timestamp, temperature_c"):
        read_weather(f, "s01")
    f.write_text("site,timestamp,temperature_c\ns02,2026-01-05T00:00:00Z,3.5\n")
    with pytest.raises(WeatherError, match="no rows for site 's01'"):
        read_weather(f, "s01")
    with pytest.raises(WeatherError, match="cannot read"):
        read_weather(tmp_path / "absent.csv", "s01")
    f.write_text("site,timestamp,temperature_c\ns01,2026-01-05T01:00:00Z,2\ns01,2026-01-05T00:00:00Z,1\n")
    ts, temp = read_weather(f, "s01")
    assert ts.tolist() == [MONDAY, MONDAY + HOUR] and temp.tolist() == [1.0, 2.0]


# --- `wattproof audit baseline` against a real PostgreSQL ----------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wattproof", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture
def baseline_site(store_db: str, tmp_path: Path) -> tuple[str, Path]:
    """Five clean weeks of one household at 15-minute readings, ingested; its weather.csv."""
    sc = Scenario(name="baseline", sites=1, days=35, seed=11, interval_s=900, frame_readings=16, start="2026-01-05")
    run = simulate(scenario=sc)
    for d in run.devices:
        register_device(store_db, d.record)
    ingest_payloads(store_db, [(m.topic, m.payload) for m in run.messages()])
    write_weather(run, tmp_path / "weather.csv")
    return store_db, tmp_path / "weather.csv"


PERIODS = ["--baseline-from", "2026-01-05", "--baseline-to", "2026-02-02", "--report-from", "2026-02-02", "--report-to", "2026-02-09"]


def test_cli_baseline_reports_fit_savings_uncertainty_and_the_gate(baseline_site: tuple[str, Path]) -> None:
    dsn, weather = baseline_site
    res = run_cli("audit", "baseline", "--db", dsn, "--site", "s01", "--weather", str(weather), *PERIODS, "--json")
    out = json.loads(res.stdout)
    # a clean site saved nothing: the figures are reported, the gate refuses (exit 3), the claim is unverifiable
    assert res.returncode == 3, res.stderr
    assert out["status"] == "refused" and not out["gate_passed"]
    assert any("savings" in r for r in out["gate_reasons"])
    assert out["cv_rmse"] <= 0.30 and abs(out["nmbe"]) <= 0.005
    assert out["baseline_hours"] >= 27 * 24 and out["reporting_hours"] >= 6 * 24
    assert out["avoided_wh"] == pytest.approx(out["predicted_wh"] - out["metered_wh"])
    assert 0 < out["half_width_68_wh"] < out["half_width_90_wh"]
    assert abs(out["avoided_wh"]) < out["half_width_90_wh"]  # nothing beyond the uncertainty
    text = run_cli("audit", "baseline", "--db", dsn, "--site", "s01", "--weather", str(weather), *PERIODS)
    assert text.returncode == 3 and "CV(RMSE)" in text.stdout and "savings" in text.stdout and "REFUSED" in text.stdout


def test_cli_baseline_bad_inputs_fail_in_one_clear_line(baseline_site: tuple[str, Path], tmp_path: Path) -> None:
    dsn, weather = baseline_site
    res = run_cli("audit", "baseline", "--db", dsn, "--site", "nowhere", "--weather", str(weather), *PERIODS)
    assert res.returncode == 1 and "no rows for site 'nowhere'" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("audit", "baseline", "--db", dsn, "--site", "s01", "--weather", str(tmp_path / "none.csv"), *PERIODS)
    assert res.returncode == 1 and "none.csv: cannot read weather file" in res.stderr
    bad = tmp_path / "bad.csv"
    lines = weather.read_text().splitlines()
    lines[5] = lines[5].rsplit(",", 1)[0] + ",n/a"
    bad.write_text("\n".join(lines) + "\n")
    res = run_cli("audit", "baseline", "--db", dsn, "--site", "s01", "--weather", str(bad), *PERIODS)
    assert res.returncode == 1 and "bad.csv:6: column temperature_c: 'n/a' is not a number" in res.stderr
    res = run_cli("audit", "baseline", "--db", dsn, "--site", "s01", "--weather", str(weather),
                  *PERIODS[:4], "--report-from", "2027-01-01", "--report-to", "2027-01-08")
    assert res.returncode == 1 and "no complete hours of metered energy in the reporting period" in res.stderr
    res = run_cli("audit", "baseline", "--db", dsn, "--site", "s01", "--weather", str(weather),
                  "--baseline-from", "2026-02-02", "--baseline-to", "2026-02-01", *PERIODS[4:])
    assert res.returncode == 1 and "period is empty" in res.stderr
    res = run_cli("audit", "baseline", "--db", dsn, "--site", "s01", "--weather", str(weather),
                  "--baseline-from", "last week", *PERIODS[2:])
    assert res.returncode == 2 and "--baseline-from" in res.stderr


def test_cli_baseline_unknown_site_with_weather_present(baseline_site: tuple[str, Path], tmp_path: Path) -> None:
    dsn, weather = baseline_site
    w = tmp_path / "w9.csv"
    w.write_text(weather.read_text().replace("s01,", "s09,"))
    res = run_cli("audit", "baseline", "--db", dsn, "--site", "s09", "--weather", str(w), *PERIODS)
    assert res.returncode == 1 and "unknown site 's09'" in res.stderr
