"""The batch writer when writers run concurrently (several ingest processes, or the writer threads of one):
a replay of a frame that another writer is storing at that very moment is still quarantined as a
replay, and a redelivery is still a no-op. Real PostgreSQL, the other writer's transaction held open."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device import wire
from device.identity import DeviceRecord, public_key_b64
from device.wire import Frame, Reading
from ingest import reasons
from ingest.registry import load_devices, register_device
from ingest.validate import Accepted, validate
from ingest.writer import BatchWrite, StoreWriter

KEY = Ed25519PrivateKey.from_private_bytes(b"\x05" * 32)
NOW = int(time.time() * 1000)
TOPIC = wire.readings_topic("w1", "w1-main")


def accepted(dsn: str, energy_wh: int) -> Accepted:
    f = Frame(v=1, site="w1", device="w1-main", seq=7, sent_ms=NOW,
              readings=[Reading(ts_ms=NOW - 60_000, channel="import", energy_wh=energy_wh, power_w=100)])
    with psycopg.connect(dsn) as conn:
        v = validate(TOPIC, wire.encode_frame(wire.sign_frame(f, KEY)), load_devices(conn), NOW)
    assert isinstance(v, Accepted)
    return v


def test_a_replay_racing_the_original_in_another_writer_is_quarantined_and_a_redelivery_is_a_no_op(
        store_db: str) -> None:
    register_device(store_db, DeviceRecord(site="w1", device="w1-main", kind="main_meter",
                                           public_key=public_key_b64(KEY), rated_power_w=10_000))
    original, replay = accepted(store_db, 1000), accepted(store_db, 999_999)
    first = psycopg.connect(store_db, autocommit=True)
    second = psycopg.connect(store_db, autocommit=True)
    try:
        writer_a, writer_b = StoreWriter(first), StoreWriter(second)
        results = {}
        # Writer A stores the original but has not committed yet when writer B brings the replay.
        gate, release = threading.Event(), threading.Event()
        real_write = writer_a.write_prepared

        def held(p):  # type: ignore[no-untyped-def]
            with first.transaction():
                out = real_write(p)  # a savepoint inside the outer transaction: nothing visible yet
                gate.set()
                release.wait(10)
            return out

        writer_a.write_prepared = held  # type: ignore[method-assign]
        ta = threading.Thread(target=lambda: results.setdefault("a", writer_a.write([original], [])))
        ta.start()
        assert gate.wait(10)
        tb = threading.Thread(target=lambda: results.setdefault("b", writer_b.write([replay], [])))
        tb.start()
        time.sleep(0.5)
        assert tb.is_alive(), "writer B should wait for A's uncommitted frame"
        release.set()
        ta.join(10)
        tb.join(10)
        assert results["a"].frames_accepted == 1 and results["a"].readings_written == 1
        assert results["b"].frames_accepted == 0 and results["b"].quarantined == {reasons.REPLAYED_SEQ: 1}
        again = writer_b.write([original], [])  # the original, redelivered: a no-op
        assert (again.frames_accepted, again.frames_duplicate, sum(again.quarantined.values())) == (0, 1, 0)
        row = first.execute("SELECT count(*), min(energy_wh) FROM readings").fetchone()
        assert row == (1, 1000)
        assert first.execute("SELECT reason FROM quarantine").fetchall() == [(reasons.REPLAYED_SEQ,)]
    finally:
        first.close()
        second.close()


def test_a_lost_connection_is_raised_not_quarantined_and_the_batch_goes_on_after_reconnecting(store_db: str) -> None:
    register_device(store_db, DeviceRecord(site="w1", device="w1-main", kind="main_meter",
                                           public_key=public_key_b64(KEY), rated_power_w=10_000))
    conn = psycopg.connect(store_db, autocommit=True)
    writer = StoreWriter(conn)
    job = BatchWrite(writer.prepare([accepted(store_db, 1000)], []))
    with psycopg.connect(store_db, autocommit=True) as admin:  # the server drops the writer's connection
        admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
    with pytest.raises(psycopg.OperationalError):
        job.run(writer)
    assert conn.broken or conn.closed
    with psycopg.connect(store_db, autocommit=True) as again:
        result = job.run(StoreWriter(again))  # the service's reconnect: the same job goes on
        assert result.frames_accepted == 1 and not result.quarantined
        assert again.execute("SELECT count(*) FROM quarantine").fetchone() == (0,)
