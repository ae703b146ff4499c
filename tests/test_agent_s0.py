"""S0 pulses through gpiozero's own mock pin factory: pulses → Wh by the impulse constant, bounce ignored,
the counter persisted atomically so that a reboot neither loses nor doubles energy."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPin

from device.agent.config import S0Meter
from device.agent.s0 import PulseCounter, S0Driver
from device.agent.sample import ReadError

PIN = 17


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.reset()
    Device.pin_factory = None


def meter(tmp_path: Path, **kw: object) -> S0Meter:
    args: dict[str, object] = {"gpio_pin": PIN, "impulses_per_kwh": 1000, "state_file": str(tmp_path / "s0.json"),
                               "debounce_ms": 20.0, "register_start_wh": 5_000}
    args.update(kw)
    return S0Meter(**args)  # type: ignore[arg-type]


def pulse(pin: MockPin, width_s: float = 0.03, bounce: int = 0) -> None:
    """One S0 pulse: the open collector pulls the pin low for ``width_s``; ``bounce`` extra edges at its start."""
    pin.drive_low()
    for _ in range(bounce):  # contact bounce: microseconds apart, well within the debounce time
        pin.drive_high()
        pin.drive_low()
    time.sleep(width_s)  # the pulse's width on the line (DIN 43864: at least 30 ms), not a wait for a condition
    pin.drive_high()
    time.sleep(0.02)


def test_pulses_become_watt_hours_with_the_impulse_constant_on_top_of_the_meters_start_register(
        factory: MockFactory, tmp_path: Path) -> None:
    driver = S0Driver(meter(tmp_path, impulses_per_kwh=800), pin_factory=factory)
    driver.open()
    pin = factory.pin(PIN)
    try:
        for _ in range(8):
            pulse(pin)
        s = driver.read()
    finally:
        driver.close()
    assert s.registers["import"].energy_wh == 5_000 + 8 * 1000 // 800  # 1.25 Wh a pulse, floored: 10 Wh
    assert s.detail["pulses"] == 8
    assert 0 < s.registers["import"].power_w  # from the interval between pulses


def test_contact_bounce_within_the_debounce_time_is_not_counted(factory: MockFactory, tmp_path: Path) -> None:
    driver = S0Driver(meter(tmp_path), pin_factory=factory)
    driver.open()
    pin = factory.pin(PIN)
    try:
        for _ in range(5):
            pulse(pin, bounce=3)
        s = driver.read()
    finally:
        driver.close()
    assert s.detail["pulses"] == 5 and driver.bounces == 15
    assert s.registers["import"].energy_wh == 5_005


def test_counter_survives_a_reboot_neither_losing_nor_doubling_pulses(factory: MockFactory, tmp_path: Path) -> None:
    cfg = meter(tmp_path)
    first = S0Driver(cfg, pin_factory=factory)
    first.open()
    pin = factory.pin(PIN)
    for _ in range(7):
        pulse(pin)
    before = first.read().registers["import"].energy_wh
    first.close()  # the Pi reboots: nothing but the counter file survives
    factory.reset()
    second = S0Driver(meter(tmp_path, register_start_wh=0), pin_factory=factory)  # a changed start is ignored
    second.open()
    pin = factory.pin(PIN)
    try:
        assert second.read().registers["import"].energy_wh == before == 5_007
        for _ in range(3):
            pulse(pin)
        assert second.read().registers["import"].energy_wh == 5_010
    finally:
        second.close()
    assert json.loads(Path(cfg.state_file).read_text())["pulses"] == 10


def test_a_torn_write_left_as_a_temporary_file_does_not_change_the_counter(tmp_path: Path) -> None:
    c = PulseCounter(tmp_path / "s0.json", 1000)
    c.add(4)
    (tmp_path / "s0.json.tmp").write_text('{"format": "wattproof-s0/1", "pul')  # power cut mid-write
    assert PulseCounter(tmp_path / "s0.json", 1000).pulses == 4


@pytest.mark.parametrize(("content", "message"), [
    ("", "S0 counter unreadable"),
    ('{"format": "wattproof-s0/1", "pulses": -3, "impulses_per_kwh": 1000}', "not a wattproof-s0/1 counter"),
    ('{"format": "wattproof-s0/1", "pulses": 12, "impulses_per_kwh": 2000}', "made for 2000 imp/kWh"),
], ids=["empty_file", "negative_count", "other_impulse_constant"])
def test_counter_file_that_cannot_be_trusted_stops_the_agent_instead_of_restarting_at_zero(
        content: str, message: str, tmp_path: Path) -> None:
    (tmp_path / "s0.json").write_text(content)
    with pytest.raises(ReadError, match=message):
        S0Driver(meter(tmp_path))


def test_power_decays_when_pulses_stop(factory: MockFactory, tmp_path: Path) -> None:
    driver = S0Driver(meter(tmp_path), pin_factory=factory)
    driver.open()
    pin = factory.pin(PIN)
    try:
        pulse(pin)
        pulse(pin)
        now = time.monotonic()
        p_now, p_later = driver.power_w(now), driver.power_w(now + 3600)
    finally:
        driver.close()
    assert p_now > 10_000 > p_later > 0  # 1 Wh in ~50 ms is ~70 kW; an hour later at most 1 W
