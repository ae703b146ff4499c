"""`wattproof anchor | verify | proof export | verify-proof`: sealing, replay and proofs."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import typer


def open_backend(ledger: str, ledger_dir: Path | None, readonly: bool = False):  # type: ignore[no-untyped-def]
    """The ledger backend; ``readonly`` (verify, proof export, reports): never creates a ledger or a key."""
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

    return LocalLedger.open(ledger_dir or config.data_dir(create=not readonly) / "ledger", create=not readonly)


def open_verifying_backend(ledger: str, ledger_dir: Path | None, trust):  # type: ignore[no-untyped-def]
    """The ledger as a verifier opens it: a local ledger's records checked against the pinned operator keys
    (whatever key file lies beside it); nothing is created."""
    if ledger == "local" and trust is not None:
        from ledger.local import LocalLedger
        from wattproof import config

        return LocalLedger.open_pinned(ledger_dir or config.data_dir(create=False) / "ledger", trust.operator_keys)
    return open_backend(ledger, ledger_dir, readonly=True)


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
        json_out: bool = typer.Option(False, "--json", help="One JSON object per run: batches, readings, refused."),
    ) -> None:
        import json
        import time

        from ledger.seal import seal_windows
        from wattproof.progress import progress

        backend = open_backend(ledger, ledger_dir)
        while True:
            refused: list[tuple[str, int, int]] = []
            with progress("seal + anchor", "windows", quiet=json_out) as update:
                made = seal_windows(db, backend, window_s=window_s, grace_s=grace_s, site=site, refused_out=refused,
                                    progress=update)
            readings = sum(b.header.leaf_count for b in made)
            if json_out:
                typer.echo(json.dumps({"ledger": backend.name, "batches": len(made), "readings": readings,
                                       "batch_ids": [b.header.batch_id for b in made],
                                       "refused": [list(r) for r in refused]}))
            else:
                typer.echo(f"sealed and anchored {len(made)} batches ({readings} readings) on the {backend.name} ledger")
            if refused and not json_out:
                typer.echo(f"refused to seal {len(refused)} readings that no valid signed frame backs, e.g. "
                           f"{refused[:3]} (left unsealed; `wattproof verify` names each)", err=True)
            if every is None:
                return
            time.sleep(every)

    @app.command("verify", help="Replay every sealed batch from the store against the ledger and every stored reading "
                 "against its signed frame; name each tampered reading, frame and batch. Exit 0: verified against "
                 "pinned trust; 1: problems; 3: no trust pinned (self-consistent only, not verified).")
    def verify(
        db: str = typer.Option(..., "--db", envvar="WATTPROOF_DB", help="PostgreSQL DSN."),
        ledger: str = typer.Option("local", "--ledger", help="local | fabric"),
        ledger_dir: Path | None = typer.Option(None, "--ledger-dir"),
        trust_file: Path | None = typer.Option(None, "--trust", envvar="WATTPROOF_TRUST",
                                               help="Trust file (wattproof-trust/1): the operator and device keys "
                                                    "(and Fabric roots) you pin. Without it nothing is verified."),
        site: str | None = typer.Option(None, "--site"),
        since: datetime | None = typer.Option(None, "--from", help="Only batches ending after this time (UTC)."),
        until: datetime | None = typer.Option(None, "--to", help="Only batches starting before this time (UTC)."),
        json_out: bool = typer.Option(False, "--json", help="Machine-readable report."),
    ) -> None:
        from ledger.trust import load_trust
        from ledger.verify import summary_json, verify_all
        from wattproof.progress import progress

        trust = load_trust(trust_file) if trust_file else None
        backend = open_verifying_backend(ledger, ledger_dir, trust)
        with progress("verify: keys, frames + completeness, replay, ledger", "steps", quiet=json_out) as update:
            res = verify_all(db, backend, trust, site=site, start=since.replace(tzinfo=UTC) if since else None,
                             end=until.replace(tzinfo=UTC) if until else None, progress=update)
        bad = [r for r in res.reports if r.status != "intact"]
        if json_out:
            typer.echo(summary_json(res).decode())
        else:
            typer.echo(f"{len(res.reports) - len(bad)} of {len(res.reports)} batches intact; {res.readings} stored "
                       f"readings and {res.frames} signed frames checked; {len(res.store_problems)} store problems; "
                       f"{len(res.pending)} late readings awaiting amendment")
            for r in bad:
                typer.echo(f"{r.batch_id}: {r.status}; changed {r.changed} deleted {r.deleted} "
                           f"inserted {r.inserted} bad frames {r.bad_frames}")
            for p in res.store_problems[:200]:
                typer.echo(f"{p.kind} {p.what} {list(p.ref)}: {p.detail}")
            if len(res.store_problems) > 200:
                typer.echo(f"… and {len(res.store_problems) - 200} more store problems (--json lists all)")
            typer.echo(f"verdict: {res.verdict}")
        if not res.intact:
            raise typer.Exit(1)
        if not res.pinned:
            typer.echo("not verified: pass --trust FILE with the keys you pin (see docs/proofs.md, Trust)", err=True)
            raise typer.Exit(3)

    trust_app = typer.Typer(no_args_is_help=True, help="Trust files: the keys and roots a verifier pins.")

    @trust_app.command("export", help="Write the operator's view of what to pin (operator key, device keys, Fabric "
                       "roots) for an auditor; the auditor must check it out of band before relying on it.")
    def trust_export(
        out: Path = typer.Option(..., "--out", help="Trust file to write."),
        db: str = typer.Option(..., "--db", envvar="WATTPROOF_DB", help="PostgreSQL DSN (device keys)."),
        ledger: str = typer.Option("local", "--ledger", help="local | fabric"),
        ledger_dir: Path | None = typer.Option(None, "--ledger-dir"),
    ) -> None:
        from ledger.trust import write_trust
        from wattproof.trustfile import trust_from_operator

        trust = trust_from_operator(db, ledger, ledger_dir)
        write_trust(out, trust)
        typer.echo(f"wrote {out}: {len(trust.operator_keys)} operator keys, {len(trust.devices)} device keys"
                   + (", Fabric roots" if trust.fabric else ""))

    app.add_typer(trust_app, name="trust")

    proof = typer.Typer(no_args_is_help=True, help="Export self-contained proof bundles.")

    @proof.command("export", help="Write a proof bundle (wattproof-proof-bundle/2) of a device's sealed readings in a "
                   "period. Read-only: creates no key and no ledger, and writes nothing but the bundle.")
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

        from ledger.proofs import export_bundle

        backend = open_backend(ledger, ledger_dir, readonly=True)
        try:
            bundle = export_bundle(db, backend, device, since.replace(tzinfo=UTC), until.replace(tzinfo=UTC))
        finally:
            backend.close()
        out.write_text(json.dumps(bundle, indent=1) + "\n")
        n = sum(len(b["readings"]) for b in bundle["batches"])
        typer.echo(f"wrote {out}: {n} readings in {len(bundle['batches'])} batches, {len(bundle['frames'])} signed frames")

    app.add_typer(proof, name="proof")

    @app.command("verify-proof", help="Check a proof bundle offline (no database) against the keys YOU pin: "
                 "--trust FILE and/or --operator-key / --device-key. Exit status: 0 verified; 1 problems found "
                 "(each named); 3 self-consistent only, not verified (no trust pinned).")
    def verify_proof(
        bundle: Path = typer.Argument(..., help="Bundle written by `wattproof proof export`."),
        trust_file: Path | None = typer.Option(None, "--trust", help="Trust file (wattproof-trust/1): the operator, "
                                               "device and Fabric keys you pin."),
        operator_keys: list[str] | None = typer.Option(None, "--operator-key", help="Pin an operator public key "
                                                       "(base64url); repeatable; adds to --trust."),
        device_keys: list[str] | None = typer.Option(None, "--device-key", help="Pin a device public key as "
                                                     "DEVICE=BASE64URL; repeatable; adds to --trust."),
        json_out: bool = typer.Option(False, "--json", help="Machine-readable result (the exit status is the same)."),
    ) -> None:
        from ledger.proofs import check_bundle

        trust = pinned_trust(trust_file, operator_keys or [], device_keys or [])
        check = check_bundle(bundle.read_bytes(), trust)
        if json_out:
            import json

            status = "refused" if check.problems else "verified" if check.pinned else "self-consistent only"
            typer.echo(json.dumps({"status": status, "pinned": check.pinned, "device": check.device,
                                   "readings": check.readings, "batches": check.batches,
                                   "problems": [str(p) for p in check.problems]}))
            raise typer.Exit(EXIT_PROBLEMS if check.problems else EXIT_VERIFIED if check.pinned else EXIT_NOT_VERIFIED)
        for p in check.problems[:50]:
            typer.echo(f"FAIL {p}")
        if len(check.problems) > 50:
            typer.echo(f"FAIL … and {len(check.problems) - 50} more problems")
        if check.problems:
            typer.echo(f"NOT VERIFIED: {len(check.problems)} problems in {bundle}"
                       + ("" if check.pinned else " (and no trust pinned)"), err=True)
            raise typer.Exit(EXIT_PROBLEMS)
        if not check.pinned:
            typer.echo(f"SELF-CONSISTENT ONLY, NOT VERIFIED: {check.readings} readings of {check.device} hang together, "
                       "but no trust is pinned, so anyone could have made this bundle with keys of their own. "
                       "Pass --trust FILE (or --operator-key and --device-key) with keys you obtained out of band.")
            raise typer.Exit(EXIT_NOT_VERIFIED)
        typer.echo(f"OK: {check.readings} readings of {check.device} in {check.batches} batches verified against the "
                   "pinned trust: each is included in its anchored batch and equals a frame the device signed")


#: ``verify-proof`` exit status (docs/proofs.md "Proof bundle"): 2 is typer's usage error.
EXIT_VERIFIED, EXIT_PROBLEMS, EXIT_NOT_VERIFIED = 0, 1, 3


def pinned_trust(trust_file: Path | None, operator_keys: list[str], device_keys: list[str]):  # type: ignore[no-untyped-def]
    """The verifier's trust: the file's, plus the keys given as flags; None when nothing is pinned."""
    import msgspec

    from device import ed25519
    from device.wire import b64url, b64url_decode
    from ledger.trust import FORMAT, Trust, load_trust

    if trust_file is None and not operator_keys and not device_keys:
        return None
    trust = load_trust(trust_file) if trust_file is not None else Trust(format=FORMAT)

    def key(text: str, flag: str) -> str:
        try:
            raw = b64url_decode(text)
        except ValueError:
            raw = b""
        if b64url(raw) != text or ed25519.key_problem(raw) is not None:
            raise typer.BadParameter(f"{text!r} is not a base64url Ed25519 public key", param_hint=flag)
        return text

    devices = {d: list(keys) for d, keys in trust.devices.items()}
    for item in device_keys:
        device, sep, k = item.partition("=")
        if not sep or not device:
            raise typer.BadParameter(f"{item!r}: expected DEVICE=BASE64URL", param_hint="--device-key")
        devices.setdefault(device, []).append(key(k, "--device-key"))
    return msgspec.structs.replace(trust, operator_keys=[*trust.operator_keys,
                                                         *(key(k, "--operator-key") for k in operator_keys)],
                                   devices=devices)
