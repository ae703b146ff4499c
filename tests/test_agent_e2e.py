"""End to end, as an installer runs it: `wattproof device provision` → `wattproof agent` on a Modbus TCP
meter (a simulated SDM630 process) → a real Mosquitto → `wattproof ingest` → PostgreSQL → sealed on the
local ledger → `wattproof verify --trust` intact. On the way the agent is killed with SIGKILL and restarted
(nothing lost, nothing stored twice, seqs never reused) and the broker is down for 30 s (the issue's outage;
``WATTPROOF_AGENT_OUTAGE_S`` changes it): the agent spools and delivers everything after."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg

from device.spool import SEQ_BLOCK, Spool
from tests.fixtures_ingest import stored, wait_until
from wattproof.embedded import Broker, free_port, wait_for_port

OUTAGE_S = float(os.environ.get("WATTPROOF_AGENT_OUTAGE_S", "30"))  # the outage
DEVICE, SITE = "e2e-sdm630", "e2e"


def cli(home: Path, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wattproof", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WATTPROOF_HOME": str(home)}, **kw)  # type: ignore[call-overload]


def spawn(home: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "wattproof", *args], stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            env={**os.environ, "WATTPROOF_HOME": str(home)})


def metric(port: int, name: str) -> float | None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m[1]) if m else None


def seqs_in_store(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return [int(r[0]) for r in conn.execute("SELECT DISTINCT seq FROM readings WHERE device_id = %s ORDER BY seq",
                                                (DEVICE,))]


def test_agent_to_verify_survives_a_kill_and_a_broker_outage_with_nothing_lost_or_doubled(
        fresh_broker: Broker, store_db: str, tmp_path: Path) -> None:
    home, keys = tmp_path / "home", tmp_path / "keys"
    res = cli(home, "device", "provision", "--site", SITE, "--device", DEVICE, "--rated-power-w", "20000",
              "--db", store_db, "--keys-dir", str(keys))
    assert res.returncode == 0, res.stderr
    modbus_port, metrics_port = free_port(), free_port()
    sim = subprocess.Popen([sys.executable, "-m", "device.agent.meter_sim", "--map", "sdm630", "--tcp",
                            f"127.0.0.1:{modbus_port}", "--period-s", "6"], stdout=subprocess.DEVNULL)
    spool = tmp_path / "spool.sqlite"
    config = tmp_path / "agent.toml"
    config.write_text(f"""# agent.toml of the end-to-end test
site = "{SITE}"
device = "{DEVICE}"
key_file = "{keys / SITE / (DEVICE + '.key')}"
broker = "{fresh_broker.url}"
spool = "{spool}"
interval_s = 0.2
frame_samples = 5
metrics_port = {metrics_port}

[clock]
require_sync = false  # this test machine's kernel clock is not NTP-disciplined

[meter]
driver = "modbus-tcp"
host = "127.0.0.1"
port = {modbus_port}
map = "sdm630"
timeout_s = 0.5
retries = 1
""")
    logs = tmp_path / "logs.txt"
    ingest = spawn(home, logs, "ingest", "--broker", fresh_broker.url, "--db", store_db)
    agent = None
    try:
        wait_for_port(modbus_port, 20, sim)  # type: ignore[arg-type]
        agent = spawn(home, logs, "agent", "--config", str(config))
        wait_until(lambda: len(seqs_in_store(store_db)) >= 3, "three frames stored from the first agent", 60)

        agent.send_signal(signal.SIGKILL)  # power cut / OOM kill: no clean shutdown
        agent.wait(10)
        s = Spool(spool)
        last_a, next_mark = s.get_int("seq_used", 0), s.get_int("next_seq", 0)
        s._db.close()  # noqa: SLF001 - read the state, do not settle it as a clean close would
        assert next_mark == 1 + SEQ_BLOCK  # the reserved mark the killed process left behind
        agent = spawn(home, logs, "agent", "--config", str(config))
        wait_until(lambda: any(q >= next_mark for q in seqs_in_store(store_db)), "frames from the restarted agent", 60)

        fresh_broker.stop()
        down_at = time.monotonic()
        wait_until(lambda: (metric(metrics_port, "wattproof_agent_spool_depth") or 0) >= 3
                   and time.monotonic() - down_at >= OUTAGE_S, f"frames spooled during a {OUTAGE_S:g} s outage",
                   OUTAGE_S + 30)
        spooled = metric(metrics_port, "wattproof_agent_spool_depth")
        fresh_broker.restart()
        wait_until(lambda: metric(metrics_port, "wattproof_agent_spool_depth") == 0, "spool drained after the outage", 60)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
        s = Spool(spool)
        last_b, left = s.get_int("seq_used", 0), s.count()
        s.close()
        assert left == 0
        expected = list(range(1, last_a + 1)) + list(range(next_mark, last_b + 1))
        wait_until(lambda: seqs_in_store(store_db) == expected, f"every frame signed stored: seqs {expected[:3]}…"
                   f"{expected[-1]} with one gap at the kill", 60)
    finally:
        for proc in (agent, ingest, sim):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    assert spooled is not None and spooled >= 3

    n, distinct, quarantined = stored(store_db)
    assert n == distinct and quarantined == {}  # nothing twice, nothing refused
    with psycopg.connect(store_db) as conn:
        rows = conn.execute("SELECT channel, ts, energy_wh FROM readings WHERE device_id = %s ORDER BY seq, idx",
                            (DEVICE,)).fetchall()
    for channel in ("import", "export"):
        ts = [r[1] for r in rows if r[0] == channel]
        energy = [r[2] for r in rows if r[0] == channel]
        assert ts == sorted(set(ts)) and energy == sorted(energy) and energy[0] >= (1_234_567 if channel == "import" else 0)
    assert n % 2 == 0 and n >= 2 * 5 * (len(expected) - 1)  # two channels a sample, 5 a frame (the last may be partial)

    from ledger.local import LocalLedger
    from ledger.seal import seal_windows

    ledger = LocalLedger.open(home / "ledger", create=True)
    made = seal_windows(store_db, ledger, now_ms=int(time.time() * 1000) + 3 * 3_600_000)
    assert sum(b.header.leaf_count for b in made) == n
    trust = tmp_path / "trust.json"
    res = cli(home, "trust", "export", "--db", store_db, "--out", str(trust))
    assert res.returncode == 0, res.stderr
    res = cli(home, "verify", "--db", store_db, "--json", "--trust", str(trust))
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["intact"] == len(made) >= 1
