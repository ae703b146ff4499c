"""The ``wattproof`` command line: one typer app, one module per command group.

Owns: the table of commands (``COMMANDS``) and their one-line help for ``wattproof --help``. A command's
module is imported only when that command runs (or shows its own ``--help``), so the base install (the
device side and this shell) lists every command and runs ``device`` or ``agent`` without the servers'
dependencies; a command whose extra is not installed says which one to install.

Errors raised by wattproof's packages become one clear line on stderr and exit status 1;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

# name → (module in wattproof.commands, the extra it needs beyond the base install, its listing line: the
# first sentence of its help). A module either has ``register(app)`` or an ``app`` registered under the name.
COMMANDS: dict[str, tuple[str, str | None, str]] = {
    "demo": ("demo_cmd", "demo", "Simulate a fleet into an embedded broker and database, ingest, audit, anchor, verify, "
             "check the claims."),
    "device": ("device_cmd", None, "Provision device identities (key pair + registry record)."),
    "agent": ("agent_cmd", "agent", "Read a DSMR P1, Modbus or S0 meter, sign frames at the source and publish them "
              "(spooled while offline)."),  # docs/agent.md
    "simulate": ("simulate_cmd", "server", "Simulate sites (main meter, sub-meters, PV) and publish signed frames over "
                 "MQTT 5."),
    "ingest": ("ingest_cmd", "server", "Subscribe to every device's readings (shared subscription), validate, store, "
               "ack after commit."),
    "db": ("db_cmd", "server", "Database schema: upgrade, status."),
    "audit": ("audit_cmd", "server", "Run detectors over stored readings; score against truth."),
    "anchor": ("ledger_cmd", "server", "Seal every complete window per site into a Merkle batch and anchor its header."),
    "verify": ("ledger_cmd", "server", "Replay every sealed batch from the store against the ledger and every stored "
               "reading against its signed frame; name each tampered reading, frame and batch."),
    "trust": ("ledger_cmd", "server", "Trust files: the keys and roots a verifier pins."),
    "proof": ("ledger_cmd", "server", "Export self-contained proof bundles."),
    "verify-proof": ("ledger_cmd", "server", "Check a proof bundle offline (no database) against the keys YOU pin: "
                     "--trust FILE and/or --operator-key / --device-key."),
    "fabric": ("fabric_cmd", "server", "Start, stop and inspect a local Hyperledger Fabric network."),
    "claims": ("claims_cmd", "server", "Verdicts on green claims from anchored meter data; offline evidence."),
    "report": ("report_cmd", "server", "Write an organisation's report for a period (PDF, CSV and Parquet of the hourly "
               "data, JSON of everything) with a manifest of every file's SHA-256, signed with the operator's key and "
               "anchored on the ledger."),  # docs/reports.md
    "verify-report": ("report_cmd", "server", "Check a report directory offline: every file against the manifest "
                      "(naming any changed, added or removed), the operator's signature and the report's anchoring, "
                      "against the keys you pin."),
    "dashboard": ("dashboard_cmd", "dashboard", "Serve the Streamlit dashboard (officers, auditors, regulators); manage "
                  "its logins."),  # docs/dashboard.md
    "pki": ("pki_cmd", None, "The broker's CA, server and client certificates, revocation, config (docs/broker.md)."),
}
OUR_PACKAGES = {"wattproof", "device", "firmware_sim", "ingest", "audit", "ledger", "dashboard"}
_APP_SETTINGS: dict[str, Any] = {"pretty_exceptions_enable": False, "add_completion": False, "rich_markup_mode": "rich"}
_loaded: dict[str, TyperGroup] = {}  # module → the commands it registered


def load_command(name: str) -> Any:
    """The real command ``name``: its module imported and registered on an app of its own."""
    module, extra, listing = COMMANDS[name]
    if module not in _loaded:
        try:
            mod = importlib.import_module(f"wattproof.commands.{module}")
        except ModuleNotFoundError as exc:
            if not exc.name or exc.name.split(".")[0] in OUR_PACKAGES:
                raise
            need = f"pip install 'wattproof[{extra}]'" if extra else "reinstall wattproof"
            typer.echo(f"error: `wattproof {name}` needs the module {exc.name!r}, not installed: {need}", err=True)
            raise typer.Exit(1) from None
        sub = typer.Typer(**_APP_SETTINGS)
        if hasattr(mod, "register"):
            mod.register(sub)
        else:
            sub.add_typer(mod.app, name=name, help=listing)
        _loaded[module] = typer.main.get_group(sub)
    return _loaded[module].commands[name]


class _LazyCommand(TyperCommand):
    """What the listing shows of a command not imported yet; running it (or its ``--help``) loads the real one."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        return load_command(self.name or "").make_context(info_name, args, parent=parent, **extra)


class _LazyGroup(TyperGroup):
    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for name, (_module, _extra, listing) in COMMANDS.items():
            self.commands.setdefault(name, _LazyCommand(name, help=listing, short_help=listing))


app = typer.Typer(
    name="wattproof",
    help="Tamper-evident energy data: signed meter readings, audit findings, ledger-anchored proofs.",
    no_args_is_help=True,
    cls=_LazyGroup,
    **_APP_SETTINGS,
)

_state = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
) -> None:
    _state["debug"] = debug


def main() -> None:
    try:
        app()  # standalone: typer reports usage errors itself (exit 2) and exits with the command's status
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # one line for a person, the traceback only with --debug
        if _state["debug"] or "--debug" in sys.argv:
            raise
        # the one error contract (wattproof/errors.py)
        from wattproof.errors import UNEXPECTED, one_line

        message, expected = one_line(exc)
        typer.echo(f"error: {message}{'' if expected else UNEXPECTED}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
