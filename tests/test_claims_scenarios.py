"""The scenarios' claims scored against their ground truth, through the real store, audit and ledger:
the honest organisation (`clean`) gets SUBSTANTIATED on its true claims; the greenwashing one gets
OVERSTATED or UNVERIFIABLE on each inflated claim (the 100 % annual share far lower hourly, the
double-counted certificate, the certificate inflated beyond its inverter's metered production, the
savings claim on an unfit baseline) — each as the claim file's `expect:` says."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from audit.claims.verdict import Inputs, check_claims, score_claims
from audit.run import run_audit
from firmware_sim.fleet import write_weather
from firmware_sim.scenarios import load_scenario
from firmware_sim.sim import simulate
from ingest.pipeline import ingest_payloads
from ingest.registry import register_device
from ledger.local import LocalLedger
from ledger.seal import seal_windows
from tests.scratch import scratch_db

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["clean", "greenwash"])
def test_scenario_claims_get_the_verdicts_their_ground_truth_expects(name: str, pg_server: Any, tmp_path: Path) -> None:
    with scratch_db(pg_server, f"claims_scenario_{name}") as dsn:
        sc = load_scenario(ROOT / "scenarios" / f"{name}.yaml")
        run = simulate(scenario=sc)
        for dev in run.devices:
            register_device(dsn, dev.record)
        msgs = [(m.topic, m.payload) for m in run.messages()]
        ingest_payloads(dsn, msgs)  # frames are stamped when built (now): the wall clock is the ingest clock
        run_audit(dsn)
        led = LocalLedger.open(tmp_path / "ledger")
        seal_windows(dsn, led)
        claim_file = ROOT / "scenarios" / "claims" / f"{name}.claims.yaml"
        from audit.claims.schema import load_claim_file

        cf = load_claim_file(claim_file)
        assert cf.inputs is not None
        write_weather(run, tmp_path / "weather.csv")
        inputs = Inputs(Path(cf.inputs.intensity), Path(cf.inputs.factors), Path(cf.inputs.certificates),
                        tmp_path / "weather.csv")
        t0 = time.perf_counter()
        res = check_claims(dsn, claim_file, inputs, led)
        print(f"claims check: {time.perf_counter() - t0:.1f} s")
        got = {v["claim"]["id"]: v for v in res.verdicts}
        rows = score_claims(dsn, claim_file)
        assert rows and all(r["expected"] for r in rows)
        assert all(r["ok"] for r in rows), [(r, got[r["claim"]]["reasons"]) for r in rows if not r["ok"]]
        if name == "greenwash":
            annual = got["gw-share-annual"]
            assert any("hourly matched" in r and "percentage points below" in r for r in annual["reasons"])
            kinds = {f["kind"] for f in res.certificate_findings}
            assert {"cert_double_counted", "cert_inflated", "cert_not_cancelled_for_org"} <= kinds
            assert any("savings gate" in r for r in got["gw-savings"]["reasons"])
