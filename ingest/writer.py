"""The idempotent batch writer: accepted frames and their readings via COPY, rejects to quarantine.

Owns: ``prepare`` (the CPU work of a batch, no database: hashes, zstd, quarantine rows, the readings'
COPY payload) and, in ``StoreWriter.write_prepared``, one transaction per batch —
  1. ensure the month partitions the batch's readings fall in;
  2. COPY the frames into a temporary staging table (binary COPY, psycopg 3);
  3. ``INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING`` into frames; of the frames not inserted,
     those stored with *different* bytes go to quarantine (``replayed_seq``) and identical bytes are
     a redelivery and a no-op (asked after the INSERT, so concurrent writers cannot miss a replay);
  4. COPY the readings of exactly the frames that were new straight into ``readings`` (rows built
     column-wise by ``ingest.copybin``) — so a redelivery never stores a reading twice, and readings
     are written once, not staged and copied;
  5. COPY quarantine rows; commit. The caller acknowledges the MQTT messages only after this.
Must not: decide validity (validate.py does) or talk MQTT.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
import zstandard

from ingest import reasons
from ingest.copybin import readings_copy
from ingest.validate import Accepted, Rejected


@dataclass
class BatchResult:
    frames_accepted: int = 0
    frames_duplicate: int = 0
    readings_written: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)

    def add(self, other: BatchResult) -> None:
        self.frames_accepted += other.frames_accepted
        self.frames_duplicate += other.frames_duplicate
        self.readings_written += other.readings_written
        self.quarantined.update(other.quarantined)


_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS stage_frames (
    device_id text, seq bigint, sent_ms bigint, frame_sha256 bytea, raw_zstd bytea, n_readings integer
) ON COMMIT DELETE ROWS;
"""


@dataclass
class Prepared:
    """A batch made ready for the database without touching it (``prepare``): what ``StoreWriter.write_prepared``
    needs, so that a pipeline can prepare the next batch while the current one is being written."""

    frames: list[tuple[Accepted, bytes, bytes]]  # the first frame of each (device, seq): (frame, SHA-256, zstd)
    quarantine: list[tuple[str, bytes, str, str, str | None, int | None]]
    duplicates: int  # frames repeated within the batch with the same bytes
    months: set[int]  # year * 12 + month - 1 of the partitions the readings need
    readings: tuple[bytes, int]  # COPY payload and row count for the readings of every frame in ``frames``


def prepare(accepted: Sequence[Accepted], rejected: Sequence[Rejected], zstd: zstandard.ZstdCompressor) -> Prepared:
    """Pure CPU work of a batch: hashes, compression, quarantine rows, the readings' COPY payload.
    ``zstd`` is not thread-safe: one compressor per calling thread."""
    quarantine: list[tuple[str, bytes, str, str, str | None, int | None]] = [
        (r.topic, r.payload, r.reason, r.detail, r.device, r.seq) for r in rejected]
    # Within one batch, the first frame of a (device, seq) wins; a different one is a replay.
    first: dict[tuple[str, int], bytes] = {}
    frames: list[tuple[Accepted, bytes, bytes]] = []
    duplicates = 0
    months: set[int] = set()
    for a in accepted:
        digest = hashlib.sha256(a.payload).digest()
        key = (a.frame.device, a.frame.seq)
        if key in first:
            if first[key] != digest:
                quarantine.append((a.topic, a.payload, reasons.REPLAYED_SEQ,
                                   f"seq {a.frame.seq} of {a.frame.device} arrived twice with different content", *key))
            else:
                duplicates += 1
            continue
        first[key] = digest
        frames.append((a, digest, zstd.compress(a.payload)))
        ts = [r.ts_ms for r in a.frame.readings]
        for t in (min(ts), max(ts)):  # a frame spans far less than a month
            d = datetime.fromtimestamp(t / 1000, UTC)
            months.add(d.year * 12 + d.month - 1)
    readings = readings_copy((a.frame.device, a.frame.seq, a.frame.readings) for a, _, _ in frames)
    return Prepared(frames, quarantine, duplicates, months, readings)


class StoreWriter:
    """Writes batches on one connection (reconnect by making a new writer)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        if not conn.autocommit:  # else conn.transaction() nests in an implicit one and never commits
            raise ValueError("StoreWriter needs an autocommit connection (each batch is its own transaction)")
        self.conn = conn
        self._zstd = zstandard.ZstdCompressor(level=3)  # not thread-safe: one per writer
        self._months: set[int] = set()
        with conn.transaction():
            conn.execute(_STAGE)

    def prepare(self, accepted: Sequence[Accepted], rejected: Sequence[Rejected]) -> Prepared:
        """``prepare`` with this writer's compressor (call it from the writer's own thread)."""
        return prepare(accepted, rejected, self._zstd)

    def write(self, accepted: Sequence[Accepted], rejected: Sequence[Rejected]) -> BatchResult:
        return self.write_prepared(self.prepare(accepted, rejected))

    def write_prepared(self, p: Prepared) -> BatchResult:
        result = BatchResult(frames_duplicate=p.duplicates)
        quarantine = list(p.quarantine)
        with self.conn.transaction():
            self._ensure_partitions(p.months)
            cur = self.conn.cursor()
            if p.frames:
                with cur.copy("COPY stage_frames FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(["text", "int8", "int8", "bytea", "bytea", "int4"])
                    for a, digest, raw_z in p.frames:
                        f = a.frame
                        cp.write_row((f.device, f.seq, f.sent_ms, digest, raw_z, len(f.readings)))
                new = cur.execute(
                    "INSERT INTO frames (device_id, seq, sent_ms, frame_sha256, raw_zstd, n_readings) "
                    "SELECT device_id, seq, sent_ms, frame_sha256, raw_zstd, n_readings FROM stage_frames "
                    "ON CONFLICT (device_id, seq) DO NOTHING RETURNING device_id, seq").fetchall()
                by_key = {(a.frame.device, a.frame.seq): a for a, _, _ in p.frames}
                replays: list[tuple[str, int]] = []
                if len(new) < len(p.frames):
                    # Not inserted: stored already. With other bytes → a replay: quarantine it. Asked after
                    # the INSERT, which waited for any concurrent writer of the same key to commit, so a
                    # replay of a frame another writer is storing at this moment is seen too.
                    mine = set(map(tuple, new))
                    replays = [(d, q) for d, q in cur.execute(
                        "SELECT s.device_id, s.seq FROM stage_frames s JOIN frames f ON f.device_id = s.device_id "
                        "AND f.seq = s.seq WHERE f.frame_sha256 <> s.frame_sha256").fetchall() if (d, q) not in mine]
                for device, seq in replays:
                    a = by_key[(device, seq)]
                    quarantine.append((a.topic, a.payload, reasons.REPLAYED_SEQ,
                                       f"seq {seq} of {device} was already accepted with different content",
                                       device, seq))
                # Readings go straight into the table, for exactly the frames that were new (usually all
                # of them: the payload prepared for every frame; a redelivery or replay: built again).
                if len(new) == len(p.frames):
                    data, result.readings_written = p.readings
                else:
                    data, result.readings_written = readings_copy(
                        (device, seq, by_key[(device, seq)].frame.readings) for device, seq in new)
                with cur.copy("COPY readings (device_id, seq, idx, ts, channel, energy_wh, power_w) "
                              "FROM STDIN (FORMAT BINARY)") as cp:
                    cp.write(data)
                result.frames_accepted = len(new)
                result.frames_duplicate += len(p.frames) - len(replays) - result.frames_accepted
            if quarantine:
                with cur.copy("COPY quarantine (topic, payload, reason, detail, device_id, seq) FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(["text", "bytea", "text", "text", "text", "int8"])
                    for q in quarantine:
                        cp.write_row(q)
                result.quarantined.update(q[2] for q in quarantine)
        self._months |= p.months  # only once committed: a rollback undoes the partitions too
        return result

    def _ensure_partitions(self, months: set[int]) -> None:
        for m in months - self._months:
            at = datetime(m // 12, m % 12 + 1, 1, tzinfo=UTC)
            self.conn.execute("SELECT ensure_readings_partition(%s)", (at,))
