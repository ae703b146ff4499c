"""pytest fixtures and helpers for ingest tests: fresh brokers, provisioned stores, simulated runs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from firmware_sim.fleet import FleetPublisher
from firmware_sim.sim import SimRun
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
    """(readings, distinct reading keys, quarantine by reason)."""
    with psycopg.connect(dsn) as conn:
        n, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (device_id, seq, idx)) FROM readings").fetchone()  # type: ignore[misc]
        q = dict(conn.execute("SELECT reason, count(*) FROM quarantine GROUP BY reason").fetchall())
    return int(n), int(distinct), {str(k): int(v) for k, v in q.items()}


def wait_for_rows(dsn: str, n: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    got = -1
    while time.monotonic() < deadline:
        got = stored(dsn)[0]
        if got >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"{got} readings stored after {timeout_s:.0f}s, expected {n}")
