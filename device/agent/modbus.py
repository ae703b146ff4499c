"""Modbus driver: meters on Modbus RTU (RS-485) or Modbus TCP, read with pymodbus 3.

Owns: register maps (``maps/*.toml``: address, type int16…float64, word order, scale per quantity;
checked with msgspec, errors name the map file and the key), grouping a map's registers into as few
requests as the meter allows (``max_read``), decoding them with pymodbus' own
``convert_from_registers`` (type and word order from the map), and turning them into a ``MeterSample``
(``import_wh``/``export_wh`` are the meter's registers, ``power_w`` its signed net power). Timeouts and
retries are pymodbus' own (``timeout``/``retries`` of its client); what still fails is a ``ReadError``
(counted by the agent, the sample skipped; the next read reconnects).
Must not: sign, spool or publish.
"""

from __future__ import annotations

import math
import time
import tomllib
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusException

from device.agent.config import ConfigError, ModbusRtuMeter, ModbusTcpMeter, describe, explain
from device.agent.sample import MeterSample, ReadError, Register, split_power

MAPS_DIR = Path(__file__).parent / "maps"
WORDS = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "int64": 4, "uint64": 4, "float64": 4}


class RegisterSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    address: Annotated[int, msgspec.Meta(ge=0, le=65535)]
    type: Literal["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]
    word_order: Literal["big", "little"] = "big"  # "little": least significant 16-bit word first
    scale: float = 1.0  # value in the quantity's unit = raw × scale (kWh → Wh: 1000; 0.1 kWh → Wh: 100)


class MapMeter(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: str
    source: str  # where the addresses come from (manufacturer document, cross-check)
    function: Literal["input", "holding"] = "input"
    max_read: Annotated[int, msgspec.Meta(ge=1, le=125)] = 80  # registers per request


class RegisterMap(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    meter: MapMeter
    registers: dict[str, RegisterSpec]


def load_map(name_or_path: str) -> RegisterMap:
    """A map by name (``sdm630`` → ``maps/sdm630.toml``) or path; ``ConfigError`` names the file and key."""
    path = Path(name_or_path) if name_or_path.endswith(".toml") else MAPS_DIR / f"{name_or_path}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in MAPS_DIR.glob("*.toml")))
        raise ConfigError(f"register map {name_or_path!r}: no such map (built in: {known}; or a path to a .toml file)")
    try:
        doc = tomllib.loads(path.read_text("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    for name, spec in (doc.get("registers") or {}).items() if isinstance(doc.get("registers"), dict) else ():
        try:  # one register at a time, so that the error names it
            msgspec.convert(spec, RegisterSpec)
        except msgspec.ValidationError as exc:
            key, what = explain(exc, describe(RegisterSpec))
            raise ConfigError(f"{path}: key registers.{name}{'.' + key if key != '(top level)' else ''}: {what}") from None
    try:
        rmap = msgspec.convert(doc, RegisterMap)
    except msgspec.ValidationError as exc:
        key, what = explain(exc, {**describe(MapMeter, "meter"), "": ("meter", "registers")})
        raise ConfigError(f"{path}: key {key}: {what}") from None
    regs = rmap.registers
    if "import_wh" not in regs or "export_wh" not in regs:
        raise ConfigError(f"{path}: key registers: expected import_wh and export_wh (the meter's energy registers)")
    if "power_w" not in regs and not {"import_power_w", "export_power_w"} <= regs.keys():
        raise ConfigError(f"{path}: key registers: expected power_w (signed) or import_power_w and export_power_w")
    for name, spec in regs.items():
        if WORDS[spec.type] > rmap.meter.max_read:
            raise ConfigError(f"{path}: key registers.{name}.type: expected at most {rmap.meter.max_read} registers")
    return rmap


Span = tuple[int, int, list[tuple[str, int, RegisterSpec]]]  # (start address, count, [(name, offset, spec)])


def plan_reads(rmap: RegisterMap, batched: bool = True) -> list[Span]:
    """Requests covering every register: consecutive registers share one request of at most ``max_read``
    registers (the gaps are read too); ``batched=False``: one request per quantity (the naive way)."""
    items = sorted(rmap.registers.items(), key=lambda kv: kv[1].address)
    spans: list[Span] = []
    for name, spec in items:
        end = spec.address + WORDS[spec.type]
        if batched and spans and end - spans[-1][0] <= rmap.meter.max_read:
            start, count, members = spans[-1]
            members.append((name, spec.address - start, spec))
            spans[-1] = (start, max(count, end - start), members)
        else:
            spans.append((spec.address, WORDS[spec.type], [(name, 0, spec)]))
    return spans


def decode(registers: list[int], spec: RegisterSpec) -> float:
    """One quantity from its 16-bit registers, by pymodbus' converter (type and word order of the map)."""
    dtype = ModbusTcpClient.DATATYPE[spec.type.upper()]
    raw = ModbusTcpClient.convert_from_registers(registers, dtype, word_order=spec.word_order)
    assert isinstance(raw, int | float)
    return float(raw) * spec.scale


def map_sample(values: dict[str, float], ts_ms: int) -> MeterSample:
    """Decoded quantities → sample; ``ReadError`` for a register that is not a finite, non-negative number."""
    for name, v in values.items():
        if not math.isfinite(v):
            raise ReadError(f"meter returned {v} for {name}")
    imp, exp = round(values["import_wh"]), round(values["export_wh"])
    if imp < 0 or exp < 0:
        raise ReadError(f"meter returned a negative energy register (import {imp} Wh, export {exp} Wh)")
    if "power_w" in values:
        p_imp, p_exp = split_power(values["power_w"])
    else:
        p_imp, p_exp = round(values["import_power_w"]), round(values["export_power_w"])
    detail = {k: v for k, v in values.items() if k not in ("import_wh", "export_wh")}
    return MeterSample(ts_ms, {"import": Register(imp, p_imp), "export": Register(exp, p_exp)}, detail)


class ModbusDriver:
    """One meter on a Modbus line or TCP endpoint. ``requests``: Modbus requests sent (for the benchmark)."""

    def __init__(self, cfg: ModbusTcpMeter | ModbusRtuMeter, rmap: RegisterMap | None = None,
                 batched: bool = True) -> None:
        self.cfg = cfg
        self.map = rmap or load_map(cfg.map)
        self.name = f"modbus:{self.map.meter.name}"
        self.spans = plan_reads(self.map, batched)
        self.requests = 0
        self.client: ModbusTcpClient | ModbusSerialClient
        if isinstance(cfg, ModbusTcpMeter):
            self.where = f"{cfg.host}:{cfg.port}"
            self.client = ModbusTcpClient(cfg.host, port=cfg.port, timeout=cfg.timeout_s, retries=cfg.retries)
        else:
            self.where = cfg.serial_port
            self.client = ModbusSerialClient(cfg.serial_port, baudrate=cfg.baudrate, parity=cfg.parity,
                                             stopbits=cfg.stopbits, bytesize=cfg.bytesize, timeout=cfg.timeout_s,
                                             retries=cfg.retries)

    def open(self) -> None:
        self.client.connect()  # a meter not answering yet is not fatal: every read reconnects

    def read(self) -> MeterSample:
        fn = self.client.read_input_registers if self.map.meter.function == "input" else self.client.read_holding_registers
        values: dict[str, float] = {}
        for start, count, members in self.spans:
            self.requests += 1
            try:
                rr = fn(start, count=count, device_id=self.cfg.unit_id)
            except ModbusException as exc:
                self.client.close()
                raise ReadError(f"{self.map.meter.name} at {self.where}: {exc}") from None
            if rr.isError():
                raise ReadError(f"{self.map.meter.name} at {self.where} refused registers {start}+{count}: {rr}")
            regs = list(rr.registers)
            for name, offset, spec in members:
                values[name] = decode(regs[offset:offset + WORDS[spec.type]], spec)
        return map_sample(values, time.time_ns() // 1_000_000)

    def close(self) -> None:
        self.client.close()
