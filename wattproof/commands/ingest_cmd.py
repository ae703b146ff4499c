"""`wattproof ingest` command(s)."""

from __future__ import annotations

import typer

from wattproof.commands._stub import not_implemented


def register(app: typer.Typer) -> None:
    @app.command("ingest", help="(being built)")
    def _cmd() -> None:
        not_implemented("ingest", "in progress")
