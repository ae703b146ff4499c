"""Synchronous ingest without MQTT: the same validation and writer as the service, in-process.

Owns: ``ingest_payloads(dsn, items, now_ms=None) -> IngestResult`` — validate each
``(topic, payload)`` against the database registry and write accepted frames / quarantine rows
in batches, as the service does: bounded quarantine (``QuarantineGate``) and no single message able to
stop a batch (``BatchWrite``). Used by tests, benchmarks' ceilings and the demo's cross-checks; the MQTT
service (service.py) wraps exactly these steps.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import psycopg

from ingest.quarantine import QuarantineGate, QuarantineLimits
from ingest.registry import load_devices
from ingest.validate import Limits, split_verdicts, validate_batch
from ingest.writer import BatchResult, BatchWrite, StoreWriter

IngestResult = BatchResult


def ingest_payloads(dsn: str, items: Iterable[tuple[str, bytes]], now_ms: int | None = None,
                    batch_frames: int = 500, limits: Limits = Limits(),
                    quarantine: QuarantineLimits = QuarantineLimits(), attempts: int = 3) -> IngestResult:
    total = BatchResult()
    gate = QuarantineGate(quarantine)
    with psycopg.connect(dsn, autocommit=True) as conn:
        registry = load_devices(conn)
        writer = StoreWriter(conn)
        chunk: list[tuple[str, bytes]] = []
        for item in items:
            chunk.append(item)
            if len(chunk) >= batch_frames:
                total.add(_write_chunk(writer, chunk, registry, now_ms, limits, gate, attempts))
                chunk = []
        if chunk:
            total.add(_write_chunk(writer, chunk, registry, now_ms, limits, gate, attempts))
    return total


def _write_chunk(writer: StoreWriter, chunk: list[tuple[str, bytes]], registry: dict[str, Any], now_ms: int | None,
                 limits: Limits, gate: QuarantineGate, attempts: int) -> BatchResult:
    now = now_ms or int(time.time() * 1000)
    verdicts = validate_batch(chunk, registry, now, limits)
    prepared = writer.prepare(*split_verdicts(verdicts), gate, now)
    return BatchWrite(prepared, attempts).run(writer)


def counts(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Stored readings and frames, and refused messages by reason (quarantine rows with their repeats, and
    the messages only counted because the quarantine's row budget was spent)."""
    readings = conn.execute("SELECT count(*) FROM readings").fetchone()
    frames = conn.execute("SELECT count(*) FROM frames").fetchone()
    by_reason = dict(conn.execute(
        "SELECT reason, sum(n) FROM (SELECT reason, repeats AS n FROM quarantine "
        "UNION ALL SELECT reason, messages FROM quarantine_dropped) q GROUP BY reason ORDER BY reason").fetchall())
    return {"readings": int(readings[0]) if readings else 0, "frames": int(frames[0]) if frames else 0,
            "quarantine": {str(k): int(v) for k, v in by_reason.items()}}
