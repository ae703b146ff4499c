"""`wattproof fabric up | down | status`: a local two-organisation Fabric network run as plain
processes (no Docker) in the data directory, for the demo, `--ledger fabric` and development."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


def network_dir(directory: Path | None) -> Path:
    from wattproof import config

    return directory or config.data_dir() / "fabric"


def _opt_dir() -> Path | None:
    return typer.Option(None, "--dir", help="Network directory (default: <data dir>/fabric).")


@app.command("up", help="Start (or resume) a local two-organisation Fabric network with the wattproof chaincode.")
def up(
    directory: Path | None = _opt_dir(),
    base_port: int = typer.Option(27050, "--base-port", help="First of 16 consecutive 127.0.0.1 ports (0: any free ports).", min=0),
    orderers: int = typer.Option(3, "--orderers", help="Raft orderers of a new network: 3 (survives one down) or 1.",
                                 min=1, max=3),
    batch_timeout: str = typer.Option("100ms", "--batch-timeout", help="Orderer BatchTimeout (new networks)."),
) -> None:
    from ledger.fabric.backend import FabricLedger, wait_ready
    from ledger.fabric.network import FabricNetwork, Ports, State

    d = network_dir(directory)
    ports = None if State.load(d) is not None else (Ports.from_base(base_port) if base_port else Ports.free())
    net = FabricNetwork(d, ports, batch_timeout=batch_timeout, orderers=orderers)
    typer.echo(f"starting Fabric network in {d} …")
    profile = net.up()
    ledger = FabricLedger.from_profile(profile.to_json())
    wait_ready(ledger)
    ledger.close()
    typer.echo(f"up: channel {profile.channel}, chaincode {profile.chaincode}, "
               f"gateway {profile.peers['org1']} (org1) / {profile.peers['org2']} (org2)")
    typer.echo(f"client profile: {d / 'profile.json'}  (use --ledger fabric)")


@app.command("down", help="Stop the local Fabric network (--purge also deletes its ledger and crypto).")
def down(directory: Path | None = _opt_dir(), purge: bool = typer.Option(False, "--purge")) -> None:
    from ledger.fabric.network import FabricNetwork, State

    d = network_dir(directory)
    if State.load(d) is None:
        typer.echo(f"no Fabric network in {d}")
        return
    FabricNetwork(d).down(purge=purge)
    typer.echo("stopped" + (" and deleted" if purge else ""))


@app.command("status", help="Show the local Fabric network's processes and channel height.")
def status(directory: Path | None = _opt_dir(), json_out: bool = typer.Option(False, "--json")) -> None:
    from ledger.fabric.network import FabricNetwork, FabricNetworkError, State

    d = network_dir(directory)
    if State.load(d) is None:
        typer.echo(f"no Fabric network in {d}; start one with `wattproof fabric up`", err=True)
        raise typer.Exit(1)
    net = FabricNetwork(d)
    st = net.status()
    if st["running"]:
        try:
            st["height"] = net.channel_height()
        except FabricNetworkError as exc:
            st["height_error"] = str(exc)
    if json_out:
        typer.echo(json.dumps(st, indent=2))
    else:
        for name, alive in st["processes"].items():
            typer.echo(f"{name:10} {'running' if alive else 'stopped'}")
        typer.echo(f"channel {st['channel']}: height {st.get('height', '?')}")
    raise typer.Exit(0 if st["running"] else 1)
