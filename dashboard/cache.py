"""Cached reads for the pages: ``st.cache_data`` over ``dashboard.queries`` (and ``st.cache_resource``
for the ledger and the trust: the trust reloaded when its file changes, a local ledger opened once per
process and then reading only what is appended to its file).

Owns: the caching policy only — every function here calls one query function with the same
arguments. Results live ``TTL_S`` seconds, so a page re-rendered or revisited within that time does
not touch the database; new readings, findings and batches show after at most that long.
Must not: hold SQL or page code.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import queries as q

TTL_S = 60


@st.cache_data(ttl=TTL_S, show_spinner=False)
def sites(dsn: str) -> pd.DataFrame:
    return q.sites(dsn)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def devices(dsn: str, site: str | None = None) -> pd.DataFrame:
    return q.devices(dsn, site)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def register_stats(dsn: str) -> pd.DataFrame:
    return q.register_stats(dsn)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def ingest_health(dsn: str) -> pd.DataFrame:
    return q.ingest_health(dsn, register_stats(dsn))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def quarantine_by_reason(dsn: str) -> pd.DataFrame:
    return q.quarantine_by_reason(dsn)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def sealing_status(dsn: str) -> pd.DataFrame:
    return q.sealing_status(dsn, register_stats(dsn))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def finding_facets(dsn: str) -> dict[str, Any]:
    return q.finding_facets(dsn)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def findings(dsn: str, kinds: tuple[str, ...] | None, severities: tuple[str, ...] | None,
             site_ids: tuple[str, ...] | None, start: datetime | None, end: datetime | None,
             limit: int = 10_000) -> pd.DataFrame:
    return q.findings(dsn, list(kinds) if kinds else None, list(severities) if severities else None,
                      list(site_ids) if site_ids else None, start, end, limit)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def findings_count(dsn: str, kinds: tuple[str, ...] | None, severities: tuple[str, ...] | None,
                   site_ids: tuple[str, ...] | None, start: datetime | None, end: datetime | None) -> int:
    return q.findings_count(dsn, list(kinds) if kinds else None, list(severities) if severities else None,
                            list(site_ids) if site_ids else None, start, end)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def findings_summary(dsn: str) -> pd.DataFrame:
    return q.findings_summary(dsn)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def readings_between(dsn: str, device: str, start: datetime, end: datetime) -> pd.DataFrame:
    return q.readings_between(dsn, device, start, end)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def frame_text(dsn: str, device: str, seq: int) -> str | None:
    return q.frame_text(dsn, device, seq)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def site_span(dsn: str, site: str) -> tuple[int, int] | None:
    return q.site_span(dsn, site)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def site_hours(dsn: str, site: str, start_ms: int, end_ms: int) -> pd.DataFrame:
    return q.site_hours(dsn, site, start_ms, end_ms)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def pv_against_envelope(dsn: str, site: str, start_ms: int, end_ms: int) -> pd.DataFrame:
    return q.pv_against_envelope(dsn, site, start_ms, end_ms)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def baseline_vs_actual(dsn: str, site: str, start_ms: int, end_ms: int, weather: str, split: datetime,
                       weather_mtime: float) -> tuple[pd.DataFrame, dict[str, Any]]:
    return q.baseline_vs_actual(q.site_hours(dsn, site, start_ms, end_ms), Path(weather), site, split)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def verdict_sets(dsn: str) -> list[dict[str, Any]]:
    return q.verdict_sets(dsn)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def batches(dsn: str, site: str | None, start: datetime | None, end: datetime | None) -> pd.DataFrame:
    return q.batches(dsn, site, start, end)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def batch_leaves(dsn: str, batch_id: str) -> pd.DataFrame:
    return q.batch_leaves(dsn, batch_id)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def batch_window(dsn: str, batch_id: str) -> tuple[datetime, datetime] | None:
    return q.batch_window(dsn, batch_id)


def _mtime(path: Path | None) -> float:
    try:
        return path.stat().st_mtime if path is not None else 0.0
    except OSError:
        return 0.0


@st.cache_resource(show_spinner=False)
def _trust(path: str, mtime: float) -> Any:
    from ledger.trust import load_trust

    return load_trust(Path(path))


def trust(path: Path | None) -> Any:
    """The operator-configured trust (``ledger.trust.Trust``), or None when none is configured."""
    return None if path is None else _trust(str(path), _mtime(path))


@st.cache_resource(show_spinner=False)
def _ledger(kind: str, path: str, trust_path: str | None, mtime: float, trust_mtime: float) -> Any:
    return q.open_ledger(kind, Path(path), trust(Path(trust_path)) if trust_path else None)


class _LocalLedgerWatch:
    """A local ledger opened once per dashboard process, kept in step with its file.

    Opening a year's ledger checks ~220k record signatures (10–20 s): doing that again whenever the file
    changes would make the first Ledger visitor after every hourly seal wait as long. So when the file only
    grew — the same file, and its bytes already checked unchanged (SHA-256 of that prefix, compared) — only
    the appended records are read and checked (chain and signatures, ``LocalLedger.refresh``); any other
    change (rewritten, truncated, replaced) opens and checks it all again, which refuses a tampered file.
    A refusal is not remembered as good: the next call tries again from scratch."""

    def __init__(self, path: Path, trust_path: Path | None) -> None:
        self.dir, self.file, self.trust_path = path, path / "ledger.jsonl", trust_path
        self.lock = threading.Lock()
        self.backend: Any = None
        self.state: tuple[int, int, int, int] | None = None  # (dev, inode, size, mtime_ns) last seen
        self.checked = 0  # bytes of the file the backend has read and checked
        self.digest = hashlib.sha256()  # of those bytes

    def current(self) -> Any:
        with self.lock:
            try:
                st_ = self.file.stat()
                state = (st_.st_dev, st_.st_ino, st_.st_size, st_.st_mtime_ns)
            except OSError:
                state = None
            if self.backend is not None and state is not None and state == self.state:
                return self.backend
            try:
                if (self.backend is not None and state is not None and self.state is not None
                        and state[:2] == self.state[:2] and state[2] >= self.checked and self._prefix_unchanged()):
                    self.backend.refresh()  # reads and checks only what was appended since
                else:
                    self.backend, self.checked, self.digest = None, 0, hashlib.sha256()
                    self.backend = q.open_ledger("local", self.dir, trust(self.trust_path))
                self._extend_digest(self.backend.checked_bytes)
            except BaseException:
                self.backend, self.state = None, None
                raise
            self.state = state
            return self.backend

    def _read(self, start: int, end: int) -> Iterator[bytes]:
        with open(self.file, "rb") as fh:
            fh.seek(start)
            while start < end:
                chunk = fh.read(min(1 << 22, end - start))
                if not chunk:
                    return
                start += len(chunk)
                yield chunk

    def _prefix_unchanged(self) -> bool:
        h = hashlib.sha256()
        for chunk in self._read(0, self.checked):
            h.update(chunk)
        return h.digest() == self.digest.digest()

    def _extend_digest(self, upto: int) -> None:
        for chunk in self._read(self.checked, upto):
            self.digest.update(chunk)
            self.checked += len(chunk)


@st.cache_resource(show_spinner=False, max_entries=4)
def _local_ledger(path: str, trust_path: str | None, trust_mtime: float) -> _LocalLedgerWatch:
    return _LocalLedgerWatch(Path(path), Path(trust_path) if trust_path else None)


def ledger(kind: str, path: Path | None, trust_path: Path | None) -> Any:
    """The ledger opened as a verifier: a local one once per process and kept in step with its file (new
    anchors are seen; see ``_LocalLedgerWatch``), a Fabric profile reopened when its file changes."""
    if path is None:
        return q.open_ledger(kind, None, None)  # raises: no ledger configured
    if kind == "local":
        return _local_ledger(str(path), str(trust_path) if trust_path else None, _mtime(trust_path)).current()
    return _ledger(kind, str(path), str(trust_path) if trust_path else None, _mtime(path), _mtime(trust_path))
