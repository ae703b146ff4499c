"""`wattproof agent --config agent.toml`: run the Raspberry Pi agent next to a real meter (docs/agent.md).

Imports only the device side (device.agent, device.wire/spool/publisher) and the configured driver's
protocol library: no numpy, pandas, psycopg, statsmodels, numba or Fabric on this path.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("agent")
    def agent_cmd(
        config: Path = typer.Option(..., "--config", envvar="WATTPROOF_AGENT_CONFIG",
                                    help="agent.toml: device, key, broker, meter and its settings (docs/agent.md)."),
        check: bool = typer.Option(False, "--check", help="Validate the configuration and the key, then exit."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every state change at DEBUG level."),
    ) -> None:
        """Read a DSMR P1, Modbus or S0 meter, sign frames at the source and publish them (spooled while offline)."""
        from device.agent.config import AgentError, load_config
        from device.agent.runner import Agent, make_driver
        from device.identity import IdentityError, read_private_key, validate_ids

        logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            cfg = load_config(config)
            validate_ids(cfg.site, cfg.device)
            key = read_private_key(Path(cfg.key_file))
        except (AgentError, IdentityError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        if check:
            typer.echo(f"{config}: ok ({cfg.meter.__struct_config__.tag} meter, device {cfg.device} at site {cfg.site})")
            return
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        try:
            agent = Agent(cfg, make_driver(cfg), key).start()
        except AgentError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        agent.run(stop)
