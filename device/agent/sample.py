"""What a meter driver returns, and how it becomes wire readings.

Owns: ``MeterSample`` (one reading of a meter: its own cumulative registers in Wh and its power in W
per direction, plus whatever else the meter reports — tariff registers, per-phase power, gas — as
``detail``), the ``Driver`` protocol every driver implements, the driver errors, and ``to_readings``:
the mapping of a sample onto wire channels (``import``/``export``/``pv``) that keeps the meter's
register values as they are (not deltas), so the audit's register checks work unchanged.
Must not: do I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from device.agent.config import AgentError
from device.wire import Reading


class ReadError(AgentError):
    """The meter did not give a usable reading this time (timeout, bad frame, bus error): counted, skipped."""


class NoNewData(AgentError):
    """Nothing new since the last sample (a DSMR 4 meter telegrams every 10 s): not an error, nothing to read."""


@dataclass(frozen=True)
class Register:
    """One direction of a meter: its cumulative register and the power flowing that way now."""

    energy_wh: int  # the meter's own register, watt-hours (never a delta)
    power_w: int  # >= 0 in this direction


@dataclass(frozen=True)
class MeterSample:
    ts_ms: int  # the agent's (NTP-disciplined) clock when the meter's answer arrived, UTC ms
    registers: dict[str, Register]  # "import", "export" (S0: "import" only)
    detail: dict[str, float] = field(default_factory=dict)  # tariff registers, phase power, gas m3, meter clock...


class Driver(Protocol):
    """A meter behind its protocol library. ``read`` raises ``ReadError`` or ``NoNewData``."""

    name: str

    def open(self) -> None: ...

    def read(self) -> MeterSample: ...

    def close(self) -> None: ...


def split_power(net_w: float) -> tuple[int, int]:
    """(import W, export W) from a signed net power (positive: drawn from the grid)."""
    p = round(net_w)
    return max(p, 0), max(-p, 0)


def to_readings(sample: MeterSample, channel_map: dict[str, str]) -> list[Reading]:
    """The sample's readings, one per wire channel of ``channel_map`` (channel → register), in channel order."""
    out = []
    for channel in sorted(channel_map):
        reg = sample.registers.get(channel_map[channel])
        if reg is None:
            raise ReadError(f"the meter gave no {channel_map[channel]!r} register (mapped to channel {channel!r})")
        out.append(Reading(ts_ms=sample.ts_ms, channel=channel,  # type: ignore[arg-type]
                           energy_wh=reg.energy_wh, power_w=reg.power_w))
    return out
