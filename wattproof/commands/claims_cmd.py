"""`wattproof claims check | evidence | verify-evidence | score`: verdicts on green claims (docs/claims.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(no_args_is_help=True, help="Verdicts on green claims from anchored meter data.")

EXIT_NOT_SUBSTANTIATED = 1  # some claim is OVERSTATED or UNVERIFIABLE
EXIT_UNPINNED = 3  # verify-evidence without pinned keys: self-consistent only


def _inputs(claim_file: Path, intensity: Path | None, factors: Path | None, certificates: Path | None,
            weather: Path | None):  # type: ignore[no-untyped-def]
    """The CSV inputs: the options, else those the claim file names (relative to it)."""
    from audit.claims.schema import load_claim_file
    from audit.claims.verdict import Inputs

    cf = load_claim_file(claim_file)
    named = getattr(cf, "inputs", None)

    def pick(opt: Path | None, name: str) -> Path | None:
        if opt is not None:
            return opt
        given = getattr(named, name, None) if named is not None else None  # resolved against the claim file
        return Path(given) if given else None

    got = {n: pick(o, n) for n, o in (("intensity", intensity), ("factors", factors), ("certificates", certificates),
                                       ("weather", weather))}
    missing = [n for n in ("intensity", "factors", "certificates") if got[n] is None]
    if missing:
        raise typer.BadParameter(f"{claim_file}: no {', '.join(missing)} input: name it in the claim file's "
                                 f"`inputs` or pass --{missing[0]}")
    return Inputs(got["intensity"], got["factors"], got["certificates"], got["weather"])  # type: ignore[arg-type]


def verdict_lines(verdicts: list[dict[str, Any]]) -> list[str]:
    out = []
    for v in verdicts:
        m = v.get("measured") or {}
        claim = v["claim"]
        shown = f"claimed {claim['claimed']:g}"
        if m and m.get("value") is not None:
            shown += f", measured {m['value']:.4g} {m['unit']} [{m['lo']:.4g} … {m['hi']:.4g}]"
        if v.get("gap") is not None:
            shown += f", gap {v['gap']:+.4g}"
        out.append(f"{claim['id']:<28} {claim['kind']:<18} {v['verdict']:<14} {shown}")
        out += [f"    {r}" for r in v["reasons"]]
    return out


@app.command("check", help="Check every claim of a claim file against the store; seal and anchor the verdict set "
             "(a restatement if it differs from the last one). Exit 0: all SUBSTANTIATED; 1: otherwise.")
def check(
    claim_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Claim file (YAML, docs/claims.md)."),
    db: str = typer.Option(..., "--db", envvar="WATTPROOF_DB", help="PostgreSQL DSN."),
    ledger: str = typer.Option("local", "--ledger", help="local | fabric"),
    ledger_dir: Path | None = typer.Option(None, "--ledger-dir"),
    intensity: Path | None = typer.Option(None, "--intensity", help="Hourly grid intensity CSV."),
    factors: Path | None = typer.Option(None, "--factors", help="Supplier and residual-mix factors CSV."),
    certificates: Path | None = typer.Option(None, "--certificates", help="EAC register CSV."),
    weather: Path | None = typer.Option(None, "--weather", help="Hourly temperature CSV (savings claims)."),
    no_anchor: bool = typer.Option(False, "--no-anchor", help="Compute verdicts only; anchor nothing."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable verdicts with all evidence."),
) -> None:
    from audit.claims.verdict import check_claims
    from wattproof.commands.ledger_cmd import open_backend

    inputs = _inputs(claim_file, intensity, factors, certificates, weather)
    backend = None if no_anchor else open_backend(ledger, ledger_dir)
    try:
        run = check_claims(db, claim_file, inputs, backend)
    finally:
        if backend is not None:
            backend.close()
    sealed = run.sealed
    if json_out:
        typer.echo(json.dumps({"org": run.org, "verdicts": run.verdicts, "certificate_findings": run.certificate_findings,
                               "batches": [list(b) for b in run.batches],
                               "verdict_set": None if sealed is None else {
                                   "set_id": sealed.set_id, "kind": sealed.kind, "supersedes": sealed.supersedes,
                                   "unchanged": sealed.unchanged, "receipt": sealed.receipt}}, indent=1))
    else:
        typer.echo(f"{run.org}: {len(run.verdicts)} claims, figures resting on {len(run.batches)} anchored batches")
        for line in verdict_lines(run.verdicts):
            typer.echo(line)
        for f in run.certificate_findings:
            typer.echo(f"certificate finding {f['kind']} {f['cert_id']}: {f['detail']}")
        if sealed is not None:
            what = ("unchanged: the latest anchored set" if sealed.unchanged else
                    f"anchored as a {sealed.kind}" + (f" superseding {sealed.supersedes}" if sealed.supersedes else ""))
            typer.echo(f"verdict set {sealed.set_id}: {what}")
    if any(v["verdict"] != "SUBSTANTIATED" for v in run.verdicts):
        raise typer.Exit(EXIT_NOT_SUBSTANTIATED)


@app.command("evidence", help="Write the offline evidence bundle of a verdict set (default: the latest of the org).")
def evidence(
    out: Path = typer.Option(..., "--out", help="Directory to write (created; must be empty)."),
    db: str = typer.Option(..., "--db", envvar="WATTPROOF_DB", help="PostgreSQL DSN."),
    org: str | None = typer.Option(None, "--org", help="Organisation id (its latest verdict set)."),
    set_id: str | None = typer.Option(None, "--set", help="A verdict set id."),
    ledger: str = typer.Option("local", "--ledger", help="local | fabric"),
    ledger_dir: Path | None = typer.Option(None, "--ledger-dir"),
) -> None:
    import psycopg

    from audit.claims.evidence import export_evidence
    from wattproof.commands.ledger_cmd import open_backend

    if set_id is None:
        if org is None:
            raise typer.BadParameter("pass --set ID or --org ORG")
        with psycopg.connect(db) as conn:
            row = conn.execute("SELECT set_id FROM claim_verdict_sets WHERE org_id = %s ORDER BY created_at DESC "
                               "LIMIT 1", (org,)).fetchone()
        if row is None:
            raise typer.BadParameter(f"no verdict set of organisation {org!r}: run `wattproof claims check` first")
        set_id = row[0]
    backend = open_backend(ledger, ledger_dir, readonly=True)
    try:
        s = export_evidence(db, backend, set_id, out)  # type: ignore[arg-type]
    finally:
        backend.close()
    typer.echo(f"wrote {s.path}: {s.verdicts} verdicts, {s.readings} anchored readings in {s.batches} batches, "
               f"{s.headers} headers, {s.bytes / 1e6:.2f} MB; check it with `python3 {s.path}/recheck.py {s.path}`")


@app.command("verify-evidence", help="Check an evidence bundle offline: figures recomputed from the anchored "
             "readings, headers chained, and each anchoring signature against the operator keys you pin. "
             "Exit 0 verified; 1 a check failed; 3 no keys pinned (self-consistent only).")
def verify_evidence_cmd(
    bundle: Path = typer.Argument(..., exists=True, file_okay=False),
    trust_file: Path | None = typer.Option(None, "--trust", envvar="WATTPROOF_TRUST", help="Trust file."),
    operator_key: list[str] = typer.Option([], "--operator-key", help="Pinned operator public key (base64url)."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable result (the exit status is the same)."),
) -> None:
    from audit.claims.evidence import verify_evidence
    from wattproof.commands.ledger_cmd import pinned_trust

    trust = pinned_trust(trust_file, operator_key, [])
    res = verify_evidence(bundle, trust.operator_keys if trust is not None else None)
    if json_out:
        status = "refused" if not res.ok else "verified" if res.pinned else "self-consistent only"
        typer.echo(json.dumps({"status": status, "pinned": res.pinned, "failures": [str(f) for f in res.failures]}))
        raise typer.Exit(1 if not res.ok else 0 if res.pinned else EXIT_UNPINNED)
    for f in res.failures:
        typer.echo(f"FAIL {f}")
    if not res.ok:
        typer.echo("evidence refused")
        raise typer.Exit(1)
    if not res.pinned:
        typer.echo("self-consistent only: pass --trust FILE or --operator-key KEY to verify the anchoring", err=True)
        raise typer.Exit(EXIT_UNPINNED)
    typer.echo("evidence verified: every figure recomputed from the anchored readings; anchoring signed by a pinned key")


@app.command("score", help="Compare the latest anchored verdicts of a claim file with the expected verdicts it "
             "states (`expect:`, the scenario's ground truth). Exit 1 on any mismatch.")
def score(
    claim_file: Path = typer.Argument(..., exists=True, dir_okay=False),
    db: str = typer.Option(..., "--db", envvar="WATTPROOF_DB", help="PostgreSQL DSN."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable rows (claim, expected, got, ok)."),
) -> None:
    from audit.claims.verdict import score_claims

    rows = score_claims(db, claim_file)
    if json_out:
        typer.echo(json.dumps({"rows": rows, "expected": sum(bool(r["ok"]) for r in rows), "total": len(rows)}))
        raise typer.Exit(0 if all(r["ok"] for r in rows) else 1)
    for r in rows:
        typer.echo(f"{r['claim']:<28} expected {r['expected'] or '-':<14} got {r['got'] or '(no verdict)':<14} "
                   f"{'ok' if r['ok'] else 'MISMATCH'}")
    bad = [r for r in rows if not r["ok"]]
    typer.echo(f"{len(rows) - len(bad)} of {len(rows)} verdicts as expected")
    if bad:
        raise typer.Exit(1)
