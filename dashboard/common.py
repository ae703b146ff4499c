"""What every page shares: the settings (config file and DSN from the environment the command set),
the role guard, and small formatting helpers.

Owns: ``settings()`` (``WATTPROOF_DASHBOARD_CONFIG``, ``WATTPROOF_DB``: set by ``wattproof dashboard``)
and ``guard(page)``, which each page calls first: it refuses — with a message naming the page and the
role — anyone whose role may not see the page (``dashboard.auth.ALLOWED``), whatever URL they typed.
Must not: query the store (``dashboard/cache.py``, ``dashboard/queries.py`` do).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import streamlit as st

from dashboard.auth import ALLOWED, DashboardConfig, DashboardConfigError, allowed, load_config

ENV_CONFIG = "WATTPROOF_DASHBOARD_CONFIG"
ENV_DB = "WATTPROOF_DB"
TITLES = {"overview": "Overview", "site": "Site", "findings": "Findings", "claims": "Claims", "ledger": "Ledger",
          "reports": "Reports"}
ICONS = {"overview": ":material/dashboard:", "site": ":material/bolt:", "findings": ":material/flag:",
         "claims": ":material/fact_check:", "ledger": ":material/link:", "reports": ":material/description:"}
VERDICT_COLOURS = {"SUBSTANTIATED": "green", "OVERSTATED": "red", "UNVERIFIABLE": "orange"}


@dataclass(frozen=True)
class Settings:
    dsn: str
    cfg: DashboardConfig


@st.cache_resource(show_spinner=False)
def _load(path: str, mtime: float) -> DashboardConfig:
    return load_config(Path(path))


def settings() -> Settings:
    """The dashboard's settings, or a stop with one clear message when they are missing or wrong."""
    path = os.environ.get(ENV_CONFIG)
    if not path:
        st.error(f"no dashboard config: start the dashboard with `wattproof dashboard --config FILE` "
                 f"(or set {ENV_CONFIG})")
        st.stop()
    try:
        cfg = _load(path, Path(path).stat().st_mtime)
    except (OSError, DashboardConfigError) as exc:
        st.error(f"dashboard config: {exc}")
        st.stop()
    dsn = os.environ.get(ENV_DB) or cfg.db
    if not dsn:
        st.error("no database: pass `--db DSN` or set `db` in the dashboard config")
        st.stop()
    return Settings(dsn, cfg)


def role() -> str | None:
    if not st.session_state.get("authentication_status"):
        return None
    roles = st.session_state.get("roles") or []
    return roles[0] if roles else None


def guard(page: str) -> Settings:
    """Settings for a page the logged-in role may see; otherwise the refusal, and the page stops."""
    s = settings()
    r = role()
    if r is None:
        st.error("Not logged in: open the dashboard's start page and log in.")
        st.stop()
    if not allowed(r, page):
        may = ", ".join(TITLES[p] for p in ALLOWED.get(r, ()) if p in TITLES) or "nothing"
        st.error(f"Refused: the {TITLES.get(page, page)} page is not available to the role {r}. "
                 f"A {r} may see: {may}.")
        st.stop()
    return s


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def utc(t_ms: int) -> datetime:
    return datetime.fromtimestamp(t_ms / 1000, UTC)


def verdict_badge(verdict: str) -> str:
    return f":{VERDICT_COLOURS.get(verdict, 'gray')}[**{verdict}**]"
