"""A scratch database for tests that build a whole store of their own (a scenario, a module's shared store)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg


@contextmanager
def scratch_db(pg_server: Any, name: str) -> Iterator[str]:
    """DSN of a fresh database ``name`` on the session's PostgreSQL with every migration applied; dropped after."""
    from ingest.schema import upgrade

    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = pg_server.dsn.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade(dsn)
        yield dsn
    finally:
        with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
