"""Cached reads for the pages: ``st.cache_data`` over ``dashboard.queries`` (and ``st.cache_resource``
for the ledger and the trust, reopened when their files change).

Owns: the caching policy only — every function here calls one query function with the same
arguments. Results live ``TTL_S`` seconds, so a page re-rendered or revisited within that time does
not touch the database; new readings, findings and batches show after at most that long.
Must not: hold SQL or page code.
"""

from __future__ import annotations

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
             site_ids: tuple[str, ...] | None, start: datetime | None, end: datetime | None) -> pd.DataFrame:
    return q.findings(dsn, list(kinds) if kinds else None, list(severities) if severities else None,
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


def ledger(kind: str, path: Path | None, trust_path: Path | None) -> Any:
    """The ledger opened as a verifier (reopened when its file changes: new anchors are seen)."""
    if path is None:
        return q.open_ledger(kind, None, None)  # raises: no ledger configured
    watched = path / "ledger.jsonl" if kind == "local" else path
    return _ledger(kind, str(path), str(trust_path) if trust_path else None, _mtime(watched), _mtime(trust_path))
