"""The idempotent batch writer: accepted frames and their readings via COPY, rejects to quarantine.

Owns: ``prepare`` (the CPU work of a batch, no database: hashes, zstd, quarantine rows, the readings'
COPY payload) and, in ``StoreWriter.write_prepared``, one transaction per batch —
  1. ensure the month partitions the batch's readings fall in (every month any reading touches);
  2. COPY the frames into a temporary staging table (binary COPY, psycopg 3);
  3. ``INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING`` into frames; of the frames not inserted,
     those stored with *different* bytes go to quarantine (``replayed_seq``) and identical bytes are
     a redelivery and a no-op (asked after the INSERT, so concurrent writers cannot miss a replay);
  4. COPY the readings of exactly the frames that were new straight into ``readings`` (rows built
     column-wise by ``ingest.copybin``) — so a redelivery never stores a reading twice, and readings
     are written once, not staged and copied;
  5. upsert quarantine rows (identical ones add to ``repeats``) and the counts of messages over the
     quarantine's row budget (ingest/quarantine.py); commit. The caller acknowledges after this.
``BatchWrite`` writes a batch so that no single message can stop it (DESIGN invariant 8): a batch the
database refuses for any reason but a lost connection is split in halves until the refused message is
alone; tried ``attempts`` times alone, it is quarantined ``store_failed`` and the rest is stored.
Must not: decide validity (validate.py does) or talk MQTT.
"""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import psycopg
import zstandard

from device.errors import WattproofError
from ingest import reasons
from ingest.copybin import readings_copy
from ingest.quarantine import (
    DroppedCounts,
    QRow,
    QuarantineGate,
    QuarantineLimits,
    merge_rows,
    quarantine_row,
)
from ingest.validate import Accepted, Rejected


@dataclass
class BatchResult:
    frames_accepted: int = 0
    frames_duplicate: int = 0
    readings_written: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)  # refused messages by reason (rows, repeats, dropped)
    dropped: Counter[str] = field(default_factory=Counter)  # of those, only counted (over the row budget)

    def add(self, other: BatchResult) -> None:
        self.frames_accepted += other.frames_accepted
        self.frames_duplicate += other.frames_duplicate
        self.readings_written += other.readings_written
        self.quarantined.update(other.quarantined)
        self.dropped.update(other.dropped)


_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS stage_frames (
    device_id text, seq bigint, sent_ms bigint, frame_sha256 bytea, raw_zstd bytea, n_readings integer,
    min_ts_ms bigint, max_ts_ms bigint
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_quarantine (
    topic text, payload bytea, reason text, detail text, device_id text, seq bigint, payload_sha256 bytea,
    payload_len integer, repeats bigint
) ON COMMIT DELETE ROWS;
"""
_QUARANTINE_COLUMNS = "topic, payload, reason, detail, device_id, seq, payload_sha256, payload_len, repeats"
_UPSERT_QUARANTINE = (
    f"INSERT INTO quarantine AS q ({_QUARANTINE_COLUMNS}) SELECT {_QUARANTINE_COLUMNS} FROM stage_quarantine "
    "ON CONFLICT (reason, payload_sha256, md5(topic)) DO UPDATE "
    "SET repeats = q.repeats + excluded.repeats, last_seen = now()")
_UPSERT_DROPPED = (
    "INSERT INTO quarantine_dropped AS d (minute, cause, scope, reason, messages, bytes) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (minute, cause, scope, reason) DO UPDATE "
    "SET messages = d.messages + excluded.messages, bytes = d.bytes + excluded.bytes")


@dataclass
class Prepared:
    """A batch made ready for the database without touching it (``prepare``): what ``StoreWriter.write_prepared``
    needs, so that a pipeline can prepare the next batch while the current one is being written."""

    frames: list[tuple[Accepted, bytes, bytes]]  # the first frame of each (device, seq): (frame, SHA-256, zstd)
    quarantine: list[QRow]
    duplicates: int  # frames repeated within the batch with the same bytes
    months: set[int]  # year * 12 + month - 1 of the partitions the readings need
    readings: tuple[bytes, int]  # COPY payload and row count for the readings of every frame in ``frames``
    dropped: DroppedCounts = field(default_factory=dict)  # refused messages over the quarantine's row budget

    def units(self) -> int:
        return len(self.frames) + len(self.quarantine) + len(self.dropped)


def frame_months(ts_ms: Sequence[int]) -> set[int]:
    """The months (year * 12 + month - 1, UTC) of the given reading times: every month they touch."""
    lo, hi = (_month(min(ts_ms)), _month(max(ts_ms)))
    if hi - lo <= 1:
        return {lo, hi}  # the usual frame: both ends, and nothing between them
    return {_month(t) for t in ts_ms}


def _month(ts_ms: int) -> int:
    d = datetime.fromtimestamp(ts_ms / 1000, UTC)
    return d.year * 12 + d.month - 1


def prepare(accepted: Sequence[Accepted], rejected: Sequence[Rejected], zstd: zstandard.ZstdCompressor,
            gate: QuarantineGate | None = None, now_ms: int = 0) -> Prepared:
    """Pure CPU work of a batch: hashes, compression, quarantine rows, the readings' COPY payload. With a
    ``gate``, quarantine rows over its budget at ``now_ms`` are only counted.
    ``zstd`` and ``gate`` are not thread-safe: one of each per calling thread."""
    max_payload = (gate.limits if gate else QuarantineLimits()).max_payload_bytes
    quarantine = [quarantine_row(r.topic, r.payload, r.reason, r.detail, r.device, r.seq, max_payload)
                  for r in rejected]
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
                quarantine.append(quarantine_row(
                    a.topic, a.payload, reasons.REPLAYED_SEQ,
                    f"seq {a.frame.seq} of {a.frame.device} arrived twice with different content", *key))
            else:
                duplicates += 1
            continue
        try:
            touched = frame_months([r.ts_ms for r in a.frame.readings])
        except (ValueError, OverflowError, OSError) as err:  # a time no partition can hold: this frame only
            quarantine.append(store_failed_row(a, err))
            continue
        first[key] = digest
        frames.append((a, digest, zstd.compress(a.payload)))
        months |= touched
    try:
        readings = readings_copy((a.frame.device, a.frame.seq, a.frame.readings) for a, _, _ in frames)
    except (ValueError, OverflowError) as err:  # a value COPY cannot carry: those frames go to quarantine alone
        frames, refused = _encodable(frames)
        quarantine += [store_failed_row(a, err) for a in refused]
        readings = readings_copy((a.frame.device, a.frame.seq, a.frame.readings) for a, _, _ in frames)
    dropped: DroppedCounts = {}
    if gate is not None:
        quarantine, dropped = gate.split(quarantine, now_ms)
    return Prepared(frames, quarantine, duplicates, months, readings, dropped)


def _encodable(frames: list[tuple[Accepted, bytes, bytes]]) -> tuple[list[tuple[Accepted, bytes, bytes]], list[Accepted]]:
    ok, refused = [], []
    for f in frames:
        try:
            readings_copy([(f[0].frame.device, f[0].frame.seq, f[0].frame.readings)])
            ok.append(f)
        except (ValueError, OverflowError):
            refused.append(f[0])
    return ok, refused


def store_failed_row(a: Accepted, err: BaseException, attempts: int = 1) -> QRow:
    """The quarantine row of a valid frame the store refused: the whole frame, the error named."""
    what = f"the store refused it {attempts} times" if attempts > 1 else "it cannot be stored"
    return quarantine_row(a.topic, a.payload, reasons.STORE_FAILED, f"{what}: {error_detail(err)}",
                          a.frame.device, a.frame.seq)


def error_detail(err: BaseException) -> str:
    """The database error in one line: its class, SQLSTATE and first line of message."""
    state = getattr(err, "sqlstate", None)
    return f"{type(err).__name__}" + (f" (SQLSTATE {state})" if state else "") + \
        f": {(str(err).strip().splitlines() or [''])[0]}"


def connection_lost(err: BaseException, conn: psycopg.Connection[Any]) -> bool:
    """True when ``err`` means the database went away (retry after reconnecting, never blame the message):
    the connection is closed or broken, or the server said so (SQLSTATE class 08, or 57P01-57P03 shutdown)."""
    if conn.closed or conn.broken:
        return True
    state = getattr(err, "sqlstate", None) or ""
    return state.startswith("08") or state in ("57P01", "57P02", "57P03") or (
        isinstance(err, (psycopg.OperationalError, psycopg.InterfaceError)) and not state)


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

    def prepare(self, accepted: Sequence[Accepted], rejected: Sequence[Rejected], gate: QuarantineGate | None = None,
                now_ms: int = 0) -> Prepared:
        """``prepare`` with this writer's compressor (call it from the writer's own thread)."""
        return prepare(accepted, rejected, self._zstd, gate, now_ms)

    def write(self, accepted: Sequence[Accepted], rejected: Sequence[Rejected], attempts: int = 3) -> BatchResult:
        """Prepare and store a batch; no single message can make it fail (``BatchWrite``)."""
        return BatchWrite(self.prepare(accepted, rejected), attempts).run(self)

    def write_prepared(self, p: Prepared) -> BatchResult:
        """The batch in one transaction: all of it is stored, or nothing (the error is raised)."""
        result = BatchResult(frames_duplicate=p.duplicates)
        quarantine = list(p.quarantine)
        with self.conn.transaction():
            self._ensure_partitions(p.months)
            cur = self.conn.cursor()
            if p.frames:
                with cur.copy("COPY stage_frames FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(["text", "int8", "int8", "bytea", "bytea", "int4", "int8", "int8"])
                    for a, digest, raw_z in p.frames:
                        f = a.frame
                        ts = [r.ts_ms for r in f.readings]
                        cp.write_row((f.device, f.seq, f.sent_ms, digest, raw_z, len(f.readings), min(ts), max(ts)))
                # a new frame joins the sealing queue in the same transaction (docs/proofs.md, "Batch")
                new = cur.execute(
                    "WITH new AS (INSERT INTO frames (device_id, seq, sent_ms, frame_sha256, raw_zstd, n_readings) "
                    "SELECT device_id, seq, sent_ms, frame_sha256, raw_zstd, n_readings FROM stage_frames "
                    "ON CONFLICT (device_id, seq) DO NOTHING RETURNING device_id, seq) "
                    "INSERT INTO unsealed_frames (device_id, seq, min_ts_ms, max_ts_ms) "
                    "SELECT s.device_id, s.seq, s.min_ts_ms, s.max_ts_ms FROM stage_frames s JOIN new USING (device_id, seq) "
                    "RETURNING device_id, seq").fetchall()
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
                    quarantine.append(quarantine_row(
                        a.topic, a.payload, reasons.REPLAYED_SEQ,
                        f"seq {seq} of {device} was already accepted with different content", device, seq))
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
                rows = merge_rows(quarantine)
                with cur.copy(f"COPY stage_quarantine ({_QUARANTINE_COLUMNS}) FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(["text", "bytea", "text", "text", "text", "int8", "bytea", "int4", "int8"])
                    for q in rows:
                        cp.write_row((q.topic, q.payload, q.reason, q.detail, q.device, q.seq, q.payload_sha256,
                                      q.payload_len, q.repeats))
                cur.execute(_UPSERT_QUARANTINE)
                for q in rows:
                    result.quarantined[q.reason] += q.repeats
            if p.dropped:
                cur.executemany(_UPSERT_DROPPED, [
                    (datetime.fromtimestamp(minute_ms / 1000, UTC), cause, scope, reason, n, size)
                    for (minute_ms, cause, scope, reason), (n, size) in sorted(p.dropped.items())])
                for (_, _, _, reason), (n, _) in p.dropped.items():
                    result.quarantined[reason] += n
                    result.dropped[reason] += n
        self._months |= p.months  # only once committed: a rollback undoes the partitions too
        return result

    def _ensure_partitions(self, months: set[int]) -> None:
        for m in sorted(months - self._months):
            at = datetime(m // 12, m % 12 + 1, 1, tzinfo=UTC)
            self.conn.execute("SELECT ensure_readings_partition(%s)", (at,))


class StoreUnavailable(psycopg.OperationalError, WattproofError):
    """Even the quarantine row of a refused message could not be stored: the store itself is not working
    (retried like a lost connection, with backoff, until the service gives up)."""


class BatchWrite:
    """Stores one prepared batch so that no single message can stop it, resumably: ``run`` returns when every
    part is committed, or raises when the connection is lost (or the store works for nothing) — call ``run``
    again with a new writer and it goes on with the parts not yet committed.

    A part the database refuses (not a lost connection) is split in halves; a part of one unit (a frame, a
    quarantine row or a count) that is refused ``attempts`` times alone is replaced by its ``store_failed``
    quarantine row (the whole frame; the error named in the detail); if that too is refused ``attempts``
    times, ``StoreUnavailable``."""

    def __init__(self, prepared: Prepared, attempts: int = 3) -> None:
        self.attempts = max(1, attempts)
        self.result = BatchResult()
        self._todo: deque[tuple[Prepared, int]] = deque([(prepared, 0)])  # (part, refusals of it alone)
        self.refused = 0  # parts refused, for the log

    def run(self, writer: StoreWriter) -> BatchResult:
        while self._todo:
            part, refusals = self._todo[0]
            try:
                done = writer.write_prepared(part)
            except (psycopg.Error, ValueError, OverflowError, UnicodeError) as err:
                if isinstance(err, psycopg.Error) and connection_lost(err, writer.conn):
                    raise
                self.refused += 1
                self._todo.popleft()
                self._todo.extendleft(reversed(self._after_refusal(part, refusals + 1, err)))
                continue
            self._todo.popleft()
            self.result.add(done)
        return self.result

    def _after_refusal(self, part: Prepared, refusals: int, err: BaseException) -> list[tuple[Prepared, int]]:
        if part.duplicates:  # the batch's in-batch duplicates: counted here, carried by no part any more
            self.result.frames_duplicate += part.duplicates
            part = replace(part, duplicates=0)
        if part.units() > 1:
            return [(half, 0) for half in split(part)]
        if refusals < self.attempts:
            return [(part, refusals)]
        if part.frames:
            return [(_only_quarantine([store_failed_row(part.frames[0][0], err, refusals)]), 0)]
        q = part.quarantine[0] if part.quarantine else None
        if q is not None and q.reason != reasons.STORE_FAILED:
            detail = f"its quarantine row ({q.reason}) was refused: {error_detail(err)}"
            row = quarantine_row(q.topic, q.payload, reasons.STORE_FAILED, detail, q.device, q.seq)
            row.payload_sha256, row.payload_len, row.repeats = q.payload_sha256, q.payload_len, q.repeats
            return [(_only_quarantine([row]), 0)]
        raise StoreUnavailable(f"the store refused a quarantine row {refusals} times: {error_detail(err)}")


def _only_quarantine(rows: list[QRow]) -> Prepared:
    return Prepared([], rows, 0, set(), readings_copy([]))


def split(p: Prepared) -> tuple[Prepared, Prepared]:
    """``p`` in two parts of about half its units each (frames, quarantine rows, dropped counts)."""
    units: list[tuple[str, Any]] = ([("f", f) for f in p.frames] + [("q", q) for q in p.quarantine]
                                    + [("d", d) for d in p.dropped.items()])
    mid = len(units) // 2
    return _part(units[:mid]), _part(units[mid:])


def _part(units: list[tuple[str, Any]]) -> Prepared:
    frames = [u for k, u in units if k == "f"]
    months: set[int] = set()
    for a, _, _ in frames:
        months |= frame_months([r.ts_ms for r in a.frame.readings])
    readings = readings_copy((a.frame.device, a.frame.seq, a.frame.readings) for a, _, _ in frames)
    return Prepared(frames, [u for k, u in units if k == "q"], 0, months, readings,
                    dict(u for k, u in units if k == "d"))
