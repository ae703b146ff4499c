"""Ingest against a real Mosquitto and a real PostgreSQL: exactly once, nothing lost, reasons kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from firmware_sim.scenarios import load_scenario
from firmware_sim.sim import simulate
from ingest.service import IngestConfig, IngestService
from tests.fixtures_ingest import expected_rows, provision, publish_run, stored, wait_for_rows
from wattproof.embedded import Broker, Postgres

ROOT = Path(__file__).resolve().parents[1]


def small_run(seed: int = 1):  # type: ignore[no-untyped-def]
    return simulate(sites=2, days=1, seed=seed)


def test_greenwash_stream_stores_published_minus_labelled_rejects_and_quarantines_each_reason(
        fresh_broker: Broker, store_db: str, tmp_path: Path) -> None:
    run = simulate(scenario=load_scenario(ROOT / "scenarios" / "greenwash.yaml"))
    provision(store_db, run)
    want_rows, want_reasons = expected_rows(run)
    svc = IngestService(IngestConfig(fresh_broker.url, store_db, client_id="ingest-gw")).start()
    try:
        publish_run(fresh_broker.url, run, tmp_path / "spool")
        wait_for_rows(store_db, want_rows)
        svc.wait_idle(idle_s=1.0)
    finally:
        svc.stop()
    n, distinct, reasons = stored(store_db)
    assert n == distinct == want_rows
    assert reasons == want_reasons
    assert set(reasons) >= {"bad_signature", "replayed_seq", "clock_skew", "bad_json", "schema"}
    with psycopg.connect(store_db) as conn:
        details = conn.execute("SELECT reason, detail, length(payload) FROM quarantine").fetchall()
    assert all(detail and size > 0 for _, detail, size in details)


def ingest_process(broker: Broker, dsn: str, client_id: str, *extra: str) -> subprocess.Popen[str]:
    """`wattproof ingest` as a process of its own; returns once it is subscribed."""
    proc = subprocess.Popen([sys.executable, "-m", "wattproof", "ingest", "--broker", broker.url, "--db", dsn,
                             "--client-id", client_id, "--batch-frames", "50", "--batch-ms", "50", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()  # the service logs this line once its subscription is acknowledged
    assert "ingesting from" in line, line + proc.stderr.read()
    return proc


def test_kill_9_of_ingest_mid_stream_then_restart_loses_nothing_and_duplicates_nothing(
        fresh_broker: Broker, store_db: str, tmp_path: Path) -> None:
    run = small_run()
    provision(store_db, run)
    want, _ = expected_rows(run)
    proc = ingest_process(fresh_broker, store_db, "ingest-kill")
    killed = threading.Event()

    def kill_when_half_stored() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and stored(store_db)[0] < want // 3:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        killed.set()

    killer = threading.Thread(target=kill_when_half_stored)
    killer.start()
    publish_run(fresh_broker.url, run, tmp_path / "spool")
    killer.join()
    proc.wait(10)
    assert killed.is_set() and proc.returncode == -signal.SIGKILL
    assert stored(store_db)[0] < want  # it really died mid-stream
    proc2 = ingest_process(fresh_broker, store_db, "ingest-kill")  # same persistent session
    try:
        wait_for_rows(store_db, want)
        time.sleep(1.0)  # anything redelivered after that must not add rows
    finally:
        proc2.send_signal(signal.SIGTERM)
        proc2.wait(30)
    n, distinct, _ = stored(store_db)
    assert n == distinct == want


def test_broker_restart_mid_stream_loses_nothing(fresh_broker: Broker, store_db: str, tmp_path: Path) -> None:
    run = simulate(sites=2, days=2, seed=3)
    provision(store_db, run)
    want, _ = expected_rows(run)
    svc = IngestService(IngestConfig(fresh_broker.url, store_db, client_id="ingest-br")).start()
    restarted = []

    def maybe_restart(published: int) -> None:
        if not restarted and published > 20_000:
            restarted.append(True)
            fresh_broker.restart()

    try:
        publish_run(fresh_broker.url, run, tmp_path / "spool", during=maybe_restart)
        wait_for_rows(store_db, want)
        svc.wait_idle(idle_s=1.0)
    finally:
        svc.stop()
    assert restarted
    n, distinct, _ = stored(store_db)
    assert n == distinct == want


def test_postgres_restart_mid_stream_loses_nothing(fresh_broker: Broker, tmp_path: Path) -> None:
    from ingest.schema import upgrade

    pg = Postgres(tmp_path / "pg").start()  # our own server: this test restarts it
    try:
        upgrade(pg.dsn)
        run = simulate(sites=2, days=2, seed=4)
        provision(pg.dsn, run)
        want, want_reasons = expected_rows(run)
        svc = IngestService(IngestConfig(fresh_broker.url, pg.dsn, client_id="ingest-pg", batch_frames=100)).start()
        restarted = []

        def maybe_restart(published: int) -> None:
            if not restarted and published > 20_000:
                restarted.append(True)
                pg.restart()

        try:
            publish_run(fresh_broker.url, run, tmp_path / "spool", during=maybe_restart)
            wait_for_rows(pg.dsn, want)
            svc.wait_idle(idle_s=1.0)
            assert svc.error is None
        finally:
            svc.stop()
        assert restarted
        n, distinct, reasons = stored(pg.dsn)
        assert n == distinct == want
        assert reasons == want_reasons  # a lost connection is waited out: nothing quarantined store_failed
    finally:
        pg.stop()


def test_two_ingest_processes_on_one_shared_subscription_split_the_work_without_duplicates(
        fresh_broker: Broker, store_db: str, tmp_path: Path) -> None:
    run = simulate(sites=3, days=1, seed=5)
    provision(store_db, run)
    want, _ = expected_rows(run)
    procs = [ingest_process(fresh_broker, store_db, f"ingest-shared-{i}", "--shared") for i in range(2)]
    try:
        publish_run(fresh_broker.url, run, tmp_path / "spool")
        wait_for_rows(store_db, want)
        time.sleep(0.5)
    finally:
        outputs = []
        for p in procs:
            p.send_signal(signal.SIGTERM)
            outputs.append(p.communicate(timeout=30)[1])
    n, distinct, _ = stored(store_db)
    assert n == distinct == want
    frames_each = [int(out.split("stopped: ")[1].split(" frames")[0]) for out in outputs]
    assert all(k > 0 for k in frames_each), outputs


@pytest.mark.parametrize("n_workers", [1])
def test_unknown_device_is_quarantined_and_the_valid_frames_beside_it_are_stored(
        n_workers: int, fresh_broker: Broker, store_db: str, tmp_path: Path) -> None:
    run = small_run(seed=9)
    # Register all devices but one: its frames are refused with unknown_device, the others flow.
    provision(store_db, run)
    with psycopg.connect(store_db) as conn:
        conn.execute("DELETE FROM devices WHERE device_id = %s", (run.devices[-1].device,))
    svc = IngestService(IngestConfig(fresh_broker.url, store_db, client_id="ingest-unknown")).start()
    try:
        publish_run(fresh_broker.url, run, tmp_path / "spool")
        svc.wait_idle(idle_s=1.5)
    finally:
        svc.stop()
    n, _, reasons = stored(store_db)
    lost_dev = run.devices[-1].device
    expected = sum(m.n_readings for m in run.messages() if m.device != lost_dev)
    assert n == expected
    assert reasons == {"unknown_device": sum(1 for m in run.messages() if m.device == lost_dev)}
