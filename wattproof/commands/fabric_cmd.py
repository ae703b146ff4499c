"""`wattproof fabric up | down | status` (Fabric backend: issue 7, not built yet)."""

from __future__ import annotations

import typer

from wattproof.commands._stub import not_implemented

app = typer.Typer(no_args_is_help=True)
ISSUE = "the Fabric network comes with the Fabric-backend issue"


@app.command("up", help="Start a local two-organisation Fabric network (no Docker).")
def up() -> None:
    not_implemented("fabric up", ISSUE)


@app.command("down", help="Stop the local Fabric network.")
def down() -> None:
    not_implemented("fabric down", ISSUE)


@app.command("status", help="Show the local Fabric network's processes and channel height.")
def status() -> None:
    not_implemented("fabric status", ISSUE)
