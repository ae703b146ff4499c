"""Commands of capabilities that later issues deliver (reports, dashboard)."""

from __future__ import annotations

import typer

from wattproof.commands._stub import not_implemented


def register(app: typer.Typer) -> None:
    @app.command("report", help="Export a period's report with evidence and proofs (PDF, CSV, JSON, Parquet).")
    def report(out: str = typer.Option(..., "--out", help="Output file.")) -> None:
        not_implemented("report", "regulator reports come with a later issue")

    @app.command("dashboard", help="Open the Streamlit dashboard for sustainability officers.")
    def dashboard() -> None:
        not_implemented("dashboard", "the dashboard comes with a later issue")
