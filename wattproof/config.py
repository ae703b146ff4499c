"""Configuration of the thin shell: where wattproof keeps its state, and the embedded defaults.

Everything lives under one data directory: ``$WATTPROOF_HOME`` when set, otherwise the per-user
data dir (``~/.local/share/wattproof`` on Linux). Layout::

    keys/<site>/<device>.key     Ed25519 private keys (PKCS#8 PEM, mode 0600)
    registry.json                device registry (file form, before the database has it)
    pg/                          embedded PostgreSQL cluster (reused across runs)
    broker/                      embedded broker's persistence
    spool/                       device offline spools (SQLite)
    ledger/                      embedded local ledger file and operator key
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def data_dir(create: bool = True) -> Path:
    """The data directory; ``create=False`` (read-only commands): only its path, nothing made."""
    env = os.environ.get("WATTPROOF_HOME")
    path = Path(env) if env else Path(platformdirs.user_data_dir("wattproof", appauthor=False))
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def keys_dir() -> Path:
    return data_dir() / "keys"


def registry_path() -> Path:
    return data_dir() / "registry.json"
