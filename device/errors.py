"""The root of wattproof's exceptions and the words for "a service we need is not there".

Owns: ``WattproofError``, which every exception of every package derives from (as ``psycopg.Error`` is
psycopg's), and ``ServiceUnavailable`` with its kinds (database, broker, ledger): expected failures that the
CLI prints as one line naming what failed and where, never as "unexpected". Also the two helpers every
side uses to name a PostgreSQL database without its password (``dsn_location``, ``redact``).

It lives in ``device/`` because that is the one package every other one already imports (the simulator,
the agent, ingest, the ledger, the audit and the shell) and the base install on a Raspberry Pi has: so
this module imports nothing but the standard library. ``wattproof.errors`` re-exports it for the shell.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit


class WattproofError(Exception):
    """Base of every exception raised by wattproof's packages."""


class ServiceUnavailable(WattproofError):
    """A service wattproof depends on (database, broker, ledger) cannot be reached, or refused us."""


class DatabaseUnavailable(ServiceUnavailable):
    """The PostgreSQL store cannot be reached, or refused the connection."""


class BrokerUnavailable(ServiceUnavailable):
    """The MQTT broker cannot be reached."""


_URL_PASSWORD = re.compile(r"(?<=://)([^:/@?#]*):([^@/?#]*)@")
_KV_PASSWORD = re.compile(r"\b\w*pass\w*\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)  # misspelt too


def _passwords(dsn: str) -> list[str]:
    """The passwords written in a DSN (URL or ``key=value`` form), even a malformed one."""
    found = [m.group(2) for m in _URL_PASSWORD.finditer(dsn)]
    found += [m.group(1).strip("'") for m in _KV_PASSWORD.finditer(dsn)]
    found += [unquote(p) for p in found]
    for m in re.finditer(r"[?&]\w*pass\w*=([^&#]*)", dsn, re.IGNORECASE):
        found += [m.group(1), unquote(m.group(1))]
    return sorted({p for p in found if p}, key=len, reverse=True)


def redact(text: str, dsn: str | None) -> str:
    """``text`` with every password written in ``dsn`` replaced by ``***``."""
    if not dsn:
        return text
    for secret in _passwords(dsn):
        text = text.replace(secret, "***")
    return text


def dsn_location(dsn: str) -> str:
    """``host:port/dbname`` of a PostgreSQL DSN (URL or ``key=value``), never its password; libpq's defaults
    (local socket, 5432) where the DSN leaves them out."""
    host = port = db = ""
    if "://" in dsn:
        try:
            u = urlsplit(dsn)
            host, db = unquote(u.hostname or ""), unquote(u.path.lstrip("/"))
            port = str(u.port or "")
        except ValueError:  # a bad port: show it as written, without the password
            netloc = dsn.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
            host, _, port = netloc.partition(":")
            db = dsn.split("://", 1)[1].partition("/")[2].split("?", 1)[0]
        for key, value in re.findall(r"[?&](host|port|dbname)=([^&#]*)", dsn):
            if key == "host" and not host:
                host = unquote(value)
            elif key == "port" and not port:
                port = unquote(value)
            elif key == "dbname" and not db:
                db = unquote(value)
    else:
        for key, value in re.findall(r"\b(host|hostaddr|port|dbname)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn):
            value = value.strip("'")
            if key in ("host", "hostaddr") and not host:
                host = value
            elif key == "port":
                port = value
            elif key == "dbname":
                db = value
    return location(host, port, db)


def location(host: str, port: str, db: str) -> str:
    """``host:port/db`` with libpq's defaults for what is empty (a socket directory is a host too)."""
    return f"{host or 'localhost'}:{port or '5432'}/{db or '(default database)'}"


def tcp_problem(host: str, port: int, timeout_s: float = 2.0) -> str | None:
    """Why nothing answers at ``host:port`` ("connection refused", "timed out", "name not known"…), or None
    when a TCP connection can be made (then the problem lies above TCP: TLS, MQTT, credentials)."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except socket.gaierror as exc:
        return f"cannot resolve {host!r}: {exc.strerror or exc}"
    except TimeoutError:
        return f"no answer within {timeout_s:g}s"
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
