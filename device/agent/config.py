"""The agent's configuration file (``agent.toml``): what it is, how it is checked, how errors read.

Owns: the schema of ``agent.toml`` (msgspec Structs: one device, one meter), loading it with
``tomllib`` and validating it with msgspec, and turning every refusal into one ``ConfigError`` line that
names the file, the key and what was expected (``agent.toml: key meter.baudrate: expected an integer,
got a string``). Relative paths in the file are taken relative to the file. Documented in docs/agent.md.
Must not: open ports, files other than the config, or the network.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

import msgspec

from device.errors import WattproofError
from device.wire import CHANNELS, ID_PATTERN, MAX_READINGS_PER_FRAME

Ident = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Positive = Annotated[float, msgspec.Meta(gt=0)]


class AgentError(WattproofError):
    """Root of the agent's errors: the CLI prints the message as one line."""


class ConfigError(AgentError):
    """``agent.toml`` (or a register map) refused: the message names the file, the key and what was expected."""


class ClockConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    require_sync: bool = True  # take no sample while the kernel says the clock is not synchronized
    check_every_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 60.0


class TlsConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Client side of an ``mqtts://`` broker (docs/broker.md): the CA to trust, the device's certificate and key."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None


class DsmrMeter(msgspec.Struct, tag_field="driver", tag="dsmr", forbid_unknown_fields=True, frozen=True):
    port: str  # serial device of the P1 cable, e.g. /dev/ttyUSB0
    version: Literal["4", "5", "e-mucs"] = "5"
    baudrate: Annotated[int, msgspec.Meta(ge=300, le=921600)] | None = None  # default: the version's
    max_age_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0  # no valid telegram for this long: a read error


class ModbusTcpMeter(msgspec.Struct, tag_field="driver", tag="modbus-tcp", forbid_unknown_fields=True, frozen=True):
    host: str
    map: str  # a map under device/agent/maps/ (sdm630, sdm120, em24) or a path to a .toml map
    port: Port = 502
    unit_id: Annotated[int, msgspec.Meta(ge=0, le=247)] = 1
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2


class ModbusRtuMeter(msgspec.Struct, tag_field="driver", tag="modbus-rtu", forbid_unknown_fields=True, frozen=True):
    serial_port: str
    map: str
    baudrate: Annotated[int, msgspec.Meta(ge=1200, le=115200)] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    unit_id: Annotated[int, msgspec.Meta(ge=1, le=247)] = 1
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2


class S0Meter(msgspec.Struct, tag_field="driver", tag="s0", forbid_unknown_fields=True, frozen=True):
    gpio_pin: Annotated[int, msgspec.Meta(ge=0, le=53)]  # BCM number
    impulses_per_kwh: Annotated[int, msgspec.Meta(ge=1, le=100_000)]  # printed on the meter ("1000 imp/kWh")
    state_file: str  # the pulse counter, rewritten atomically on every pulse
    debounce_ms: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 20.0
    register_start_wh: Annotated[int, msgspec.Meta(ge=0)] = 0  # the meter's display when the counter was created
    pull_up: bool = True  # S0 is an open collector: the pulse pulls the pin low


Meter = DsmrMeter | ModbusTcpMeter | ModbusRtuMeter | S0Meter
METER_REGISTERS: dict[type, tuple[str, ...]] = {DsmrMeter: ("import", "export"), ModbusTcpMeter: ("import", "export"),
                                                ModbusRtuMeter: ("import", "export"), S0Meter: ("import",)}


class AgentConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    site: Ident
    device: Ident
    key_file: str
    broker: str
    meter: Meter
    spool: str = "/var/lib/wattproof-agent/spool.sqlite"
    interval_s: Annotated[float, msgspec.Meta(ge=0.05, le=3600)] = 10.0
    frame_samples: Annotated[int, msgspec.Meta(ge=1, le=MAX_READINGS_PER_FRAME)] = 30
    channels: dict[Literal["import", "export", "pv"], str] | None = None  # wire channel → meter register
    metrics_port: Port = 9108  # 0: no metrics endpoint
    metrics_addr: str = "127.0.0.1"
    clock: ClockConfig = ClockConfig()
    tls: TlsConfig | None = None

    def channel_map(self) -> dict[str, str]:
        """Wire channel → meter register (``import``/``export``); the driver's own by default."""
        if self.channels is not None:
            return {str(k): v for k, v in self.channels.items()}
        return {r: r for r in METER_REGISTERS[type(self.meter)]}

    def broker_address(self) -> Any:
        """``device.publisher.BrokerAddress`` of ``broker`` with the ``[tls]`` files (PublishError if unusable)."""
        from device.publisher import broker_address

        t = self.tls or TlsConfig()
        return broker_address(self.broker, ca=t.ca, cert=t.cert, key=t.key)


_WHAT = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
         "object": "a table", "array": "an array"}


def _words(kind: str) -> str:
    parts = [k.strip("` ") for k in kind.split("|") if k.strip("` ") != "null"]
    return " or ".join(_WHAT.get(k, k) for k in parts)


def explain(exc: msgspec.ValidationError, fields_of: dict[str, tuple[str, ...]] | None = None) -> tuple[str, str]:
    """(key, what was expected) from msgspec's message ("Expected `int`, got `str` - at `$.meter.port`")."""
    msg = str(exc)
    text, _, where = msg.partition(" - at `$")
    key = where.rstrip("`").lstrip(".")
    key = re.sub(r"\[(\d+)\]", r"[\1]", key)
    if m := re.match(r"Object missing required field `(\w+)`", text):
        return (f"{key}.{m[1]}" if key else m[1]), "missing: this key is required"
    if m := re.match(r"Object contains unknown field `([^`]+)`", text):
        known = (fields_of or {}).get(key)
        hint = f" (expected one of: {', '.join(known)})" if known else ""
        return (f"{key}.{m[1]}" if key else m[1]), f"unknown key{hint}"
    if m := re.match(r"Expected `([^`]+)`, got `([^`]+)`", text):
        return key or "(top level)", f"expected {_words(m[1])}, got {_words(m[2])}"
    if m := re.match(r"Expected `([^`]+)` (.*)$", text):
        return key or "(top level)", f"expected {_words(m[1])} {m[2]}"
    if m := re.match(r"Invalid enum value (.*)$", text):
        choices = (fields_of or {}).get("=" + key)
        return key, f"expected one of {', '.join(choices)}, got {m[1]}" if choices else f"invalid value {m[1]}"
    return key or "(top level)", text[0].lower() + text[1:] if text else msg


def describe(struct: type, prefix: str = "") -> dict[str, tuple[str, ...]]:
    """Known keys of a table (for "unknown key") and, under "=key", the choices of its Literal keys."""
    out: dict[str, tuple[str, ...]] = {prefix: tuple(struct.__struct_fields__)}  # type: ignore[attr-defined]
    for name, hint in get_type_hints(struct, include_extras=True).items():
        if get_origin(hint) is Literal:
            out[f"={prefix + '.' if prefix else ''}{name}"] = tuple(str(a) for a in get_args(hint))
    return out


def _fields(meter_type: type | None) -> dict[str, tuple[str, ...]]:
    out = {**describe(AgentConfig), **describe(ClockConfig, "clock"), **describe(TlsConfig, "tls")}
    if meter_type is not None:
        out.update(describe(meter_type, "meter"))
        out["meter"] = ("driver", *out["meter"])
    return out


def _expect_meter(meter: Any) -> str | None:
    """A clearer word than msgspec's for a meter table without a known ``driver``."""
    drivers = ("dsmr", "modbus-tcp", "modbus-rtu", "s0")
    if not isinstance(meter, dict):
        return "expected a table [meter]"
    if "driver" not in meter:
        return f"key meter.driver: missing: expected one of {', '.join(drivers)}"
    if meter["driver"] not in drivers:
        return f"key meter.driver: expected one of {', '.join(drivers)}, got {meter['driver']!r}"
    return None


def parse_config(data: dict[str, Any], source: str | Path = "agent.toml", base: Path | None = None,
                 check_files: bool = True) -> AgentConfig:
    """Validate a decoded TOML document; every refusal is a ``ConfigError`` naming ``source``, key and expectation.
    ``check_files=False``: do not require the ``[tls]`` files to exist (checking an example, not a device)."""
    if "meter" in data and (why := _expect_meter(data["meter"])) is not None:
        raise ConfigError(f"{source}: {why}")
    for channel in data.get("channels") or {} if isinstance(data.get("channels"), dict) else ():
        if channel not in CHANNELS:
            raise ConfigError(f"{source}: key channels.{channel}: expected a wire channel ({', '.join(CHANNELS)})")
    try:
        cfg = msgspec.convert(data, AgentConfig)
    except msgspec.ValidationError as exc:
        tag = data["meter"].get("driver") if isinstance(data.get("meter"), dict) else None
        meter_type = next((t for t in METER_REGISTERS if t.__struct_config__.tag == tag), None)  # type: ignore[attr-defined]
        key, what = explain(exc, _fields(meter_type))
        if key.startswith(("site", "device")) and "match" in what:
            what = "expected an id of 1-64 characters from A-Z a-z 0-9 _ . - (not starting with . _ -)"
        raise ConfigError(f"{source}: key {key}: {what}") from None
    regs = METER_REGISTERS[type(cfg.meter)]
    for channel, reg in cfg.channel_map().items():
        if reg not in regs:
            raise ConfigError(f"{source}: key channels.{channel}: expected a register of the "
                              f"{cfg.meter.__struct_config__.tag} driver ({', '.join(regs)}), got {reg!r}")
    if not cfg.channel_map():
        raise ConfigError(f"{source}: key channels: expected at least one channel")
    per_frame = cfg.frame_samples * len(cfg.channel_map())
    if per_frame > MAX_READINGS_PER_FRAME:
        raise ConfigError(f"{source}: key frame_samples: expected at most {MAX_READINGS_PER_FRAME // len(cfg.channel_map())} "
                          f"({len(cfg.channel_map())} channels; a frame holds {MAX_READINGS_PER_FRAME} readings)")
    if base is not None:
        cfg = _resolved(cfg, base)
    from device.publisher import PublishError, parse_broker_url

    try:
        parse_broker_url(cfg.broker)
        if check_files or cfg.tls is None:
            cfg.broker_address()
        elif not cfg.broker.startswith(("mqtts://", "ssl://")):
            raise PublishError(f"a CA or client certificate needs an mqtts:// broker URL, not {cfg.broker}")
    except PublishError as exc:
        raise ConfigError(f"{source}: key {'broker' if cfg.tls is None else 'tls'}: {exc}") from None
    return cfg


def _resolved(cfg: AgentConfig, base: Path) -> AgentConfig:
    def p(value: str) -> str:
        return value if Path(value).is_absolute() else str((base / value).resolve())

    meter = cfg.meter
    if isinstance(meter, S0Meter):
        meter = msgspec.structs.replace(meter, state_file=p(meter.state_file))
    elif isinstance(meter, ModbusTcpMeter | ModbusRtuMeter) and meter.map.endswith(".toml"):
        meter = msgspec.structs.replace(meter, map=p(meter.map))
    tls = cfg.tls
    if tls is not None:
        tls = TlsConfig(*(p(v) if v is not None else None for v in (tls.ca, tls.cert, tls.key)))
    return msgspec.structs.replace(cfg, key_file=p(cfg.key_file), spool=p(cfg.spool), meter=meter, tls=tls)


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate ``agent.toml``; ``ConfigError`` names the file, the key and what was expected."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration ({exc.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_config(data, path, base=path.parent)
