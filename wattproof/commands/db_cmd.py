"""`wattproof db ...`: apply and inspect the store's schema migrations."""

from __future__ import annotations

import json

import typer

from ingest import schema

app = typer.Typer(no_args_is_help=True)


def _checked_url(dsn: str) -> str:
    """``dsn`` as the URL yoyo needs, after one real connection: an unreachable database, a bad password or a
    DSN libpq cannot read fails here with psycopg's error (one clear line, wattproof/errors.py)."""
    from urllib.parse import quote

    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    psycopg.connect(dsn, connect_timeout=10).close()
    if "://" in dsn:
        return dsn
    p = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    auth = quote(p.pop("user", ""), safe="") + (":" + quote(p.pop("password"), safe="") if "password" in p else "")
    host = p.pop("host", "")
    netloc = (auth + "@" if auth else "") + ("" if host.startswith("/") else host) + (
        ":" + p.pop("port") if "port" in p else "")
    if host.startswith("/"):
        p["host"] = host
    query = "&".join(f"{k}={quote(v, safe='/')}" for k, v in p.items() if k != "dbname")
    return f"postgresql://{netloc}/{quote(p.get('dbname', ''), safe='')}" + (f"?{query}" if query else "")


@app.command("upgrade")
def upgrade(db: str = typer.Option(..., "--db", envvar="WATTPROOF_DB", help="PostgreSQL DSN."),
            json_out: bool = typer.Option(False, "--json", help="Machine-readable: the migrations applied.")) -> None:
    """Apply pending migrations (idempotent)."""
    applied = schema.upgrade(_checked_url(db))
    if json_out:
        typer.echo(json.dumps({"applied": applied}))
    else:
        typer.echo(f"applied {len(applied)} migration(s): {', '.join(applied)}" if applied else "schema is up to date")


@app.command("status")
def status(db: str = typer.Option(..., "--db", envvar="WATTPROOF_DB", help="PostgreSQL DSN."),
           json_out: bool = typer.Option(False, "--json", help="Machine-readable: every migration, applied or not.")
           ) -> None:
    """List migrations and whether each is applied."""
    rows = schema.status(_checked_url(db))
    if json_out:
        typer.echo(json.dumps({"migrations": [{"id": mid, "applied": applied} for mid, applied in rows],
                               "pending": sum(not applied for _, applied in rows)}))
        return
    for mid, applied in rows:
        typer.echo(f"{'applied ' if applied else 'pending '} {mid}")
