"""pytest fixtures and helpers for ingest tests: fresh brokers, provisioned stores, simulated runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest

from device.publisher import parse_broker_url
from firmware_sim.fleet import FleetPublisher
from firmware_sim.sim import SimRun
from ingest.pipeline import counts
from ingest.registry import register_device
from wattproof.embedded import Broker


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[Broker]:
    """A Mosquitto of this test's own (tests that restart it, or need sessions of their own)."""
    broker = Broker(tmp_path / "broker").start()
    assert broker.kind == "mosquitto"
    yield broker
    broker.stop()


def provision(dsn: str, run: SimRun) -> None:
    for dev in run.devices:
        register_device(dsn, dev.record)


def publish_run(broker_url: str, run: SimRun, spool_dir: Path,
                during: Callable[[int], None] | None = None) -> int:
    """Publish every message of ``run`` and wait for every PUBACK; return readings published."""
    fleet = FleetPublisher(broker_url, spool_dir, run.devices).start()
    try:
        n = fleet.run(run.messages(), progress=during)
        fleet.flush(300)
        return n
    finally:
        fleet.close()


def expected_rows(run: SimRun) -> tuple[int, dict[str, int]]:
    """(readings that must be stored, frames that must be quarantined by reason) from the truth."""
    published = sum(m.n_readings for m in run.messages())
    labelled = sum(t.n_readings for t in run.truth if t.expect.startswith("quarantine:") or t.expect == "noop")
    reasons: dict[str, int] = {}
    for t in run.truth:
        if t.expect.startswith("quarantine:"):
            reasons[t.expect.split(":", 1)[1]] = reasons.get(t.expect.split(":", 1)[1], 0) + 1
    return published - labelled, reasons


def stored(dsn: str) -> tuple[int, int, dict[str, int]]:
    """(readings, distinct reading keys, refused messages by reason: quarantine rows with their repeats, and
    the messages only counted in quarantine_dropped)."""
    with psycopg.connect(dsn) as conn:
        n, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (device_id, seq, idx)) FROM readings").fetchone()  # type: ignore[misc]
        q = counts(conn)["quarantine"]
    return int(n), int(distinct), q


def wait_for_rows(dsn: str, n: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    got = -1
    while time.monotonic() < deadline:
        got = stored(dsn)[0]
        if got >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"{got} readings stored after {timeout_s:.0f}s, expected {n}")


def publish_raw(broker_url: str, items: Sequence[tuple[str, bytes] | tuple[str, bytes, bool]],
                timeout_s: float = 120) -> None:
    """Publish arbitrary ``(topic, payload[, retain])`` messages (QoS 1, MQTT 5) as an anonymous client of
    its own — what an attacker or a test of junk does — and wait for every PUBACK."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
    addr = parse_broker_url(broker_url)
    addr.apply(client)
    client.max_inflight_messages_set(500)
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p=None: connected.set() if not rc.is_failure else None
    client.connect(addr.host, addr.port)
    client.loop_start()
    try:
        assert connected.wait(10), f"no connection to {addr}"
        infos = [client.publish(item[0], item[1], qos=1, retain=bool(item[2]) if len(item) > 2 else False)
                 for item in items]
        deadline = time.monotonic() + timeout_s
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            assert info.is_published(), "the broker did not acknowledge every message in time"
    finally:
        client.disconnect()
        client.loop_stop()


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = 30) -> object:
    """Poll ``condition`` until it returns something true (returned), or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if got := condition():
            return got
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s:.0f}s: {what}")
