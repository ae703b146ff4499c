"""The claim figures (audit/claims/compute.py, docs/claims.md ("How the figures are computed")): hand-computed small cases for
every figure, unknown hours and coverage, refusals, and the pandas reference equal on random data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from audit.claims import compute as c
from audit.claims import reference as ref
from audit.claims.model import ClaimsError, Figure, SiteHours

NAN = np.nan


def hours(site: str = "a", imp=(1000, 500, 0), exp=(0, 0, 300), pv=(0, 500, 1000), cov=(1, 1, 1)) -> SiteHours:  # type: ignore[no-untyped-def]
    return SiteHours(site, 0, *(np.array(x, dtype=np.float64) for x in (imp, exp, pv, cov)))


# The 3-hour site used below, by hand:
#   consumption = import − export + pv = [1000, 1000, 700]          Σ = 2700 Wh
#   self-consumed = clip(pv − export, 0, pv) = [0, 500, 700]        Σ = 1200 Wh
#   grid import Σ = 1500 Wh; PV produced Σ = 1500 Wh
A = hours()


def test_consumption_and_self_consumption_per_hour() -> None:
    assert c.consumption_wh(A).tolist() == [1000, 1000, 700]
    assert c.self_consumed_wh(A).tolist() == [0, 500, 700]


def test_annual_volumetric_share_adds_certificates_to_self_consumption() -> None:
    f = c.renewable_share_annual(A, 600.0)  # (600 + 1200) / 2700
    assert f.value == pytest.approx(2 / 3)
    assert f.method == "renewable_share.annual/1" and f.unit == "fraction"
    assert f.totals["consumption_wh"] == 2700 and f.totals["self_consumed_wh"] == 1200
    assert f.totals["certificates_applied_wh"] == 600 and f.notes == ()


def test_annual_share_caps_certificates_at_grid_import_and_says_so() -> None:
    f = c.renewable_share_annual(A, 2000.0)  # applied min(2000, 1500) = 1500 → (1500 + 1200) / 2700 = 1
    assert f.value == pytest.approx(1.0)
    assert f.totals["certificates_applied_wh"] == 1500 and f.totals["certificates_unapplied_wh"] == 500
    assert "capped at grid import" in f.notes[0]


def test_hourly_matched_share_takes_per_hour_minimum_of_consumption_and_clean_supply() -> None:
    # matched = [min(1000, 0+0), min(1000, 500+0), min(700, 700+600)] = [0, 500, 700] → 1200 / 2700
    f = c.renewable_share_hourly(A, np.array([0.0, 0.0, 600.0]))
    assert f.value == pytest.approx(1200 / 2700)
    assert f.method == "renewable_share.hourly/1"
    assert f.totals["certificate_matched_wh"] == 0 and f.totals["certificate_unmatched_wh"] == 600
    # supply 200 each hour: [min(1000, 200), min(1000, 700), min(700, 900)] = [200, 700, 700] → 1600 / 2700
    g = c.renewable_share_hourly(A, np.full(3, 200.0))
    assert g.value == pytest.approx(1600 / 2700) and g.totals["certificate_matched_wh"] == 400


def test_both_shares_side_by_side_with_gap_in_percentage_points() -> None:
    r = c.renewable_share(A, 600.0, np.array([0.0, 0.0, 600.0]))  # annual 2/3, hourly 4/9
    assert r.gap_pp == pytest.approx((2 / 3 - 4 / 9) * 100)  # 22.2 pp


def test_location_based_scope2_is_hourly_import_times_intensity() -> None:
    # 1000 Wh × 300 g/kWh + 500 Wh × 200 g/kWh + 0 = 300 g + 100 g = 400 g = 0.0004 t
    f = c.scope2_location(A, np.array([300.0, 200.0, 100.0]))
    assert f.value == pytest.approx(4e-4) and f.unit == "tCO2e" and f.method == "scope2.location/1"
    assert f.totals["grid_export_wh"] == 300  # reported, not netted
    assert f.totals["intensity_import_weighted_g_per_kwh"] == pytest.approx(400 / 1.5)


def test_market_based_scope2_follows_the_hierarchy() -> None:
    # 600 Wh covered by certificates at 0; remainder 900 Wh at the next factor available
    residual = c.scope2_market(A, 600.0, None, 400.0)  # 900 × 400 / 1000 = 360 g
    assert residual.value == pytest.approx(3.6e-4) and "residual mix" in residual.notes[0]
    supplier = c.scope2_market(A, 600.0, 250.0, 400.0)  # supplier factor wins over residual: 225 g
    assert supplier.value == pytest.approx(2.25e-4) and "supplier-specific" in supplier.notes[0]
    both = c.scope2(A, np.array([300.0, 200.0, 100.0]), 600.0, None, None)  # grid average 266.7 g/kWh → 240 g
    assert both.market.value == pytest.approx(2.4e-4) and "grid average" in both.market.notes[0]
    capped = c.scope2_market(A, 5000.0, None, 400.0)  # certificates beyond import: 0 g
    assert capped.value == 0 and capped.totals["certificates_applied_wh"] == 1500


def test_market_based_without_any_remainder_factor_is_refused() -> None:
    with pytest.raises(ClaimsError, match="no supplier-specific, residual-mix or grid-average factor"):
        c.scope2_market(A, 0.0, None, None)


def test_reduction_against_base_period() -> None:
    base = c.scope2_location(A, np.array([300.0, 200.0, 100.0]))  # 400 g
    cur = c.scope2_location(A, np.array([225.0, 150.0, 75.0]))  # 300 g
    f = c.scope2_reduction(base, cur)
    assert f.value == pytest.approx(0.25) and f.totals["reduction_tco2e"] == pytest.approx(1e-4)


def test_reduction_across_methods_or_from_zero_base_is_refused() -> None:
    loc = c.scope2_location(A, np.full(3, 100.0))
    mkt = c.scope2_market(A, 0.0, None, 100.0)
    with pytest.raises(ClaimsError, match="same method"):
        c.scope2_reduction(loc, mkt)
    with pytest.raises(ClaimsError, match="no reduction"):
        c.scope2_reduction(c.scope2_location(A, np.zeros(3)), loc)


def test_onsite_generation_produced_and_self_consumed_mwh() -> None:
    g = c.onsite_generation(A)
    assert g.produced.value == pytest.approx(0.0015) and g.self_consumed.value == pytest.approx(0.0012)
    assert g.produced.totals["exported_of_pv_wh"] == 300  # 1200 self-consumed + 300 exported = 1500


def test_unknown_hour_is_left_out_of_sums_and_counts_against_coverage() -> None:
    s = hours(imp=(1000, NAN, 0), cov=(1, 0.5, 0.5))
    # known hours 0 and 2: consumption 1000 + 700, import 1000, self-consumed 0 + 700
    f = c.renewable_share_annual(s, 600.0)
    assert f.value == pytest.approx((600 + 700) / 1700) and f.totals["hours_known"] == 2
    cov = c.coverage(s)
    # effective coverage [1, 0, 0.5]; weights [1000, 850 (mean known consumption), 700]
    assert cov.mean.value == pytest.approx(0.5)
    assert cov.hours_full.value == pytest.approx(1 / 3)
    assert cov.energy_weighted.value == pytest.approx((1000 + 0.5 * 700) / 2550)
    assert cov.energy_weighted.totals["hours_unknown"] == 1


def test_no_known_consumption_is_refused_not_zero() -> None:
    with pytest.raises(ClaimsError, match="no known consumption"):
        c.renewable_share_annual(hours(imp=(NAN, NAN, NAN)), 0.0)
    assert c.coverage(hours(imp=(NAN, NAN, NAN))).energy_weighted.value == 0


def test_missing_intensity_in_an_hour_with_consumption_is_refused() -> None:
    with pytest.raises(ClaimsError, match="1 hour"):
        c.scope2_location(A, np.array([300.0, NAN, 100.0]))
    c.scope2_location(hours(imp=(1000, NAN, 0)), np.array([300.0, NAN, 100.0]))  # unknown hour: not needed


def test_supply_of_wrong_length_or_negative_is_refused() -> None:
    with pytest.raises(ClaimsError, match="shape"):
        c.renewable_share_hourly(A, np.zeros(4))
    with pytest.raises(ClaimsError, match="≥ 0"):
        c.renewable_share_hourly(A, np.array([0.0, -1.0, 0.0]))
    with pytest.raises(ClaimsError, match="≥ 0"):
        c.renewable_share_annual(A, -5.0)


def test_aggregate_sums_known_site_hours_and_weights_coverage_by_consumption() -> None:
    s1 = SiteHours("s1", 0, np.array([100.0, 200.0]), np.zeros(2), np.zeros(2), np.array([1.0, 0.5]))  # mean 150
    s2 = SiteHours("s2", 0, np.array([300.0, NAN]), np.zeros(2), np.zeros(2), np.array([1.0, 1.0]))  # mean 300
    org = c.aggregate([s1, s2])
    assert org.import_wh.tolist() == [400, 200]
    assert org.coverage.tolist() == pytest.approx([1.0, 150 * 0.5 / 450])
    # a site with no known hour weighs as the mean of the others (225) and covers nothing
    s3 = SiteHours("s3", 0, np.full(2, NAN), np.full(2, NAN), np.full(2, NAN), np.ones(2))
    assert c.aggregate([s1, s2, s3]).coverage.tolist() == pytest.approx([450 / 675, 75 / 675])
    assert math.isnan(c.aggregate([s3]).import_wh[0])


def test_aggregate_of_sites_over_different_periods_is_refused() -> None:
    with pytest.raises(ClaimsError, match="not the period"):
        c.aggregate([A, SiteHours("b", 3_600_000, *(np.zeros(3) for _ in range(4)))])


# --- the pandas reference gives the same numbers ----------------------------------------------------

def same(a: Figure, b: Figure) -> None:
    assert a.name == b.name and a.method == b.method and a.unit == b.unit
    assert a.value == pytest.approx(b.value, rel=1e-9, abs=1e-12), a.name
    assert set(a.totals) == set(b.totals), a.name
    for k in a.totals:
        assert a.totals[k] == pytest.approx(b.totals[k], rel=1e-9, abs=1e-6), (a.name, k)


def figures_both(sites: list[SiteHours], cert_wh: float, supply: np.ndarray, ci: np.ndarray) -> None:
    org = c.aggregate(sites)
    long = ref.long_frame(sites)
    rorg = ref.aggregate(long)
    np.testing.assert_allclose(org.import_wh, rorg["import_wh"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(org.coverage, rorg["coverage"].to_numpy(), rtol=1e-12, atol=1e-15)
    for a, b in zip(c.coverage(org).__dict__.values(), ref.coverage(rorg).__dict__.values(), strict=True):
        same(a, b)
    for a, b in [(c.onsite_generation(org).produced, ref.onsite_generation(rorg).produced),
                 (c.onsite_generation(org).self_consumed, ref.onsite_generation(rorg).self_consumed),
                 (c.scope2_market(org, cert_wh, None, 350.0), ref.scope2_market(rorg, cert_wh, None, 350.0))]:
        same(a, b)
    try:
        loc = c.scope2_location(org, ci)
    except ClaimsError:
        return
    same(loc, ref.scope2_location(rorg, ci))
    if loc.value > 0:
        same(c.scope2_reduction(loc, c.scope2_location(org, ci * 0.8)),
             ref.scope2_reduction(ref.scope2_location(rorg, ci), ref.scope2_location(rorg, ci * 0.8)))
    try:
        annual = c.renewable_share_annual(org, cert_wh)
    except ClaimsError:
        with pytest.raises(ClaimsError):
            ref.renewable_share_annual(rorg, cert_wh)
        return
    same(annual, ref.renewable_share_annual(rorg, cert_wh))
    same(c.renewable_share_hourly(org, supply), ref.renewable_share_hourly(rorg, supply))


wh = st.floats(0, 1e6, allow_nan=False) | st.just(NAN)


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[SiteHours], float, np.ndarray, np.ndarray]:
    n_h = draw(st.integers(1, 30))
    n_s = draw(st.integers(1, 4))
    arr = lambda elems: draw(hnp.arrays(np.float64, n_h, elements=elems))  # noqa: E731
    sites = []
    for i in range(n_s):
        imp, exp = arr(wh), arr(wh)
        pv = arr(wh) if draw(st.booleans()) else np.zeros(n_h)
        sites.append(SiteHours(f"s{i}", 0, imp, exp, pv, arr(st.sampled_from([0.0, 0.25, 0.5, 0.9, 1.0]))))
    supply = arr(st.floats(0, 1e6))
    ci = arr(st.floats(0, 900))
    return sites, draw(st.floats(0, 1e7)), supply, ci


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets())
def test_pandas_reference_gives_the_same_figures_on_random_fleets(fleet) -> None:  # type: ignore[no-untyped-def]
    figures_both(*fleet)


def test_pandas_reference_gives_the_same_figures_on_a_year_of_random_hours() -> None:
    rng = np.random.default_rng(7)
    n = 8760
    sites = []
    for i in range(5):
        pv = rng.gamma(1.0, 800, n)
        imp, exp = rng.gamma(2.0, 900, n), np.minimum(rng.gamma(1.0, 300, n), pv)
        imp[rng.random(n) < 0.01] = NAN
        sites.append(SiteHours(f"s{i}", 0, imp, exp, pv, rng.choice([1.0, 0.75], n, p=[0.95, 0.05])))
    figures_both(sites, 1e7, rng.gamma(1.0, 2000, n), rng.uniform(50, 600, n))
