"""`wattproof audit run | score` (audit: issue 5, not built yet)."""

from __future__ import annotations

from pathlib import Path

import typer

from wattproof.commands._stub import not_implemented

app = typer.Typer(no_args_is_help=True)
ISSUE = "the audit comes with the audit issue"


@app.command("run", help="Run the detectors over stored readings and write findings (incremental, idempotent).")
def run() -> None:
    not_implemented("audit run", ISSUE)


@app.command("score", help="Precision, recall and F1 per fault kind against a truth.jsonl.")
def score(truth: Path = typer.Option(..., "--truth")) -> None:
    not_implemented("audit score", ISSUE)
