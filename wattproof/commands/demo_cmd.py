"""`wattproof demo`: the whole path on embedded services."""

from __future__ import annotations

from pathlib import Path

import typer

from firmware_sim.scenarios import bundled_path


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        scenario: Path = typer.Option(bundled_path("greenwash.yaml"), "--scenario", help="Scenario YAML to simulate."),
        ledger: str = typer.Option("local", "--ledger", help="local | fabric"),
        broker_kind: str | None = typer.Option(None, "--broker-kind", help="Force 'amqtt' (default: mosquitto if installed)."),
        no_dashboard: bool = typer.Option(False, "--no-dashboard", help="End after the pipeline (scripts, CI): do not "
                                          "serve the dashboard."),
    ) -> None:
        """Simulate a fleet into an embedded broker and database, ingest, audit, anchor, verify, check the claims."""
        from wattproof.demo import run_demo

        if ledger not in ("local", "fabric"):
            raise typer.BadParameter("--ledger must be 'local' or 'fabric'")
        finale = None
        if not no_dashboard:
            try:
                from dashboard.demo import serve_demo as finale
            except ImportError as exc:  # installed without the [dashboard] extra
                typer.echo(f"dashboard: not installed ({exc.name}); pip install 'wattproof[dashboard]'", err=True)
        result = run_demo(scenario, ledger=ledger, broker_kind=broker_kind, finale=finale)
        claims_ok = result.claims is None or (result.claims.as_expected and result.claims.evidence_ok
                                               and result.report_ok)
        if not (result.matches_truth and result.verified and result.tamper_named and result.audit_f1_min >= 0.95
                and claims_ok):
            raise typer.Exit(1)
