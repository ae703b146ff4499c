"""The Raspberry Pi agent's cost per meter: CPU (% of one core) and RSS of one agent process sampling a
Modbus SDM630 every second for ~60 s, publishing to a local Mosquitto, side by side in the same run with
the naive agent (one Modbus request per register, a frame signed per sample), plus frames signed per
second. The issue's target, on this machine: <= 2 % of one core and <= 60 MB RSS per agent.

    .venv/bin/python -m benchmarks.bench_agent [--seconds 60]

Processes measured (psutil, CPU from user+system time over the run after a 5 s warm-up, RSS at the end):
``ours`` and ``naive`` start the agent loop directly (device.agent only); ``cli`` is the same as ``ours``
launched as deployed, ``wattproof agent --config``, to show what the CLI's imports add. Prints the table;
the figures go into benchmarks/RESULTS.md by hand (the lead's file).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks._common import machine, table
from device.identity import generate_key, write_private_key
from device.wire import Frame, Reading, encode_frame, sign_frame
from wattproof.embedded import Broker, free_port, wait_for_port

LAUNCH = """
import signal, sys, threading
from pathlib import Path
from device.agent.config import load_config
from device.agent.modbus import ModbusDriver
from device.agent.runner import Agent
from device.identity import read_private_key
cfg = load_config(sys.argv[1])
agent = Agent(cfg, ModbusDriver(cfg.meter, batched=sys.argv[2] == "batched"), read_private_key(Path(cfg.key_file)))
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
agent.start().run(stop)
print(agent.frames, agent.driver.requests, flush=True)
"""


def config(work: Path, name: str, broker: str, modbus_port: int, frame_samples: int) -> Path:
    key = work / f"{name}.key"
    write_private_key(key, generate_key())
    path = work / f"{name}.toml"
    path.write_text(f"""# {name}.toml
site = "bench"
device = "bench-{name}"
key_file = "{key}"
broker = "{broker}"
spool = "{work / name}.sqlite"
interval_s = 1.0
frame_samples = {frame_samples}
metrics_port = 0
[clock]
require_sync = false
[meter]
driver = "modbus-tcp"
host = "127.0.0.1"
port = {modbus_port}
map = "sdm630"
""")
    return path


def signing_rate(readings_per_frame: int, seconds: float = 2.0) -> float:
    key = generate_key()
    readings = [Reading(ts_ms=1_780_000_000_000 + i * 500, channel=("import", "export")[i % 2], energy_wh=1_234_567 + i,
                        power_w=1500) for i in range(readings_per_frame)]
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        frame = Frame(v=1, site="bench", device="bench-sign", seq=n + 1, sent_ms=1_780_000_100_000, readings=readings)
        encode_frame(sign_frame(frame, key))
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        work = Path(tmp)
        broker = Broker(work / "broker").start()
        sims, procs = [], {}
        try:
            ports = {}
            for name in ("ours", "naive", "cli"):
                ports[name] = free_port()
                sims.append(subprocess.Popen([sys.executable, "-m", "device.agent.meter_sim", "--tcp",
                                              f"127.0.0.1:{ports[name]}"], stdout=subprocess.DEVNULL))
            for p, s in zip(ports.values(), sims, strict=True):
                wait_for_port(p, 20, s)  # type: ignore[arg-type]
            cmds = {
                "ours": [sys.executable, "-c", LAUNCH, str(config(work, "ours", broker.url, ports["ours"], 60)), "batched"],
                "naive": [sys.executable, "-c", LAUNCH, str(config(work, "naive", broker.url, ports["naive"], 1)), "naive"],
                "cli": [sys.executable, "-m", "wattproof", "agent", "--config",
                        str(config(work, "cli", broker.url, ports["cli"], 60))],
            }
            for name, cmd in cmds.items():
                procs[name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
            time.sleep(5)  # warm-up: imports, connection, first reads (a measurement window, not a wait)
            ps = {n: psutil.Process(p.pid) for n, p in procs.items()}
            start = {n: (sum(p.cpu_times()[:2]), time.monotonic()) for n, p in ps.items()}
            peak = dict.fromkeys(ps, 0)
            end_at = time.monotonic() + args.seconds
            while time.monotonic() < end_at:
                for n, p in ps.items():
                    peak[n] = max(peak[n], p.memory_info().rss)
                time.sleep(1.0)
            cpu = {n: 100 * (sum(p.cpu_times()[:2]) - start[n][0]) / (time.monotonic() - start[n][1]) for n, p in ps.items()}
            rss = {n: p.memory_info().rss for n, p in ps.items()}
            out = {}
            for n, p in procs.items():
                p.terminate()
                stdout, _ = p.communicate(timeout=30)
                out[n] = stdout.strip().split()
        finally:
            for p in [*procs.values(), *sims]:
                if p.poll() is None:
                    p.kill()
            broker.stop()
    sign_big, sign_one = signing_rate(120), signing_rate(2)
    rows = []
    for n, label in (("ours", "ours: 2 requests/sample, frame of 60 samples"),
                     ("naive", "naive: 19 requests/sample, frame per sample"),
                     ("cli", "ours via `wattproof agent` (CLI imports)")):
        frames = out[n][0] if len(out[n]) == 2 else "?"
        requests = out[n][1] if len(out[n]) == 2 else "?"
        rows.append([label, f"{cpu[n]:.2f}", f"{rss[n] / 2**20:.1f}", f"{peak[n] / 2**20:.1f}", frames, requests])
    print(f"agent at 1 s sampling, {args.seconds:.0f} s measured, {machine()}")
    print(table(["agent", "CPU % of one core", "RSS MB", "peak RSS MB", "frames signed", "Modbus requests"], rows))
    print(f"signing (sign_frame + encode_frame, one core): {sign_big:,.0f} frames/s of 120 readings "
          f"({sign_big * 120:,.0f} readings/s); {sign_one:,.0f} frames/s of 2 readings")
    print(json.dumps({"cpu_pct": cpu, "rss_mb": {n: v / 2**20 for n, v in rss.items()},
                      "sign_frames_per_s_120": sign_big, "sign_frames_per_s_2": sign_one}))


if __name__ == "__main__":
    main()
