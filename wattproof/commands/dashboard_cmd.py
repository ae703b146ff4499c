"""`wattproof dashboard [--db DSN --config FILE --port N]` and `wattproof dashboard users add|list|remove`
(docs/dashboard.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

app = typer.Typer(help="Serve the Streamlit dashboard; manage its logins.")
users = typer.Typer(no_args_is_help=True, help="Logins of the dashboard config (bcrypt hashes, never plain text).")
app.add_typer(users, name="users")

CONFIG_HELP = "Dashboard config (TOML, docs/dashboard.md)."


@app.callback(invoke_without_command=True)
def dashboard(
    ctx: typer.Context,
    db: str | None = typer.Option(None, "--db", envvar="WATTPROOF_DB", help="PostgreSQL DSN (default: the config's)."),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
    port: int = typer.Option(8501, "--port", min=1, max=65535),
    address: str = typer.Option("127.0.0.1", "--address", help="Interface to listen on."),
) -> None:
    """Serve the dashboard until Ctrl-C (read-only: it never writes to the store)."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        raise typer.BadParameter("--config FILE is required (create it with `wattproof dashboard users add`)")
    import signal

    from dashboard.server import Server

    server = Server(config, db, port, address).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on SIGTERM too (finally, below)
    typer.echo(f"dashboard: {server.url}  (config {server.config}; Ctrl-C to stop)")
    try:
        status = server.wait()
    except KeyboardInterrupt:
        typer.echo("dashboard stopped")
        status = 0
    finally:
        server.stop()
    raise typer.Exit(status)


def _password(prompt: bool) -> str:
    if prompt and sys.stdin.isatty():
        return typer.prompt("password", hide_input=True, confirmation_prompt=True)
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


@users.command("add", help="Add or replace a login; the password is read from stdin (one line) and stored as "
               "its bcrypt hash. Creates the config (with a fresh cookie secret) if it does not exist.")
def users_add(
    name: str = typer.Argument(..., help="User name (a-z 0-9 _ . -)."),
    role: str = typer.Option(..., "--role", help="officer | auditor | regulator | admin"),
    config: Path = typer.Option(..., "--config", help=CONFIG_HELP),
    full_name: str | None = typer.Option(None, "--name", help="Name shown in the dashboard."),
) -> None:
    from dashboard.auth import add_user

    user = add_user(config, name, role, _password(True), full_name)
    typer.echo(f"{config}: user {user.username} ({user.role}) saved")


@users.command("list", help="The logins of a config (names and roles; never the hashes).")
def users_list(config: Path = typer.Option(..., "--config", help=CONFIG_HELP),
               json_out: bool = typer.Option(False, "--json", help="Machine-readable list.")) -> None:
    from dashboard.auth import load_config

    if json_out:
        import json

        typer.echo(json.dumps([{"username": u.username, "role": u.role, "name": u.name}
                               for u in load_config(config).users.values()]))
        return
    for u in load_config(config).users.values():
        typer.echo(f"{u.username}\t{u.role}\t{u.name}")


@users.command("remove", help="Remove a login.")
def users_remove(name: str = typer.Argument(...), config: Path = typer.Option(..., "--config", help=CONFIG_HELP)) -> None:
    from dashboard.auth import remove_user

    remove_user(config, name)
    typer.echo(f"{config}: user {name} removed")


@app.command("init", help="Create a config: the store, the ledger and the trust the Ledger page verifies against.")
def init(
    config: Path = typer.Option(..., "--config", help=CONFIG_HELP),
    db: str | None = typer.Option(None, "--db", help="PostgreSQL DSN to keep in the config."),
    ledger: str = typer.Option("local", "--ledger", help="local | fabric"),
    ledger_dir: Path | None = typer.Option(None, "--ledger-dir", help="Local ledger dir, or a Fabric profile.json."),
    trust: Path | None = typer.Option(None, "--trust", help="Trust file (wattproof-trust/1) to verify proofs against."),
    weather: Path | None = typer.Option(None, "--weather", help="Hourly temperature CSV for the Site page's baseline."),
) -> None:
    from dashboard.auth import new_config

    new_config(config, db, ledger, ledger_dir.resolve() if ledger_dir else None,
               trust.resolve() if trust else None, weather.resolve() if weather else None)
    typer.echo(f"{config}: created; add logins with `wattproof dashboard users add NAME --role ROLE --config {config}`")


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="dashboard", help="Serve the Streamlit dashboard (officers, auditors, regulators); "
                     "manage its logins.")
