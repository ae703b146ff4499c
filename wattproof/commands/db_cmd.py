"""`wattproof db ...`: apply and inspect the store's schema migrations."""

from __future__ import annotations

import typer

from ingest import schema

app = typer.Typer(no_args_is_help=True)


@app.command("upgrade")
def upgrade(db: str = typer.Option(..., "--db", envvar="WATTPROOF_DB", help="PostgreSQL DSN.")) -> None:
    """Apply pending migrations (idempotent)."""
    applied = schema.upgrade(db)
    typer.echo(f"applied {len(applied)} migration(s): {', '.join(applied)}" if applied else "schema is up to date")


@app.command("status")
def status(db: str = typer.Option(..., "--db", envvar="WATTPROOF_DB", help="PostgreSQL DSN.")) -> None:
    """List migrations and whether each is applied."""
    for mid, applied in schema.status(db):
        typer.echo(f"{'applied ' if applied else 'pending '} {mid}")
