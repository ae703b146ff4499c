"""A store seeded as the demo seeds it, for the dashboard's tests and benchmark.

Owns: ``seed_store`` (scenario → simulate → ``ingest_payloads`` → ``run_audit`` → ``seal_windows`` on a
LocalLedger → ``check_claims`` anchored → trust file and dashboard config with one login per role) and
``seeded`` (once per test session, shared by tests/test_dashboard_apptest.py and
tests/test_dashboard_browser.py). No tests of its own but one sanity check of the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
PASSWORDS = {"olivia": ("officer", "officer-pw-1"), "aaron": ("auditor", "auditor-pw-2"),
             "rita": ("regulator", "regulator-pw-3"), "adam": ("admin", "admin-pw-4")}


@dataclass(frozen=True)
class Seeded:
    dsn: str
    workdir: Path
    ledger_dir: Path
    trust: Path
    config: Path  # dashboard.toml with the four logins of PASSWORDS, the trust and the ledger
    org: str


def _recreate(admin_dsn: str, name: str) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_dsn.rsplit("/", 1)[0] + "/" + name


def seed_store(admin_dsn: str, workdir: Path, name: str = "dashboard_seeded", scenario: str = "greenwash",
               sites: int | None = None, days: float | None = None) -> Seeded:
    """The scenario's fleet through ingest, audit, sealing and its claims, into database ``name``."""
    import msgspec

    from audit.claims.schema import load_claim_file
    from audit.claims.verdict import Inputs, check_claims
    from audit.run import run_audit
    from dashboard.auth import add_user, new_config
    from device.identity import public_key_b64
    from firmware_sim.fleet import write_weather
    from firmware_sim.scenarios import load_scenario
    from firmware_sim.sim import simulate
    from ingest.pipeline import ingest_payloads
    from ingest.registry import register_device
    from ingest.schema import upgrade
    from ledger.local import LocalLedger
    from ledger.seal import seal_windows
    from ledger.trust import FORMAT, Trust, write_trust

    workdir.mkdir(parents=True, exist_ok=True)
    dsn = _recreate(admin_dsn, name)
    upgrade(dsn)
    sc = load_scenario(ROOT / "scenarios" / f"{scenario}.yaml")
    if sites is not None or days is not None:
        sc = msgspec.structs.replace(sc, **{k: v for k, v in (("sites", sites), ("days", days)) if v is not None})
    run = simulate(scenario=sc)
    for dev in run.devices:
        register_device(dsn, dev.record)
    ingest_payloads(dsn, [(m.topic, m.payload) for m in run.messages()])
    run_audit(dsn)
    ledger_dir = workdir / "ledger"
    led = LocalLedger.open(ledger_dir)
    seal_windows(dsn, led)
    claim_file = ROOT / "scenarios" / "claims" / f"{scenario}.claims.yaml"
    cf = load_claim_file(claim_file)
    assert cf.inputs is not None
    write_weather(run, workdir / "weather.csv")
    inputs = Inputs(Path(cf.inputs.intensity), Path(cf.inputs.factors), Path(cf.inputs.certificates),
                    workdir / "weather.csv")
    check_claims(dsn, claim_file, inputs, led)
    trust = workdir / "trust.json"
    write_trust(trust, Trust(format=FORMAT, operator_keys=[public_key_b64(led.pub)],
                             devices={d.record.device: [d.record.public_key] for d in run.devices}))
    led.close()
    config = workdir / "dashboard.toml"
    new_config(config, ledger_path=ledger_dir, trust=trust, weather=workdir / "weather.csv")
    for user, (role, pw) in PASSWORDS.items():
        add_user(config, user, role, pw, name=user.capitalize())
    return Seeded(dsn, workdir, ledger_dir, trust, config, cf.organisation.id)


_CACHE: dict[str, Seeded] = {}


def seeded(pg_server: Any, tmp_path_factory: Any) -> Seeded:
    """The greenwash store, seeded once per session (both dashboard test modules share it)."""
    if "s" not in _CACHE:
        _CACHE["s"] = seed_store(pg_server.dsn, tmp_path_factory.mktemp("dashboard"))
    return _CACHE["s"]


def test_seeded_store_holds_readings_findings_batches_and_a_verdict_set(pg_server: Any,
                                                                        tmp_path_factory: Any) -> None:
    s = seeded(pg_server, tmp_path_factory)
    with psycopg.connect(s.dsn) as conn:
        for table in ("readings", "findings", "batches", "claim_verdict_sets"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0, table
