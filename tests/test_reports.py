"""Regulator reports end to end against a real PostgreSQL and the local ledger: a fleet simulated, ingested,
audited, sealed and its claims checked; the report written in every format, its PDF read back with
``pdftotext`` and checked against its JSON, its CSV and Parquet against the JSON figures, its ESRS table;
``verify-report`` (through the real CLI) verifies it against the pinned operator key and refuses a modified,
an added and a removed file, a manifest re-hashed but not re-signed, and one signed by another key."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from audit.claims.verdict import Inputs, check_claims
from audit.reports import ReportError, build_report, verify_report
from audit.reports.manifest import chain_of, seal_report
from audit.reports.model import esrs_value, measured, mwh, pct
from audit.reports.verify import (
    ANCHOR_NOT_PINNED,
    FILE_ADDED,
    FILE_CHANGED,
    FILE_REMOVED,
    HEADER_MISMATCH,
    SIGNATURE_INVALID,
    SIGNER_NOT_PINNED,
    UNREADABLE,
)
from audit.run import run_audit
from device.identity import generate_key, public_key_b64
from firmware_sim.scenarios import parse_scenario
from firmware_sim.sim import simulate
from ingest.pipeline import ingest_payloads
from ingest.registry import register_device
from ledger.local import LocalLedger
from ledger.seal import seal_windows
from ledger.trust import FORMAT, Trust, write_trust
from tests.scratch import scratch_db

START = 1_780_272_000_000  # 2026-06-01T00:00Z
HOUR = 3_600_000
P0, P1 = START + 24 * HOUR, START + 48 * HOUR  # the report period: the second day
SCENARIO = """
name: report-test
sites: 2
days: 2
seed: 11
start: "2026-06-01"
faults:
  - {kind: spike, site: 0, device: sub2, start_h: 30.3, factor: 10}
  - {kind: gap, site: 1, device: sub1, start_h: 40, duration_h: 1.5}
"""


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _inputs(d: Path) -> Inputs:
    (d / "intensity.csv").write_text("region,hour_start,gco2e_per_kwh\n" + "".join(
        f"NL,{_iso(START + h * HOUR)},{300 + 10 * (h % 7)}\n" for h in range(-24, 72)))
    (d / "factors.csv").write_text("kind,scope,period_start,period_end,gco2e_per_kwh,source\n"
                                   "residual,NL,2026-01-01,2027-01-01,540.0,test\n")
    (d / "certificates.csv").write_text(
        "cert_id,mwh,production_start,production_end,producer,technology,holder,cancelled_for,"
        "cancelled_period_start,cancelled_period_end,claim_ids\n"
        f"W-1,0.0005,{_iso(P0 + 6 * HOUR)},{_iso(P0 + 12 * HOUR)},Windpark,wind,acme,acme,"
        f"{_iso(P0)},{_iso(P1)},\n")
    return Inputs(d / "intensity.csv", d / "factors.csv", d / "certificates.csv")


CLAIMS = [{"id": "share-annual", "kind": "renewable_share", "basis": "annual", "claimed": 100},
          {"id": "share-hourly", "kind": "renewable_share", "basis": "hourly", "claimed": 1},
          {"id": "s2-location", "kind": "scope2_emissions", "method": "location", "claimed": 0.001},
          {"id": "s2-market", "kind": "scope2_emissions", "method": "market", "claimed": 1000},
          {"id": "onsite", "kind": "onsite_generation", "claimed": 0.001}]


def _claim_file(d: Path) -> Path:
    doc = {"organisation": {"id": "acme", "name": "Acme Energy"}, "sites": ["s01", "s02"],
           "period": {"from": _iso(P0), "to": _iso(P1)}, "region": "NL", "coverage_min": 0.5,
           "inputs": {"intensity": "intensity.csv", "factors": "factors.csv", "certificates": "certificates.csv"},
           "claims": CLAIMS}
    p = d / "claims.yaml"
    p.write_text(json.dumps(doc))  # JSON is YAML
    return p


@pytest.fixture(scope="module")
def seeded(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One store for the module (as ``store_db`` makes it: every migration applied): simulate → ingest →
    audit → seal on a local ledger → claims checked (a verdict set anchored) → one report in every format."""
    with scratch_db(pg_server, "reports_e2e") as dsn:
        run = simulate(scenario=parse_scenario(SCENARIO), clock=lambda: START + 48 * HOUR + 300_000)
        for dev in run.devices:
            register_device(dsn, dev.record)
        ingest_payloads(dsn, [(m.topic, m.payload) for m in run.messages()], now_ms=START + 49 * HOUR)
        assert run_audit(dsn, workers=1)
        d = tmp_path_factory.mktemp("reports")
        led = LocalLedger.open(d / "ledger")
        assert seal_windows(dsn, led, now_ms=START + 49 * HOUR)
        claims = _claim_file(d)
        inputs = _inputs(d)
        run_c = check_claims(dsn, claims, inputs, led)
        trust = d / "trust.json"
        write_trust(trust, Trust(format=FORMAT, operator_keys=[public_key_b64(led.key)]))  # type: ignore[arg-type]
        out = d / "report"
        summary = build_report(dsn, led, "acme", P0, P1, ["pdf", "csv", "parquet", "json"], out)
        yield {"dsn": dsn, "ledger": led, "dir": d, "out": out, "summary": summary, "trust": trust, "claims": claims,
               "inputs": inputs, "set_id": run_c.sealed.set_id,
               "doc": json.loads((out / "report.json").read_text())}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wattproof", *args], capture_output=True, text=True, timeout=300)


def _copy(seeded: dict[str, Any], tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(seeded["out"], dst)
    return dst


# --- what is written ----------------------------------------------------------------------------------

def test_report_writes_every_format_and_a_manifest_anchored_on_the_org_report_chain(seeded: dict[str, Any]) -> None:
    s, led, out = seeded["summary"], seeded["ledger"], seeded["out"]
    assert set(s.files) == {"report.pdf", "report.json", "batches.jsonl", "hourly.csv", "hourly.parquet"}
    assert sorted(p.name for p in out.iterdir()) == sorted([*s.files, "manifest.json"])
    header, receipt = led.get(s.report_id)
    assert header.kind == "report" and header.site == chain_of("acme") and header.leaf_count == 5
    assert (header.window_start_ms, header.window_end_ms) == (P0, P1)
    assert header.root == s.root and header.findings_digest == s.manifest_sha256
    assert receipt.header_hash == s.receipt["header_hash"]
    assert s.verdict_set == seeded["set_id"]
    with psycopg.connect(seeded["dsn"]) as conn:
        row = conn.execute("SELECT org_id, manifest_sha256, verdict_set FROM report_manifests WHERE report_id = %s",
                           (s.report_id,)).fetchone()
    assert row == ("acme", s.manifest_sha256, seeded["set_id"])


def test_report_json_holds_the_anchored_verdicts_findings_coverage_and_batches(seeded: dict[str, Any]) -> None:
    doc, dsn = seeded["doc"], seeded["dsn"]
    assert [v["claim"]["id"] for v in doc["verdicts"]] == [c["id"] for c in CLAIMS]
    assert doc["verdict_set"]["set_id"] == seeded["set_id"] and doc["verdict_set"]["on_ledger"]
    with psycopg.connect(dsn) as conn:
        n_findings = conn.execute("SELECT count(*) FROM findings WHERE start_ts < %s AND end_ts >= %s",
                                  (doc["period"]["to"], doc["period"]["from"])).fetchone()[0]
        stored = conn.execute("SELECT count(*) FROM readings WHERE ts >= %s AND ts < %s",
                              (doc["period"]["from"], doc["period"]["to"])).fetchone()[0]
        n_batches = conn.execute("SELECT count(*) FROM batches WHERE window_start >= %s AND window_start < %s",
                                 (_iso(P0 - HOUR), _iso(P1))).fetchone()[0]
    assert n_findings > 0 and len(doc["findings"]) == n_findings
    assert doc["summary"]["readings_stored"] == stored
    assert doc["summary"]["readings_sealed"] == doc["summary"]["readings_anchored"] == stored  # all sealed, anchored
    assert doc["anchoring"]["batches"] == n_batches == 2 * 25 and doc["anchoring"]["on_ledger"] == n_batches
    lines = (seeded["out"] / "batches.jsonl").read_text().splitlines()
    assert len(lines) == n_batches and all(json.loads(x)["receipt"]["backend"] == "local" for x in lines)
    gap_site = next(c for c in doc["coverage"] if c["site"] == "s02")
    assert gap_site["readings_stored"] < gap_site["readings_expected"]  # the 1.5 h gap of s02-sub1


def test_esrs_table_maps_the_figures_to_e1_5_and_e1_6_datapoints(seeded: dict[str, Any]) -> None:
    doc = seeded["doc"]
    rows = {r["key"]: r for r in doc["esrs"]}
    assert {r["disclosure"] for r in doc["esrs"]} == {"E1-5", "E1-6"}
    assert rows["total_energy"]["paragraph"] == "§37"
    assert rows["total_energy"]["datapoint"] == "esrs:EnergyConsumptionRelatedToOwnOperations"
    assert rows["self_generated"]["paragraph"] == "§37(c)(iii)"
    assert math.isclose(rows["total_energy"]["value"], doc["energy"]["org"]["consumption_wh"] / 1e6)
    assert math.isclose(rows["self_generated"]["value"], doc["energy"]["org"]["self_consumed_wh"] / 1e6)
    by_claim = {v["claim"]["id"]: v for v in doc["verdicts"]}
    for key, claim, fig in (("scope2_location", "s2-location", "scope2_location"),
                            ("scope2_market", "s2-market", "scope2_market")):
        assert rows[key]["disclosure"] == "E1-6" and "§49" in rows[key]["paragraph"]
        assert rows[key]["value"] == by_claim[claim]["figures"][fig]["value"] and rows[key]["unit"] == "tCO2e"
    share = by_claim["share-annual"]["figures"]["renewable_share_annual"]
    assert math.isclose(rows["renewable_share"]["value"], share["value"] * 100)
    # the claim period equals the report period, so the verdicts' consumption is the report's
    assert math.isclose(share["totals"]["consumption_wh"], doc["energy"]["org"]["consumption_wh"], rel_tol=1e-12)
    assert all(r["reference"] in ("confirmed", "not confirmed") for r in doc["esrs"])


def test_pdf_text_shows_the_verdicts_figures_and_esrs_table_of_the_json(seeded: dict[str, Any]) -> None:
    if shutil.which("pdftotext") is None:
        pytest.fail("pdftotext is not installed: run `make test` (tests/setup/system-deps.sh installs poppler-utils)")
    text = subprocess.run(["pdftotext", "-layout", str(seeded["out"] / "report.pdf"), "-"], capture_output=True,
                          text=True, check=True).stdout
    doc = seeded["doc"]
    e = doc["energy"]["org"]
    for s in (mwh(e["consumption_wh"]), mwh(e["import_wh"]), mwh(e["pv_wh"]), mwh(e["self_consumed_wh"]),
              pct(e["coverage_energy_weighted"]), f"{doc['summary']['readings_stored']:,}"):
        assert s in text, s
    for v in doc["verdicts"]:
        row = next(ln for ln in text.splitlines() if ln.strip().startswith(v["claim"]["id"] + " "))
        assert v["verdict"] in row, (row, v["verdict"])
        assert measured(v["measured"]["value"], v["measured"]["unit"]) in row, row
    assert "ESRS E1" in text and "E1-5 §37(c)(iii)" in text and "E1-6 §44(b)," in text and "§49(a)" in text
    at = text.index("ESRS E1 disclosures")
    esrs = text[at:text.index("Findings", at)]
    for r in doc["esrs"]:
        assert esrs_value(r["value"], r["unit"]) in esrs, r
    assert doc["verdict_set"]["set_id"] in text


def test_hourly_csv_and_parquet_round_trip_to_the_json_figures(seeded: dict[str, Any]) -> None:
    import pyarrow.parquet as pq

    out, doc = seeded["out"], seeded["doc"]
    with open(out / "hourly.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    table = pq.read_table(out / "hourly.parquet").to_pylist()
    assert len(rows) == len(table) == doc["hourly"]["rows"] == 2 * 24
    for r, t in zip(rows, table, strict=True):
        assert r["site"] == t["site"] and int(r["hour_start_ms"]) == t["hour_start_ms"]
        assert r["hour_start"] == t["hour_start"].strftime("%Y-%m-%dT%H:%M:%SZ")
        for k in ("import_wh", "export_wh", "pv_wh", "consumption_wh", "coverage"):
            assert (float(r[k]) if r[k] else None) == t[k], (k, r, t)
    for site, totals in doc["energy"]["sites"].items():
        mine = [r for r in table if r["site"] == site and None not in (r["import_wh"], r["export_wh"], r["pv_wh"])]
        assert len(mine) == totals["hours_known"]
        for k in ("import_wh", "export_wh", "pv_wh", "consumption_wh"):
            assert math.isclose(sum(r[k] for r in mine), totals[k], rel_tol=1e-12, abs_tol=1e-9), (site, k)
    assert math.isclose(sum(t["consumption_wh"] for t in doc["energy"]["sites"].values()),
                        doc["energy"]["org"]["consumption_wh"], rel_tol=1e-12)


# --- verify-report --------------------------------------------------------------------------------------

def test_verify_report_with_the_pinned_operator_key_is_verified(seeded: dict[str, Any]) -> None:
    res = _cli("verify-report", str(seeded["out"]), "--trust", str(seeded["trust"]))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "verified" in res.stdout and "local ledger record" in res.stdout


def test_verify_report_without_pinned_trust_is_self_consistent_only_exit_3(seeded: dict[str, Any]) -> None:
    res = _cli("verify-report", str(seeded["out"]))
    assert res.returncode == 3 and "self-consistent only" in res.stdout


@pytest.mark.parametrize("tamper, code, name", [
    ("modify", FILE_CHANGED, "hourly.csv"),
    ("add", FILE_ADDED, "extra.txt"),
    ("remove", FILE_REMOVED, "report.pdf"),
])
def test_verify_report_names_a_modified_added_or_removed_file(seeded: dict[str, Any], tmp_path: Path, tamper: str,
                                                              code: str, name: str) -> None:
    d = _copy(seeded, tmp_path)
    if tamper == "modify":
        p = d / name
        p.write_text(p.read_text().replace(",", ";", 1))
    elif tamper == "add":
        (d / name).write_text("not part of the report\n")
    else:
        (d / name).unlink()
    res = _cli("verify-report", str(d), "--trust", str(seeded["trust"]), "--json")
    assert res.returncode == 1, res.stdout
    problems = json.loads(res.stdout)["problems"]
    assert [(p["code"], p["subject"]) for p in problems] == [(code, name)]


def _rewrite_manifest(d: Path, edit: Any) -> None:
    m = json.loads((d / "manifest.json").read_text())
    edit(m)
    (d / "manifest.json").write_text(json.dumps(m, indent=1))


def _rehash(m: dict[str, Any], d: Path) -> None:
    from audit.reports.manifest import files_root, hash_files

    m["files"] = hash_files(d)
    m["root"] = files_root(m["files"])


def test_forged_manifest_rehashed_but_not_resigned_is_refused(seeded: dict[str, Any], tmp_path: Path) -> None:
    d = _copy(seeded, tmp_path)
    (d / "hourly.csv").write_text((d / "hourly.csv").read_text().replace("s01", "s09"))
    _rewrite_manifest(d, lambda m: _rehash(m, d))
    res = verify_report(d, Trust(format=FORMAT, operator_keys=[public_key_b64(seeded["ledger"].key)]))
    codes = {p.code for p in res.problems}
    assert SIGNATURE_INVALID in codes and HEADER_MISMATCH in codes and FILE_CHANGED not in codes


def test_manifest_signed_and_anchored_with_another_key_is_refused_against_the_pinned_key(
        seeded: dict[str, Any], tmp_path: Path) -> None:
    d = _copy(seeded, tmp_path)
    (d / "hourly.csv").write_text((d / "hourly.csv").read_text().replace("s01", "s09"))
    (d / "manifest.json").unlink()
    attacker = LocalLedger.open(tmp_path / "attacker-ledger")  # a fresh ledger and operator key of their own
    seal_report(d, attacker, attacker.key, "acme", ["s01", "s02"], (P0, P1), None)  # type: ignore[arg-type]
    res = verify_report(d, Trust(format=FORMAT, operator_keys=[public_key_b64(seeded["ledger"].key)]))
    assert {p.code for p in res.problems} == {SIGNER_NOT_PINNED, ANCHOR_NOT_PINNED}
    # without pinned trust it is consistent with itself, and only that
    cli = _cli("verify-report", str(d))
    assert cli.returncode == 3
    cli = _cli("verify-report", str(d), "--operator-key", public_key_b64(generate_key()))
    assert cli.returncode == 1 and SIGNER_NOT_PINNED in cli.stdout


def test_manifest_with_a_duplicate_member_is_unreadable(seeded: dict[str, Any], tmp_path: Path) -> None:
    d = _copy(seeded, tmp_path)
    raw = (d / "manifest.json").read_text()
    (d / "manifest.json").write_text(raw.replace('"org": "acme"', '"org": "acme", "org": "acme"', 1))
    res = verify_report(d, None)
    assert [p.code for p in res.problems] == [UNREADABLE]


# --- building -----------------------------------------------------------------------------------------

def test_report_with_a_claim_file_checks_the_claims_first(seeded: dict[str, Any], tmp_path: Path) -> None:
    s = build_report(seeded["dsn"], seeded["ledger"], "acme", P0, P1, ["json"], tmp_path / "r", seeded["claims"])
    assert s.verdict_set == seeded["set_id"]  # unchanged data: the claims' set is the same, nothing restated
    assert set(s.files) == {"report.json", "batches.jsonl"}
    assert verify_report(tmp_path / "r", Trust(format=FORMAT, operator_keys=[public_key_b64(seeded["ledger"].key)])).ok


def test_report_refuses_a_period_off_the_hour_an_unknown_format_and_a_full_directory(seeded: dict[str, Any],
                                                                                      tmp_path: Path) -> None:
    dsn, led = seeded["dsn"], seeded["ledger"]
    with pytest.raises(ReportError, match="whole UTC hours"):
        build_report(dsn, led, "acme", P0 + 1, P1, ["json"], tmp_path / "a")
    with pytest.raises(ReportError, match="unknown format"):
        build_report(dsn, led, "acme", P0, P1, ["docx"], tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("x")
    with pytest.raises(ReportError, match="not an empty directory"):
        build_report(dsn, led, "acme", P0, P1, ["json"], tmp_path / "c")
    with pytest.raises(ReportError, match="no verdict set"):
        build_report(dsn, led, "nobody", P0, P1, ["json"], tmp_path / "d")


def test_report_cli_writes_and_verify_report_cli_checks_it(seeded: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "cli-report"
    res = _cli("report", "--org", "acme", "--period", f"{_iso(P0)}/{_iso(P1)}", "--format", "csv,json",
               "--out", str(out), "--db", seeded["dsn"], "--ledger-dir", str(seeded["dir"] / "ledger"))
    assert res.returncode == 0, res.stderr
    assert "anchored" in res.stdout and (out / "manifest.json").exists()
    assert _cli("verify-report", str(out), "--trust", str(seeded["trust"])).returncode == 0
    bad = _cli("report", "--org", "acme", "--period", "2026-06-02", "--out", str(tmp_path / "x"), "--db", seeded["dsn"])
    assert bad.returncode == 2 and "FROM/TO" in bad.stderr and "Traceback" not in bad.stderr


def test_store_still_verifies_intact_with_report_headers_on_the_ledger(seeded: dict[str, Any]) -> None:
    from ledger.verify import verify_all

    # opened afresh: the CLI tests anchored reports on the same ledger file from other processes
    res = verify_all(seeded["dsn"], LocalLedger.open(seeded["dir"] / "ledger", create=False))
    assert res.intact, [p.detail for p in getattr(res, "problems", [])][:5]


def test_verify_names_a_stored_report_manifest_that_differs_from_its_anchor_or_is_gone(seeded: dict[str, Any]) -> None:
    from ledger.verdict_sets import REPORT_DIFFERS, REPORT_MISSING_IN_STORE, check_report_manifests

    dsn, led = seeded["dsn"], LocalLedger.open(seeded["dir"] / "ledger", create=False)  # as other processes left it
    rid = seeded["summary"].report_id

    def about_it() -> list[tuple[str, tuple[str, ...]]]:  # other tests anchor reports on ledgers of their own
        return [(p.kind, p.ref) for p in check_report_manifests(dsn, led) if p.ref == (rid,)]

    assert about_it() == []
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT * FROM report_manifests WHERE report_id = %s", (rid,)).fetchone()
        cols = [d.name for d in conn.execute("SELECT * FROM report_manifests LIMIT 0").description]
        try:
            conn.execute("UPDATE report_manifests SET manifest = manifest || '\\x20'::bytea WHERE report_id = %s", (rid,))
            assert about_it() == [(REPORT_DIFFERS, (rid,))]
            conn.execute("DELETE FROM report_manifests WHERE report_id = %s", (rid,))
            assert about_it() == [(REPORT_MISSING_IN_STORE, (rid,))]
        finally:
            conn.execute("DELETE FROM report_manifests WHERE report_id = %s", (rid,))
            conn.execute(f"INSERT INTO report_manifests ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
                         [psycopg.types.json.Jsonb(v) if c == "receipt" else v for c, v in zip(cols, row, strict=True)])
    assert about_it() == []
