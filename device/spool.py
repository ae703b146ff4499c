"""The device's offline spool: frames waiting for the broker's acknowledgement, in SQLite.

Owns: durable FIFO storage of (topic, payload) rows and the device's sequence-number state.
Every frame is written here before it is handed to MQTT and deleted only after PUBACK, so a
frame made while the broker is unreachable, or in flight when the process dies, is sent later,
in order. SQLite in WAL mode with ``synchronous=NORMAL``: a committed row survives a crash of the
process (the case the spool exists for); ``durable=True`` selects ``FULL`` for power loss too.

Sequence numbers (DESIGN: a device never reuses one). ``put_many(items, seq=s)`` records, in the
same transaction as the rows, that ``s`` is used; when ``s`` reaches the reserved mark
``next_seq`` the mark moves to ``s + SEQ_BLOCK`` and that transaction is committed with
``synchronous=FULL`` (fsync), whatever ``durable`` says. So before any frame leaves the process its
seq is below a ``next_seq`` that is on disk, and a device restarted after a kill (or a power loss)
at any instant starts at ``next_seq``: at worst a gap of under ``SEQ_BLOCK`` numbers, never a reuse.
A clean ``close()`` gives the unused rest of the block back (no gap after a clean stop). The spool also keeps
``last_ts_ms``, the latest reading time spooled, so a restarted simulator can continue after it.
Must not: talk MQTT (publisher.py does).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

SEQ_BLOCK = 256  # seqs reserved per fsync: a crash leaves a gap of fewer than this many


class Spool:
    def __init__(self, path: str | Path, durable: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._sync = "FULL" if durable else "NORMAL"
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={self._sync}")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        self._next_seq = self._opened_next_seq = self.get_int("next_seq", 1)
        self.reservations = 0  # fsync'ed reservations made by this process (for tests and benchmarks)

    def put_many(self, items: Sequence[tuple[str, bytes]], seq: int | None = None,
                 last_ts_ms: int | None = None) -> list[int]:
        """Append rows in one transaction; return their ids (increasing).

        ``seq``: the highest sequence number among ``items``; it is recorded as used and, if it is
        not yet below the durable ``next_seq`` mark, a new block is reserved and fsync'ed in the same
        commit. ``last_ts_ms``: the latest reading time among ``items``."""
        with self._lock:
            reserve = seq is not None and seq >= self._next_seq
            if reserve and self._sync != "FULL":
                self._db.execute("PRAGMA synchronous=FULL")
            try:
                cur = self._db.cursor()
                cur.execute("BEGIN")
                ids = []
                for topic, payload in items:
                    cur.execute("INSERT INTO spool (topic, payload) VALUES (?, ?)", (topic, payload))
                    ids.append(int(cur.lastrowid or 0))
                if seq is not None:
                    self._raise(cur, "seq_used", seq)
                if reserve:
                    assert seq is not None
                    self._set(cur, "next_seq", seq + SEQ_BLOCK)
                if last_ts_ms is not None:
                    self._raise(cur, "last_ts_ms", last_ts_ms)
                cur.execute("COMMIT")
            finally:
                if reserve and self._sync != "FULL":
                    self._db.execute(f"PRAGMA synchronous={self._sync}")
            if reserve:
                assert seq is not None
                self._next_seq = seq + SEQ_BLOCK
                self.reservations += 1
            return ids

    @staticmethod
    def _set(cur: sqlite3.Cursor, key: str, value: int) -> None:
        cur.execute("INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value))

    @staticmethod
    def _raise(cur: sqlite3.Cursor, key: str, value: int) -> None:
        cur.execute("INSERT INTO state (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)", (key, value))

    def after(self, last_id: int, limit: int) -> list[tuple[int, str, bytes]]:
        """Pending rows with id > ``last_id``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload FROM spool WHERE id > ? ORDER BY id LIMIT ?", (last_id, limit)
            ).fetchall()
        return [(int(i), str(t), bytes(p)) for i, t, p in rows]

    def delete(self, ids: Iterable[int]) -> None:
        batch = [(i,) for i in ids]
        if not batch:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM spool WHERE id = ?", batch)
            self._db.execute("COMMIT")

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM spool").fetchone()[0])

    def get_int(self, key: str, default: int) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else default

    def set_int(self, key: str, value: int) -> None:
        with self._lock:
            self._db.execute("INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                             (key, value))
            if key == "next_seq":
                self._next_seq = value

    def close(self) -> None:
        """Close; first give back the unused rest of this process's block: ``next_seq`` becomes the
        highest seq used + 1, fsync'ed, but never less than it was at open (after a power loss the
        ``seq_used`` written before the last reservation may be stale; the mark read at open is not)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key = 'seq_used'").fetchone()
            settled = max(int(row[0]) + 1, self._opened_next_seq) if row is not None else self._next_seq
            if settled < self._next_seq:
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.execute("UPDATE state SET value = ? WHERE key = 'next_seq'", (settled,))
            self._db.close()
