"""DSMR P1: published telegrams of real meters, written at the meter's baud rate into one end of a
pseudo-terminal pair; the agent's driver (pyserial + dsmr-parser) reads the other end. A telegram
whose CRC does not match is skipped and counted; the agent publishes the meter's own registers."""

from __future__ import annotations

import json
import os
import termios
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from device.agent.config import DsmrMeter, parse_config
from device.agent.dsmr import SETTINGS, DsmrDriver
from device.agent.runner import Agent
from device.agent.sample import MeterSample, NoNewData
from device.identity import generate_key
from device.wire import decode_frame, verify_signature
from tests.fixtures_ingest import wait_until

VECTORS = Path(__file__).parent / "vectors" / "dsmr"
EXPECTED = json.loads((VECTORS / "expected.json").read_text())
NEGATIVE = sorted((VECTORS / "negative").glob("*.json"))
SPEED = {115200: termios.B115200, 9600: termios.B9600}


class P1Port:
    """A pty pair standing in for the P1 cable: the meter side writes paced at the baud rate (10 bits a byte)."""

    def __init__(self, baudrate: int) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        attrs = termios.tcgetattr(self.slave)
        attrs[4] = attrs[5] = SPEED[baudrate]
        termios.tcsetattr(self.slave, termios.TCSANOW, attrs)
        self.path = os.ttyname(self.slave)
        self.baudrate = baudrate

    def send(self, telegram: bytes, chunk: int = 64) -> None:
        per_chunk = chunk * 10 / self.baudrate
        t = time.monotonic()
        for i in range(0, len(telegram), chunk):
            os.write(self.master, telegram[i:i + chunk])
            t += per_chunk
            if (d := t - time.monotonic()) > 0:
                time.sleep(d)  # pacing the line, not waiting for a condition

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def p1() -> Iterator[P1Port]:
    port = P1Port(115200)
    yield port
    port.close()


def next_sample(driver: DsmrDriver, timeout_s: float = 10) -> MeterSample:
    def get() -> MeterSample | None:
        try:
            return driver.read()
        except NoNewData:
            return None
    return wait_until(get, "a new telegram read", timeout_s)  # type: ignore[return-value]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_published_telegram_read_through_a_pty_gives_the_meters_registers_per_tariff_power_and_gas(
        name: str, p1: P1Port) -> None:
    exp = EXPECTED[name]
    telegram = (VECTORS / name).read_bytes()
    driver = DsmrDriver(DsmrMeter(port=p1.path, version=exp["version"]))
    assert SETTINGS[exp["version"]][1][0] == p1.baudrate  # the meter's baud rate for this version
    driver.open()
    try:
        p1.send(telegram)
        s = next_sample(driver)
    finally:
        driver.close()
    assert (s.registers["import"].energy_wh, s.registers["export"].energy_wh) == (exp["import_wh"], exp["export_wh"])
    assert (s.registers["import"].power_w, s.registers["export"].power_w) == (exp["import_power_w"], exp["export_power_w"])
    assert s.detail["import_t1_wh"] + s.detail["import_t2_wh"] == exp["import_wh"]  # per tariff, summed on the wire
    assert s.detail["gas_m3"] == pytest.approx(exp["gas_m3"]) and s.detail["tariff"] == exp["tariff"]
    assert {"power_l1_w", "power_l2_w", "power_l3_w"} <= s.detail.keys()
    assert abs(s.ts_ms - time.time() * 1000) < 10_000  # stamped with the agent's clock, not the meter's
    assert driver.bad_telegrams == 0 and driver.telegrams == 1


@pytest.mark.parametrize("vector", NEGATIVE, ids=[p.stem for p in NEGATIVE])
def test_bad_telegram_is_skipped_and_counted_and_the_next_valid_one_is_read(vector: Path, p1: P1Port) -> None:
    neg = json.loads(vector.read_text())
    good_name = next(n for n, e in EXPECTED.items() if e["version"] == neg["version"])
    driver = DsmrDriver(DsmrMeter(port=p1.path, version=neg["version"]))
    driver.open()
    try:
        p1.send(neg["telegram"].encode("ascii"))
        wait_until(lambda: driver.bad_telegrams == 1, f"{vector.stem} counted as bad ({neg['error']})")
        with pytest.raises(NoNewData):
            driver.read()  # nothing was taken from the bad telegram
        p1.send((VECTORS / good_name).read_bytes())
        s = next_sample(driver)
    finally:
        driver.close()
    assert s.registers["import"].energy_wh == EXPECTED[good_name]["import_wh"]
    assert (driver.telegrams, driver.bad_telegrams) == (1, 1)


def test_no_valid_telegram_for_max_age_is_a_read_error_naming_the_port(p1: P1Port) -> None:
    from device.agent.sample import ReadError

    driver = DsmrDriver(DsmrMeter(port=p1.path, version="5", max_age_s=0.3))
    driver.open()
    try:
        bad = json.loads((VECTORS / "negative" / "dsmr50_crc_altered.json").read_text())["telegram"]
        p1.send(bad.encode())
        wait_until(lambda: driver.bad_telegrams == 1, "bad telegram counted")

        def error() -> str | None:
            try:
                driver.read()
            except NoNewData:
                return None
            except ReadError as exc:
                return str(exc)
            return "a sample from a bad telegram"

        message = wait_until(error, "a read error once max_age_s passed", 5)
        assert f"no valid P1 telegram on {p1.path}" in str(message) and "(1 bad telegrams so far)" in str(message)
    finally:
        driver.close()


def test_agent_on_a_p1_port_publishes_signed_frames_with_the_meters_registers_and_counts_bad_telegrams(
        p1: P1Port, mosquitto, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = parse_config({"site": "nl1", "device": "nl1-p1", "key_file": "unused", "broker": mosquitto.url,
                        "spool": str(tmp_path / "spool.sqlite"), "interval_s": 0.05, "frame_samples": 2,
                        "metrics_port": 0, "clock": {"require_sync": False},
                        "meter": {"driver": "dsmr", "port": p1.path, "version": "5"}})
    key = generate_key()
    got: list[bytes] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="dsmr-watch", protocol=mqtt.MQTTv5)
    sub.on_message = lambda c, u, m: got.append(m.payload)
    sub.on_connect = lambda c, u, f, rc, p=None: c.subscribe("wattproof/v1/nl1/nl1-p1/readings", qos=1)
    sub.connect("127.0.0.1", mosquitto.port)
    sub.loop_start()
    agent = Agent(cfg, DsmrDriver(cfg.meter), key).start()  # type: ignore[arg-type]
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,))
    runner.start()
    try:
        agent.publisher.wait_connected(10)
        telegram = (VECTORS / "dsmr50_iskra.txt").read_bytes().decode("ascii")
        later = telegram.replace("1-0:1.8.2(000002.399*kWh)", "1-0:1.8.2(000002.400*kWh)")
        body = later.split("!")[0] + "!"
        from dsmr_parser.parsers import TelegramParser

        later = body + f"{TelegramParser.crc16(body):04X}\r\n"  # the meter's next telegram: one more Wh
        bad = json.loads((VECTORS / "negative" / "dsmr50_register_digit_changed.json").read_text())["telegram"]
        driver = agent.driver
        assert isinstance(driver, DsmrDriver)
        for i, t in enumerate((telegram, bad, later), 1):
            p1.send(t.encode())
            wait_until(lambda: driver.telegrams + driver.bad_telegrams >= i, f"telegram {i} seen")  # noqa: B023
            wait_until(lambda: agent.metrics.samples._value.get() >= driver.telegrams,  # noqa: B023, SLF001
                       f"telegram {i} sampled")
        wait_until(lambda: agent.frames >= 1, "a frame signed")
    finally:
        stop.set()
        runner.join(15)
    wait_until(lambda: got, "frame delivered through Mosquitto")
    sub.loop_stop()
    frames = [decode_frame(p) for p in got]
    for f in frames:
        verify_signature(f, key.public_key())
    readings = [r for f in frames for r in f.readings]
    assert [(r.channel, r.energy_wh, r.power_w) for r in readings] == [
        ("export", 2444, 0), ("import", 6825, 244), ("export", 2444, 0), ("import", 6826, 244)]
    assert agent.metrics.bad_telegrams._value.get() == 1  # noqa: SLF001 - the exported counter
