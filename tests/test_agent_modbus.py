"""Modbus: a pymodbus server process simulating a meter from its register map (values changing in time),
over TCP and over RTU on a pseudo-terminal pair; the agent's driver reads it with pymodbus' client. A
meter that stops answering: the agent retries (pymodbus' retries), counts, keeps its frames, recovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from device.agent.config import ConfigError, ModbusRtuMeter, ModbusTcpMeter, parse_config
from device.agent.modbus import MAPS_DIR, ModbusDriver, RegisterMap, load_map, plan_reads
from device.agent.runner import Agent
from device.agent.sample import MeterSample, ReadError
from device.identity import generate_key
from device.wire import decode_frame, verify_signature
from tests.fixtures_ingest import wait_until
from wattproof.embedded import free_port, wait_for_port


class SimMeterProcess:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "device.agent.meter_sim", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def sim_tcp(request: pytest.FixtureRequest) -> Iterator[tuple[int, SimMeterProcess]]:
    port = free_port()
    sim = SimMeterProcess("--map", getattr(request, "param", "sdm630"), "--tcp", f"127.0.0.1:{port}", "--period-s", "4")
    wait_for_port(port, 20, sim.proc)
    yield port, sim
    sim.stop()


def reads(driver: ModbusDriver, n: int, gap_s: float = 0.3) -> list[MeterSample]:
    out = []
    for _ in range(n):
        out.append(driver.read())
        time.sleep(gap_s)  # spacing the samples in time, not waiting for a condition
    return out


def test_every_built_in_map_loads_and_names_its_source() -> None:
    maps = {p.stem: load_map(p.stem) for p in MAPS_DIR.glob("*.toml")}
    assert {"sdm630", "sdm120", "em24"} <= maps.keys()
    assert all(m.meter.source and {"import_wh", "export_wh", "power_w"} <= m.registers.keys() for m in maps.values())


def test_sdm630_is_read_in_two_requests_where_register_by_register_polling_takes_nineteen() -> None:
    rmap = load_map("sdm630")
    assert [(s, c) for s, c, _ in plan_reads(rmap)] == [(0x0000, 76), (0x015A, 12)]
    assert len(plan_reads(rmap, batched=False)) == len(rmap.registers) == 19


@pytest.mark.parametrize(("toml", "message"), [
    ('[meter]\nname="x"\nsource="y"\n[registers]\nimport_wh={address=1,type="float32"}\n',
     "key registers: expected import_wh and export_wh"),
    ('[meter]\nname="x"\nsource="y"\n[registers]\nimport_wh={address=1,type="float33"}\n',
     "key registers.import_wh.type: expected one of"),
    ('[meter]\nname="x"\nsource="y"\n[registers]\nimport_wh={address=1,type="float32",word_order="middle"}\n',
     "key registers.import_wh.word_order"),
    ('[meter]\nname="x"\n[registers]\n', "key meter.source: missing"),
], ids=["no_export_register", "unknown_type", "unknown_word_order", "no_source"])
def test_bad_register_map_is_refused_naming_the_file_and_key(toml: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message) as err:
        load_map(str(path))
    assert str(err.value).startswith(str(path))


def test_sdm630_over_tcp_gives_registers_that_count_up_and_power_that_changes(sim_tcp: tuple[int, SimMeterProcess]) -> None:
    driver = ModbusDriver(ModbusTcpMeter(host="127.0.0.1", port=sim_tcp[0], map="sdm630"))
    driver.open()
    try:
        samples = reads(driver, 6)
    finally:
        driver.close()
    assert driver.requests == 12  # two requests per sample
    imp = [s.registers["import"].energy_wh for s in samples]
    assert imp == sorted(imp) and 1_234_567 <= imp[0] < 1_240_000
    power = {(s.registers["import"].power_w, s.registers["export"].power_w) for s in samples}
    assert len(power) == 6 and all(min(p) == 0 for p in power)  # one direction at a time, changing
    assert samples[0].detail["voltage_l1_v"] == pytest.approx(230.0)


@pytest.mark.parametrize("sim_tcp", ["em24"], indirect=True)
def test_em24_int32_registers_are_decoded_low_word_first_as_its_map_says(sim_tcp: tuple[int, SimMeterProcess]) -> None:
    cfg = ModbusTcpMeter(host="127.0.0.1", port=sim_tcp[0], map="em24")
    driver = ModbusDriver(cfg)
    driver.open()
    try:
        s = driver.read()
        rmap = load_map("em24")  # the same map with the words the other way round reads nonsense
        swapped = RegisterMap(rmap.meter, {k: type(v)(v.address, v.type, "big", v.scale) for k, v in rmap.registers.items()})
        wrong = ModbusDriver(cfg, swapped)
        try:
            w = wrong.read()
        except ReadError:
            w = None
        wrong.close()
    finally:
        driver.close()
    assert 1_234_500 <= s.registers["import"].energy_wh < 1_240_000  # 0.1 kWh resolution
    assert s.detail["voltage_l1_v"] == pytest.approx(230.0)
    assert w is None or w.registers["import"].energy_wh != s.registers["import"].energy_wh


def test_sdm630_over_rtu_on_a_pty_pair_reads_the_same_registers() -> None:
    sim = SimMeterProcess("--map", "sdm630", "--rtu-pty", "--baudrate", "19200")
    try:
        assert sim.proc.stdout is not None
        client_end = sim.proc.stdout.readline().strip()
        assert client_end.startswith("/dev/pts/")
        driver = ModbusDriver(ModbusRtuMeter(serial_port=client_end, map="sdm630", baudrate=19200, timeout_s=1.0))
        driver.open()
        try:
            samples = wait_until(lambda: _try_reads(driver, 3), "RTU answers from the simulated SDM630", 20)
        finally:
            driver.close()
    finally:
        sim.stop()
    imp = [s.registers["import"].energy_wh for s in samples]  # type: ignore[union-attr]
    assert imp == sorted(imp) and imp[0] >= 1_234_567


def _try_reads(driver: ModbusDriver, n: int) -> list[MeterSample] | None:
    try:
        return reads(driver, n, 0.2)
    except ReadError:
        return None


def test_meter_that_stops_answering_is_retried_counted_and_recovered_with_no_frame_lost(
        sim_tcp: tuple[int, SimMeterProcess], mosquitto, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port, sim = sim_tcp
    cfg = parse_config({"site": "m1", "device": "m1-sdm630", "key_file": "unused", "broker": mosquitto.url,
                        "spool": str(tmp_path / "spool.sqlite"), "interval_s": 0.2, "frame_samples": 4,
                        "metrics_port": 0, "clock": {"require_sync": False},
                        "meter": {"driver": "modbus-tcp", "host": "127.0.0.1", "port": port, "map": "sdm630",
                                  "timeout_s": 0.3, "retries": 1}})
    key = generate_key()
    got: list[bytes] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="modbus-watch", protocol=mqtt.MQTTv5)
    sub.on_message = lambda c, u, m: got.append(m.payload)
    sub.on_connect = lambda c, u, f, rc, p=None: c.subscribe("wattproof/v1/m1/m1-sdm630/readings", qos=1)
    sub.connect("127.0.0.1", mosquitto.port)
    sub.loop_start()
    agent = Agent(cfg, ModbusDriver(cfg.meter), key).start()  # type: ignore[arg-type]
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,))
    runner.start()
    errors = agent.metrics.read_errors
    try:
        wait_until(lambda: agent.frames >= 2, "two frames before the outage")
        os.kill(sim.proc.pid, signal.SIGSTOP)  # the meter stops answering; TCP stays open
        wait_until(lambda: errors._value.get() >= 2, "failed reads counted while the meter is silent")  # noqa: SLF001
        os.kill(sim.proc.pid, signal.SIGCONT)
        before = agent.frames
        wait_until(lambda: agent.frames >= before + 2, "frames again after the meter answers")
    finally:
        stop.set()
        runner.join(20)
        sub_deadline = time.monotonic() + 10
    wait_until(lambda: len(got) == agent.frames, f"all {agent.frames} frames delivered", max(1, sub_deadline - time.monotonic()))
    sub.loop_stop()
    frames = sorted((decode_frame(p) for p in got), key=lambda f: f.seq)
    for f in frames:
        verify_signature(f, key.public_key())
    assert [f.seq for f in frames] == list(range(1, len(frames) + 1))  # nothing lost, nothing twice
    imp = [(r.ts_ms, r.energy_wh) for f in frames for r in f.readings if r.channel == "import"]
    assert [t for t, _ in imp] == sorted({t for t, _ in imp})  # strictly increasing times
    assert [e for _, e in imp] == sorted(e for _, e in imp)  # the meter's register, never back
    assert errors._value.get() >= 2  # noqa: SLF001
