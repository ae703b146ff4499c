"""`wattproof anchor | verify | proof export | verify-proof`: sealing, replay and proofs."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import typer


def open_backend(ledger: str, ledger_dir: Path | None):  # type: ignore[no-untyped-def]
    if ledger == "fabric":
        from ledger.fabric.backend import FabricLedger
        from wattproof.commands.fabric_cmd import network_dir

        env_profile = os.environ.get("WATTPROOF_FABRIC_PROFILE")
        profile = Path(env_profile) if env_profile and ledger_dir is None else network_dir(ledger_dir) / "profile.json"
        if not profile.exists():
            raise typer.BadParameter(f"no Fabric network profile at {profile}: run `wattproof fabric up` first")
        return FabricLedger.from_profile(profile)
    if ledger != "local":
        raise typer.BadParameter("--ledger must be 'local' or 'fabric'")
    from ledger.local import LocalLedger
    from wattproof import config

    return LocalLedger.open(ledger_dir or config.data_dir() / "ledger")


def register(app: typer.Typer) -> None:
    @app.command("anchor", help="Seal every complete window per site into a Merkle batch and anchor its header.")
    def anchor(
        db: str = typer.Option(..., "--db", envvar="WATTPROOF_DB", help="PostgreSQL DSN."),
        ledger: str = typer.Option("local", "--ledger", help="local | fabric"),
        ledger_dir: Path | None = typer.Option(None, "--ledger-dir", help="Local ledger dir, or the Fabric network dir holding profile.json (default: data dir; Fabric: also $WATTPROOF_FABRIC_PROFILE)."),
        window_s: int = typer.Option(3600, "--window", min=60, help="Window length in seconds."),
        grace_s: int = typer.Option(900, "--grace", min=0, help="A window is complete this long after its end."),
        site: str | None = typer.Option(None, "--site"),
        every: int | None = typer.Option(None, "--every", min=1, help="Seal again every N seconds (service mode)."),
    ) -> None:
        import time

        from ledger.seal import seal_windows

        backend = open_backend(ledger, ledger_dir)
        while True:
            made = seal_windows(db, backend, window_s=window_s, grace_s=grace_s, site=site)
            readings = sum(b.header.leaf_count for b in made)
            typer.echo(f"sealed and anchored {len(made)} batches ({readings} readings) on the {backend.name} ledger")
            if every is None:
                return
            time.sleep(every)

    @app.command("verify", help="Replay every sealed batch from the store against the ledger; name tampered readings.")
    def verify(
        db: str = typer.Option(..., "--db", envvar="WATTPROOF_DB", help="PostgreSQL DSN."),
        ledger: str = typer.Option("local", "--ledger", help="local | fabric"),
        ledger_dir: Path | None = typer.Option(None, "--ledger-dir"),
        site: str | None = typer.Option(None, "--site"),
        since: datetime | None = typer.Option(None, "--from", help="Only batches ending after this time (UTC)."),
        until: datetime | None = typer.Option(None, "--to", help="Only batches starting before this time (UTC)."),
        json_out: bool = typer.Option(False, "--json", help="Machine-readable report."),
    ) -> None:
        from ledger.verify import summary_json
        from ledger.verify import verify as run_verify

        reports = run_verify(db, open_backend(ledger, ledger_dir), site=site,
                             start=since.replace(tzinfo=UTC) if since else None,
                             end=until.replace(tzinfo=UTC) if until else None)
        bad = [r for r in reports if r.status != "intact"]
        if json_out:
            typer.echo(summary_json(reports).decode())
        else:
            typer.echo(f"{len(reports) - len(bad)} of {len(reports)} batches intact")
            for r in bad:
                typer.echo(f"{r.batch_id}: {r.status}; changed {r.changed} deleted {r.deleted} "
                           f"inserted {r.inserted} bad frames {r.bad_frames}")
        if bad:
            raise typer.Exit(1)

    proof = typer.Typer(no_args_is_help=True, help="Export self-contained proof bundles.")

    @proof.command("export", help="Write a proof bundle for a device's readings in a period.")
    def export(
        device: str = typer.Option(..., "--device"),
        since: datetime = typer.Option(..., "--from", help="Start (UTC)."),
        until: datetime = typer.Option(..., "--to", help="End, exclusive (UTC)."),
        out: Path = typer.Option(..., "--out", help="Bundle file (JSON)."),
        db: str = typer.Option(..., "--db", envvar="WATTPROOF_DB", help="PostgreSQL DSN."),
        ledger: str = typer.Option("local", "--ledger", help="local | fabric"),
        ledger_dir: Path | None = typer.Option(None, "--ledger-dir"),
    ) -> None:
        import json

        from firmware_sim.identity import public_key_b64
        from ledger.proofs import export_bundle

        backend = open_backend(ledger, ledger_dir)
        bundle = export_bundle(db, backend, device, since.replace(tzinfo=UTC), until.replace(tzinfo=UTC),
                               operator_public_key=public_key_b64(backend.pub))
        out.write_text(json.dumps(bundle, indent=1))
        n = sum(len(b["readings"]) for b in bundle["batches"])
        typer.echo(f"wrote {out}: {n} readings in {len(bundle['batches'])} batches, {len(bundle['frames'])} signed frames")

    app.add_typer(proof, name="proof")

    @app.command("verify-proof", help="Check a proof bundle offline (no database).")
    def verify_proof(bundle: Path = typer.Argument(..., help="Bundle written by `wattproof proof export`.")) -> None:
        import json

        from ledger.proofs import verify_bundle

        try:
            doc = json.loads(bundle.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{bundle}: not JSON ({exc})") from None
        problems = verify_bundle(doc)
        if problems:
            for p in problems[:20]:
                typer.echo(f"FAIL {p}", err=True)
            raise typer.Exit(1)
        n = sum(len(b["readings"]) for b in doc["batches"])
        typer.echo(f"OK: {n} readings of {doc['device']} are included in their anchored batches and signed by the device")
