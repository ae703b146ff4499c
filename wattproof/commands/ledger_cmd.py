"""`wattproof anchor | verify | proof export | verify-proof` (ledger core: issue 6, not built yet)."""

from __future__ import annotations

from pathlib import Path

import typer

from wattproof.commands._stub import not_implemented

ISSUE = "sealing, anchoring and proofs come with the ledger-core issue"


def register(app: typer.Typer) -> None:
    @app.command("anchor", help="Seal every complete window per site into a Merkle batch and anchor its header.")
    def anchor(ledger: str = typer.Option("local", "--ledger", help="local | fabric")) -> None:
        not_implemented("anchor", ISSUE)

    @app.command("verify", help="Replay every sealed batch from the store against the ledger; name tampered readings.")
    def verify(json_out: bool = typer.Option(False, "--json")) -> None:
        not_implemented("verify", ISSUE)

    proof = typer.Typer(no_args_is_help=True, help="Export self-contained proof bundles.")

    @proof.command("export", help="Write a proof bundle for a device's readings in a period.")
    def export(out: Path = typer.Option(..., "--out")) -> None:
        not_implemented("proof export", ISSUE)

    app.add_typer(proof, name="proof")

    @app.command("verify-proof", help="Check a proof bundle offline (no database).")
    def verify_proof(bundle: Path = typer.Argument(...)) -> None:
        not_implemented("verify-proof", ISSUE)
