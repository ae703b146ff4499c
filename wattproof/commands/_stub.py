"""Shared helper for command groups whose capability is not built yet."""

from __future__ import annotations

import typer


def not_implemented(what: str, issue: str) -> None:
    typer.echo(f"{what}: not implemented yet ({issue})", err=True)
    raise typer.Exit(2)
