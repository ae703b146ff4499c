"""Claim files, CSV inputs and the certificate guard (docs/claims.md ("The claim file and the inputs")). Pure: no services."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.claims.certificates import (
    DOUBLE_COUNTED,
    INFLATED,
    INTERVAL_MISMATCH,
    NOT_CANCELLED_FOR_ORG,
    OVER_VOLUME,
    certificate_findings,
    hourly_certificate_supply,
    usable_certificates,
)
from audit.claims.inputs import (
    CertificateRow,
    EmissionFactor,
    InputError,
    factor_for,
    read_certificates,
    read_factors,
    read_intensity,
)
from audit.claims.model import Certificate
from audit.claims.schema import ClaimFileError, load_claim_file, parse_claim_file, parse_utc_ms

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "scenarios" / "claims"
VECTORS = Path(__file__).resolve().parent / "vectors" / "claims"
CASES = json.loads((VECTORS / "cases.json").read_text())
H = 3_600_000
T0 = parse_utc_ms("2026-06-01T00:00:00Z")
ORG = "acme"


def cert(cert_id: str = "GO-1", mwh: float = 1.0, p: tuple[int, int] = (T0, T0 + 24 * H), producer: str = "Windpark",
         org: str | None = ORG, c: tuple[int, int] | None | str = "production", claims: tuple[str, ...] = ("a",),
         line: int = 0) -> CertificateRow:
    """A register row; by default cancelled for ``org`` over its own production interval."""
    c = p if c == "production" else c
    return CertificateRow(cert_id, mwh, p[0], p[1], producer, "wind", org or "acme", org,
                          c[0] if c else None, c[1] if c else None, claims, line=line)


def not_ours(device: str, a: int, b: int) -> float | None:
    return None


def kinds(findings: list) -> list[tuple[str, str, str]]:  # type: ignore[type-arg]
    return [(f.kind, f.cert_id, f.severity) for f in findings]


# --- the example inputs ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["clean", "greenwash"])
def test_example_claim_files_and_inputs_parse_and_every_claim_has_an_expected_verdict(name: str) -> None:
    cf = load_claim_file(EXAMPLES / f"{name}.claims.yaml")
    assert all(c.expect in ("SUBSTANTIATED", "OVERSTATED", "UNVERIFIABLE") for c in cf.claims)
    g = read_intensity(EXAMPLES / "intensity.csv", cf.region, cf.period.start_ms, cf.period.hours)
    assert g.shape == (cf.period.hours,) and 150 < g.min() <= g.max() < 500
    fs = read_factors(EXAMPLES / "factors.csv")
    assert factor_for(fs, "supplier", cf.supplier, cf.period.start_ms, cf.period.end_ms).gco2e_per_kwh > 0
    assert factor_for(fs, "residual", cf.region, cf.period.start_ms, cf.period.end_ms).source
    assert read_certificates(EXAMPLES / f"{name}.certificates.csv")


def test_clean_claims_are_all_expected_substantiated() -> None:
    assert {c.expect for c in load_claim_file(EXAMPLES / "clean.claims.yaml").claims} == {"SUBSTANTIATED"}


def test_greenwash_register_has_every_refusing_finding_against_the_simulated_meters() -> None:
    from firmware_sim.scenarios import load_scenario
    from firmware_sim.sim import simulate

    cf = load_claim_file(EXAMPLES / "greenwash.claims.yaml")
    run = simulate(scenario=load_scenario(ROOT / "scenarios" / "greenwash.yaml"))
    pv = next(p for p in run._plans if p.dev.device == "s03-pv")  # noqa: SLF001

    def metered(device: str, a: int, b: int) -> float | None:
        if device != "s03-pv":
            return None
        reg = pv.channels[0].energy_wh
        inside = np.flatnonzero((pv.ts_ms >= a) & (pv.ts_ms < b))
        return float(reg[inside[-1]] - reg[inside[0] - 1])

    certs = read_certificates(EXAMPLES / "greenwash.certificates.csv")
    found = certificate_findings(certs, cf.organisation.id, cf.period.start_ms, cf.period.end_ms, metered)
    high = {(f.kind, f.cert_id) for f in found if f.severity == "high"}
    assert high == {(DOUBLE_COUNTED, "GO-WD-202605-99"), (OVER_VOLUME, "GO-WD-202605-99"),
                    (DOUBLE_COUNTED, "GO-HY-202606-42"), (NOT_CANCELLED_FOR_ORG, "GO-HY-202606-42"),
                    (INFLATED, "GO-PV-S03-20260606"), (NOT_CANCELLED_FOR_ORG, "GO-SO-202606-07")}
    inflated = next(f for f in found if f.kind == INFLATED)
    assert inflated.figures["ratio"] == pytest.approx(2.5, rel=0.01)
    usable = usable_certificates(certs, found)
    assert {c.cert_id for c in usable} == {f"GO-WD-202605-0{d}" for d in range(1, 8)}
    supply, outside = hourly_certificate_supply(usable, cf.period.start_ms, cf.period.hours)
    assert supply.sum() == 0 and outside.sum() == pytest.approx(sum(c.mwh for c in usable) * 1e6)


# --- claim-file errors -------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_negative_vector_is_refused_naming_where(case: dict) -> None:  # type: ignore[type-arg]
    path = VECTORS / case["file"]
    readers = {
        "claims": (ClaimFileError, lambda: load_claim_file(path)),
        "intensity": (InputError, lambda: read_intensity(path, "NL", T0, 2)),
        "factors": (InputError, lambda: read_factors(path)),
        "certificates": (InputError, lambda: read_certificates(path)),
    }
    error, read = readers[case["reader"]]
    with pytest.raises(error) as exc:
        read()
    msg = str(exc.value)
    assert str(path) in msg, msg
    for part in case["error"]:
        assert part in msg, f"{case['desc']}: {part!r} not in {msg!r}"


GOOD = """organisation: {id: acme, name: Acme}
sites: [s01]
period: {from: 2026-06-01, to: "2026-06-08T00:00:00Z"}
region: NL
claims:
  - {id: a, kind: renewable_share, claimed: 50, basis: annual}
  - {id: b, kind: scope2_reduction, claimed: 5, method: market, base_period: {from: 2025-06-01, to: 2025-06-08}}
  - {id: c, kind: energy_savings, claimed: 10, baseline_period: {from: 2026-05-01, to: 2026-06-01}, weather: w.csv}
  - {id: d, kind: onsite_generation, claimed: 2, self_consumed: 1.5}
"""


def test_a_valid_claim_file_gives_typed_claims_with_utc_periods_and_defaults(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(GOOD)
    cf = load_claim_file(p)
    assert (cf.period.start_ms, cf.period.end_ms, cf.period.hours) == (T0, T0 + 168 * H, 168)
    assert cf.coverage_min == 0.95 and cf.supplier is None
    assert [c.kind for c in cf.claims] == ["renewable_share", "scope2_reduction", "energy_savings", "onsite_generation"]
    assert cf.claim("c").weather == str(tmp_path / "w.csv")  # relative to the claim file
    assert cf.claim("b").base_period.end_ms == parse_utc_ms("2025-06-08T00:00:00Z")


def test_claim_file_error_is_a_value_error_naming_the_file() -> None:
    with pytest.raises(ValueError, match=r"^x\.yaml:3: field `period\.to`"):
        parse_claim_file(GOOD.replace('"2026-06-08T00:00:00Z"', "2026-05-01"), "x.yaml")


def test_unreadable_claim_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ClaimFileError, match="cannot read claim file"):
        load_claim_file(tmp_path / "absent.yaml")


def test_claim_file_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(ClaimFileError, match="not UTF-8"):
        parse_claim_file(b"organisation: \xff\n", "x.yaml")


# --- CSV readers ----------------------------------------------------------------------------------


def test_intensity_columns_are_found_by_name_extra_columns_ignored_other_regions_skipped(tmp_path: Path) -> None:
    p = tmp_path / "i.csv"
    p.write_text("note,gco2e_per_kwh,hour_start,region\nx,300,2026-06-01T00:00:00Z,NL\n,999,2026-06-01T00:00:00Z,DE\n"
                 "\ny,250.5,2026-06-01T01:00:00+00:00,NL\nz,1,2026-06-01T02:00:00Z,NL\n")
    assert read_intensity(p, "NL", T0, 2).tolist() == [300.0, 250.5]
    assert read_intensity(p, "DE", T0, 1).tolist() == [999.0]


def test_factor_lookup_needs_exactly_one_factor_covering_the_period() -> None:
    fs = [EmissionFactor("residual", "NL", T0, T0 + 30 * 24 * H, 540.0, "AIB", 2),
          EmissionFactor("residual", "NL", T0 + 30 * 24 * H, T0 + 60 * 24 * H, 520.0, "AIB", 3),
          EmissionFactor("residual", "NL", T0 + 10 * 24 * H, T0 + 20 * 24 * H, 500.0, "other", 4)]
    assert factor_for(fs, "residual", "NL", T0, T0 + 5 * 24 * H).gco2e_per_kwh == 540.0
    with pytest.raises(InputError, match="no residual emission factor for 'NL'"):
        factor_for(fs, "residual", "NL", T0 + 29 * 24 * H, T0 + 31 * 24 * H)  # spans two periods
    with pytest.raises(InputError, match="no supplier emission factor"):
        factor_for(fs, "supplier", "NL", T0, T0 + H)
    with pytest.raises(InputError, match=r"ambiguous"):
        factor_for(fs, "residual", "NL", T0 + 11 * 24 * H, T0 + 12 * 24 * H)


def test_register_keeps_both_rows_of_a_certificate_listed_twice_with_their_lines(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    head = ("cert_id,mwh,production_start,production_end,producer,technology,holder,cancelled_for,"
            "cancelled_period_start,cancelled_period_end,claim_ids\n")
    p.write_text(head + "GO-1,2.5,2026-06-01,2026-06-02,s03-pv,solar,acme,acme,2026-06-01,2026-06-08, a ; b \n"
                 "GO-1,2.5,2026-06-01,2026-06-02,s03-pv,solar,acme,,,,\n")
    a, b = read_certificates(p)
    assert isinstance(a, Certificate) and (a.line, b.line) == (2, 3) and a.source == str(p)
    assert a.claim_ids == ("a", "b") and b.claim_ids == () and b.cancelled_for is None
    assert (a.production_start_ms, a.cancelled_period_end_ms) == (T0, T0 + 168 * H)


def test_unreadable_csv_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        read_factors(tmp_path / "none.csv")


# --- certificate findings, hand-computed -----------------------------------------------------------

P0, P1 = T0, T0 + 168 * H


def test_a_clean_certificate_has_no_finding_and_is_usable() -> None:
    c = cert()
    assert certificate_findings([c], ORG, P0, P1, not_ours) == []
    assert usable_certificates([c], []) == [c]


def test_certificate_listed_twice_for_two_claims_is_double_counted_and_over_volume() -> None:
    rows = [cert(mwh=2.0, claims=("a",), line=2), cert(mwh=2.0, claims=("b",), line=5)]
    found = certificate_findings(rows, ORG, P0, P1, not_ours)
    assert kinds(found) == [(DOUBLE_COUNTED, "GO-1", "high"), (OVER_VOLUME, "GO-1", "high")]
    assert found[0].figures["lines"] == [2, 5] and "different claims (a, b)" in found[0].detail
    assert found[1].figures["used_mwh"] == 4.0 and found[1].figures["excess_mwh"] == 2.0
    assert usable_certificates(rows, found) == []


def test_certificate_cancelled_for_two_organisations_is_double_counted_and_the_other_row_not_ours() -> None:
    rows = [cert(), cert(org="other-co")]
    found = certificate_findings(rows, ORG, P0, P1, not_ours)
    assert kinds(found) == [(DOUBLE_COUNTED, "GO-1", "high"), (NOT_CANCELLED_FOR_ORG, "GO-1", "high")]
    assert found[0].figures["organisations"] == ["acme", "other-co"]
    assert usable_certificates(rows, found) == []


def test_identical_rows_are_listed_twice() -> None:
    found = certificate_findings([cert(), cert()], ORG, P0, P1, not_ours)
    assert "listed twice" in found[0].detail and found[1].kind == OVER_VOLUME


def test_certificate_not_cancelled_is_not_usable() -> None:
    c = cert(org=None, c=None)
    found = certificate_findings([c], ORG, P0, P1, not_ours)
    assert kinds(found) == [(NOT_CANCELLED_FOR_ORG, "GO-1", "high")] and "still held by 'acme'" in found[0].detail
    assert usable_certificates([c], found) == []


def test_certificate_produced_in_another_week_is_usable_annually_but_not_hourly() -> None:
    c = cert(p=(T0 - 14 * 24 * H, T0 - 7 * 24 * H), c=(P0, P1))
    found = certificate_findings([c], ORG, P0, P1, not_ours)
    assert kinds(found) == [(INTERVAL_MISMATCH, "GO-1", "medium")]
    assert found[0].figures["not_hourly_matchable_mwh"] == 1.0 and found[0].figures["usable_annual"]
    assert "not produced" in found[0].detail
    assert usable_certificates([c], found) == [c]


def test_certificate_cancelled_for_another_period_or_vintage_is_refused() -> None:
    other_period = cert(c=(P1, P1 + 24 * H))
    old_vintage = cert(p=(parse_utc_ms("2025-06-01"), parse_utc_ms("2025-06-02")))
    found = certificate_findings([other_period], ORG, P0, P1, not_ours)
    assert kinds(found) == [(INTERVAL_MISMATCH, "GO-1", "high")] and "not inside the reporting period" in found[0].detail
    found = certificate_findings([old_vintage], ORG, P0, P1, not_ours)
    assert kinds(found) == [(INTERVAL_MISMATCH, "GO-1", "high")] and "reporting year" in found[0].detail
    assert usable_certificates([old_vintage], found) == []


def test_certificate_half_produced_outside_the_period_is_half_hourly_matchable() -> None:
    c = cert(mwh=4.0, p=(P0 - 12 * H, P0 + 12 * H), c=(P0, P0 + 12 * H))
    (f,) = certificate_findings([c], ORG, P0, P1, not_ours)
    assert (f.kind, f.severity) == (INTERVAL_MISMATCH, "medium")
    assert f.figures["hourly_matchable_mwh"] == 2.0 and f.figures["not_hourly_matchable_mwh"] == 2.0


def metered_s03(device: str, a: int, b: int) -> float | None:
    """s03-pv produces 10 kWh in every hour; other producers are not ours."""
    return 10_000.0 * (b - a) / H if device == "s03-pv" else None


def test_certificate_beyond_its_devices_metered_production_is_inflated() -> None:
    ok = cert("GO-OK", mwh=0.240, producer="s03-pv")  # 24 h × 10 kWh = 0.240 MWh exactly
    edge = cert("GO-EDGE", mwh=0.240 * 1.01 + 0.001, producer="s03-pv", p=(T0 + 24 * H, T0 + 48 * H))  # at tolerance
    bad = cert("GO-BAD", mwh=0.400, producer="s03-pv", p=(T0 + 48 * H, T0 + 72 * H))
    found = certificate_findings([ok, edge, bad], ORG, P0, P1, metered_s03)
    assert kinds(found) == [(INFLATED, "GO-BAD", "high")]
    assert found[0].figures["metered_mwh"] == pytest.approx(0.240) and found[0].figures["excess_mwh"] == pytest.approx(0.160)
    assert [c.cert_id for c in usable_certificates([ok, edge, bad], found)] == ["GO-OK", "GO-EDGE"]


def test_overlapping_certificates_of_one_device_are_inflated_together() -> None:
    a = cert("GO-A", mwh=0.200, producer="s03-pv")  # each ≤ 0.240 MWh of its 24 h
    b = cert("GO-B", mwh=0.200, producer="s03-pv", p=(T0 + 12 * H, T0 + 36 * H))
    found = certificate_findings([a, b], ORG, P0, P1, metered_s03)
    assert kinds(found) == [(INFLATED, "GO-A;GO-B", "high")]
    assert found[0].figures["metered_mwh"] == pytest.approx(0.360) and found[0].figures["cert_ids"] == ["GO-A", "GO-B"]
    assert usable_certificates([a, b], found) == []


def test_a_plant_that_is_not_ours_is_never_inflated() -> None:
    assert certificate_findings([cert(mwh=1e6)], ORG, P0, P1, metered_s03) == []


# --- hourly certificate supply ------------------------------------------------------------------


def test_hourly_supply_spreads_each_certificate_over_its_production_hours() -> None:
    certs = [cert(mwh=0.003, p=(T0, T0 + 3 * H)),                # 1 kWh in hours 0, 1, 2
             cert(mwh=0.001, p=(T0 + H // 2, T0 + 3 * H // 2)),  # 0.5 kWh in hours 0 and 1
             cert(mwh=0.002, p=(T0 - H, T0 + H)),                # 1 kWh before the window, 1 kWh in hour 0
             cert(mwh=0.005, p=(T0 + 2 * H, T0 + 10 * H)),       # 625 Wh per hour, 6 h after the window
             cert(mwh=0.001, p=(T0 - 5 * H, T0 - 4 * H))]        # entirely before
    supply, outside = hourly_certificate_supply(certs, T0, 4)
    assert supply.tolist() == pytest.approx([2500.0, 1500.0, 1625.0, 625.0])
    assert outside.tolist() == pytest.approx([0.0, 0.0, 1000.0, 3750.0, 1000.0])
    assert supply.sum() + outside.sum() == pytest.approx(12_000.0)


def test_hourly_supply_of_no_certificates_is_zero() -> None:
    supply, outside = hourly_certificate_supply([], T0, 3)
    assert supply.tolist() == [0.0, 0.0, 0.0] and outside.size == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-20, 40), st.integers(1, 30), st.floats(0.001, 5.0)), max_size=25),
       st.integers(0, 24))
def test_hourly_supply_matches_a_slow_per_hour_reference(specs: list[tuple[int, int, float]], hours: int) -> None:
    step = H // 4  # quarter hours: partial first and last hours too
    certs = [cert(mwh=m, p=(T0 + a * step, T0 + (a + d) * step)) for a, d, m in specs]
    supply, outside = hourly_certificate_supply(certs, T0, hours)
    ref = np.zeros(hours)
    for c in certs:
        rate = c.mwh * 1e6 / (c.production_end_ms - c.production_start_ms)
        for h in range(hours):
            lo, hi = max(c.production_start_ms, T0 + h * H), min(c.production_end_ms, T0 + (h + 1) * H)
            ref[h] += rate * max(0, hi - lo)
    np.testing.assert_allclose(supply, ref, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(supply.sum() + outside.sum(), sum(c.mwh for c in certs) * 1e6, rtol=1e-9)


def test_hourly_supply_of_thousands_of_certificates_is_vectorised() -> None:
    import time

    rng = np.random.default_rng(1)
    certs = [cert(f"GC-{i}", mwh=float(rng.uniform(0.001, 1)), p=(T0 + int(s) * H, T0 + int(s + d) * H))
             for i, (s, d) in enumerate(zip(rng.integers(-100, 8760, 20_000), rng.integers(1, 800, 20_000), strict=True))]
    t = time.perf_counter()
    supply, _ = hourly_certificate_supply(certs, T0, 8760)
    assert time.perf_counter() - t < 1.0 and supply.shape == (8760,)


# --- fuzz: each reader raises only its own error -----------------------------------------------

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
csv_like = st.lists(st.lists(st.sampled_from(["NL", "2026-06-01T00:00:00Z", "2026-06-01", "1.5", "-1", "nan", "",
                                              "a;b", "acme", '"', "x,y", "1e999", "2026-13-01", "\x00", "\r"]),
                             max_size=12), max_size=6)


@FUZZ
@given(data=st.one_of(st.binary(max_size=400), st.text(max_size=400).map(str.encode), csv_like.map(
    lambda rows: "\n".join(",".join(r) for r in rows).encode())), header=st.booleans())
def test_any_bytes_given_to_a_csv_reader_raise_only_input_error(tmp_path: Path, data: bytes, header: bool) -> None:
    readers = [("region,hour_start,gco2e_per_kwh\n", lambda p: read_intensity(p, "NL", T0, 1)),
               ("kind,scope,period_start,period_end,gco2e_per_kwh,source\n", read_factors),
               ("cert_id,mwh,production_start,production_end,producer,technology,holder,cancelled_for,"
                "cancelled_period_start,cancelled_period_end,claim_ids\n", read_certificates)]
    for i, (head, read) in enumerate(readers):
        p = tmp_path / f"f{i}.csv"
        p.write_bytes((head.encode() if header else b"") + data)
        try:
            read(p)
        except InputError:
            pass


yamlish = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12)),
                       lambda inner: st.one_of(st.lists(inner, max_size=4),
                                               st.dictionaries(st.sampled_from(["id", "kind", "claimed", "basis", "from",
                                                                                "to", "period", "claims", "sites",
                                                                                "method", "x"]), inner, max_size=4)),
                       max_leaves=12)


@FUZZ
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=300),
                      yamlish.map(lambda v: GOOD.replace("claims:\n", f"claims:\n  - {json.dumps(v)}\n")),
                      st.tuples(st.integers(0, len(GOOD)), st.text(max_size=8)).map(lambda t: GOOD[:t[0]] + t[1] + GOOD[t[0]:])))
def test_any_text_given_to_the_claim_parser_raises_only_claim_file_error(data: str | bytes) -> None:
    try:
        parse_claim_file(data, "f.yaml")
    except ClaimFileError:
        pass


def test_claim_file_round_trips_through_msgspec_without_the_expectation() -> None:
    cf = load_claim_file(EXAMPLES / "greenwash.claims.yaml")
    d = msgspec.to_builtins(cf.claims[0])
    assert d["kind"] == "renewable_share" and d["expect"] == "OVERSTATED"


def test_a_reduction_against_a_base_period_of_another_length_is_refused_with_the_field() -> None:
    from audit.claims.schema import ClaimFileError, parse_claim_file

    text = ("organisation: {id: o, name: O}\nsites: [s01]\nperiod: {from: 2026-06-07, to: 2026-06-08}\n"
            "region: NL\nclaims:\n  - {id: r, kind: scope2_reduction, claimed: 10, method: location,\n"
            "     base_period: {from: 2026-06-01, to: 2026-06-03}}\n")
    with pytest.raises(ClaimFileError, match=r"f.yaml:7: field `claims.0.base_period`: expected a base period as long as"):
        parse_claim_file(text, "f.yaml")
