"""`wattproof report` and `wattproof verify-report`: regulator reports and their offline check (docs/reports.md)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

EXIT_REFUSED = 1  # a check failed (each problem printed), or the manifest cannot be read
EXIT_UNPINNED = 3  # every check passed against the keys the manifest names: self-consistent only


def parse_period(text: str) -> tuple[int, int]:
    """``FROM/TO``: two UTC times on whole hours (ISO 8601, ``Z`` or ``+00:00``; a bare date is midnight)."""
    from audit.claims.schema import parse_utc_ms

    a, sep, b = text.partition("/")
    if not sep:
        raise typer.BadParameter(f"{text!r}: expected FROM/TO, e.g. 2026-01-01/2027-01-01", param_hint="--period")
    try:
        return parse_utc_ms(a.strip()), parse_utc_ms(b.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r}: {exc}", param_hint="--period") from None


def _signing_key(ledger: str, ledger_dir: Path | None):  # type: ignore[no-untyped-def]
    """With Fabric, the manifest is signed by the operator key kept beside the local ledger (never created here)."""
    from device.identity import read_private_key
    from wattproof import config

    path = (ledger_dir if ledger == "local" and ledger_dir else config.data_dir() / "ledger") / "operator.key"
    if not path.exists():
        raise typer.BadParameter(f"no operator key at {path}: a report manifest is signed with the operator's key")
    return read_private_key(path)


def register(app: typer.Typer) -> None:
    @app.command("report", help="Write an organisation's report for a period (PDF, CSV and Parquet of the hourly "
                 "data, JSON of everything) with a manifest of every file's SHA-256, signed with the operator's key "
                 "and anchored on the ledger.")
    def report(
        org: str = typer.Option(..., "--org", help="Organisation id (as in its claim file)."),
        start: str | None = typer.Option(None, "--from", help="Period start, UTC on a whole hour (e.g. 2026-01-01)."),
        end: str | None = typer.Option(None, "--to", help="Period end, exclusive (e.g. 2027-01-01)."),
        period: str | None = typer.Option(None, "--period", hidden=True, help="Old spelling: FROM/TO."),
        out: Path = typer.Option(..., "--out", help="Directory to write (created; must be empty)."),
        fmt: str = typer.Option("pdf,csv,parquet,json", "--format", help="Comma-separated: pdf, csv, parquet, json."),
        claim_file: Path | None = typer.Option(None, "--claims", exists=True, dir_okay=False,
                                               help="Check this claim file first (anchors its verdict set)."),
        db: str = typer.Option(..., "--db", envvar="WATTPROOF_DB", help="PostgreSQL DSN."),
        ledger: str = typer.Option("local", "--ledger", help="local | fabric"),
        ledger_dir: Path | None = typer.Option(None, "--ledger-dir"),
    ) -> None:
        from audit.reports import build_report
        from wattproof.commands.ledger_cmd import open_backend

        if period is not None and (start is not None or end is not None):
            raise typer.BadParameter("give --from/--to (or the old --period FROM/TO), not both", param_hint="--from")
        if period is None and (start is None or end is None):
            raise typer.BadParameter("the report's period is required: --from FROM --to TO", param_hint="--from")
        p0, p1 = parse_period(period if period is not None else f"{start}/{end}")
        backend = open_backend(ledger, ledger_dir)
        try:
            key = _signing_key(ledger, ledger_dir) if ledger == "fabric" else None
            s = build_report(db, backend, org, p0, p1, fmt.split(","), out, claim_file, signing_key=key)
        finally:
            backend.close()
        typer.echo(f"wrote {s.out_dir}: {len(s.files)} files ({', '.join(sorted(s.files))}) + manifest.json")
        typer.echo(f"report {s.report_id}: manifest SHA-256 {s.manifest_sha256}, signed and anchored "
                   f"({s.receipt.get('backend')} receipt), verdict set {s.verdict_set or '(none)'}; {s.seconds:.1f} s")
        typer.echo(f"check it offline: wattproof verify-report {s.out_dir} --trust trust.json")

    @app.command("verify-report", help="Check a report directory offline: every file against the manifest (naming "
                 "any changed, added or removed), the operator's signature and the report's anchoring, against the "
                 "keys you pin. Exit 0 verified; 1 refused; 3 nothing pinned (self-consistent only).")
    def verify_report_cmd(
        directory: Path = typer.Argument(..., exists=True, file_okay=False, help="The report directory."),
        trust_file: Path | None = typer.Option(None, "--trust", envvar="WATTPROOF_TRUST", help="Trust file."),
        operator_key: list[str] = typer.Option([], "--operator-key", help="Pinned operator public key (base64url)."),
        json_out: bool = typer.Option(False, "--json", help="Machine-readable result."),
    ) -> None:
        from audit.reports import verify_report
        from wattproof.commands.ledger_cmd import pinned_trust

        trust = pinned_trust(trust_file, operator_key, [])
        res = verify_report(directory, trust)
        status = ("refused" if not res.ok else "verified" if res.pinned else "self-consistent only")
        if json_out:
            typer.echo(json.dumps({"status": status, "report_id": res.report_id, "files": res.files,
                                   "anchoring": res.anchoring, "problems": [p.__dict__ for p in res.problems]},
                                  indent=1))
        else:
            for p in res.problems:
                typer.echo(f"FAIL {p.code} {p.subject}: {p.detail}")
            if not res.ok:
                typer.echo(f"report refused: {len(res.problems)} problem(s)")
            elif res.pinned:
                typer.echo(f"OK: report {res.report_id} verified: {res.files} files as signed by a pinned operator key; "
                           f"anchored: {res.anchoring}")
            else:
                typer.echo(f"report {res.report_id}: {res.files} files self-consistent only; anchored: {res.anchoring}")
        if not res.ok:
            raise typer.Exit(EXIT_REFUSED)
        if not res.pinned:
            if not json_out:
                typer.echo("not verified: pin the operator key (--trust FILE or --operator-key KEY)", err=True)
            raise typer.Exit(EXIT_UNPINNED)
