"""`wattproof audit run | score`."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("run", help="Run the detectors over stored readings and write findings (idempotent).")
def run(
    db: str = typer.Option(..., "--db", envvar="WATTPROOF_DB", help="PostgreSQL DSN."),
    site: str | None = typer.Option(None, "--site", help="Only this site."),
    every: int | None = typer.Option(None, "--every", min=1, help="Run again every N seconds (service mode)."),
) -> None:
    import time

    from audit.run import run_audit

    while True:
        new = run_audit(db, site=site)
        typer.echo(f"{sum(new.values())} new findings" + (f": {dict(sorted(new.items()))}" if new else ""))
        if every is None:
            return
        time.sleep(every)


@app.command("score", help="Precision, recall and F1 per fault kind against a truth.jsonl.")
def score(
    truth: Path = typer.Option(..., "--truth", exists=True, dir_okay=False, help="truth.jsonl from simulate."),
    db: str = typer.Option(..., "--db", envvar="WATTPROOF_DB", help="PostgreSQL DSN."),
) -> None:
    from audit.score import score as run_score

    typer.echo(f"{'kind':22} {'truth':>5} {'found':>5} {'precision':>9} {'recall':>6} {'F1':>5}")
    for s in run_score(db, truth):
        typer.echo(f"{s.kind:22} {s.truths:5} {s.findings:5} {s.precision:9.2f} {s.recall:6.2f} {s.f1:5.2f}")
