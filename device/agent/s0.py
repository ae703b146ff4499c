"""S0 driver: a meter's pulse output (DIN 43864 / IEC 62053-31) on a Raspberry Pi GPIO, through gpiozero.

Owns: counting pulses on one input pin (gpiozero ``DigitalInputDevice``; the S0 open collector pulls the
pin low, so the internal pull-up is on by default), debouncing them in software (an edge within
``debounce_ms`` of the last counted pulse is bounce, not a pulse: the same on every pin factory, the
mock one included), the persisted counter (``PulseCounter``), and the register it gives:
``register_start_wh + pulses × 1000 / impulses_per_kwh`` Wh (floored, so it never runs ahead of the
meter), with power from the interval between the last two pulses (decaying when pulses stop).

The counter file is rewritten atomically on every pulse (temporary file, fsync, rename, fsync of the
directory): after a crash or a power cut the file holds either the count before a pulse or after it,
never a torn or zeroed one, so a reboot neither loses nor doubles energy. Pulses that arrive while the
agent is not running are not seen by anyone; docs/agent.md says so. A counter file that cannot be read
stops the agent (``ReadError``) rather than restarting at zero: a register that jumps back is a finding.
Must not: sign, spool or publish.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from device.agent.config import S0Meter
from device.agent.sample import MeterSample, ReadError, Register

FORMAT = "wattproof-s0/1"


class PulseCounter:
    """The persisted pulse count of one S0 input."""

    def __init__(self, path: str | Path, impulses_per_kwh: int, register_start_wh: int = 0) -> None:
        self.path = Path(path)
        self.impulses_per_kwh = impulses_per_kwh
        self.register_start_wh = register_start_wh
        self.pulses = 0
        if self.path.exists():
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._save()

    def _load(self) -> None:
        try:
            doc = json.loads(self.path.read_text("utf-8"))
            ok = doc.get("format") == FORMAT and isinstance(doc.get("pulses"), int) and doc["pulses"] >= 0
        except (OSError, ValueError, AttributeError) as exc:
            raise ReadError(f"{self.path}: S0 counter unreadable ({exc}); refusing to restart the register at zero "
                            "(restore the file, or move it away to start a new counter)") from None
        if not ok:
            raise ReadError(f"{self.path}: not a {FORMAT} counter file; refusing to restart the register at zero")
        if doc.get("impulses_per_kwh") != self.impulses_per_kwh:
            raise ReadError(f"{self.path}: counter made for {doc.get('impulses_per_kwh')} imp/kWh, config says "
                            f"{self.impulses_per_kwh}: the register would change meaning")
        self.pulses = doc["pulses"]
        self.register_start_wh = int(doc.get("register_start_wh", 0))

    def _save(self) -> None:
        doc = {"format": FORMAT, "pulses": self.pulses, "impulses_per_kwh": self.impulses_per_kwh,
               "register_start_wh": self.register_start_wh}
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(doc).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def add(self, n: int = 1) -> None:
        self.pulses += n
        self._save()

    def energy_wh(self) -> int:
        return self.register_start_wh + self.pulses * 1000 // self.impulses_per_kwh


class S0Driver:
    """Pulses on ``gpio_pin`` → the ``import`` register. ``pin_factory``: gpiozero's (tests: ``MockFactory``)."""

    def __init__(self, cfg: S0Meter, pin_factory: Any = None) -> None:
        self.cfg = cfg
        self.name = f"s0:gpio{cfg.gpio_pin}"
        self.counter = PulseCounter(cfg.state_file, cfg.impulses_per_kwh, cfg.register_start_wh)
        self._factory = pin_factory
        self._lock = threading.Lock()
        self._debounce_s = cfg.debounce_ms / 1000
        self._last: float | None = None  # monotonic time of the last counted pulse
        self._interval: float | None = None  # seconds between the last two counted pulses
        self.bounces = 0
        self._input: Any = None

    def open(self) -> None:
        from gpiozero import DigitalInputDevice  # imported here: it probes pin libraries at import
        from gpiozero.exc import GPIOZeroError

        try:
            self._input = DigitalInputDevice(self.cfg.gpio_pin, pull_up=self.cfg.pull_up, bounce_time=None,
                                             pin_factory=self._factory)
        except (GPIOZeroError, OSError, RuntimeError) as exc:
            raise ReadError(f"cannot open GPIO{self.cfg.gpio_pin} for S0 pulses: {exc}") from None
        self._input.when_activated = self._pulse

    def _pulse(self, *_: object) -> None:
        now = time.monotonic()
        with self._lock:
            if self._last is not None and now - self._last < self._debounce_s:
                self.bounces += 1
                return
            if self._last is not None:
                self._interval = now - self._last
            self._last = now
            self.counter.add()

    def power_w(self, now: float | None = None) -> int:
        """Power from the last pulse interval; once the current gap is longer, at most what it implies."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._last is None or self._interval is None:
                return 0
            gap = max(self._interval, now - self._last)
        wh_per_pulse = 1000 / self.cfg.impulses_per_kwh
        return round(wh_per_pulse * 3600 / gap)

    def read(self) -> MeterSample:
        with self._lock:
            energy, pulses = self.counter.energy_wh(), self.counter.pulses
        return MeterSample(time.time_ns() // 1_000_000, {"import": Register(energy, self.power_w())},
                           {"pulses": pulses, "bounces": self.bounces})

    def close(self) -> None:
        if self._input is not None:
            self._input.close()
