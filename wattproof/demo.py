"""``wattproof demo``: the whole path on embedded services, printing each step.

Owns: the wiring of one demo run — an embedded broker and PostgreSQL (kept under the data dir
and reused across runs; the demo database is recreated each run), the schema, a simulated fleet
from a scenario, the ingest service, and the cross-check of what was stored against the
scenario's ground truth. The audit runs after ingest and is scored against the truth. It then seals
and anchors on the local ledger — or, with ``--ledger fabric``, on a local two-organisation Fabric
network it starts itself (``ledger.fabric.network``) — verifies, checks the scenario organisation's green claims (verdicts anchored, the evidence
bundle re-checked offline; wattproof/demo_claims.py), and shows that one altered reading is named by verify.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from audit.run import run_audit
from audit.score import score as score_audit
from device.identity import public_key_b64
from firmware_sim.fleet import FleetPublisher, write_sites, write_truth, write_weather
from firmware_sim.scenarios import load_scenario
from firmware_sim.sim import simulate
from ingest.pipeline import counts
from ingest.registry import register_device
from ingest.schema import upgrade
from ingest.service import IngestConfig, IngestService
from ledger.backend import LedgerBackend
from ledger.local import LocalLedger
from ledger.proofs import ProofBundleError, export_bundle, verify_bundle
from ledger.seal import seal_windows
from ledger.trust import FORMAT as TRUST_FORMAT
from ledger.trust import Trust
from ledger.verify import verify_all
from wattproof import config
from wattproof.demo_claims import ClaimsOutcome, claim_file_for, run_claims, run_report
from wattproof.embedded import Broker, Postgres

DEMO_DB = "wattproof_demo"


@dataclass
class DemoResult:
    published_readings: int
    stored_readings: int
    expected_readings: int
    quarantined: dict[str, int]
    expected_quarantine: dict[str, int]

    tamper_named: bool = False
    audit_f1_min: float = 0.0
    verified: bool = False  # verify against the pinned trust, before the demo's own tampering
    claims: ClaimsOutcome | None = None  # the scenario's claim verdicts and their evidence bundle
    report_ok: bool = True  # the claim period's report verified offline (when the scenario has claims)

    @property
    def matches_truth(self) -> bool:
        return self.stored_readings == self.expected_readings and self.quarantined == self.expected_quarantine


def _recreate_db(pg: Postgres, name: str) -> str:
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return pg.dsn.rsplit("/", 1)[0] + "/" + name


def run_demo(scenario_path: Path, ledger: str = "local", broker_kind: str | None = None,
             console: Console | None = None, finale: Any = None) -> DemoResult:
    con = console or Console()
    home = config.data_dir()
    run_dir = home / "demo"
    run_dir.mkdir(parents=True, exist_ok=True)
    con.rule("[bold]wattproof demo")
    con.print(f"data directory: {home}")

    broker = Broker(home / "broker", auth=True).start(prefer=broker_kind)  # loopback, no anonymous clients
    pg = Postgres(home / "pg").start()
    stack = ExitStack()
    try:
        con.print(f"[green]✓[/] broker: {broker.kind} on {broker.url}"
                  + (" (MQTT 3.1.1: Mosquitto not installed)" if broker.kind == "amqtt" else "")
                  + f"; anonymous clients refused, users ingest (subscribe) and devices (publish), "
                    f"passwords in {broker.workdir / 'credentials.json'}")
        dsn = _recreate_db(pg, DEMO_DB)
        applied = upgrade(dsn)
        con.print(f"[green]✓[/] PostgreSQL {pg.bindir}: database {DEMO_DB} on port {pg.port}, "
                  f"schema migrations applied: {', '.join(applied)}")

        sc = load_scenario(scenario_path)
        run = simulate(scenario=sc)
        for dev in run.devices:
            register_device(dsn, dev.record)
        write_truth(run, run_dir / "truth.jsonl")
        write_weather(run, run_dir / "weather.csv")
        write_sites(run, run_dir / "sites.json")
        con.print(f"[green]✓[/] scenario [bold]{sc.name}[/]: {len(run.sites)} sites, {len(run.devices)} devices "
                  f"registered, {sc.days:g} days at {sc.interval_s} s, {len(run.truth)} injected faults "
                  f"(truth: {run_dir / 'truth.jsonl'})")

        protocol = 5 if broker.kind == "mosquitto" else 4  # 4 = MQTT 3.1.1 (amqtt speaks nothing newer)
        svc = IngestService(IngestConfig(broker.url_for("ingest"), dsn, client_id="wattproof-demo-ingest",
                                         protocol=protocol)).start()
        fleet = FleetPublisher(broker.url_for("devices"), run_dir / "spool", run.devices, protocol=protocol)
        t0 = time.perf_counter()
        try:
            fleet.start()
            with Progress(TextColumn("[bold]publish + ingest"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("readings"), console=con) as bar:
                task = bar.add_task("pub", total=run.n_readings)
                published = fleet.run(run.messages(), progress=lambda k: bar.update(task, completed=k))
                fleet.flush()
            svc.wait_idle(idle_s=1.5)
        finally:
            fleet.close()
            svc.stop()
        elapsed = time.perf_counter() - t0
        with psycopg.connect(dsn) as conn:
            got = counts(conn)
        expected_q = Counter(t.expect.split(":", 1)[1] for t in run.truth if t.expect.startswith("quarantine:"))
        labelled = sum(t.n_readings for t in run.truth if t.expect.startswith("quarantine:") or t.expect == "noop")
        result = DemoResult(published, got["readings"], published - labelled, got["quarantine"], dict(expected_q))
        con.print(f"[green]✓[/] published {published:,} readings over MQTT; ingest stored "
                  f"[bold]{got['readings']:,}[/] readings in {got['frames']:,} frames "
                  f"({published / elapsed:,.0f} readings/s end to end)")
        table = Table("quarantine reason", "frames", "expected from truth")
        for reason in sorted(set(got["quarantine"]) | set(expected_q)):
            table.add_row(reason, str(got["quarantine"].get(reason, 0)), str(expected_q.get(reason, 0)))
        con.print(table)
        verdict = "[green]matches" if result.matches_truth else "[red]DOES NOT match"
        con.print(f"{verdict}[/] the ground truth: stored = published − labelled rejects − duplicates "
                  f"({published:,} − {labelled:,} = {published - labelled:,})")
        t_audit = time.perf_counter()
        new = run_audit(dsn)
        con.print(f"[green]✓[/] audit: {sum(new.values())} findings in {time.perf_counter() - t_audit:.1f} s")
        table = Table("fault kind (truth)", "truth", "found", "precision", "recall", "F1")
        scores = score_audit(dsn, run_dir / "truth.jsonl")
        for sc_ in scores:
            table.add_row(sc_.kind, str(sc_.truths), str(sc_.findings), f"{sc_.precision:.2f}", f"{sc_.recall:.2f}",
                          f"{sc_.f1:.2f}")
        con.print(table)
        others = {k: v for k, v in new.items() if k not in {x.kind for x in scores}}
        if others:
            con.print(f"   other findings (not in the truth): {others}")
        result.audit_f1_min = min((x.f1 for x in scores), default=1.0)
        backend, where = _open_ledger(ledger, run_dir, con, stack)
        t1 = time.perf_counter()
        with Progress(TextColumn("[bold]seal + anchor"), BarColumn(), MofNCompleteColumn(), TextColumn("windows"),
                      console=con) as bar:
            task = bar.add_task("seal", total=None)
            made = seal_windows(dsn, backend, progress=lambda i, n: bar.update(task, completed=i, total=n))
        sealed_n = sum(b.header.leaf_count for b in made)
        con.print(f"[green]✓[/] sealed {sealed_n:,} readings into {len(made)} hourly batches (RFC 6962 roots, "
                  f"hash-chained per site) anchored on {where} "
                  f"in {time.perf_counter() - t1:.1f} s")
        trust = _demo_trust(backend, run.devices, run_dir)
        res = verify_all(dsn, backend, trust)
        intact = sum(r.status == "intact" for r in res.reports)
        mark = "[green]✓[/]" if res.intact and res.pinned else "[red]✗[/]"
        con.print(f"{mark} verify against the pinned trust: {res.verdict} — {intact} of {len(res.reports)} batches "
                  f"intact, {res.readings:,} stored readings equal to their {res.frames:,} signed frames, "
                  f"{len(res.store_problems)} store problems, {len(res.pending)} late readings awaiting amendment")
        result.verified = res.intact and res.pinned
        claim_path = claim_file_for(scenario_path)
        if claim_path is not None:
            t2 = time.perf_counter()
            result.claims = run_claims(dsn, backend, claim_path, run_dir / "weather.csv",
                                       trust.operator_keys[0] if trust.operator_keys else None, run_dir, con)
            result.report_ok = run_report(dsn, backend, claim_path, trust, run_dir, con)
            con.print(f"   claims and report in {time.perf_counter() - t2:.1f} s")
        sample = made[len(made) // 2].leaf_keys[0] if made else None
        if sample:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("UPDATE readings SET energy_wh = energy_wh + 1 WHERE (device_id, seq, idx) = (%s, %s, %s)",
                             sample)
            after = verify_all(dsn, backend, trust)
            named = [(r.batch_id, r.changed) for r in after.reports if r.status != "intact"]
            differs = [p.ref for p in after.store_problems]
            con.print(f"[green]✓[/] tamper check: after `UPDATE readings SET energy_wh = energy_wh + 1` on one "
                      f"reading, verify says {after.verdict} and names {named}; against the signed frame: {differs}")
            result.tamper_named = named == [(made[len(made) // 2].header.batch_id, [sample])] and differs == [sample]
        if made:
            b = made[-1]
            device = b.leaf_keys[0][0]
            t1 = datetime.fromtimestamp(b.header.window_start_ms / 1000, UTC)
            t2 = datetime.fromtimestamp(b.header.window_end_ms / 1000, UTC)
            path = run_dir / "proof-bundle.json"
            try:
                bundle = export_bundle(dsn, backend, device, t1, t2)
            except ProofBundleError as exc:
                con.print(f"[red]✗[/] proof bundle: {exc}")
                result.tamper_named = False
                return result
            path.write_text(json.dumps(bundle, indent=1) + "\n")
            problems = verify_bundle(path.read_bytes(), trust)
            n = sum(len(x["readings"]) for x in bundle["batches"])
            con.print(f"[green]✓[/] proof bundle {path}: {n} readings of {device}; offline verify-proof against the "
                      "pinned trust: " + ("OK" if not problems else f"[red]{problems[:3]}"))
            result.tamper_named = result.tamper_named and not problems
        if finale is not None:  # the dashboard on the demo database until Ctrl-C (dashboard/demo.py)
            finale(dsn, backend, trust, run_dir, con)
        return result
    finally:
        stack.close()
        pg.stop()
        broker.stop()


def _demo_trust(backend: LedgerBackend, devices: list[Any], run_dir: Path) -> Trust:
    """What the demo's auditor pins: the keys and roots it knows first-hand (it made them): the local
    ledger's operator key or the demo Fabric network's organisation roots, and the devices' keys."""
    operator = [public_key_b64(backend.pub)] if isinstance(backend, LocalLedger) else []
    fabric = None
    if backend.name == "fabric":
        from ledger.fabric.collect import trust_from_network

        fabric = trust_from_network(run_dir / "fabric")
    return Trust(format=TRUST_FORMAT, operator_keys=operator, fabric=fabric,
                 devices={d.record.device: [d.record.public_key] for d in devices})


def _open_ledger(kind: str, run_dir: Path, con: Console, stack: ExitStack) -> tuple[LedgerBackend, str]:
    if kind == "local":
        local = LocalLedger.open(run_dir / f"ledger-{int(time.time())}")
        return local, f"the local ledger {local.path}"
    if kind != "fabric":
        raise ValueError(f"unknown ledger {kind!r} (local | fabric)")
    from ledger.fabric.backend import FabricLedger, wait_ready
    from ledger.fabric.network import FabricNetwork, Ports

    net_dir = run_dir / "fabric"
    if net_dir.exists():
        FabricNetwork(net_dir).down(purge=True)  # a fresh channel per demo run
    t0 = time.perf_counter()
    net = FabricNetwork(net_dir, Ports.free())
    stack.callback(net.down)
    profile = net.up()
    fabric = FabricLedger.from_profile(profile.to_json())
    stack.callback(fabric.close)
    wait_ready(fabric)
    con.print(f"[green]✓[/] Fabric {net.status()['package_id'].split(':')[0]}: {net.status()['orderers']} Raft orderer(s) + peers of "
              f"Org1MSP and Org2MSP, channel {profile.channel}, chaincode as a service, endorsement "
              f"AND(Org1, Org2); started in {time.perf_counter() - t0:.1f} s ({net_dir})")
    return fabric, f"Fabric channel {profile.channel} (Gateway {profile.peers['org1']})"
