"""The demo's finale: the dashboard served on the demo database until Ctrl-C.

Owns: ``serve_demo`` — a dashboard config beside the demo run (recreated each run: a fresh cookie
secret and fresh random passwords for one login per role, printed once), the trust the demo's auditor
pinned, the demo ledger and weather; the server started as ``wattproof dashboard`` starts it, its URL
and logins printed, kept serving until Ctrl-C. Must not: touch the store.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from dashboard.auth import add_user, new_config
from dashboard.server import Server, free_port

DEMO_USERS = (("officer", "officer"), ("auditor", "auditor"), ("regulator", "regulator"), ("admin", "admin"))


def demo_config(run_dir: Path, backend: Any, trust: Any) -> tuple[Path, dict[str, tuple[str, str]]]:
    """(config path, {user: (role, password)}) for the demo run in ``run_dir``."""
    from ledger.trust import write_trust

    trust_path = run_dir / "trust.json"
    write_trust(trust_path, trust)
    if backend.name == "fabric":
        kind, ledger_path = "fabric", run_dir / "fabric" / "profile.json"
    else:
        kind, ledger_path = "local", Path(backend.path).parent
    config = run_dir / "dashboard.toml"
    config.unlink(missing_ok=True)
    weather = run_dir / "weather.csv"
    new_config(config, ledger=kind, ledger_path=ledger_path, trust=trust_path,
               weather=weather if weather.exists() else None, reports_dir=run_dir / "reports")
    logins = {}
    for user, role in DEMO_USERS:
        pw = secrets.token_urlsafe(9)
        add_user(config, user, role, pw, name=f"Demo {role}")
        logins[user] = (role, pw)
    return config, logins


def _port(preferred: int = 8501) -> int:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


def serve_demo(dsn: str, backend: Any, trust: Any, run_dir: Path, con: Any) -> None:
    """Serve the dashboard on the demo database; return on Ctrl-C."""
    config, logins = demo_config(run_dir, backend, trust)
    server = Server(config, dsn, _port(), log=run_dir / "dashboard.log")
    con.print("[bold]dashboard[/]: starting…")
    server.start()
    con.rule("[bold]the dashboard")
    con.print(f"[green]✓[/] open [bold]{server.url}[/] and log in (passwords made for this run; config {config}):")
    for user, (role, pw) in logins.items():
        con.print(f"   {role:<10} user [bold]{user}[/]  password [bold]{pw}[/]")
    con.print("   Claims shows the greenwash organisation's verdicts; from a verdict open a batch on Ledger to see a "
              "reading's inclusion proof verified against the pinned trust. A regulator sees Claims and Reports only.")
    con.print("   Serving until Ctrl-C.")
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        con.print("dashboard stopped")
