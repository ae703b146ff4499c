"""Claim verdict sets on a real Fabric network: anchored through the chaincode as `verdicts`, restated as
`restatement` naming the set it supersedes, checked by verify against the channel, and their evidence
bundle re-checked offline from the channel's headers."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from audit.claims.evidence import export_evidence
from audit.claims.verdict import Inputs, check_claims
from firmware_sim.sim import simulate
from ingest.pipeline import ingest_payloads
from ingest.registry import register_device
from ledger.fabric.backend import FabricLedger
from ledger.seal import seal_windows
from ledger.verdict_sets import VERDICT_SET_DIFFERS, check_verdict_sets

HOUR = 3_600_000
START = 1_786_000_000_000 - 1_786_000_000_000 % HOUR  # windows no other Fabric test anchors


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _files(d: Path, claimed: float) -> tuple[Path, Inputs]:
    (d / "intensity.csv").write_text("region,hour_start,gco2e_per_kwh\n" + "".join(
        f"NL,{_iso(START + h * HOUR)},300\n" for h in range(-2, 12)))
    (d / "factors.csv").write_text("kind,scope,period_start,period_end,gco2e_per_kwh,source\n"
                                   f"residual,NL,{_iso(START - 24 * HOUR)},{_iso(START + 48 * HOUR)},500,test\n")
    (d / "certificates.csv").write_text("cert_id,mwh,production_start,production_end,producer,technology,holder,"
                                        "cancelled_for,cancelled_period_start,cancelled_period_end,claim_ids\n")
    claims = {"organisation": {"id": "fabco", "name": "Fabric Co"}, "sites": ["s01"],
              "period": {"from": _iso(START + 2 * HOUR), "to": _iso(START + 5 * HOUR)}, "region": "NL",
              "claims": [{"id": "pv", "kind": "onsite_generation", "claimed": claimed},
                         {"id": "s2", "kind": "scope2_emissions", "method": "location", "claimed": 1.0}]}
    (d / "claims.yaml").write_text(json.dumps(claims))
    return d / "claims.yaml", Inputs(d / "intensity.csv", d / "factors.csv", d / "certificates.csv")


def test_verdict_sets_anchor_restate_and_verify_on_fabric(store_db: str, fabric_ledger: FabricLedger,
                                                          tmp_path: Path) -> None:
    run = simulate(sites=1, days=0.25, seed=78, start_ms=START, clock=lambda: START + 6 * HOUR + 300_000)
    for d in run.devices:
        register_device(store_db, d.record)
    ingest_payloads(store_db, [(m.topic, m.payload) for m in run.messages()], now_ms=START + 7 * HOUR)
    assert seal_windows(store_db, fabric_ledger, now_ms=START + 7 * HOUR)
    claim_file, inputs = _files(tmp_path, 0.0)
    first = check_claims(store_db, claim_file, inputs, fabric_ledger)
    assert [v["verdict"] for v in first.verdicts] == ["SUBSTANTIATED", "SUBSTANTIATED"]
    assert first.sealed.kind == "verdicts" and first.sealed.receipt["backend"] == "fabric"
    anchored = fabric_ledger.get(first.sealed.set_id)
    assert anchored is not None and anchored[0].site == "claims:fabco"
    assert check_verdict_sets(store_db, fabric_ledger, org="fabco") == []

    # a corrected input (the grid intensity) changes a figure: a restatement superseding the first set
    (tmp_path / "intensity.csv").write_text("region,hour_start,gco2e_per_kwh\n" + "".join(
        f"NL,{_iso(START + h * HOUR)},320\n" for h in range(-2, 12)))
    second = check_claims(store_db, claim_file, inputs, fabric_ledger)
    assert second.sealed.kind == "restatement" and second.sealed.supersedes == first.sealed.set_id
    assert fabric_ledger.get(second.sealed.set_id)[0].amends == first.sealed.set_id  # type: ignore[index]
    third = check_claims(store_db, claim_file, inputs, fabric_ledger)
    assert third.sealed.unchanged and third.sealed.set_id == second.sealed.set_id
    assert check_verdict_sets(store_db, fabric_ledger, org="fabco") == []

    bundle = tmp_path / "bundle"
    export_evidence(store_db, fabric_ledger, second.sealed.set_id, bundle)
    res = subprocess.run([sys.executable, "-I", str(bundle / "recheck.py"), str(bundle)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0 and "OK:" in res.stdout, res.stdout + res.stderr

    with psycopg.connect(store_db, autocommit=True) as conn:
        conn.execute("UPDATE claim_verdict_sets SET verdicts[1] = replace(convert_from(verdicts[1], 'UTF8'), "
                     "'SUBSTANTIATED', 'OVERSTATED')::bytea WHERE set_id = %s", (second.sealed.set_id,))
    problems = check_verdict_sets(store_db, fabric_ledger, org="fabco")
    assert [(p.kind, p.ref) for p in problems] == [(VERDICT_SET_DIFFERS, (second.sealed.set_id,))]
