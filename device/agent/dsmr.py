"""DSMR P1 driver: Dutch/Belgian/Luxembourg smart meters (DSMR 4.x, 5.x, e-MUCS) on their serial port.

Owns: opening the P1 port with pyserial at the version's settings (DSMR 4: 115200 7E1; DSMR 5 and
e-MUCS: 115200 8N1), cutting the byte stream into telegrams (dsmr-parser's ``TelegramBuffer``),
checking each telegram's CRC16 and parsing it (dsmr-parser's ``TelegramParser`` with the version's
specification), and turning the newest telegram into a ``MeterSample``: import and export registers
per tariff (their sum is the register on the wire), power per direction and per phase, gas if an M-Bus
gas meter is attached, and the meter's own clock. A telegram whose CRC does not match (or that does not
parse) is counted (``bad_telegrams``) and skipped. A thread reads the port continuously (the meter
pushes a telegram every 1 s, DSMR 4 every 10 s); ``read`` returns the newest telegram not returned
before, ``NoNewData`` if there is none, ``ReadError`` if no valid telegram came for ``max_age_s``.
Must not: sign, spool or publish.
"""

from __future__ import annotations

import logging
import threading
import time
from decimal import Decimal
from typing import Any

import serial
from dsmr_parser import telegram_specifications
from dsmr_parser.clients.telegram_buffer import TelegramBuffer
from dsmr_parser.exceptions import InvalidChecksumError, ParseError
from dsmr_parser.parsers import TelegramParser

from device.agent.config import DsmrMeter
from device.agent.sample import MeterSample, NoNewData, ReadError, Register

log = logging.getLogger(__name__)

# version → (telegram specification, (baudrate, bytesize, parity)); DSMR P1 companion standard 4.2 §4, 5.0.2 §4
SETTINGS: dict[str, tuple[dict[str, Any], tuple[int, int, str]]] = {
    "4": (telegram_specifications.V4, (115200, serial.SEVENBITS, serial.PARITY_EVEN)),
    "5": (telegram_specifications.V5, (115200, serial.EIGHTBITS, serial.PARITY_NONE)),
    "e-mucs": (telegram_specifications.BELGIUM_FLUVIUS, (115200, serial.EIGHTBITS, serial.PARITY_NONE)),
}
GAS_DEVICE_TYPE = 3  # M-Bus device type of a gas meter (EN 13757-3); 7 is water


def _wh(obj: Any) -> int:
    """kWh with three decimals (the register's own resolution) → exact integer Wh."""
    value = Decimal(obj.value)
    return int(value * 1000) if obj.unit == "kWh" else int(value)


def _w(obj: Any) -> int:
    value = Decimal(obj.value)
    return int(round(value * 1000)) if obj.unit == "kW" else int(round(value))


def telegram_sample(telegram: Any, ts_ms: int) -> MeterSample:
    """A parsed telegram → sample. ``ReadError`` when it lacks the import registers or the power."""
    detail: dict[str, float] = {}
    regs = {}
    for direction, name in (("import", "ELECTRICITY_USED_TARIFF_{}"), ("export", "ELECTRICITY_DELIVERED_TARIFF_{}")):
        tariffs = [getattr(telegram, name.format(t), None) for t in (1, 2, 3, 4)]
        present = [(t, _wh(o)) for t, o in enumerate(tariffs, 1) if o is not None]
        if not present:
            raise ReadError(f"telegram has no {direction} register ({name.format(1)})")
        for t, wh in present:
            detail[f"{direction}_t{t}_wh"] = wh
        regs[direction] = sum(wh for _, wh in present)
    usage = getattr(telegram, "CURRENT_ELECTRICITY_USAGE", None)
    delivery = getattr(telegram, "CURRENT_ELECTRICITY_DELIVERY", None)
    if usage is None or delivery is None:
        raise ReadError("telegram has no actual power (1-0:1.7.0 / 1-0:2.7.0)")
    for ph in (1, 2, 3):
        pos = getattr(telegram, f"INSTANTANEOUS_ACTIVE_POWER_L{ph}_POSITIVE", None)
        neg = getattr(telegram, f"INSTANTANEOUS_ACTIVE_POWER_L{ph}_NEGATIVE", None)
        if pos is not None:
            detail[f"power_l{ph}_w"] = _w(pos) - (_w(neg) if neg is not None else 0)
    tariff = getattr(telegram, "ELECTRICITY_ACTIVE_TARIFF", None)
    if tariff is not None and str(tariff.value).isdigit():
        detail["tariff"] = int(tariff.value)
    gas = _gas_m3(telegram)
    if gas is not None:
        detail["gas_m3"] = gas
    stamp = getattr(telegram, "P1_MESSAGE_TIMESTAMP", None)
    if stamp is not None and stamp.value is not None:
        detail["meter_clock_offset_s"] = round(stamp.value.timestamp() - ts_ms / 1000, 3)
    return MeterSample(ts_ms, {"import": Register(regs["import"], _w(usage)),
                               "export": Register(regs["export"], _w(delivery))}, detail)


def _gas_m3(telegram: Any) -> float | None:
    for dev in getattr(telegram, "MBUS_DEVICES", []) or []:
        kind = getattr(dev, "MBUS_DEVICE_TYPE", None) or getattr(dev, "DEVICE_TYPE", None)
        if kind is None or kind.value != GAS_DEVICE_TYPE:
            continue
        reading = getattr(dev, "MBUS_METER_READING", None) or getattr(dev, "HOURLY_GAS_METER_READING", None)
        if reading is not None and reading.value is not None and reading.unit == "m3":
            return float(reading.value)
    return None


class DsmrDriver:
    """One P1 port. ``counters``: telegrams parsed, bad telegrams (CRC or parse), serial errors."""

    def __init__(self, cfg: DsmrMeter) -> None:
        self.cfg = cfg
        self.name = f"dsmr-{cfg.version}"
        spec, (baud, bytesize, parity) = SETTINGS[cfg.version]
        self._baud, self._bytesize, self._parity = cfg.baudrate or baud, bytesize, parity
        self._parser = TelegramParser(spec)  # CRC checked: the spec has checksum_support
        self._buffer = TelegramBuffer()
        self._lock = threading.Lock()
        self._newest: MeterSample | None = None
        self._newest_at = time.monotonic()
        self._returned: MeterSample | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._port: serial.Serial | None = None
        self.telegrams = 0
        self.bad_telegrams = 0
        self.serial_errors = 0

    def open(self) -> None:
        try:
            self._port = serial.Serial(self.cfg.port, baudrate=self._baud, bytesize=self._bytesize,
                                       parity=self._parity, stopbits=serial.STOPBITS_ONE, timeout=0.2)
        except serial.SerialException as exc:
            raise ReadError(f"cannot open P1 port {self.cfg.port}: {exc}") from None
        self._newest_at = time.monotonic()
        self._thread = threading.Thread(target=self._reader, name="dsmr-reader", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        assert self._port is not None
        while not self._stop.is_set():
            try:
                data = self._port.read(max(1, self._port.in_waiting))
            except (serial.SerialException, OSError) as exc:
                self.serial_errors += 1
                log.warning("P1 port %s: %s", self.cfg.port, exc)
                self._stop.wait(1.0)
                continue
            if data:
                self.feed(data)

    def feed(self, data: bytes) -> None:
        """Bytes from the port → complete telegrams → checked, parsed, kept (the newest)."""
        self._buffer.append(data.decode("ascii", errors="replace"))
        for text in self._buffer.get_all():
            now_ms = time.time_ns() // 1_000_000
            try:
                sample = telegram_sample(self._parser.parse(text), now_ms)
            except InvalidChecksumError as exc:
                self.bad_telegrams += 1
                log.warning("P1 telegram skipped: %s", exc)
                continue
            except (ParseError, ReadError, ValueError, ArithmeticError) as exc:
                self.bad_telegrams += 1
                log.warning("P1 telegram skipped: cannot parse it (%s)", exc)
                continue
            with self._lock:
                self.telegrams += 1
                self._newest, self._newest_at = sample, time.monotonic()

    def read(self) -> MeterSample:
        with self._lock:
            newest, at = self._newest, self._newest_at
        if time.monotonic() - at > self.cfg.max_age_s:
            raise ReadError(f"no valid P1 telegram on {self.cfg.port} for {time.monotonic() - at:.0f} s "
                            f"({self.bad_telegrams} bad telegrams so far)")
        if newest is None or newest is self._returned:
            raise NoNewData("no new telegram since the last sample")
        self._returned = newest
        return newest

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self._port is not None:
            self._port.close()
