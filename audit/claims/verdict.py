"""``wattproof claims check``: a verdict on each claim of a claim file, with its evidence, sealed and anchored.

Owns: running a claim file against the store — hourly energy (load.py), certificates and their guard
(certificates.py), the figures (compute.py; savings: audit.baselines), what blocks a verdict (status.py:
anchoring and findings; coverage; the baseline gate), the rule (decide.py) — and assembling each verdict
with its figures, how they were computed, the inputs a stranger needs to recompute them (recheck.py),
the findings considered, the method version and the anchored batches the figures rest on. The verdict
set is then anchored through the ledger interface (ledger/verdict_sets.py): a re-check after late or
amended data anchors a restatement that names the set it supersedes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from audit.claims import certificates as certs_mod
from audit.claims import compute as c
from audit.claims.decide import (
    HOURLY_GAP_PP,
    OVERSTATED,
    SUBSTANTIATED,
    UNVERIFIABLE,
    Blockers,
    Measured,
    coverage_interval,
    decide,
    verdict_record,
)
from audit.claims.inputs import factor_for, read_certificates, read_factors, read_intensity
from audit.claims.load import load_site_hours, metered_production_wh
from audit.claims.model import HOUR_MS, ClaimsError, Figure, SiteHours
from audit.claims.schema import ClaimFile, load_claim_file
from audit.claims.status import Anchoring, anchoring, findings_considered
from ledger.backend import LedgerBackend

METHOD_VERSION = "wattproof-claims/1"
RANK = {SUBSTANTIATED: 0, UNVERIFIABLE: 1, OVERSTATED: 2}


@dataclass(frozen=True)
class Inputs:
    """The CSV inputs a claim file is checked with (docs/claims.md, "Inputs")."""

    intensity: Path
    factors: Path
    certificates: Path
    weather: Path | None = None

    def digests(self) -> dict[str, str]:
        out = {}
        for name in ("intensity", "factors", "certificates", "weather"):
            p = getattr(self, name)
            if p is not None:
                out[name] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
        return out


@dataclass
class ClaimsRun:
    org: str
    claim_file: Path
    verdicts: list[dict[str, Any]]
    certificate_findings: list[dict[str, Any]]
    context: dict[str, Any]
    sealed: Any = None  # ledger.verdict_sets.SealedSet, when anchored
    batches: list[tuple[str, str]] = field(default_factory=list)


def finite(obj: Any) -> Any:
    """JSON-ready: numpy scalars as Python numbers, NaN and ±inf (a figure that does not exist, an FSU with no
    savings) as null — RFC 8785 has no spelling for them."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _fig(f: Figure) -> dict[str, Any]:
    return {"value": f.value, "unit": f.unit, "method": f.method, "totals": dict(f.totals), "notes": list(f.notes)}


class _Period:
    """What one period of the claim file rests on: hourly energy, anchoring, findings (cached per period)."""

    def __init__(self, conn: psycopg.Connection[Any], sites: list[str], start_ms: int, end_ms: int) -> None:
        self.start_ms, self.end_ms = start_ms, end_ms
        self.hours = (end_ms - start_ms) // HOUR_MS
        self.site_hours: list[SiteHours] = load_site_hours(conn, sites, start_ms, end_ms)
        self.org = c.aggregate(self.site_hours)
        self.coverage = c.coverage(self.org)
        # the figures use the hour before the period too (the registers hour 0 starts from)
        self.anchoring: Anchoring = anchoring(conn, sites, start_ms - HOUR_MS, end_ms)
        self.findings = findings_considered(conn, sites, start_ms, end_ms)

    def blockers(self, coverage_min: float, other: list[str] | None = None) -> Blockers:
        return Blockers(coverage=self.coverage.energy_weighted.value, coverage_min=coverage_min,
                        unanchored=self.anchoring.unanchored, high_findings=self.findings.high,
                        other=list(other or []))

    def evidence(self) -> dict[str, Any]:
        ids = [b for b, _ in self.anchoring.batches]
        return {"count": len(ids), "windows": self.anchoring.windows,
                "sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}


def _pct(fraction: float) -> float:
    return fraction * 100.0


def check_claims(dsn: str, claim_path: Path, inputs: Inputs, backend: LedgerBackend | None = None,
                 now_ms: int | None = None, progress: Callable[[str], None] | None = None) -> ClaimsRun:
    """Verdicts on every claim of ``claim_path``; anchored as a verdict set when ``backend`` is given."""
    cf: ClaimFile = load_claim_file(claim_path)
    org = cf.organisation.id
    sites = list(cf.sites)
    p0, p1 = cf.period.start_ms, cf.period.end_ms
    register = read_certificates(inputs.certificates)
    factors = read_factors(inputs.factors)
    out: list[dict[str, Any]] = []
    with psycopg.connect(dsn) as conn:
        periods: dict[tuple[int, int], _Period] = {}

        def period(a: int, b: int) -> _Period:
            if (a, b) not in periods:
                periods[(a, b)] = _Period(conn, sites, a, b)
            return periods[(a, b)]

        def metered(device: str, a: int, b: int) -> float | None:
            return metered_production_wh(conn, device, a, b)

        cert_findings = certs_mod.certificate_findings(register, org, p0, p1, metered)
        findings_json = [{"kind": f.kind, "cert_id": f.cert_id, "severity": f.severity, "detail": f.detail,
                          "figures": f.figures} for f in cert_findings]
        usable_all = certs_mod.usable_certificates(register, cert_findings)
        for claim in cf.claims:
            if progress:
                progress(f"claim {claim.id} ({claim.kind})")
            used_certs = [x for x in usable_all if not x.claim_ids or claim.id in x.claim_ids]
            refused = [f for f in findings_json
                       if any(r.cert_id == f["cert_id"] and (not r.claim_ids or claim.id in r.claim_ids)
                              for r in register)]
            try:
                out.append(_verdict(cf, claim, period, used_certs, refused, factors, inputs, Path(claim_path).parent))
            except (ClaimsError, ValueError) as exc:
                pr = period(p0, p1)
                out.append({"claim": _claim_json(claim), "verdict": UNVERIFIABLE,
                            "reasons": [f"the figure cannot be computed: {exc}"], "gap": None, "measured": None,
                            "figures": {}, "method": METHOD_VERSION, "coverage": pr.coverage.energy_weighted.value,
                            "findings": pr.findings.as_json(), "certificate_findings": refused,
                            "batches": pr.evidence(), "inputs": {"period": [p0, p1]}})
        heads = {s: (backend.head(s) if backend is not None else "") for s in sites}
        devices = {d: {"site": s, "kind": k} for d, s, k in conn.execute(
            "SELECT device_id, site_id, kind FROM devices WHERE site_id = ANY(%s) ORDER BY device_id", (sites,))}
        batches = sorted({b for pr in periods.values() for b in pr.anchoring.batches})
        periods_used = list(periods)
    out = [finite(v) for v in out]
    claim_sha = hashlib.sha256(Path(claim_path).read_bytes()).hexdigest()
    context = {"org": org, "sites": sites, "period": [p0, p1], "claim_file_sha256": claim_sha,
               "inputs": inputs.digests(), "method": METHOD_VERSION, "devices": devices, "heads": heads,
               "periods": sorted([a, b] for a, b in periods_used), "batches": [list(b) for b in batches]}
    run = ClaimsRun(org, Path(claim_path), out, findings_json, context, batches=batches)
    if backend is not None:
        from ledger.verdict_sets import seal_verdicts

        with psycopg.connect(dsn) as conn:
            run.sealed = seal_verdicts(conn, backend, org, p0, p1, claim_sha, context, out, now_ms=now_ms)
    return run


def _claim_json(claim: Any) -> dict[str, Any]:
    import msgspec

    d = msgspec.to_builtins(claim)
    d.pop("expect", None)  # the scenario's expectation is not part of the claim
    return d


def _verdict(cf: ClaimFile, claim: Any, period: Callable[[int, int], _Period], used_certs: list[Any],
             cert_findings: list[dict[str, Any]], factors: list[Any], inputs: Inputs,
             claim_dir: Path | None = None) -> dict[str, Any]:
    p0, p1 = cf.period.start_ms, cf.period.end_ms
    pr = period(p0, p1)
    cov = pr.coverage.energy_weighted.value
    figures: dict[str, Any] = {"coverage_energy_weighted": _fig(pr.coverage.energy_weighted)}
    rc_inputs: dict[str, Any] = {"period": [p0, p1]}
    notes: list[str] = []
    blockers = pr.blockers(cf.coverage_min)
    second: tuple[float, Measured, str] | None = None
    cert_wh = float(sum(x.mwh for x in used_certs)) * 1e6

    if claim.kind == "renewable_share":
        supply, _outside = certs_mod.hourly_certificate_supply(used_certs, p0, pr.hours)
        rs = c.renewable_share(pr.org, cert_wh, supply)
        figures |= {"renewable_share_annual": _fig(rs.annual), "renewable_share_hourly": _fig(rs.hourly)}
        rc_inputs |= {"certificates_wh": cert_wh, "cert_supply_wh": [float(x) for x in supply]}
        f = rs.annual if claim.basis == "annual" else rs.hourly
        value = _pct(f.value)
        lo, hi = coverage_interval(value, cov, 100.0)
        m = Measured(value, lo, hi, "%", "higher", 0.5)
        method = f.method
        if claim.basis == "annual" and rs.gap_pp > HOURLY_GAP_PP:
            notes.append(f"hourly matched, the share is {_pct(rs.hourly.value):.1f} % — {rs.gap_pp:.1f} percentage "
                         f"points below the annual figure: the clean supply does not cover consumption hour by hour")
    elif claim.kind in ("scope2_emissions", "scope2_reduction"):
        def s2(pp: _Period, a: int, b: int) -> tuple[Figure, dict[str, Any]]:
            if claim.method == "location":
                ci = read_intensity(inputs.intensity, cf.region, a, pp.hours)
                return c.scope2_location(pp.org, ci), {"intensity_g_per_kwh": [float(x) for x in ci]}
            supplier = (factor_for(factors, "supplier", cf.supplier, a, b).gco2e_per_kwh
                        if cf.supplier else None)
            residual = None if supplier is not None else factor_for(factors, "residual", cf.region, a, b).gco2e_per_kwh
            fig = c.scope2_market(pp.org, cert_wh if (a, b) == (p0, p1) else 0.0, supplier, residual)
            return fig, {"market_certificates_wh": fig.totals["certificates_usable_wh"],
                         "remainder_factor_g_per_kwh": fig.totals["remainder_factor_g_per_kwh"],
                         "certificate_factor_g_per_kwh": fig.totals["certificate_factor_g_per_kwh"]}

        cur, extra = s2(pr, p0, p1)
        rc_inputs |= extra
        figures[f"scope2_{claim.method}"] = _fig(cur)
        mcur = cur.value
        clo, chi = coverage_interval(mcur, cov)
        if claim.kind == "scope2_emissions":
            m = Measured(mcur, clo, chi, "tCO2e", "lower", 0.005 * mcur)
            method = cur.method
        else:
            b0, b1 = claim.base_period.start_ms, claim.base_period.end_ms
            bp = period(b0, b1)
            base, bextra = s2(bp, b0, b1)
            figures[f"base_scope2_{claim.method}"] = _fig(base)
            figures["base_coverage_energy_weighted"] = _fig(bp.coverage.energy_weighted)
            rc_inputs["base"] = {"period": [b0, b1], **bextra}
            red = c.scope2_reduction(base, cur)
            figures["scope2_reduction"] = _fig(red)
            blo, bhi = coverage_interval(base.value, bp.coverage.energy_weighted.value)
            value = _pct(red.value)
            lo = _pct(1 - chi / blo) if blo > 0 else -np.inf
            hi = _pct(1 - clo / bhi) if bhi > 0 else np.inf
            m = Measured(value, lo, hi, "%", "higher", 0.5)
            method = red.method
            b_block = bp.blockers(cf.coverage_min)
            blockers.other += [f"base period: {r}" for r in b_block.reasons()]
    elif claim.kind == "onsite_generation":
        og = c.onsite_generation(pr.org)
        figures |= {"onsite_produced": _fig(og.produced), "onsite_self_consumed": _fig(og.self_consumed)}
        rc_inputs["onsite"] = True
        value = og.produced.value
        lo, hi = coverage_interval(value, cov)
        m = Measured(value, lo, hi, "MWh", "higher", 0.005 * value)
        method = og.produced.method
        if claim.self_consumed is not None:
            sv = og.self_consumed.value
            slo, shi = coverage_interval(sv, cov)
            second = (float(claim.self_consumed), Measured(sv, slo, shi, "MWh", "higher", 0.005 * sv),
                      "self-consumed")
    elif claim.kind == "energy_savings":
        from audit.claims.savings import savings_figures

        sv = savings_figures(cf, claim, period, inputs, claim_dir)
        figures |= sv.figures
        rc_inputs |= sv.recheck_inputs
        m = sv.measured
        method = sv.method
        blockers.other += sv.gate_reasons
    else:  # pragma: no cover - the schema admits only the kinds above
        raise ClaimsError(f"unknown claim kind {claim.kind}")

    verdict, reasons, gap = decide(float(claim.claimed), m, blockers)
    if second is not None:  # a claim with two figures holds only if both hold: the worse verdict wins
        v2, r2, g2 = decide(second[0], second[1], blockers)
        reasons += [f"{second[2]}: {r}" for r in r2 if r not in reasons]
        if RANK[v2] > RANK[verdict]:
            verdict, gap = v2, g2
    rec = verdict_record(_claim_json(claim), verdict, reasons + notes, gap, m, figures, f"{method}+{METHOD_VERSION}",
                         cov, pr.findings.as_json(), pr.evidence())
    rec["certificate_findings"] = cert_findings
    rec["inputs"] = rc_inputs
    return rec


def score_claims(dsn: str, claim_path: Path) -> list[dict[str, Any]]:
    """Each claim's expected verdict (the claim file's ``expect``, a scenario's ground truth) against the
    latest anchored verdict set of that organisation, period and claim file."""
    import json

    from ledger.verdict_sets import latest_set

    cf = load_claim_file(claim_path)
    claim_sha = hashlib.sha256(Path(claim_path).read_bytes()).hexdigest()
    with psycopg.connect(dsn) as conn:
        got = latest_set(conn, cf.organisation.id, cf.period.start_ms, cf.period.end_ms, claim_sha)
    by_id = {}
    if got is not None:
        for leaf in got[2]:
            v = json.loads(leaf)
            by_id[v["claim"]["id"]] = v["verdict"]
    return [{"claim": cl.id, "expected": cl.expect, "got": by_id.get(cl.id),
             "ok": cl.expect is None or by_id.get(cl.id) == cl.expect} for cl in cf.claims]
