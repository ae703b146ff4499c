"""`wattproof device ...` commands."""

from __future__ import annotations

import typer

from wattproof.commands._stub import not_implemented

app = typer.Typer(no_args_is_help=True)


@app.command("status", help="(being built)")
def _status() -> None:
    not_implemented("device", "in progress")
