"""The device-side commands, run as a user runs them, against a real Mosquitto."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from device.identity import FileRegistry, read_private_key
from wattproof.embedded import Broker

ROOT = Path(__file__).resolve().parents[1]


def cli(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WATTPROOF_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "wattproof", *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_provision_writes_a_0600_key_and_a_registry_record(tmp_path: Path) -> None:
    res = cli(tmp_path, "device", "provision", "--site", "plant1", "--device", "inv-7", "--kind", "pv_inverter",
              "--rated-power-w", "8000", "--lat", "52.1", "--lon", "5.2")
    assert res.returncode == 0, res.stderr
    key_file = tmp_path / "keys" / "plant1" / "inv-7.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    rec = FileRegistry(tmp_path / "registry.json").get("inv-7")
    assert rec is not None and rec.kind == "pv_inverter" and rec.rated_power_w == 8000
    assert rec.verifying_key() == read_private_key(key_file).public_key()
    again = cli(tmp_path, "device", "provision", "--site", "plant1", "--device", "inv-7", "--rated-power-w", "1")
    assert again.returncode == 1 and "already registered" in again.stderr and "Traceback" not in again.stderr


def test_bad_arguments_fail_in_one_clear_line(tmp_path: Path) -> None:
    for args, needle in [
        (["device", "provision", "--site", "bad site", "--device", "d", "--rated-power-w", "5"], "site id 'bad site' is invalid"),
        (["device", "provision", "--site", "s", "--device", "d", "--kind", "toaster", "--rated-power-w", "5"], "--kind 'toaster'"),
        (["simulate", "--broker", "mqtt://127.0.0.1:1", "--scenario", str(tmp_path / "none.yaml")], "cannot read scenario file"),
        (["simulate", "--broker", "http://x", "--days", "0.01"], "must look like mqtt://host:port"),
    ]:
        res = cli(tmp_path, *args)
        assert res.returncode != 0, args
        assert needle in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr


def test_invalid_scenario_names_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: demo\nfaults:\n  - kind: spike\n    start_h: 1\n    factor: -2\n")
    res = cli(tmp_path, "simulate", "--broker", "mqtt://127.0.0.1:1", "--scenario", str(bad))
    assert res.returncode == 1
    assert res.stderr.strip().startswith(f"error: {bad}:5: field `faults.0.factor`")
    assert len(res.stderr.strip().splitlines()) == 1


def test_unreadable_key_file_stops_simulate_with_one_clear_line(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "s01" / "s01-main.key"
    key.parent.mkdir(parents=True)
    key.write_text("-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    res = cli(tmp_path, "simulate", "--broker", "mqtt://127.0.0.1:1", "--sites", "1", "--days", "0.01")
    assert res.returncode == 1
    assert f"{key}: not an unencrypted PEM private key" in res.stderr
    assert "Traceback" not in res.stderr


def test_simulate_in_real_time_paces_frames_and_writes_truth_and_weather(mosquitto: Broker, tmp_path: Path) -> None:
    got: list[float] = []
    lock = threading.Lock()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        with lock:
            got.append(time.monotonic())

    sub.on_message = on_message
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("wattproof/v1/+/+/readings", qos=1)
    sub.loop_start()
    try:
        # 2 hours at 3600× = 2 s of wall clock; 15-minute frames → 8 frames per device.
        res = cli(tmp_path, "simulate", "--broker", mosquitto.url, "--sites", "1", "--days", str(2 / 24),
                  "--speed", "3600", "--out", str(tmp_path / "out"))
        assert res.returncode == 0, res.stderr
        deadline = time.monotonic() + 10
        while len(got) < 32 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sub.loop_stop()
    assert len(got) == 32  # 4 devices × 8 frames
    assert got[-1] - got[0] >= 1.2  # paced over the simulated two hours, not dumped at once
    truth = (tmp_path / "out" / "truth.jsonl").read_text()
    assert truth == ""  # no scenario, no faults
    weather = (tmp_path / "out" / "weather.csv").read_text().splitlines()
    assert weather[0] == "site,timestamp,temperature_c" and len(weather) >= 3
    sites = json.loads((tmp_path / "out" / "sites.json").read_text())
    assert sites[0]["site"] == "s01"


def test_simulate_run_again_continues_after_the_last_run_without_a_gap_or_a_repeat(mosquitto: Broker,
                                                                                 tmp_path: Path) -> None:
    from device.spool import Spool
    from device.wire import decode_frame

    frames: list[tuple[str, int, int, int]] = []  # (device, seq, first and last reading ms)
    lock = threading.Lock()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        f = decode_frame(msg.payload)
        with lock:
            frames.append((f.device, f.seq, f.readings[0].ts_ms, f.readings[-1].ts_ms))

    sub.on_message = on_message
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("wattproof/v1/+/+/readings", qos=1)
    sub.loop_start()
    try:
        args = ("simulate", "--broker", mosquitto.url, "--sites", "1", "--days", "0.25", "--out", str(tmp_path / "out"))
        first = cli(tmp_path, *args)
        assert first.returncode == 0, first.stderr
        deadline = time.monotonic() + 10
        while len(frames) < 4 * 24 and time.monotonic() < deadline:  # 6 h of 15-minute frames, 4 devices
            time.sleep(0.05)
        with lock:
            before = list(frames)
        assert len(before) == 96
        for device in {f[0] for f in before}:  # a clean stop leaves no gap: next_seq = last used + 1
            last = max(f[1] for f in before if f[0] == device)
            assert Spool(tmp_path / "spool" / f"{device}.sqlite").get_int("next_seq", 1) == last + 1
        second = cli(tmp_path, *args)  # the same window again, seconds later
        assert second.returncode == 0, second.stderr
        assert "continued after an earlier run" in second.stdout
    finally:
        sub.loop_stop()
    with lock:
        after = frames[len(before):]
    # What the second run sent (only the minutes that passed since the first, often nothing) carries
    # the next seqs and readings after the last one sent: nothing is sent twice.
    for device in {f[0] for f in after}:
        old = [f for f in before if f[0] == device]
        new = sorted(f for f in after if f[0] == device)
        assert [f[1] for f in new] == list(range(max(f[1] for f in old) + 1, max(f[1] for f in old) + 1 + len(new)))
        assert new[0][2] > max(f[3] for f in old)
