"""Quarantine rows: bounded in size, idempotent, and limited in rate (docs/store.md, "Quarantine").

Owns: turning a refused message into the row the store keeps (``QRow``) — an oversized payload of an
unauthenticated message kept as a prefix plus the SHA-256 and length of the whole; topic and detail made
storable (bounded length, no NUL, valid UTF-8) —; the identity ``(reason, payload SHA-256, topic)`` under
which identical junk is counted (``repeats``) instead of stored again; and ``QuarantineGate``, the budget of
new rows per topic and per minute, beyond which messages are only counted (``Prepared.dropped``).
Pure: no I/O (the writer stores rows and counts). One gate per validating thread (not thread-safe).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

from ingest import reasons

# Given only to frames whose Ed25519 signature verified with a registered key (or to such a frame the store
# refused): only a key holder can cause them, so their payload is kept whole (a frame is at most 1 MiB) for
# re-ingesting once the cause is fixed, and they are never rate-limited. Every other reason — anything an
# anonymous client can cause — is bounded.
AUTHENTICATED = frozenset({reasons.CLOCK_SKEW, reasons.READING_WINDOW, reasons.VALUE_OUT_OF_RANGE,
                           reasons.REPLAYED_SEQ, reasons.STORE_FAILED})

TOPIC_MAX_CHARS = 256
DETAIL_MAX_CHARS = 1000
DROPPED_TOTAL_SCOPE = "*"  # ``quarantine_dropped.scope`` of messages over the overall limit


@dataclass(frozen=True)
class QuarantineLimits:
    max_payload_bytes: int = 4096  # unauthenticated payloads above this: prefix + SHA-256 + length
    rows_per_topic_minute: int = 60  # new rows per topic per minute, per ingest process …
    rows_per_minute: int = 1000  # … and over all topics; beyond either, messages are only counted


@dataclass
class QRow:
    """One quarantine row as stored: ``payload`` is the whole payload or its first bytes (``payload_len``
    and ``payload_sha256`` are always of the whole); ``repeats`` identical messages."""

    topic: str
    payload: bytes
    reason: str
    detail: str
    device: str | None
    seq: int | None
    payload_sha256: bytes
    payload_len: int
    repeats: int = 1

    @property
    def key(self) -> tuple[str, bytes, str]:
        return self.reason, self.payload_sha256, self.topic


def storable_text(text: str, limit: int) -> str:
    """``text`` as PostgreSQL can store it (no NUL, no lone surrogate), at most about ``limit`` characters; a
    longer one keeps its start and names the SHA-256 of the whole, so distinct long texts stay distinct."""
    if "\x00" in text or not text.isascii():
        text = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()
    return f"{text[:limit - 90]}…[{len(text)} chars, sha256 {digest}]"


def quarantine_row(topic: str, payload: bytes, reason: str, detail: str, device: str | None, seq: int | None,
                   max_payload_bytes: int = QuarantineLimits.max_payload_bytes) -> QRow:
    kept = payload if reason in AUTHENTICATED or len(payload) <= max_payload_bytes else payload[:max_payload_bytes]
    return QRow(storable_text(topic, TOPIC_MAX_CHARS), kept, reason, storable_text(detail, DETAIL_MAX_CHARS),
                None if device is None else storable_text(device, TOPIC_MAX_CHARS), seq,
                hashlib.sha256(payload).digest(), len(payload))


def merge_rows(rows: list[QRow]) -> list[QRow]:
    """Identical rows (same key) as one with their repeats added, in key order (the order concurrent writers
    lock existing rows in, so they cannot deadlock)."""
    merged: dict[tuple[str, bytes, str], QRow] = {}
    for r in rows:
        if (m := merged.get(r.key)) is None:
            merged[r.key] = QRow(**{**r.__dict__})
        else:
            m.repeats += r.repeats
    return [merged[k] for k in sorted(merged)]


# (minute start in ms, cause "topic_rate" | "total_rate", scope: the topic or "*", reason) → [messages, bytes]
DroppedCounts = dict[tuple[int, str, str, str], list[int]]


@dataclass
class QuarantineGate:
    """Decides which refused messages become rows. Per minute (of the receive clock): a row identical to one
    admitted this minute always passes (it only adds to ``repeats``); otherwise at most
    ``rows_per_topic_minute`` new rows per topic and ``rows_per_minute`` over all topics. Authenticated
    reasons always pass. What does not pass is counted by minute, cause, topic and reason."""

    limits: QuarantineLimits = field(default_factory=QuarantineLimits)
    _minute: int = -1
    _per_topic: Counter[str] = field(default_factory=Counter)
    _total: int = 0
    _seen: set[tuple[str, bytes, str]] = field(default_factory=set)

    def admit(self, row: QRow, now_ms: int) -> str | None:
        """``None`` when ``row`` may be stored, else the cause it is only counted: "topic_rate" or "total_rate"."""
        if row.reason in AUTHENTICATED:
            return None
        minute = now_ms // 60_000
        if minute != self._minute:
            self._minute, self._total = minute, 0
            self._per_topic.clear()
            self._seen.clear()
        if row.key in self._seen:
            return None
        if self._per_topic[row.topic] >= self.limits.rows_per_topic_minute:
            return "topic_rate"
        if self._total >= self.limits.rows_per_minute:
            return "total_rate"
        self._per_topic[row.topic] += 1
        self._total += 1
        self._seen.add(row.key)
        return None

    def split(self, rows: list[QRow], now_ms: int) -> tuple[list[QRow], DroppedCounts]:
        """The rows to store, and the counts of those that may not be."""
        kept: list[QRow] = []
        dropped: DroppedCounts = {}
        minute_ms = now_ms // 60_000 * 60_000
        for r in rows:
            cause = self.admit(r, now_ms)
            if cause is None:
                kept.append(r)
                continue
            scope = r.topic if cause == "topic_rate" else DROPPED_TOTAL_SCOPE
            n = dropped.setdefault((minute_ms, cause, scope, r.reason), [0, 0])
            n[0] += r.repeats
            n[1] += r.payload_len * r.repeats
        return kept, dropped
