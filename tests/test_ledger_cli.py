"""`wattproof audit run | anchor | verify | proof export | verify-proof` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

from device.identity import public_key_b64, read_private_key
from device.wire import b64url
from firmware_sim.sim import simulate
from ingest.pipeline import ingest_payloads
from ingest.registry import register_device

START = 1_780_272_000_000  # 2026-06-01T00:00Z


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WATTPROOF_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "wattproof", *args], capture_output=True, text=True, env=env, timeout=300)


def test_audit_anchor_verify_and_proofs_from_the_command_line(store_db: str, tmp_path: Path) -> None:
    run = simulate(sites=1, days=0.125, seed=31, start_ms=START)
    for d in run.devices:
        register_device(store_db, d.record)
    ingest_payloads(store_db, [(m.topic, m.payload) for m in run.messages()])
    home = tmp_path / "home"

    res = cli(home, "audit", "run", "--db", store_db)
    assert res.returncode == 0 and "new findings" in res.stdout, res.stderr
    res = cli(home, "anchor", "--db", store_db)
    assert res.returncode == 0 and "sealed and anchored 3 batches" in res.stdout, res.stderr
    trust = tmp_path / "trust.json"  # what the operator says to pin; the test is the auditor who checked it
    res = cli(home, "trust", "export", "--db", store_db, "--out", str(trust))
    assert res.returncode == 0, res.stderr
    res = cli(home, "verify", "--db", store_db, "--json", "--trust", str(trust))
    assert res.returncode == 0 and json.loads(res.stdout)["intact"] == 3, res.stderr

    bundle = tmp_path / "bundle.json"
    before = {p: p.stat().st_mtime_ns for p in home.rglob("*")}
    res = cli(home, "proof", "export", "--db", store_db, "--device", "s01-pv", "--from", "2026-06-01T00:00:00",
              "--to", "2026-06-01T02:00:00", "--out", str(bundle))
    assert res.returncode == 0, res.stderr
    assert {p: p.stat().st_mtime_ns for p in home.rglob("*")} == before  # export writes nothing but the bundle
    res = cli(home, "verify-proof", str(bundle))  # no trust pinned: self-consistent only
    assert res.returncode == 3 and res.stdout.startswith("SELF-CONSISTENT ONLY, NOT VERIFIED: 120 readings"), res.stderr
    with psycopg.connect(store_db) as conn:
        (device_key,) = conn.execute("SELECT public_key FROM devices WHERE device_id = 's01-pv'").fetchone()  # type: ignore[misc]
    operator_key = public_key_b64(read_private_key(home / "ledger" / "operator.key"))
    res = cli(home, "verify-proof", str(bundle), "--operator-key", operator_key,
              "--device-key", f"s01-pv={b64url(bytes(device_key))}")
    assert res.returncode == 0 and res.stdout.startswith("OK: 120 readings of s01-pv"), res.stdout + res.stderr
    res = cli(home, "verify-proof", str(bundle), "--trust", str(trust))
    assert res.returncode == 0 and res.stdout.startswith("OK: 120 readings of s01-pv"), res.stdout + res.stderr

    with psycopg.connect(store_db) as conn:
        conn.execute("DELETE FROM readings WHERE device_id = 's01-sub2' AND seq = 2 AND idx = 4")
    res = cli(home, "verify", "--db", store_db, "--json", "--trust", str(trust))
    assert res.returncode == 1
    problems = json.loads(res.stdout)["problems"]
    assert [p["deleted"] for p in problems] == [[["s01-sub2", 2, 4]]]

    res = cli(home, "verify-proof", str(tmp_path / "missing.json"))
    assert res.returncode == 1 and "Traceback" not in res.stderr
