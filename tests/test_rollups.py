"""The incrementally maintained rollup (plain PostgreSQL path) always equals the aggregate computed
from readings: after ingest (with duplicates and two workers' worth of batches), after a changed,
deleted or late reading, and sealing's batch_id update leaves it alone."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from firmware_sim.sim import simulate
from ingest.pipeline import ingest_payloads
from ingest.registry import register_device

START = 1_780_272_000_000  # 2026-06-01T00:00Z

ON_READ = """SELECT device_id, channel, date_bin('15 minutes', ts, timestamptz '2000-01-01') AS bucket,
                    max(energy_wh) AS last_wh, count(*) AS n FROM readings GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""
ROLLUP = "SELECT device_id, channel, bucket, last_wh, n_readings FROM readings_15min ORDER BY 1, 2, 3"
HOURLY_ON_READ = """SELECT device_id, channel, bucket, last_wh - lag(last_wh) OVER (PARTITION BY device_id, channel
                    ORDER BY bucket) AS energy_wh, n FROM (SELECT device_id, channel, date_trunc('hour', ts) AS bucket,
                    max(energy_wh) AS last_wh, count(*) AS n FROM readings GROUP BY 1, 2, 3) b ORDER BY 1, 2, 3"""


def rows(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def ingested(store_db: str) -> str:
    run = simulate(sites=1, days=0.5, seed=5, start_ms=START)
    for d in run.devices:
        register_device(store_db, d.record)
    msgs = [(m.topic, m.payload) for m in run.messages()]
    ingest_payloads(store_db, msgs[::2])  # two passes, like two workers' batches …
    ingest_payloads(store_db, msgs[1::2])
    ingest_payloads(store_db, msgs[:50])  # … and redelivered duplicates
    return store_db


def test_rollup_equals_the_aggregate_of_readings_after_ingest(ingested: str) -> None:
    got = rows(ingested, ROLLUP)
    assert len(got) == 4 * 48 + 48  # 4 devices × 48 buckets of import; the PV meter has a pv channel too
    assert got == rows(ingested, ON_READ)
    assert rows(ingested, "SELECT * FROM energy_hourly ORDER BY 1, 2, 3") == rows(ingested, HOURLY_ON_READ)


def test_rollup_follows_changed_deleted_and_late_readings(ingested: str) -> None:
    with psycopg.connect(ingested, autocommit=True) as conn:
        conn.execute("UPDATE readings SET energy_wh = energy_wh + 10000 WHERE device_id = 's01-main' AND seq = 3 AND idx = 4")
        conn.execute("DELETE FROM readings WHERE device_id = 's01-sub1' AND seq BETWEEN 5 AND 6")
        conn.execute("DELETE FROM readings WHERE device_id = 's01-sub2' AND ts < timestamptz '2026-06-01 00:15Z'")
        conn.execute("UPDATE readings SET ts = ts + interval '20 minutes' WHERE device_id = 's01-pv' AND seq = 2 AND idx = 0")
        conn.execute("INSERT INTO readings (device_id, seq, idx, ts, channel, energy_wh, power_w) "
                     "VALUES ('s01-main', 999999, 0, timestamptz '2026-06-01 13:05Z', 'import', 1, 0)")
    assert rows(ingested, ROLLUP) == rows(ingested, ON_READ)


def test_sealing_does_not_touch_the_rollup(ingested: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ledger.local import LocalLedger
    from ledger.seal import seal_windows

    before = rows(ingested, ROLLUP)
    assert seal_windows(ingested, LocalLedger.open(tmp_path / "l"))
    assert rows(ingested, ROLLUP) == before == rows(ingested, ON_READ)
