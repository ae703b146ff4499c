"""The device's offline spool: frames waiting for the broker's acknowledgement, in SQLite.

Owns: durable FIFO storage of (topic, payload) rows and the device's persisted next ``seq``.
Every frame is written here before it is handed to MQTT and deleted only after PUBACK, so a
frame made while the broker is unreachable, or in flight when the process dies, is sent later,
in order. SQLite in WAL mode with ``synchronous=NORMAL``: a committed row survives a crash of the
process (the case the spool exists for); ``durable=True`` selects ``FULL`` for power loss too.
Must not: talk MQTT (publisher.py does).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path


class Spool:
    def __init__(self, path: str | Path, durable: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> list[int]:
        """Append rows in one transaction; return their ids (increasing)."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN")
            ids = []
            for topic, payload in items:
                cur.execute("INSERT INTO spool (topic, payload) VALUES (?, ?)", (topic, payload))
                ids.append(int(cur.lastrowid or 0))
            cur.execute("COMMIT")
            return ids

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

    def close(self) -> None:
        with self._lock:
            self._db.close()
