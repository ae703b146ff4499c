"""Test harness: a real Mosquitto and a real PostgreSQL for the session, on 127.0.0.1 ports of
their own, in temp dirs, stopped after. No mocks; a missing binary is a failure, never a skip.

Area fixtures live in ``tests/fixtures_<area>.py`` and are registered here.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from wattproof.embedded import Broker, Postgres, find_mosquitto, find_pg_bindir

pytest_plugins = [
    "tests.fixtures_firmware",
    "tests.fixtures_ingest",
    "tests.fixtures_audit",
    "tests.fixtures_ledger",
    "tests.fixtures_fabric",
]


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A real Mosquitto broker (MQTT 5) for the whole session."""
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed: run `make test` (it installs Debian's mosquitto)")
    broker = Broker(tmp_path_factory.mktemp("mosquitto")).start()
    assert broker.kind == "mosquitto"
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """A real PostgreSQL cluster (initdb into a temp dir, pg_ctl on a free port)."""
    if find_pg_bindir() is None:
        pytest.fail("PostgreSQL server binaries not found: run `make test` (it installs Debian's postgresql)")
    server = Postgres(tmp_path_factory.mktemp("pg") / "data").start()
    yield server
    server.stop()


_db_counter = itertools.count()


@pytest.fixture
def empty_db(pg_server: Postgres) -> Iterator[str]:
    """DSN of a fresh, empty database of its own on the session's server (dropped after)."""
    name = f"t{os.getpid()}_{next(_db_counter)}"
    admin = pg_server.dsn
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = admin.rsplit("/", 1)[0] + "/" + name
    yield dsn
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def wattproof_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated data directory ($WATTPROOF_HOME) for CLI-level tests."""
    home = tmp_path / "home"
    monkeypatch.setenv("WATTPROOF_HOME", str(home))
    return home


@pytest.fixture
def store_db(empty_db: str) -> str:
    """DSN of a fresh database with the full wattproof schema applied (all migrations)."""
    from ingest.schema import upgrade

    upgrade(empty_db)
    return empty_db
