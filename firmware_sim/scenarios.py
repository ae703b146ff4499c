"""Scenario files: which fleet to simulate and which faults or frauds to inject, from YAML.

Owns: the scenario schema, loading it with errors that name file, line and field, and the fault
kinds with where each must surface (``expect``): in ingest's quarantine with a reason code, as an
audit finding of a kind, or as a no-op. See docs/scenarios.md. The scenarios wattproof ships (and
their claim files) are package data in ``firmware_sim/scenarios_data/`` (``bundled_path``).
Must not: generate data (sim.py does) or touch the network.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from device.errors import WattproofError

FaultKind = Literal[
    "register_rollback", "stuck_register", "gap", "duplicate_frame", "replayed_frame",
    "clock_skew", "clock_drift", "spike", "over_rating", "pv_at_night", "pv_inflated",
    "forged_signature", "impersonation", "malformed_json", "malformed_schema",
]

#: Where each fault must surface. ``quarantine:<reason>`` = ingest rejects those frames with that
#: reason code; ``finding:<kind>`` = audit must report it; ``noop`` = stored exactly once anyway.
EXPECT: dict[str, str] = {
    "register_rollback": "finding:register_rollback",
    "stuck_register": "finding:stuck_register",
    "gap": "finding:gap",
    "duplicate_frame": "noop",
    "replayed_frame": "quarantine:replayed_seq",
    "clock_skew": "quarantine:clock_skew",
    "clock_drift": "finding:clock_drift",
    "spike": "finding:spike",
    "over_rating": "finding:power_above_rating",
    "pv_at_night": "finding:pv_at_night",
    "pv_inflated": "finding:pv_above_clear_sky",
    "forged_signature": "quarantine:bad_signature",
    "impersonation": "quarantine:bad_signature",
    "malformed_json": "quarantine:bad_json",
    "malformed_schema": "quarantine:schema",
}

Role = Literal["main", "sub1", "sub2", "pv"]
PosFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]


class FaultSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    kind: FaultKind
    site: Annotated[int, msgspec.Meta(ge=0)] = 0  # index of the site in the fleet
    device: Role = "main"
    start_h: NonNegFloat  # hours after the start of the simulated period
    duration_h: PosFloat = 1.0
    factor: PosFloat | None = None  # spike / over_rating / pv_inflated multiplier
    delta_wh: Annotated[int, msgspec.Meta(gt=0)] | None = None  # register_rollback amount
    offset_s: float | None = None  # clock_skew offset, clock_drift total drift


class Scenario(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
    description: str = ""
    sites: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 3
    days: Annotated[float, msgspec.Meta(gt=0, le=3660)] = 7.0
    seed: int = 42
    interval_s: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 60
    frame_readings: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 15
    start: str | None = None  # ISO date of the first reading (UTC); default: days before now
    faults: list[FaultSpec] = []


class ScenarioError(WattproofError, ValueError):
    """A scenario file that cannot be used. The message names file, line and field."""


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


def _parse_path(text: str) -> list[str | int]:
    return [int(m[1]) if m[1] else m[2] for m in re.finditer(r"\[(\d+)\]|\.(\w+)", text)]


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    try:
        root = yaml.compose(text)
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ScenarioError(f"{source}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict) or root is None:
        raise ScenarioError(f"{source}:1: a scenario is a mapping with at least `name:`")
    try:
        return msgspec.convert(data, Scenario)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        m = re.search(r"- at `\$([^`]*)`", msg)
        path = _parse_path(m[1]) if m else []
        # An unknown/missing field is reported on its parent; name it from the message.
        node = _node_at(root, path)
        field = ".".join(str(p) for p in path) or "(top level)"
        reason = msg.split(" - at ")[0]
        raise ScenarioError(f"{source}:{node.start_mark.line + 1}: field `{field}`: {reason}") from None


def bundled_path(name: str = "") -> Path:
    """A file (or, with no name, the folder) of the scenarios shipped with wattproof, e.g.
    ``bundled_path("greenwash.yaml")``; a claim file sits beside its scenario in ``claims/``. Found through
    ``importlib.resources``, so it works from an installed wheel as from the checkout (whose ``scenarios/``
    is a link to the same folder)."""
    return Path(str(resources.files("firmware_sim") / "scenarios_data" / name))


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read scenario file ({exc.strerror})") from None
    return parse_scenario(text, str(p))
