"""The shell's error contract: every failure becomes one line saying what failed, where, and what to do.

Owns: ``one_line(exc)``, used by ``wattproof.cli.main`` for whatever a command raises. Our exceptions
(``WattproofError``, the root every package's errors derive from: ``device/errors.py``, re-exported here)
are expected and printed as they are. So are the failures of the services we depend on, which arrive as
the client library's exceptions: psycopg's at connect ("database at host:port/db unreachable: …", never
the password), a DSN libpq cannot parse, a store without our schema, yoyo's refusal of a DSN, an OS error
(a path, a socket). Anything else is a bug: the line says so and asks for ``--debug``.
"""

from __future__ import annotations

import os
import sys

from device.errors import (
    BrokerUnavailable,
    DatabaseUnavailable,
    ServiceUnavailable,
    WattproofError,
    dsn_location,
    location,
    redact,
)

__all__ = ["BrokerUnavailable", "DatabaseUnavailable", "ServiceUnavailable", "WattproofError", "one_line",
           "database_failure", "given_dsn"]

OUR_PACKAGES = {"wattproof", "device", "firmware_sim", "ingest", "audit", "ledger", "dashboard"}
UNEXPECTED = " (unexpected: rerun with --debug and report it)"


def given_dsn(argv: list[str] | None = None) -> str | None:
    """The DSN the command was given: ``--db`` on the command line, else ``$WATTPROOF_DB``."""
    argv = sys.argv if argv is None else argv
    for i, arg in enumerate(argv):
        if arg == "--db" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--db="):
            return arg[len("--db="):]
    return os.environ.get("WATTPROOF_DB")


def _flat(text: str) -> str:
    """One line: libpq's multi-line messages joined, trailing hints kept."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def database_failure(exc: BaseException, dsn: str | None) -> str | None:
    """The line for a psycopg (or yoyo) error, or None when ``exc`` is not a database failure we expect."""
    try:
        import psycopg
    except ImportError:  # the base install: no database client, so no database error either
        return None
    text = _flat(redact(str(exc), dsn))
    if isinstance(exc, psycopg.OperationalError):
        pg = getattr(exc, "pgconn", None)
        if pg is not None:
            def part(raw: bytes | None) -> str:
                return raw.decode(errors="replace") if raw else ""
            where = location(part(pg.host), part(pg.port), part(pg.db))
        else:
            where = dsn_location(dsn) if dsn else "(no DSN given)"
        reason = text.removeprefix("connection failed: ").removeprefix("connection is bad: ")
        if "for connection option" in reason:  # libpq read the DSN but not one of its values (a port "abc")
            return f"database DSN (--db or $WATTPROOF_DB) is not valid: {reason}"
        if exc.sqlstate is None and (pg is not None or "connect" in text or "resolve" in text):
            return f"database at {where} unreachable: {reason}"
        return f"database at {where} failed: {reason}"
    if isinstance(exc, psycopg.ProgrammingError) and exc.sqlstate is None and (
            "connection" in text or "conninfo" in text or "URI" in text):
        return f"database DSN (--db or $WATTPROOF_DB) is not valid: {text} (expected e.g. postgresql://user@host:5432/db)"
    if isinstance(exc, psycopg.errors.UndefinedTable) or isinstance(exc, psycopg.errors.UndefinedFunction):
        where = dsn_location(dsn) if dsn else "the database"
        return f"database at {where} lacks wattproof's schema ({text}): run `wattproof db upgrade --db DSN`"
    if type(exc).__module__.startswith("yoyo") and "URI" in type(exc).__name__ or "connection URI" in text:
        return f"database DSN (--db or $WATTPROOF_DB) is not valid: {text} (expected e.g. postgresql://user@host:5432/db)"
    return None


def one_line(exc: BaseException, argv: list[str] | None = None) -> tuple[str, bool]:
    """``(message, expected)``: the one line to print after ``error: ``; ``expected`` False for a bug."""
    dsn = given_dsn(argv)
    db = database_failure(exc, dsn)
    if db is not None:
        return db, True
    message = _flat(redact(str(exc), dsn)) or type(exc).__name__
    if isinstance(exc, WattproofError | OSError):
        return message, True
    ours = type(exc).__module__.split(".")[0] in OUR_PACKAGES
    return message, ours
