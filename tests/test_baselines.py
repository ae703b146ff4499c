"""Baselines: G14 metric formulas by hand, TOWT fit and savings, FSU, STL, weather CSV, `audit baseline`."""

from __future__ import annotations

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


def test_cv_rmse_and_nmbe_by_hand() -> None:
    y = np.array([10.0, 12.0, 14.0, 16.0])  # ȳ = 13
    y_hat = np.array([11.0, 11.0, 15.0, 15.0])  # residuals -1, +1, -1, +1: Σ = 0, Σ² = 4
    assert g14.cv_rmse(y, y_hat, p=2) == pytest.approx(math.sqrt(4 / 2) / 13)
    assert g14.nmbe(y, y_hat, p=2) == 0.0
    y_hat = np.array([9.0, 11.0, 13.0, 15.0])  # every residual +1: Σ = 4, Σ² = 4
    assert g14.nmbe(y, y_hat, p=1) == pytest.approx(4 / (3 * 13))
    assert g14.cv_rmse(y, y_hat, p=1) == pytest.approx(math.sqrt(4 / 3) / 13)


def test_metrics_refuse_what_they_cannot_compute() -> None:
    with pytest.raises(g14.G14Error, match="degrees of freedom"):
        g14.cv_rmse(np.ones(3), np.ones(3), p=3)
    with pytest.raises(g14.G14Error, match="mean is zero"):
        g14.nmbe(np.array([-1.0, 1.0]), np.zeros(2), p=1)
    with pytest.raises(g14.G14Error, match="same length"):
        g14.cv_rmse(np.ones(3), np.ones(4), p=1)


def test_g14_limits_hourly_and_monthly() -> None:
    assert g14.FitMetrics("hourly", 100, 5, 0.30, -0.10).passes
    assert not g14.FitMetrics("hourly", 100, 5, 0.31, 0.0).passes
    assert not g14.FitMetrics("hourly", 100, 5, 0.10, 0.11).passes
    assert g14.FitMetrics("monthly", 12, 1, 0.15, 0.05).passes
    assert not g14.FitMetrics("monthly", 12, 1, 0.16, 0.0).passes
    assert not g14.FitMetrics("monthly", 12, 1, 0.10, -0.051).passes


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


def test_towt_on_a_clean_simulated_site_passes_g14_hourly_and_finds_no_savings() -> None:
    hours, y, temp, _ = _site_hourly(35)
    nb = 28 * 24
    model = fit_towt(hours[:nb], y[:nb], temp[:nb])
    assert model.fit, model.reasons
    assert model.hourly.cv_rmse < 0.30 and abs(model.hourly.nmbe) < 0.10
    assert model.p > 168  # 168 time-of-week levels + temperature slopes
    sv = savings(model, hours[nb:], y[nb:], temp[nb:])
    assert sv.hours == 7 * 24
    assert abs(sv.savings_wh) < sv.uncertainty_wh[0.90]  # nothing changed: no savings beyond the uncertainty
    assert sv.uncertainty_wh[0.68] < sv.uncertainty_wh[0.90]


def test_towt_finds_injected_savings_within_their_uncertainty() -> None:
    hours, y, temp, _ = _site_hourly(35)
    nb = 28 * 24
    model = fit_towt(hours[:nb], y[:nb], temp[:nb])
    sv = savings(model, hours[nb:], y[nb:] * 0.8, temp[nb:])  # a 20 % retrofit
    assert sv.fractional_savings == pytest.approx(0.2, abs=0.03)
    assert sv.fsu(0.90) < 0.5  # G14's usual bar: savings at least twice their 90 % uncertainty


def test_a_model_of_pure_noise_is_reported_unfit_and_gives_no_savings() -> None:
    rng = np.random.default_rng(3)
    hours = MONDAY + np.arange(4 * 168, dtype=np.int64) * HOUR
    y = rng.exponential(100.0, hours.size)  # CV(RMSE) of exponential noise is ~100 %
    model = fit_towt(hours, y, rng.normal(10, 5, hours.size))
    assert not model.fit
    assert "hourly CV(RMSE)" in model.reasons[0]
    with pytest.raises(BaselineError, match="fails ASHRAE Guideline 14"):
        savings(model, hours, y, np.full(hours.size, 10.0))


def test_towt_needs_every_hour_of_the_week() -> None:
    hours = MONDAY + np.arange(100, dtype=np.int64) * HOUR
    with pytest.raises(BaselineError, match="168 hours of the week"):
        fit_towt(hours, np.ones(100), np.ones(100))


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


def test_cli_baseline_reports_g14_pass_and_savings_with_uncertainty(baseline_site: tuple[str, Path]) -> None:
    dsn, weather = baseline_site
    res = run_cli("audit", "baseline", "--db", dsn, "--site", "s01", "--weather", str(weather), *PERIODS, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["status"] == "fit"
    hourly = out["baseline"]["hourly"]
    assert hourly["passes"] and hourly["cv_rmse"] <= 0.30 and abs(hourly["nmbe"]) <= 0.10
    assert out["baseline"]["hours"] >= 27 * 24
    rep = out["reporting"]
    assert rep["hours"] >= 6 * 24
    assert rep["savings_wh"] == pytest.approx(rep["predicted_wh"] - rep["metered_wh"])
    widths = {u["confidence"]: u["savings_half_width_wh"] for u in rep["uncertainty"]}
    assert 0 < widths[0.68] < widths[0.9]
    assert abs(rep["savings_wh"]) < widths[0.9]  # a clean site saved nothing beyond the uncertainty
    text = run_cli("audit", "baseline", "--db", dsn, "--site", "s01", "--weather", str(weather), *PERIODS)
    assert text.returncode == 0 and "CV(RMSE)" in text.stdout and "pass" in text.stdout and "savings" in text.stdout


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
