"""Devices never reuse a sequence number (DESIGN invariant 8): the seq is persisted, fsync'ed, before
a frame with it leaves the process, so a device killed at any instant resumes above every seq it
may have sent; a restarted simulator also never sends a reading twice. Against real SQLite spools,
and end to end with `wattproof simulate` killed by SIGKILL into a real Mosquitto and PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from device.spool import SEQ_BLOCK, Spool
from ingest.service import IngestConfig, IngestService
from tests.fixtures_ingest import stored
from wattproof.embedded import Broker

# A device process: spools frames with increasing seqs and reports each seq once put_many returned
# (from then on the frame may be handed to MQTT: that is the instant that matters).
DEVICE = """
import sys
from device.spool import Spool
spool = Spool(sys.argv[1])
seq = spool.get_int("next_seq", 1)
while True:
    spool.put_many([("t", b"frame-%d" % seq)], seq=seq)
    sys.stdout.write(f"{seq}\\n")
    sys.stdout.flush()
    seq += 1
"""


def test_a_device_killed_at_any_instant_resumes_above_every_seq_it_handed_out(tmp_path: Path) -> None:
    path = tmp_path / "dev.sqlite"
    handed: list[int] = []
    for k in range(6):  # six lives, each killed after a different number of frames
        proc = subprocess.Popen([sys.executable, "-c", DEVICE, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        target = 40 + 97 * k
        lines = []
        while len(lines) < target:
            lines.append(int(proc.stdout.readline()))
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()  # whatever it printed before it died was handed out too
        proc.wait()
        lines += [int(x) for x in rest.split("\n") if x.strip().isdigit()]
        assert not set(lines) & set(handed), "a seq was used twice"
        handed += lines
        resume = Spool(path).get_int("next_seq", 1)  # read without closing: as after a crash
        assert resume > max(handed)
        assert resume - max(handed) <= SEQ_BLOCK  # a gap after a crash, of less than one block
    assert handed == sorted(handed)


def test_seq_reservations_are_one_fsync_per_block_not_per_frame(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite")
    for seq in range(1, 1001):
        spool.put_many([("t", b"x")], seq=seq)
    assert spool.reservations == -(-1000 // SEQ_BLOCK)
    other = Spool(tmp_path / "s.sqlite")  # what a restarted process would read
    assert other.get_int("next_seq", 1) > 1000


def test_a_clean_close_gives_the_unused_block_back(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite")
    spool.put_many([("t", b"a"), ("t", b"b")], seq=2)
    assert Spool(tmp_path / "s.sqlite").get_int("next_seq", 1) == 2 + SEQ_BLOCK
    spool.close()
    assert Spool(tmp_path / "s.sqlite").get_int("next_seq", 1) == 3


def test_close_never_lowers_below_the_mark_read_at_open(tmp_path: Path) -> None:
    """After a power loss the spool's record of used seqs may lag the fsync'ed reservation."""
    crashed = Spool(tmp_path / "s.sqlite")
    crashed.put_many([("t", b"a")], seq=100)  # reserved through 100 + SEQ_BLOCK - 1, then the power fails
    reopened = Spool(tmp_path / "s.sqlite")
    reopened.set_int("seq_used", 40)  # stale, as a lost (not fsync'ed) commit would leave it
    assert reopened.get_int("next_seq", 1) == 100 + SEQ_BLOCK
    reopened.close()
    assert Spool(tmp_path / "s.sqlite").get_int("next_seq", 1) == 100 + SEQ_BLOCK


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path / "broker", auth=True).start()
    assert broker.kind == "mosquitto"
    yield broker
    broker.stop()


def simulate_cli(home: Path, broker: Broker, dsn: str, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "WATTPROOF_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "wattproof", "simulate", "--broker", broker.url_for("devices"),
                             "--db", dsn, "--sites", "2", "--seed", "5", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def frames_and_readings(dsn: str) -> tuple[list[tuple[str, int, int]], list[tuple[str, str, int]]]:
    """Stored frames (device, seq, first reading ms) and readings (device, channel, ms)."""
    with psycopg.connect(dsn) as conn:
        frames = conn.execute(
            "SELECT f.device_id, f.seq, (extract(epoch FROM min(r.ts)) * 1000)::bigint FROM frames f "
            "JOIN readings r USING (device_id, seq) GROUP BY f.device_id, f.seq").fetchall()
        readings = conn.execute(
            "SELECT device_id, channel, (extract(epoch FROM ts) * 1000)::bigint FROM readings").fetchall()
    return [tuple(f) for f in frames], [tuple(r) for r in readings]  # type: ignore[misc]


@pytest.mark.parametrize("mode", [["--days", "1", "--speed", "14400"], ["--days", "14", "--backfill"]],
                         ids=["real-time", "backfill"])
def test_simulate_killed_mid_run_then_rerun_reuses_no_seq_and_sends_no_reading_twice(
        mode: list[str], auth_broker: Broker, store_db: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    svc = IngestService(IngestConfig(auth_broker.url_for("ingest"), store_db, client_id="ingest-seq")).start()
    try:
        first = simulate_cli(home, auth_broker, store_db, *mode)
        deadline = time.monotonic() + 120
        while stored(store_db)[0] < 2_000 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        _, err = first.communicate(timeout=30)
        assert first.returncode == -signal.SIGKILL, err  # it was still running: killed mid-run
        svc.wait_idle(idle_s=0.5)
        n_first = stored(store_db)[0]
        spooled = sum(Spool(p).count() for p in (home / "spool").glob("*.sqlite"))

        second = simulate_cli(home, auth_broker, store_db, *mode)
        out, err = second.communicate(timeout=300)
        assert second.returncode == 0, err
        assert "continued after an earlier run" in out
        svc.wait_idle(idle_s=1.0)
    finally:
        svc.stop()
    n, distinct, reasons = stored(store_db)
    assert n > n_first and n == distinct
    assert reasons == {}  # above all no replayed_seq: nothing was quarantined
    frames, readings = frames_and_readings(store_db)
    assert len(set(readings)) == len(readings), "a reading was sent twice (under another seq)"
    assert len({(d, s) for d, s, _ in frames}) == len(frames)
    for device in {d for d, _, _ in frames}:
        mine = sorted((t, s) for d, s, t in frames if d == device)
        seqs = [s for _, s in mine]
        assert seqs == sorted(seqs), f"{device}: seq order differs from reading order"
        assert all(0 < b - a <= SEQ_BLOCK for a, b in zip(seqs, seqs[1:], strict=False)), f"{device}: {seqs}"
        times = sorted({t for d, _, t in readings if d == device})
        steps = [b - a for a, b in zip(times, times[1:], strict=False)]
        # contiguous minutes, except at most one hole where the second run's frames begin
        # (shorter than a frame: the frame straddling the first run's last reading is skipped)
        assert sum(s != 60_000 for s in steps) <= 1 and max(steps) < 15 * 60_000, device
    print(f"first run stored {n_first} readings, {spooled} frames left in spools; after the rerun {n}")
