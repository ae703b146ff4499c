"""The demo's claims step: the scenario organisation's claim verdicts, anchored, scored against the
scenario's expected verdicts, and its evidence bundle written and checked offline.

Owns: wiring ``audit.claims`` into ``wattproof demo`` (the claim file ``scenarios/claims/<scenario>.claims.yaml``
and its inputs; the demo's weather file for savings claims) and printing the verdicts with their evidence.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass
class ClaimsOutcome:
    verdicts: dict[str, str] = field(default_factory=dict)  # claim id -> verdict
    expected: dict[str, str | None] = field(default_factory=dict)
    set_id: str = ""
    evidence_ok: bool = False

    @property
    def as_expected(self) -> bool:
        return bool(self.verdicts) and all(e is None or self.verdicts.get(c) == e for c, e in self.expected.items())


def claim_file_for(scenario_path: Path) -> Path | None:
    p = scenario_path.parent / "claims" / f"{scenario_path.stem}.claims.yaml"
    return p if p.exists() else None


def run_claims(dsn: str, backend: Any, claim_path: Path, weather: Path, operator_key_b64: str | None, run_dir: Path,
               con: Console) -> ClaimsOutcome:
    from audit.claims.evidence import export_evidence, verify_evidence
    from audit.claims.schema import load_claim_file
    from audit.claims.verdict import check_claims
    from wattproof.commands.claims_cmd import _inputs

    inputs = _inputs(claim_path, None, None, None, weather)
    cf = load_claim_file(claim_path)
    run = check_claims(dsn, claim_path, inputs, backend)
    out = ClaimsOutcome(expected={c.id: c.expect for c in cf.claims})
    table = Table("claim", "kind", "claimed", "measured", "verdict", "expected", "why", show_lines=True)
    for v in run.verdicts:
        c, m = v["claim"], v.get("measured") or {}
        out.verdicts[c["id"]] = v["verdict"]
        colour = {"SUBSTANTIATED": "green", "OVERSTATED": "red", "UNVERIFIABLE": "yellow"}[v["verdict"]]
        measured = f"{m['value']:.3g} {m['unit']}" if m and m.get("value") is not None else "—"
        exp = out.expected.get(c["id"]) or "—"
        table.add_row(c["id"], c["kind"], f"{c['claimed']:g}", measured, f"[{colour}]{v['verdict']}[/]",
                      exp if exp in ("—", v["verdict"]) else f"[red]{exp}[/]", "\n".join(v["reasons"][:3]))
    con.print(table)
    minor: dict[str, list[str]] = {}
    for f in run.certificate_findings:
        if f["severity"] == "high":  # refused: left out of every figure
            con.print(f"   certificate finding [bold]{f['kind']}[/] {f['cert_id']}: {f['detail']}")
        else:
            minor.setdefault(f["kind"], []).append(f["cert_id"])
    for kind, ids in minor.items():
        con.print(f"   certificate finding [bold]{kind}[/] (counted annually, not hourly): {len(ids)} certificates, "
                  f"e.g. {', '.join(sorted(set(ids))[:3])}")
    s = run.sealed
    mark = "[green]✓[/]" if out.as_expected else "[red]✗[/]"
    con.print(f"{mark} {len(run.verdicts)} verdicts for {run.org} "
              f"({'as the scenario expects' if out.as_expected else 'NOT as the scenario expects'}); "
              f"figures rest on {len(run.batches)} anchored batches; verdict set {s.set_id} anchored "
              f"as a {s.kind}" + (" (unchanged)" if s.unchanged else ""))
    out.set_id = s.set_id
    bundle = run_dir / "claims-evidence"
    if bundle.exists():
        import shutil

        shutil.rmtree(bundle)
    summary = export_evidence(dsn, backend, s.set_id, bundle)
    res = verify_evidence(bundle, [operator_key_b64] if operator_key_b64 else None)
    stdlib = subprocess.run([sys.executable, "-I", str(bundle / "recheck.py"), str(bundle)], capture_output=True,
                            text=True, timeout=600)
    out.evidence_ok = res.ok and (res.pinned or not operator_key_b64) and stdlib.returncode == 0
    mark = "[green]✓[/]" if out.evidence_ok else "[red]✗[/]"
    con.print(f"{mark} evidence bundle {bundle} ({summary.bytes / 1e6:.2f} MB, {summary.readings:,} anchored readings "
              f"in {summary.batches} batches): stdlib recheck.py says "
              f"{(stdlib.stdout.strip().splitlines() or ['?'])[-1]}; verify-evidence against the pinned operator "
              f"key: {('verified' if res.pinned else 'consistent (Fabric receipts: proven by verify)') if res.ok else res.failures[:3]}")
    return out


def run_report(dsn: str, backend: Any, claim_path: Path, trust: Any, run_dir: Path, con: Console) -> bool:
    """The regulator's report of the claim period: every format, its signed manifest anchored, then checked
    offline against the pinned trust (``wattproof verify-report``)."""
    import shutil

    from audit.claims.schema import load_claim_file
    from audit.reports import build_report, verify_report

    cf = load_claim_file(claim_path)
    out = run_dir / "report"
    if out.exists():
        shutil.rmtree(out)
    key = getattr(backend, "key", None)
    if key is None:
        con.print("   report: skipped (a report is signed with the local ledger's operator key; on Fabric run "
                  "`wattproof report --signing-key …`)")
        return True
    s = build_report(dsn, backend, cf.organisation.id, cf.period.start_ms, cf.period.end_ms,
                     ["pdf", "csv", "parquet", "json"], out)
    check = verify_report(out, trust)
    ok = check.ok and check.pinned
    mark = "[green]✓[/]" if ok else "[red]✗[/]"
    con.print(f"{mark} report {out}: {len(s.files)} files ({', '.join(sorted(s.files))}), manifest anchored as "
              f"{s.report_id}; verify-report against the pinned trust: "
              + ("verified" if ok else "; ".join(f"{p.code} {p.subject}: {p.detail}" for p in check.problems[:3])))
    return ok
