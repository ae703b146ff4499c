"""`wattproof simulate` command(s)."""

from __future__ import annotations

import typer

from wattproof.commands._stub import not_implemented


def register(app: typer.Typer) -> None:
    @app.command("simulate", help="(being built)")
    def _cmd() -> None:
        not_implemented("simulate", "in progress")
