"""Claim verdicts end to end against a real PostgreSQL and the local ledger: each kind SUBSTANTIATED and
OVERSTATED around its measured figure, UNVERIFIABLE when coverage, anchoring or findings do not allow a
verdict; verdict sets anchored and restated after late data; a tampered reading named by ``verify``;
evidence bundles re-checked by the stdlib script and by ``verify-evidence``, and refused when one
hourly figure is changed or one window's leaves are dropped."""

from __future__ import annotations

import json
import lzma
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from audit.claims.decide import OVERSTATED, SUBSTANTIATED, UNVERIFIABLE
from audit.claims.evidence import export_evidence, verify_evidence
from audit.claims.verdict import Inputs, check_claims
from device.identity import public_key_b64
from device.wire import b64url
from firmware_sim.sim import simulate
from ingest.pipeline import ingest_payloads
from ingest.registry import register_device
from ledger.local import LocalLedger
from ledger.seal import seal_windows
from ledger.verify import verify_all
from tests.scratch import scratch_db

START = 1_780_272_000_000  # 2026-06-01T00:00Z
HOUR = 3_600_000
DOCS = Path(__file__).resolve().parents[1] / "docs" / "claims.md"


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _inputs(d: Path) -> Inputs:
    (d / "intensity.csv").write_text("region,hour_start,gco2e_per_kwh\n" + "".join(
        f"NL,{_iso(START + h * HOUR)},{300 + 10 * (h % 7)}\n" for h in range(-24, 72)))
    (d / "factors.csv").write_text("kind,scope,period_start,period_end,gco2e_per_kwh,source\n"
                                   "residual,NL,2026-01-01,2027-01-01,540.0,test\n"
                                   "supplier,green-nl,2026-01-01,2027-01-01,120.0,test\n")
    (d / "certificates.csv").write_text(
        "cert_id,mwh,production_start,production_end,producer,technology,holder,cancelled_for,"
        "cancelled_period_start,cancelled_period_end,claim_ids\n"
        f"W-1,0.0005,{_iso(START + 30 * HOUR)},{_iso(START + 36 * HOUR)},Windpark,wind,acme,acme,"
        f"{_iso(START + 25 * HOUR)},{_iso(START + 36 * HOUR)},\n")
    return Inputs(d / "intensity.csv", d / "factors.csv", d / "certificates.csv")


def _claims(d: Path, claims: list[dict[str, Any]], coverage_min: float = 0.9, name: str = "claims.yaml") -> Path:
    doc = {"organisation": {"id": "acme", "name": "Acme"}, "sites": ["s01", "s02"],
           "period": {"from": _iso(START + 25 * HOUR), "to": _iso(START + 36 * HOUR)}, "region": "NL",
           "coverage_min": coverage_min, "claims": claims}
    p = d / name
    p.write_text(json.dumps(doc))  # JSON is YAML
    return p


@pytest.fixture(scope="module")
def store(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, LocalLedger, Path]]:
    with scratch_db(pg_server, "claims_verdicts") as dsn:
        run = simulate(sites=2, days=2, seed=11, start_ms=START, clock=lambda: START + 48 * HOUR + 300_000)
        for dev in run.devices:
            register_device(dsn, dev.record)
        ingest_payloads(dsn, [(m.topic, m.payload) for m in run.messages()], now_ms=START + 49 * HOUR)
        d = tmp_path_factory.mktemp("claims")
        led = LocalLedger.open(d / "ledger")
        assert seal_windows(dsn, led, now_ms=START + 49 * HOUR)
        yield dsn, led, d


def _measured(dsn: str, d: Path, claims: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    run = check_claims(dsn, _claims(d, claims, name="probe.yaml"), _inputs(d))
    return {v["claim"]["id"]: v for v in run.verdicts}


KINDS = [
    {"id": "share-annual", "kind": "renewable_share", "basis": "annual"},
    {"id": "share-hourly", "kind": "renewable_share", "basis": "hourly"},
    {"id": "s2-location", "kind": "scope2_emissions", "method": "location"},
    {"id": "s2-market", "kind": "scope2_emissions", "method": "market"},
    {"id": "s2-reduction", "kind": "scope2_reduction", "method": "location",
     "base_period": {"from": _iso(START + 12 * HOUR), "to": _iso(START + 23 * HOUR)}},
    {"id": "onsite", "kind": "onsite_generation"},
]


def test_each_kind_is_substantiated_below_its_measured_figure_and_overstated_well_above(store: Any) -> None:
    dsn, _, d = store
    probe = _measured(dsn, d, [{**k, "claimed": 0} for k in KINDS])
    claims = []
    for k in KINDS:
        m = probe[k["id"]]["measured"]
        assert m is not None, probe[k["id"]]["reasons"]
        honest, inflated = (m["lo"] - m["tolerance"] * 2, max(m["hi"] * 1.5, m["hi"] + 20)) \
            if m["greener"] == "higher" else (m["hi"] * 1.2 + 0.01, m["lo"] * 0.5)
        assert honest >= 0, (k["id"], m)  # the fixture's figures are positive (a reduction, too)
        claims += [{**k, "id": k["id"] + "-honest", "claimed": max(honest, 0.0)},
                   {**k, "id": k["id"] + "-inflated", "claimed": min(inflated, 100.0) if m["unit"] == "%" else inflated}]
    run = check_claims(dsn, _claims(d, claims, name="kinds.yaml"), _inputs(d))
    got = {v["claim"]["id"]: v for v in run.verdicts}
    for k in KINDS:
        assert got[k["id"] + "-honest"]["verdict"] == SUBSTANTIATED, got[k["id"] + "-honest"]["reasons"]
        over = got[k["id"] + "-inflated"]
        if probe[k["id"]]["measured"]["hi"] < 100 or probe[k["id"]]["measured"]["unit"] != "%":
            assert over["verdict"] == OVERSTATED, over["reasons"]
            assert over["gap"] is not None
    # every verdict carries its evidence
    v = got["share-annual-honest"]
    assert {"renewable_share_annual", "renewable_share_hourly", "coverage_energy_weighted"} <= set(v["figures"])
    assert v["batches"]["count"] == 2 * 12 and v["method"].endswith("wattproof-claims/1")  # 2 sites, 11 h + the hour before
    assert run.context["batches"] and all(len(b) == 2 for b in run.context["batches"])


def test_coverage_below_the_threshold_makes_every_claim_unverifiable(store: Any) -> None:
    dsn, _, d = store
    p = _claims(d, [{**KINDS[5], "claimed": 0}], name="cov.yaml")
    doc = json.loads(p.read_text())
    doc["period"] = {"from": _iso(START + 40 * HOUR), "to": _iso(START + 52 * HOUR)}  # data ends at 48 h
    p.write_text(json.dumps(doc))
    v = check_claims(dsn, p, _inputs(d)).verdicts[0]
    assert v["verdict"] == UNVERIFIABLE and any("coverage" in r and "below" in r for r in v["reasons"])
    assert v["coverage"] < 0.9


def test_an_open_high_severity_finding_on_a_figure_device_makes_the_claim_unverifiable(store: Any) -> None:
    dsn, _, d = store
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO findings (run_id, site_id, device_id, kind, severity, start_ts, end_ts, evidence, "
                     "detector, detector_version) VALUES ('t', 's01', 's01-pv', 'pv_above_clear_sky', 'high', "
                     "to_timestamp(%s / 1000.0), to_timestamp(%s / 1000.0), '{}', 't', '1')",
                     (START + 30 * HOUR, START + 31 * HOUR))
        try:
            run = check_claims(dsn, _claims(d, [{**KINDS[5], "claimed": 0}], name="f.yaml"), _inputs(d))
        finally:
            conn.execute("DELETE FROM findings WHERE run_id = 't'")
    v = run.verdicts[0]
    assert v["verdict"] == UNVERIFIABLE and any("pv_above_clear_sky" in r for r in v["reasons"])
    assert v["findings"][0]["kind"] == "pv_above_clear_sky"


def test_verdicts_are_anchored_restated_after_late_data_and_tampering_after_a_verdict_is_named(
        pg_server: Any, tmp_path: Path) -> None:
    with scratch_db(pg_server, "claims_restate") as dsn:
        run = simulate(sites=2, days=2, seed=11, start_ms=START, clock=lambda: START + 48 * HOUR + 300_000)
        for dev in run.devices:
            register_device(dsn, dev.record)
        msgs = [(m.topic, m.payload) for m in run.messages()]
        # the PV inverter's frames of one hour inside the period arrive late
        late = [m for m in msgs if "/s01-pv/" in m[0]
                and START + 30 * HOUR <= json.loads(m[1])["readings"][0]["ts_ms"] < START + 31 * HOUR]
        assert late
        ingest_payloads(dsn, [m for m in msgs if m not in late], now_ms=START + 49 * HOUR)
        led = LocalLedger.open(tmp_path / "ledger")
        seal_windows(dsn, led, now_ms=START + 49 * HOUR)
        claims = _claims(tmp_path, [{**KINDS[5], "claimed": 0}])
        first = check_claims(dsn, claims, _inputs(tmp_path), led)
        assert first.sealed.kind == "verdicts" and not first.sealed.unchanged
        ingest_payloads(dsn, late, now_ms=START + 50 * HOUR)
        # not anchored yet: the re-check cannot vouch for the late readings
        pending = check_claims(dsn, claims, _inputs(tmp_path))
        assert pending.verdicts[0]["verdict"] == UNVERIFIABLE
        assert any("not anchored" in r for r in pending.verdicts[0]["reasons"])
        kinds = [b.header.kind for b in seal_windows(dsn, led, now_ms=START + 50 * HOUR)]
        assert kinds and set(kinds) == {"amendment"}
        second = check_claims(dsn, claims, _inputs(tmp_path), led)
        assert second.sealed.kind == "restatement" and second.sealed.supersedes == first.sealed.set_id
        assert second.verdicts[0]["figures"] != first.verdicts[0]["figures"]
        assert verify_all(dsn, led).intact
        # tamper with an anchored reading after the verdict: verify names it
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE readings SET energy_wh = energy_wh + 5000 WHERE (device_id, seq, idx) = "
                         "(SELECT device_id, seq, idx FROM readings WHERE device_id = 's01-pv' ORDER BY ts "
                         "OFFSET 300 LIMIT 1)")
        res = verify_all(dsn, led)
        assert not res.intact
        assert any(p.kind == "reading_differs_from_frame" for p in res.store_problems)


def _recheck(bundle: Path) -> subprocess.CompletedProcess[str]:
    """The stdlib checker as printed in docs/claims.md, run by a bare interpreter away from the checkout."""
    text = DOCS.read_text()
    code = text.split("```python recheck.py\n", 1)[1].split("\n```", 1)[0] + "\n"
    script = bundle.parent / "recheck_from_docs.py"
    script.write_text(code)
    return subprocess.run([sys.executable, "-I", str(script), str(bundle)], capture_output=True, text=True,
                          timeout=300, cwd=bundle.parent)


@pytest.fixture(scope="module")
def bundle(store: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dsn, led, d = store
    claims = [{**k, "claimed": 0} for k in KINDS]
    run = check_claims(dsn, _claims(d, claims, name="bundle.yaml"), _inputs(d), led)
    out = tmp_path_factory.mktemp("evidence") / "bundle"
    s = export_evidence(dsn, led, run.sealed.set_id, out)
    assert s.readings > 0 and s.batches == len(run.batches) and s.verdicts == len(KINDS)
    return out


def test_the_docs_script_recomputes_every_figure_of_an_untouched_bundle(bundle: Path) -> None:
    res = _recheck(bundle)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "OK:" in res.stdout and "figures recomputed" in res.stdout


def test_verify_evidence_with_the_pinned_operator_key_verifies_and_another_key_refuses(store: Any, bundle: Path) -> None:
    _, led, _ = store
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    assert verify_evidence(bundle, None).pinned is False
    ok = verify_evidence(bundle, [public_key_b64(led.pub)])
    assert ok.ok and ok.pinned, ok.failures
    other = b64url(Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    bad = verify_evidence(bundle, [other])
    assert not bad.ok and any("pinned operator keys" in f for f in bad.failures)


def _copy(bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(bundle, dst)
    return dst


def test_a_bundle_with_one_changed_hourly_figure_is_refused_by_both_checkers(bundle: Path, tmp_path: Path) -> None:
    b = _copy(bundle, tmp_path)
    m = json.loads((b / "manifest.json").read_text())
    vs = m["verdict_set"]
    v = json.loads(vs["verdicts"][1])  # the hourly share: change one hour's certificate supply
    v["inputs"]["cert_supply_wh"][3] += 500.0
    vs["verdicts"][1] = json.dumps(v, sort_keys=True, separators=(",", ":"))
    (b / "manifest.json").write_text(json.dumps(m))
    res = _recheck(b)
    assert res.returncode == 1 and "do not rebuild the verdict set's anchored root" in res.stdout
    assert not verify_evidence(b, None).ok


def test_a_bundle_with_a_changed_reading_or_a_dropped_window_is_refused_by_both_checkers(bundle: Path, tmp_path: Path) -> None:
    for mutate, expect in (("change", "do not rebuild the anchored root"), ("drop", "has no leaves in the bundle")):
        b = _copy(bundle, tmp_path / mutate)
        lines = lzma.decompress((b / "leaves.jsonl.xz").read_bytes()).splitlines()
        if mutate == "drop":
            lines = lines[:3] + lines[4:]
        else:
            rec = json.loads(lines[3])
            rec["r"][0][4] += 1000  # one register value
            lines[3] = json.dumps(rec, separators=(",", ":")).encode()
        (b / "leaves.jsonl.xz").write_bytes(lzma.compress(b"\n".join(lines) + b"\n"))
        res = _recheck(b)
        assert res.returncode == 1 and expect in res.stdout, res.stdout
        assert not verify_evidence(b, None).ok


def test_a_bundle_whose_chain_is_cut_before_the_named_head_is_refused(bundle: Path, tmp_path: Path) -> None:
    b = _copy(bundle, tmp_path)
    lines = (b / "headers.jsonl").read_text().splitlines()
    (b / "headers.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    res = _recheck(b)
    assert res.returncode == 1 and "the verdict set names head" in res.stdout


def test_the_script_printed_in_the_docs_is_the_one_shipped_in_bundles() -> None:
    from audit.claims import recheck

    text = DOCS.read_text()
    printed = text.split("```python recheck.py\n", 1)[1].split("\n```", 1)[0] + "\n"
    assert printed == Path(recheck.__file__).read_text()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wattproof", *args], capture_output=True, text=True, timeout=300)


def test_the_claims_commands_check_anchor_export_verify_and_score(store: Any, tmp_path: Path) -> None:
    dsn, led, d = store
    inputs = _inputs(tmp_path)
    claims = [{**KINDS[5], "id": "honest", "claimed": 0.0, "expect": "SUBSTANTIATED"},
              {**KINDS[5], "id": "inflated", "claimed": 1000.0, "expect": "OVERSTATED"}]
    p = _claims(tmp_path, claims, name="cli.yaml")
    doc = json.loads(p.read_text())
    doc["inputs"] = {"intensity": "intensity.csv", "factors": "factors.csv", "certificates": "certificates.csv"}
    p.write_text(json.dumps(doc))
    assert inputs.intensity.parent == p.parent
    ledger_dir = str(d / "ledger")
    res = _cli("claims", "check", str(p), "--db", dsn, "--ledger-dir", ledger_dir)
    assert res.returncode == 1, res.stdout + res.stderr  # one claim is not substantiated
    assert "OVERSTATED" in res.stdout and "anchored as a verdicts" in res.stdout
    again = _cli("claims", "check", str(p), "--db", dsn, "--ledger-dir", ledger_dir, "--json")
    out = json.loads(again.stdout)
    assert out["verdict_set"]["unchanged"] and [v["verdict"] for v in out["verdicts"]] == ["SUBSTANTIATED", "OVERSTATED"]
    score = _cli("claims", "score", str(p), "--db", dsn)
    assert score.returncode == 0 and "2 of 2 verdicts as expected" in score.stdout
    bundle = tmp_path / "bundle"
    ev = _cli("claims", "evidence", "--org", "acme", "--db", dsn, "--ledger-dir", ledger_dir, "--out", str(bundle))
    assert ev.returncode == 0 and "recheck.py" in ev.stdout, ev.stdout + ev.stderr
    unpinned = _cli("claims", "verify-evidence", str(bundle))
    assert unpinned.returncode == 3 and "self-consistent only" in unpinned.stderr
    pinned = _cli("claims", "verify-evidence", str(bundle), "--operator-key", public_key_b64(led.pub))
    assert pinned.returncode == 0 and "evidence verified" in pinned.stdout
    bad = _claims(tmp_path, [{"id": "x", "kind": "renewable_share", "claimed": 120, "basis": "annual"}], name="bad.yaml")
    res = _cli("claims", "check", str(bad), "--db", dsn, "--no-anchor", "--intensity", str(inputs.intensity),
               "--factors", str(inputs.factors), "--certificates", str(inputs.certificates))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "bad.yaml:1: field `claims.0.claimed`" in res.stderr


def test_a_verdict_set_receipt_carrying_another_records_signature_is_refused(store: Any, bundle: Path,
                                                                             tmp_path: Path) -> None:
    """The operator signs record hashes; a forged verdict set whose receipt borrows a genuine record's hash and
    signature must fail, because the record hash is recomputed from the verdict set's own header."""
    _, led, _ = store
    b = _copy(bundle, tmp_path)
    m = json.loads((b / "manifest.json").read_text())
    genuine = json.loads((b / "headers.jsonl").read_text().splitlines()[0])["receipt"]
    r = m["verdict_set"]["receipt"]
    r.update({k: genuine[k] for k in ("record_hash", "signature", "ref", "prev_record")})
    (b / "manifest.json").write_text(json.dumps(m))
    res = _recheck(b)
    assert res.returncode == 1 and "record hash does not recompute" in res.stdout
    assert not verify_evidence(b, [public_key_b64(led.pub)]).ok
