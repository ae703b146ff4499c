"""The claim file: which organisation claims what about which sites and period (YAML).

Owns: the claim-file schema (docs/claims.md ("The claim file and the inputs")), parsing it with PyYAML + msgspec and the
semantic checks msgspec cannot express (periods non-empty, hour-aligned and UTC, base periods before
the reporting period, claim ids unique, no duplicate YAML keys). Every error is one
``ClaimFileError`` naming the file, the line of the YAML node, the field path (``claims.2.claimed``)
and what was expected — the same shape as ``firmware_sim.scenarios``.
Must not: read meter data, certificates or factors (``inputs.py``), or compute figures.

    cf = load_claim_file("scenarios/claims/greenwash.claims.yaml")
    cf.period.start_ms, cf.period.end_ms      # [start, end) in UTC ms
    for claim in cf.claims: claim.kind, claim.claimed
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from device.errors import WattproofError

HOUR_MS = 3_600_000
Id = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]
Percent = Annotated[float, msgspec.Meta(ge=0, le=100)]
NonNeg = Annotated[float, msgspec.Meta(ge=0)]
Expect = Literal["SUBSTANTIATED", "OVERSTATED", "UNVERIFIABLE"]
Method = Literal["location", "market"]


class ClaimFileError(WattproofError, ValueError):
    """A claim file that cannot be used. The message names file, line, field path and expectation."""


def parse_utc_ms(text: str) -> int:
    """``2026-06-01`` (midnight UTC) or ``2026-06-01T06:00:00Z`` / ``…+00:00`` → UTC ms.

    Raises ValueError for anything else, including times without an explicit UTC offset."""
    if not isinstance(text, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2}))?", text):
        raise ValueError("an ISO 8601 UTC date or time (2026-06-01 or 2026-06-01T06:00:00Z)")
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    elif dt.utcoffset() != UTC.utcoffset(None):
        raise ValueError("a UTC time (offset Z or +00:00)")
    return int(dt.timestamp() * 1000)


class Organisation(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    id: Id
    name: Annotated[str, msgspec.Meta(min_length=1)]


class Period(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """[from, to): UTC, hour-aligned, ``to`` exclusive (checked by ``parse_claim_file``)."""

    from_: str = msgspec.field(name="from")
    to: str

    @property
    def start_ms(self) -> int:
        return parse_utc_ms(self.from_)

    @property
    def end_ms(self) -> int:
        return parse_utc_ms(self.to)

    @property
    def hours(self) -> int:
        return (self.end_ms - self.start_ms) // HOUR_MS


class _Claim(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag_field="kind"):
    id: Id
    text: str = ""  # the claim as published, for the report
    expect: Expect | None = None  # the scenario's expected verdict (scorer only; the engine ignores it)

    @property
    def kind(self) -> str:
        """The claim kind (the YAML ``kind:`` tag)."""
        return str(self.__struct_config__.tag)


class RenewableShareClaim(_Claim, frozen=True, tag="renewable_share"):
    claimed: Percent  # % of the sites' electricity consumption
    basis: Literal["annual", "hourly"]


class Scope2EmissionsClaim(_Claim, frozen=True, tag="scope2_emissions"):
    claimed: NonNeg  # tCO2e over the period
    method: Method


class Scope2ReductionClaim(_Claim, frozen=True, tag="scope2_reduction"):
    claimed: Percent  # % reduction of the period's Scope 2 emissions against base_period's
    method: Method
    base_period: Period


class EnergySavingsClaim(_Claim, frozen=True, tag="energy_savings"):
    claimed: Percent  # % of the baseline-predicted consumption avoided in the period
    baseline_period: Period
    weather: str | None = None  # CSV of hourly temperature, relative to the claim file


class OnsiteGenerationClaim(_Claim, frozen=True, tag="onsite_generation"):
    claimed: NonNeg  # MWh produced by the sites' PV over the period
    self_consumed: NonNeg | None = None  # MWh of it used on site


KINDS = ("renewable_share", "scope2_emissions", "scope2_reduction", "energy_savings", "onsite_generation")
CHOICES = {"basis": ("annual", "hourly"), "method": ("location", "market"),
           "expect": ("SUBSTANTIATED", "OVERSTATED", "UNVERIFIABLE")}
Claim = RenewableShareClaim | Scope2EmissionsClaim | Scope2ReductionClaim | EnergySavingsClaim | OnsiteGenerationClaim


class InputFiles(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The CSV inputs the claims are checked with, relative to the claim file (docs/claims.md, "Inputs")."""

    intensity: Annotated[str, msgspec.Meta(min_length=1)]
    factors: Annotated[str, msgspec.Meta(min_length=1)]
    certificates: Annotated[str, msgspec.Meta(min_length=1)]
    weather: Annotated[str, msgspec.Meta(min_length=1)] | None = None


class ClaimFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    organisation: Organisation
    sites: Annotated[list[Id], msgspec.Meta(min_length=1)]
    period: Period
    region: Id
    supplier: Id | None = None
    coverage_min: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.95
    inputs: InputFiles | None = None
    claims: Annotated[list[Claim], msgspec.Meta(min_length=1)]

    def claim(self, claim_id: str) -> Claim:
        return next(c for c in self.claims if c.id == claim_id)


# --- YAML with line numbers ------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader without the timestamp resolver: dates stay strings, parsed by ``parse_utc_ms``."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _node_at(node: yaml.Node, path: list[str | int]) -> yaml.Node:
    for part in path:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            match = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if match is None:
                return node
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


def _duplicate_key(node: yaml.Node, path: list[str | int]) -> tuple[yaml.Node, list[str | int]] | None:
    """The first mapping key that occurs twice (PyYAML silently keeps the last one)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for k, v in node.value:
            key = getattr(k, "value", None)
            if isinstance(key, str) and key in seen:
                return k, [*path, key]
            seen.add(key)
            found = _duplicate_key(v, [*path, key])
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            found = _duplicate_key(v, [*path, i])
            if found:
                return found
    return None


def _scan(node: yaml.Node) -> tuple[yaml.Node, str] | None:
    """The first node a claim file must not have: an alias (a node reached twice: anchors and aliases
    can blow up or loop, and a claim file has no use for them) or a scalar with a lone surrogate
    (a YAML escape can make one; it is not Unicode text)."""
    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if id(n) in seen:
            return n, "anchors and aliases (&name / *name) are not allowed in a claim file"
        seen.add(id(n))
        if isinstance(n, yaml.ScalarNode):
            try:
                str(n.value).encode("utf-8")
            except UnicodeEncodeError:
                return n, "expected Unicode text, got a lone surrogate (an escape such as \\ud800)"
        elif isinstance(n, yaml.MappingNode):
            stack.extend(x for kv in reversed(n.value) for x in reversed(kv))
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(reversed(n.value))
    return None


def _dotted(path: list[str | int]) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


class _Where:
    def __init__(self, source: str, root: yaml.Node) -> None:
        self.source, self.root = source, root

    def error(self, path: list[str | int], expected: str) -> ClaimFileError:
        line = _node_at(self.root, path).start_mark.line + 1
        return ClaimFileError(f"{self.source}:{line}: field `{_dotted(path)}`: {expected}")


# --- parsing -------------------------------------------------------------------------------------


def parse_claim_file(text: str | bytes, source: str = "<claims>") -> ClaimFile:
    """Parse and check a claim file. Raises ``ClaimFileError`` naming file, line and field."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ClaimFileError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    try:
        root = yaml.compose(text, Loader=_Loader)
        bad = _scan(root) if root is not None else None
        data: Any = yaml.load(text, Loader=_Loader) if bad is None else None  # noqa: S506 — a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ClaimFileError(f"{source}{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    except (ValueError, RecursionError) as exc:  # e.g. NUL characters, absurd nesting
        raise ClaimFileError(f"{source}: not valid YAML ({exc})") from None
    if bad is not None:
        raise ClaimFileError(f"{source}:{bad[0].start_mark.line + 1}: {bad[1]}")
    if root is None or not isinstance(data, dict):
        raise ClaimFileError(f"{source}:1: field `(top level)`: expected a mapping with organisation, sites, "
                             "period, region and claims")
    where = _Where(source, root)
    dup = _duplicate_key(root, [])
    if dup:
        node, path = dup
        raise ClaimFileError(f"{source}:{node.start_mark.line + 1}: field `{_dotted(path)}`: "
                             "given twice (each key once)")
    try:
        cf = msgspec.convert(data, ClaimFile)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        m = re.search(r"- at `\$([^`]*)`", msg)
        path = [int(p[1]) if p[1] else p[2] for p in re.finditer(r"\[(\d+)\]|\.(\w+)", m[1])] if m else []
        reason = msg.split(" - at ")[0]
        unknown = re.match(r"Object contains unknown field `([^`]+)`", reason)
        if unknown:  # reported on the parent; point at the field itself
            path = [*path, unknown[1]]
            reason = "unknown field (see docs/claims.md, \"The claim file\", for the schema)"
        elif reason.startswith("Object missing required field"):
            missing = reason.split("field", 1)[1].strip().strip("`")
            path = [*path, missing]
            reason = f"missing: expected a `{missing}` field"
        elif path and path[-1] == "kind" and reason.startswith("Invalid value"):
            reason = f"expected one of {', '.join(KINDS)}, {reason.replace('Invalid value', 'got')}"
        elif path and path[-1] in CHOICES and reason.startswith("Invalid enum value"):
            reason = f"expected one of {', '.join(CHOICES[str(path[-1])])}, {reason.replace('Invalid enum value', 'got')}"
        else:
            reason = reason[0].lower() + reason[1:]
        raise where.error(path, reason) from None
    _check(cf, where)
    return cf


def _period_ms(p: Period, path: list[str | int], where: _Where) -> tuple[int, int]:
    out = []
    for name, value in (("from", p.from_), ("to", p.to)):
        try:
            ms = parse_utc_ms(value)
        except ValueError as exc:
            raise where.error([*path, name], f"expected {exc}, got {value!r}") from None
        if ms % HOUR_MS:
            raise where.error([*path, name], f"expected a time on a whole UTC hour, got {value!r}")
        out.append(ms)
    if out[1] <= out[0]:
        raise where.error([*path, "to"], f"expected `to` after `from` (period is [from, to)), got {p.from_} … {p.to}")
    return out[0], out[1]


def _check(cf: ClaimFile, where: _Where) -> None:
    start, _ = _period_ms(cf.period, ["period"], where)
    seen_sites: set[str] = set()
    for i, site in enumerate(cf.sites):
        if site in seen_sites:
            raise where.error(["sites", i], f"site {site!r} listed twice")
        seen_sites.add(site)
    seen: dict[str, int] = {}
    for i, c in enumerate(cf.claims):
        if c.id in seen:
            raise where.error(["claims", i, "id"], f"claim id {c.id!r} already used by claims.{seen[c.id]}; ids are unique")
        seen[c.id] = i
        base = c.base_period if isinstance(c, Scope2ReductionClaim) else (
            c.baseline_period if isinstance(c, EnergySavingsClaim) else None)
        if base is not None:
            name = "base_period" if isinstance(c, Scope2ReductionClaim) else "baseline_period"
            b_start, b_end = _period_ms(base, ["claims", i, name], where)
            if b_end > start:
                raise where.error(["claims", i, name, "to"],
                                  f"expected the {name} to end at or before the reporting period starts ({cf.period.from_})")
            if isinstance(c, Scope2ReductionClaim) and b_end - b_start != cf.period.end_ms - start:
                # totals of unequal periods are no reduction: a base year against a reporting year, a day against a day
                raise where.error(["claims", i, name],
                                  f"expected a base period as long as the reporting period ({cf.period.hours} h), "
                                  f"got {(b_end - b_start) // HOUR_MS} h")
        if isinstance(c, OnsiteGenerationClaim) and c.self_consumed is not None and c.self_consumed > c.claimed:
            raise where.error(["claims", i, "self_consumed"],
                              f"expected at most the MWh produced ({c.claimed:g}), got {c.self_consumed:g}")
        if isinstance(c, EnergySavingsClaim) and c.weather is not None and not c.weather.strip():
            raise where.error(["claims", i, "weather"], "expected a file path, got an empty string")


def load_claim_file(path: str | Path) -> ClaimFile:
    """Read and parse a claim file; an energy-savings ``weather`` path is resolved against its folder."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ClaimFileError(f"{p}: cannot read claim file ({exc.strerror})") from None
    cf = parse_claim_file(raw, str(p))
    claims = [msgspec.structs.replace(c, weather=str(p.parent / c.weather))
              if isinstance(c, EnergySavingsClaim) and c.weather and not Path(c.weather).is_absolute() else c
              for c in cf.claims]
    inputs = cf.inputs
    if inputs is not None:
        inputs = InputFiles(**{f: (None if getattr(inputs, f) is None else str(p.parent / getattr(inputs, f)))
                               for f in ("intensity", "factors", "certificates", "weather")})
    return msgspec.structs.replace(cf, claims=claims, inputs=inputs)
