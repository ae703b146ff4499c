"""The ``wattproof`` command line: one typer app, one module per command group.

Errors raised by wattproof's packages become one clear line on stderr and exit status 1;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys

import typer

from wattproof.commands import (
    audit_cmd,
    claims_cmd,
    dashboard_cmd,
    db_cmd,
    demo_cmd,
    device_cmd,
    fabric_cmd,
    ingest_cmd,
    ledger_cmd,
    report_cmd,
    simulate_cmd,
)

app = typer.Typer(
    name="wattproof",
    help="Tamper-evident energy data: signed meter readings, audit findings, ledger-anchored proofs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)

_state = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
) -> None:
    _state["debug"] = debug


demo_cmd.register(app)
app.add_typer(device_cmd.app, name="device", help="Provision device identities (key pair + registry record).")
simulate_cmd.register(app)
ingest_cmd.register(app)
app.add_typer(db_cmd.app, name="db", help="Database schema: upgrade, status.")
app.add_typer(audit_cmd.app, name="audit", help="Run detectors over stored readings; score against truth.")
ledger_cmd.register(app)
app.add_typer(fabric_cmd.app, name="fabric", help="Start, stop and inspect a local Hyperledger Fabric network.")
app.add_typer(claims_cmd.app, name="claims", help="Verdicts on green claims from anchored meter data; offline evidence.")
report_cmd.register(app)  # docs/reports.md
dashboard_cmd.register(app)  # docs/dashboard.md

OUR_PACKAGES = {"wattproof", "device", "firmware_sim", "ingest", "audit", "ledger", "dashboard"}


def main() -> None:
    try:
        app()  # standalone: typer reports usage errors itself (exit 2) and exits with the command's status
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # one line for a person, the traceback only with --debug
        if _state["debug"] or "--debug" in sys.argv:
            raise
        ours = type(exc).__module__.split(".")[0] in OUR_PACKAGES
        hint = "" if ours or isinstance(exc, OSError) else " (unexpected: rerun with --debug and report it)"
        typer.echo(f"error: {exc}{hint}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
