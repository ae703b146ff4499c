"""The verdict rule: SUBSTANTIATED, OVERSTATED or UNVERIFIABLE, with a stated tolerance.

Owns: ``decide`` — one rule for every claim kind (docs/claims.md, "Verdicts"). A claim kind supplies its
measured figure with an interval ``[lo, hi]`` that holds the true value given what is not known
(missing hours; a baseline's savings uncertainty), the direction that is "greener", and a rounding
tolerance in the figure's unit. Then, before any figure is looked at, blockers make the claim
UNVERIFIABLE: coverage below the claim file's threshold, readings of the period not yet anchored, open
high-severity findings on the devices the figure uses, an unfit baseline. Otherwise, for a figure where
higher is greener (a share, a reduction, savings, generation):

    claimed ≤ lo + tol                 SUBSTANTIATED  (the evidence supports at least the claim)
    claimed > hi + tol                 OVERSTATED     (gap = claimed − measured)
    otherwise                          UNVERIFIABLE   (the claim lies inside the uncertainty)

and mirrored where lower is greener (emissions). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

SUBSTANTIATED: Final = "SUBSTANTIATED"
OVERSTATED: Final = "OVERSTATED"
UNVERIFIABLE: Final = "UNVERIFIABLE"
VERDICTS: Final = (SUBSTANTIATED, OVERSTATED, UNVERIFIABLE)

#: An annual (volumetric) renewable claim whose hourly-matched score is lower by more than this many
#: percentage points gets the gap stated in its verdict.
HOURLY_GAP_PP: Final = 10.0


@dataclass(frozen=True)
class Measured:
    value: float
    lo: float
    hi: float
    unit: str
    greener: Literal["higher", "lower"]
    tolerance: float  # rounding tolerance in ``unit``, stated in the verdict


@dataclass
class Blockers:
    coverage: float
    coverage_min: float
    unanchored: int = 0
    high_findings: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)  # e.g. the baseline gate's reasons

    def reasons(self) -> list[str]:
        out = []
        if self.coverage < self.coverage_min:
            out.append(f"coverage {self.coverage:.1%} is below the claim file's threshold {self.coverage_min:.1%}")
        if self.unanchored:
            out.append(f"{self.unanchored} stored readings of the period are not anchored yet (run `wattproof anchor`)")
        if self.high_findings:
            out.append("open high-severity findings on the devices the figure uses: " + ", ".join(self.high_findings))
        return out + list(self.other)


def decide(claimed: float, m: Measured, blockers: Blockers) -> tuple[str, list[str], float | None]:
    """(verdict, reasons, gap) — gap = claimed − measured when OVERSTATED, else None."""
    reasons = blockers.reasons()
    if reasons:
        return UNVERIFIABLE, reasons, None
    tol = m.tolerance
    sign = 1.0 if m.greener == "higher" else -1.0
    lo, hi = (m.lo, m.hi) if sign > 0 else (-m.hi, -m.lo)
    c = sign * claimed
    shown = f"measured {m.value:.4g} {m.unit} (interval {m.lo:.4g} … {m.hi:.4g}, tolerance ±{tol:g})"
    if c <= lo + tol:
        return SUBSTANTIATED, [f"claimed {claimed:.4g} {m.unit}; {shown}"], None
    if c > hi + tol:
        return OVERSTATED, [f"claimed {claimed:.4g} {m.unit} is beyond the evidence: {shown}"], claimed - m.value
    return UNVERIFIABLE, [f"claimed {claimed:.4g} {m.unit} lies within the uncertainty: {shown}"], None


def coverage_interval(value: float, coverage: float, unit_max: float | None = None) -> tuple[float, float]:
    """[lo, hi] of a figure measured on a fraction ``coverage`` of the period's hours.

    A share (``unit_max`` = 100 %) is ``value`` on the covered part and anything in [0, unit_max] on the
    rest, weighted by hours; a total is scaled by at most the missing fraction either way."""
    missing = max(0.0, min(1.0, 1.0 - coverage))
    if unit_max is not None:
        return value * (1 - missing), value * (1 - missing) + unit_max * missing
    return value * (1 - missing), value * (1 + missing)


def verdict_record(claim: dict[str, Any], verdict: str, reasons: list[str], gap: float | None, m: Measured,
                   figures: dict[str, Any], method: str, coverage: float, findings: list[dict[str, Any]],
                   batches: dict[str, Any]) -> dict[str, Any]:
    """The verdict as anchored (one leaf of the set): claim, verdict, figures and how, evidence."""
    return {"claim": claim, "verdict": verdict, "reasons": reasons, "gap": gap,
            "measured": {"value": m.value, "lo": m.lo, "hi": m.hi, "unit": m.unit, "greener": m.greener,
                         "tolerance": m.tolerance},
            "figures": figures, "method": method, "coverage": coverage, "findings": findings, "batches": batches}
