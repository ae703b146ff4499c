"""The store schema: yoyo migrations in ``ingest/migrations/``, applied by ``wattproof db upgrade``.

Owns: applying and listing migrations. Every package's tables live in that one folder
(ingest 00xx, ledger 01xx, audit 02xx), so one upgrade brings a database to the current schema.
"""

from __future__ import annotations

from importlib import resources

from yoyo import get_backend, read_migrations


def _yoyo_url(dsn: str) -> str:
    if dsn.startswith("postgresql://") or dsn.startswith("postgres://"):
        return "postgresql+psycopg://" + dsn.split("://", 1)[1]
    return dsn


def migrations_dir() -> str:
    return str(resources.files("ingest") / "migrations")


def upgrade(dsn: str) -> list[str]:
    """Apply pending migrations; return the ids applied (empty when up to date)."""
    backend = get_backend(_yoyo_url(dsn))
    migrations = read_migrations(migrations_dir())
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return [m.id for m in pending]


def status(dsn: str) -> list[tuple[str, bool]]:
    """Every known migration id with whether it is applied."""
    backend = get_backend(_yoyo_url(dsn))
    migrations = read_migrations(migrations_dir())
    applied = {m.id for m in backend.to_rollback(migrations)}
    return [(m.id, m.id in applied) for m in migrations]
