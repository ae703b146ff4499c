"""No single message stops ingest (DESIGN invariant 8, issue 12 invariant 7), against a real Mosquitto and
a real PostgreSQL: a frame the store refuses is quarantined store_failed after bounded attempts and
acknowledged; frames touching many months get a partition per month; a retained junk message is not
quarantined twice; the quarantine's growth is bounded; registry changes take effect within seconds."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device import wire
from device.identity import DeviceRecord, public_key_b64
from device.wire import Frame, Reading
from ingest import reasons
from ingest.pipeline import ingest_payloads
from ingest.quarantine import QuarantineLimits
from ingest.registry import load_devices, register_device
from ingest.service import IngestConfig, IngestService
from ingest.validate import Accepted, validate
from ingest.writer import StoreUnavailable, StoreWriter
from tests.fixtures_ingest import publish_raw, wait_until
from wattproof.embedded import Broker

KEY = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
SITE, DEVICE = "p1", "p1-main"
TOPIC = wire.readings_topic(SITE, DEVICE)
DAY = 86_400_000


def register(dsn: str, device: str = DEVICE) -> None:
    register_device(dsn, DeviceRecord(site=SITE, device=device, kind="main_meter", public_key=public_key_b64(KEY),
                                      rated_power_w=10_000))


def frame(seq: int, sent_ms: int | None = None, ts: list[int] | None = None, device: str = DEVICE) -> tuple[str, bytes]:
    sent = sent_ms if sent_ms is not None else int(time.time() * 1000)
    times = ts if ts is not None else [sent - 1000]
    f = Frame(v=1, site=SITE, device=device, seq=seq, sent_ms=sent,
              readings=[Reading(ts_ms=t, channel="import", energy_wh=1000 + seq, power_w=500) for t in times])
    return wire.readings_topic(SITE, device), wire.encode_frame(wire.sign_frame(f, KEY))


def q(dsn: str, sql: str, *args: object) -> list[tuple]:  # type: ignore[type-arg]
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, args).fetchall()  # type: ignore[arg-type]


def frames_stored(dsn: str) -> int:
    return int(q(dsn, "SELECT count(*) FROM frames")[0][0])


def poison(dsn: str, device: str, seq: int) -> None:
    """A real reason for the store to refuse exactly one frame: a trigger on readings raising for it."""
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE FUNCTION refuse_reading() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                     "RAISE EXCEPTION 'poison frame %/%', NEW.device_id, NEW.seq; END $$")
        conn.execute(f"CREATE TRIGGER poison BEFORE INSERT ON readings FOR EACH ROW WHEN "
                     f"(NEW.device_id = '{device}' AND NEW.seq = {seq}) EXECUTE FUNCTION refuse_reading()")


@contextmanager
def service(broker: Broker, dsn: str, client_id: str, **cfg: object) -> Iterator[IngestService]:
    svc = IngestService(IngestConfig(broker.url, dsn, client_id=client_id, **cfg)).start()  # type: ignore[arg-type]
    try:
        yield svc
    finally:
        svc.stop()
    assert svc.error is None, svc.error


# --- partitions --------------------------------------------------------------------------------------

def test_frame_whose_readings_span_three_months_is_stored_with_a_partition_for_every_month(store_db: str) -> None:
    register(store_db)
    now = int(time.time() * 1000)
    topic, payload = frame(1, now, [now - 70 * DAY, now - 35 * DAY, now])  # 70 days always touch >= 3 months
    a = Accepted(topic, payload, wire.decode_frame(payload))  # the writer alone: whatever validation rules apply
    with psycopg.connect(store_db, autocommit=True) as conn:
        result = StoreWriter(conn).write([a], [])
    assert (result.frames_accepted, result.readings_written) == (1, 3)
    months = {r[0] for r in q(store_db, "SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYYMM') FROM readings")}
    parts = {r[0] for r in q(store_db, "SELECT relname FROM pg_class WHERE relname ~ '^readings_[0-9]{6}$'")}
    assert {f"readings_{m}" for m in months} <= parts and len(months) == 3


def test_frame_with_readings_decades_apart_gets_partitions_only_for_the_months_it_touches(store_db: str) -> None:
    register(store_db)
    now = int(time.time() * 1000)
    topic, payload = frame(1, now, [1000, now])
    with psycopg.connect(store_db, autocommit=True) as conn:
        assert StoreWriter(conn).write([Accepted(topic, payload, wire.decode_frame(payload))], []).readings_written == 2
    parts = q(store_db, "SELECT relname FROM pg_class WHERE relname ~ '^readings_[0-9]{6}$'")
    assert len(parts) == 2  # 197001 and this month, not the ~680 months between


def test_frame_with_a_reading_time_no_partition_can_hold_is_quarantined_and_the_others_stored(store_db: str) -> None:
    register(store_db)
    now = int(time.time() * 1000)
    far = frame(1, now, [2**53 - 1])  # year 287396: the writer alone (validation refuses it long before)
    msgs = [Accepted(t, p, wire.decode_frame(p)) for t, p in (far, frame(2, now), frame(3, now))]
    with psycopg.connect(store_db, autocommit=True) as conn:
        result = StoreWriter(conn).write(msgs, [])
    assert result.frames_accepted == 2 and result.quarantined == {reasons.STORE_FAILED: 1}
    ((seq, detail),) = q(store_db, "SELECT seq, detail FROM quarantine")
    assert seq == 1 and "out of range" in detail


def test_three_month_frame_through_the_broker_never_stops_the_service(
        fresh_broker: Broker, store_db: str) -> None:
    register(store_db)
    now = int(time.time() * 1000)
    wide = frame(1, now, [now - 70 * DAY, now - 35 * DAY, now])
    with psycopg.connect(store_db) as conn:
        verdict = validate(*wide, load_devices(conn), now)  # stored if today's rules accept it, else refused
    with service(fresh_broker, store_db, "ingest-wide"):
        publish_raw(fresh_broker.url, [wide, frame(2), frame(3)])
        wait_until(lambda: frames_stored(store_db) >= 2 + isinstance(verdict, Accepted), "the frames behind it stored")
    if not isinstance(verdict, Accepted):
        assert q(store_db, "SELECT reason FROM quarantine WHERE seq = 1") == [(verdict.reason,)]


# --- a frame the store refuses -----------------------------------------------------------------------

def test_frame_the_store_refuses_is_quarantined_store_failed_once_and_the_rest_of_its_batch_is_stored(
        fresh_broker: Broker, store_db: str) -> None:
    register(store_db)
    poison(store_db, DEVICE, 5)
    msgs = [frame(seq) for seq in range(1, 21)]
    with service(fresh_broker, store_db, "ingest-poison", batch_ms=1000) as svc:
        publish_raw(fresh_broker.url, msgs)  # within one batch window: the refusal splits that batch
        wait_until(lambda: frames_stored(store_db) == 19 and q(store_db, "SELECT 1 FROM quarantine"),
                   "19 frames stored and the poison quarantined")
        svc.wait_idle(idle_s=0.5)
        assert svc.totals.quarantined == {reasons.STORE_FAILED: 1} and svc.totals.frames_accepted == 19
    rows = q(store_db, "SELECT reason, seq, repeats, detail, payload FROM quarantine")
    assert len(rows) == 1
    reason, seq, repeats, detail, payload = rows[0]
    assert (reason, seq, repeats, bytes(payload)) == (reasons.STORE_FAILED, 5, 1, msgs[4][1])  # the whole frame
    assert "RaiseException" in detail and "P0001" in detail and "poison frame p1-main/5" in detail
    # It was acknowledged: a restart on the same session brings nothing back, and does not crash.
    with service(fresh_broker, store_db, "ingest-poison", batch_ms=1000):
        publish_raw(fresh_broker.url, [frame(21)])
        wait_until(lambda: frames_stored(store_db) == 20, "the frame after the restart stored")
    assert q(store_db, "SELECT reason, repeats FROM quarantine") == [(reasons.STORE_FAILED, 1)]
    assert q(store_db, "SELECT count(*) FROM readings")[0][0] == 20


def test_frame_the_store_refuses_through_ingest_payloads_is_quarantined_and_the_others_stored(store_db: str) -> None:
    register(store_db)
    poison(store_db, DEVICE, 7)
    msgs = [frame(seq) for seq in range(1, 41)] + [(TOPIC, b"junk")]
    result = ingest_payloads(store_db, msgs)
    assert result.frames_accepted == 39 and result.quarantined == {reasons.STORE_FAILED: 1, "bad_json": 1}
    assert frames_stored(store_db) == 39
    again = ingest_payloads(store_db, msgs)  # everything redelivered: the poison is refused again, counted
    assert again.frames_accepted == 0 and again.frames_duplicate == 39
    assert sorted(q(store_db, "SELECT reason, repeats FROM quarantine")) == [("bad_json", 2), (reasons.STORE_FAILED, 2)]


def test_quarantine_row_the_store_refuses_is_kept_as_store_failed(store_db: str) -> None:
    register(store_db)
    with psycopg.connect(store_db) as conn:
        conn.execute("CREATE FUNCTION refuse_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                     "RAISE EXCEPTION 'no bad_json here'; END $$")
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON quarantine FOR EACH ROW "
                     "WHEN (NEW.reason = 'bad_json') EXECUTE FUNCTION refuse_row()")
    result = ingest_payloads(store_db, [frame(1), (TOPIC, b"junk"), frame(2)])
    assert result.frames_accepted == 2 and result.quarantined == {reasons.STORE_FAILED: 1}
    ((reason, detail, payload),) = q(store_db, "SELECT reason, detail, payload FROM quarantine")
    assert reason == reasons.STORE_FAILED and "bad_json" in detail and "no bad_json here" in detail
    assert bytes(payload) == b"junk"


def test_store_refusing_even_quarantine_rows_is_an_outage_not_a_quarantine(store_db: str) -> None:
    register(store_db)
    with psycopg.connect(store_db) as conn:
        conn.execute("CREATE FUNCTION refuse_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                     "RAISE EXCEPTION 'quarantine is read-only'; END $$")
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON quarantine FOR EACH ROW EXECUTE FUNCTION refuse_row()")
    with pytest.raises(StoreUnavailable, match="quarantine is read-only"):
        ingest_payloads(store_db, [frame(1), (TOPIC, b"junk")])


# --- retained messages -------------------------------------------------------------------------------

def test_retained_junk_is_quarantined_once_across_two_restarts_of_the_service(
        fresh_broker: Broker, store_db: str) -> None:
    junk = b"retained junk"
    publish_raw(fresh_broker.url, [(TOPIC, junk, True)])

    def rows_of(payload: bytes) -> list[tuple]:  # type: ignore[type-arg]
        return q(store_db, "SELECT repeats FROM quarantine WHERE payload = %s", payload)

    for run in range(3):  # the first start, then two restarts on the same persistent session
        with service(fresh_broker, store_db, "ingest-retained"):
            marker = f"marker {run}".encode()  # published after the subscription: arrives after any retained one
            publish_raw(fresh_broker.url, [(TOPIC, marker)])
            wait_until(lambda m=marker: rows_of(m), f"marker {run} quarantined")  # type: ignore[misc]
        assert rows_of(junk) == [(1,)], f"after run {run}"
    # A new subscription (another client id) is sent the retained message again: still one row, counted.
    with service(fresh_broker, store_db, "ingest-retained-2"):
        wait_until(lambda: rows_of(junk) == [(2,)], "the retained junk counted, not stored again")


def test_retained_junk_over_mqtt_3_is_resent_on_every_restart_but_kept_as_one_row(
        fresh_broker: Broker, store_db: str) -> None:
    junk = b"retained junk 3.1.1"
    publish_raw(fresh_broker.url, [(TOPIC, junk, True)])
    for run in range(1, 3):
        with service(fresh_broker, store_db, "ingest-retained-311", protocol=4):
            wait_until(lambda r=run: q(store_db, "SELECT repeats FROM quarantine WHERE payload = %s", junk) == [(r,)],
                       f"run {run}: one row with repeats {run}")


# --- bounded quarantine ------------------------------------------------------------------------------

def test_flood_of_distinct_junk_on_one_topic_keeps_quarantine_bounded_and_valid_frames_flowing(
        fresh_broker: Broker, store_db: str) -> None:
    register(store_db)
    limits = QuarantineLimits()  # the defaults: 4 KiB payloads, 60 rows per topic and minute
    n_junk, size = 3000, 5000
    flood_topic = wire.readings_topic("x", "attacker")
    junk = [(flood_topic, i.to_bytes(4, "big") + b"j" * (size - 4)) for i in range(n_junk)]
    valid = [frame(seq) for seq in range(1, 31)]
    mixed = [m for pair in zip(junk[::100], valid, strict=False) for m in pair]  # valid frames amid the flood
    with service(fresh_broker, store_db, "ingest-flood"):
        publish_raw(fresh_broker.url, [m for i, m in enumerate(junk) if i % 100] + mixed)
        wait_until(lambda: frames_stored(store_db) == 30, "every valid frame stored")
        wait_until(lambda: q(store_db, "SELECT coalesce(sum(repeats), 0) FROM quarantine")[0][0]
                   + q(store_db, "SELECT coalesce(sum(messages), 0) FROM quarantine_dropped")[0][0] == n_junk,
                   "every junk message stored or counted")
    rows, stored_bytes, max_len = q(store_db, "SELECT count(*), sum(length(payload)), max(length(payload)) "
                                              "FROM quarantine")[0]
    assert rows <= 2 * limits.rows_per_topic_minute  # the flood may straddle a minute boundary
    assert max_len == limits.max_payload_bytes and stored_bytes <= rows * limits.max_payload_bytes
    lens = q(store_db, "SELECT DISTINCT payload_len FROM quarantine")
    assert lens == [(size,)]
    for prefix, digest in q(store_db, "SELECT substring(payload FROM 1 FOR 4), payload_sha256 FROM quarantine"):
        assert bytes(digest) == hashlib.sha256(junk[int.from_bytes(prefix, "big")][1]).digest()  # of the whole
    dropped = q(store_db, "SELECT cause, scope, reason, sum(messages), sum(bytes) FROM quarantine_dropped "
                          "GROUP BY 1, 2, 3")
    assert [(c, s, r) for c, s, r, _, _ in dropped] == [("topic_rate", flood_topic, "bad_json")]
    assert dropped[0][3] == n_junk - rows and dropped[0][4] == (n_junk - rows) * size


def test_junk_over_many_topics_is_bounded_by_the_overall_limit_and_counted(store_db: str) -> None:
    limits = QuarantineLimits(rows_per_topic_minute=5, rows_per_minute=20)
    junk = [(wire.readings_topic("x", f"d{i % 50}"), f"junk {i}".encode()) for i in range(300)]
    result = ingest_payloads(store_db, junk, now_ms=1_800_000_000_000, quarantine=limits)
    assert result.quarantined == {"bad_json": 300} and result.dropped == {"bad_json": 280}
    assert q(store_db, "SELECT count(*) FROM quarantine")[0][0] == 20
    assert q(store_db, "SELECT cause, scope, sum(messages) FROM quarantine_dropped GROUP BY 1, 2 "
                       "HAVING cause = 'total_rate'") == [("total_rate", "*", 280)]


def test_identical_junk_is_one_row_with_a_count_and_signed_refusals_are_kept_whole_and_never_dropped(
        store_db: str) -> None:
    register(store_db)
    limits = QuarantineLimits(max_payload_bytes=64, rows_per_topic_minute=2, rows_per_minute=2)
    now = 1_800_000_000_000
    big_junk = (TOPIC, b"{" * 1000)
    skewed = [frame(seq, sent_ms=now + DAY) for seq in range(1, 6)]  # signed, but sent a day ahead: clock_skew
    result = ingest_payloads(store_db, [big_junk] * 4 + skewed + [big_junk], now_ms=now, quarantine=limits)
    assert result.quarantined == {"bad_json": 5, "clock_skew": 5} and not result.dropped
    rows = q(store_db, "SELECT reason, repeats, length(payload), payload_len FROM quarantine ORDER BY reason, seq")
    assert rows[0] == ("bad_json", 5, 64, 1000)
    assert [r[:2] for r in rows[1:]] == [("clock_skew", 1)] * 5
    assert all(r[2] == r[3] for r in rows[1:])  # authenticated: the whole frame


def test_migration_merges_quarantine_rows_stored_twice_by_earlier_versions(empty_db: str) -> None:
    from yoyo import get_backend, read_migrations

    from ingest.schema import _yoyo_url, migrations_dir, upgrade

    backend = get_backend(_yoyo_url(empty_db))
    older = read_migrations(migrations_dir()).filter(lambda m: m.id != "0401.quarantine")
    with backend.lock():
        backend.apply_migrations(backend.to_apply(older))
    with psycopg.connect(empty_db) as conn:
        for payload in (b"a", b"a", b"a", b"b"):
            conn.execute("INSERT INTO quarantine (topic, payload, reason, detail) VALUES ('t', %s, 'bad_json', 'x')",
                         (payload,))
    assert upgrade(empty_db) == ["0401.quarantine"]
    assert q(empty_db, "SELECT payload, repeats FROM quarantine ORDER BY payload") == [(b"a", 3), (b"b", 1)]


# --- registry changes --------------------------------------------------------------------------------

def test_device_deactivated_while_the_service_runs_is_refused_within_seconds(
        fresh_broker: Broker, store_db: str) -> None:
    register(store_db)
    with service(fresh_broker, store_db, "ingest-registry", batch_ms=50) as svc:
        publish_raw(fresh_broker.url, [frame(1)])
        wait_until(lambda: frames_stored(store_db) == 1, "the first frame stored")
        with psycopg.connect(store_db) as conn:
            conn.execute("UPDATE devices SET active = false WHERE device_id = %s", (DEVICE,))
        t0 = time.monotonic()
        seq = 2

        def refused() -> bool:
            nonlocal seq
            publish_raw(fresh_broker.url, [frame(seq)])
            seq += 1
            return bool(q(store_db, "SELECT 1 FROM quarantine WHERE reason = %s", reasons.INACTIVE_DEVICE))

        wait_until(refused, "a frame of the deactivated device quarantined inactive_device", timeout_s=15)
        took = time.monotonic() - t0
        assert took <= svc.cfg.registry_refresh_s + 2.5, took
        later = frame(seq)  # from now on, every frame of it is refused
        publish_raw(fresh_broker.url, [later])
        wait_until(lambda: q(store_db, "SELECT reason FROM quarantine WHERE seq = %s", seq) == [(reasons.INACTIVE_DEVICE,)],
                   "the next frame refused too")
