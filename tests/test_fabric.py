"""The Fabric backend on a real local network (orderer, two peers, the Go chaincode as a service):
the conformance suite, the chaincode's refusals through the Gateway, events, receipts, replay against
the channel, a stopped peer, MVCC conflicts and unknown commit outcomes."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from firmware_sim.sim import simulate
from ingest.pipeline import ingest_payloads
from ingest.registry import register_device
from ledger.backend import (
    GENESIS_HASH,
    ChainBroken,
    LedgerUnavailable,
    header_bytes,
    header_hash,
)
from ledger.fabric.backend import FabricLedger
from ledger.fabric.gateway import Gateway, GatewayError, Identity
from ledger.fabric.network import FabricNetwork, Ports
from ledger.seal import seal_windows
from ledger.verify import verify
from tests.ledger_conformance import LedgerConformance, make_header, site


class TestFabricConformance(LedgerConformance):
    @pytest.fixture
    def backend(self, fabric_ledger: FabricLedger) -> FabricLedger:
        return fabric_ledger


def gateway_for(net: FabricNetwork, org: str = "org1") -> Gateway:
    p = net.profile()
    ident = Identity.from_files(p.msp_id[org], p.user_cert[org], p.user_key[org])
    return Gateway(p.peers[org], p.tls_ca[org], ident, p.channel)


def refusal(gw: Gateway, raw: bytes) -> str:
    with pytest.raises(GatewayError) as info:
        gw.submit_transaction("wattproof", "AnchorBatch", [raw])
    return info.value.all_messages


def test_the_chaincode_refuses_overwrites_broken_chains_and_non_canonical_headers(
        fabric_ledger: FabricLedger, fabric_network: FabricNetwork) -> None:
    gw = gateway_for(fabric_network, "org2")  # the other organisation's client, straight to the chaincode
    s = site()
    h0 = make_header(s, 0, GENESIS_HASH)
    fabric_ledger.anchor(h0)
    assert "ALREADY_ANCHORED" in refusal(gw, header_bytes(make_header(s, 0, header_hash(h0), root="e" * 64)))
    assert "CHAIN_BROKEN" in refusal(gw, header_bytes(make_header(s, 1, "b" * 64)))
    canonical = header_bytes(make_header(s, 1, header_hash(h0)))
    spaced = json.dumps(json.loads(canonical), sort_keys=True).encode()  # same content, with spaces
    assert "INVALID_HEADER" in refusal(gw, spaced)
    assert "INVALID_HEADER" in refusal(gw, b"{not json")
    assert fabric_ledger.head(s) == header_hash(h0)
    gw.submit_transaction("wattproof", "AnchorBatch", [canonical])  # the canonical one goes through
    assert fabric_ledger.head(s) == header_hash(make_header(s, 1, header_hash(h0)))
    gw.close()


def test_a_receipt_names_the_transaction_and_block_that_hold_the_header(
        fabric_ledger: FabricLedger, fabric_network: FabricNetwork) -> None:
    h = make_header(site(), 0, GENESIS_HASH)
    r = fabric_ledger.anchor(h)
    assert r.backend == "fabric" and r.channel == "wattproof" and r.block is not None and len(r.tx_id or "") == 64
    gw = gateway_for(fabric_network)
    block = next(gw.blocks(r.block, r.block))
    from fabric_protos.common import common_pb2

    tx_ids = [common_pb2.ChannelHeader.FromString(common_pb2.Payload.FromString(
        common_pb2.Envelope.FromString(raw).payload).header.channel_header).tx_id for raw in block.data.data]
    assert r.tx_id in tx_ids
    got = fabric_ledger.get(h.batch_id)
    assert got is not None and got[1].tx_id == r.tx_id
    gw.close()


def test_events_are_received_live_from_the_gateway(fabric_ledger: FabricLedger, fabric_network: FabricNetwork) -> None:
    gw = gateway_for(fabric_network, "org2")
    start = gw.height()
    s = site()
    received: list[str] = []

    def listen() -> None:
        for ev in gw.chaincode_events("wattproof", start_block=start, timeout=30):
            received.append(json.loads(ev.payload)["batch_id"])
            if len(received) == 2:
                return

    t = threading.Thread(target=listen)
    t.start()
    h0 = make_header(s, 0, GENESIS_HASH)
    fabric_ledger.anchor(h0)
    fabric_ledger.anchor(make_header(s, 1, header_hash(h0)))
    t.join(40)
    assert received == [f"{s}:0", f"{s}:1"]
    gw.close()


def test_concurrent_headers_on_one_chain_conflict_and_only_one_commits(
        fabric_ledger: FabricLedger, fabric_network: FabricNetwork) -> None:
    gw = gateway_for(fabric_network)
    s = site()
    a = make_header(s, 0, GENESIS_HASH)
    b = make_header(s, 0, GENESIS_HASH, batch_id=f"{s}:other")
    pa, pb = (gw.proposal("wattproof", "AnchorBatch", [header_bytes(h)]) for h in (a, b))
    ea, eb = gw.endorse(pa), gw.endorse(pb)  # both simulated against the same (empty) head
    gw.submit(pa.tx_id, ea)
    gw.submit(pb.tx_id, eb)
    codes = sorted([gw.commit_status(pa.tx_id)[0], gw.commit_status(pb.tx_id)[0]])
    assert codes == ["MVCC_READ_CONFLICT", "VALID"]
    assert fabric_ledger.head(s) in {header_hash(a), header_hash(b)}
    gw.close()


class _Racing(Gateway):
    """A real Gateway connection that, right after our endorsement, lets a competing header for the
    same chain commit first — so our transaction meets a real MVCC conflict."""

    competitor: bytes = b""

    def endorse(self, p):  # type: ignore[no-untyped-def]
        env = super().endorse(p)
        if self.competitor:
            raw, self.competitor = self.competitor, b""
            super().submit_transaction("wattproof", "AnchorBatch", [raw])
        return env


def test_an_mvcc_conflict_is_re_endorsed_and_then_refused_as_a_broken_chain(fabric_network: FabricNetwork) -> None:
    p = fabric_network.profile()
    ident = Identity.from_files(p.msp_id["org1"], p.user_cert["org1"], p.user_key["org1"])
    gw = _Racing(p.peers["org1"], p.tls_ca["org1"], ident, p.channel)
    ledger = FabricLedger(gw, retry_for=20)
    s = site()
    ours, theirs = make_header(s, 0, GENESIS_HASH), make_header(s, 0, GENESIS_HASH, batch_id=f"{s}:theirs")
    gw.competitor = header_bytes(theirs)
    with pytest.raises(ChainBroken):  # the retry sees the new head: our prev_hash is stale
        ledger.anchor(ours)
    assert ledger.head(s) == header_hash(theirs) and ledger.get(ours.batch_id) is None
    ledger.close()


class _LostStatus(Gateway):
    """A real Gateway connection whose first commit-status answer is lost (as on a timeout)."""

    lost = 0
    endorsed = 0

    def endorse(self, p):  # type: ignore[no-untyped-def]
        self.endorsed += 1
        return super().endorse(p)

    def commit_status(self, tx_id, timeout=None):  # type: ignore[no-untyped-def]
        if not self.lost:
            self.lost += 1
            super().commit_status(tx_id, timeout)  # it did commit …
            raise GatewayError("commit status", "DEADLINE_EXCEEDED", "simulated lost answer", [])  # … we never hear
        return super().commit_status(tx_id, timeout)


def test_an_unknown_outcome_is_settled_by_reading_back_not_by_resubmitting(fabric_network: FabricNetwork) -> None:
    p = fabric_network.profile()
    ident = Identity.from_files(p.msp_id["org1"], p.user_cert["org1"], p.user_key["org1"])
    gw = _LostStatus(p.peers["org1"], p.tls_ca["org1"], ident, p.channel)
    ledger = FabricLedger(gw, retry_for=20)
    h = make_header(site(), 0, GENESIS_HASH)
    receipt = ledger.anchor(h)
    assert gw.lost == 1 and gw.endorsed == 1  # no second endorsement: GetBatch showed it committed
    got = ledger.get(h.batch_id)
    assert got is not None and got[1].tx_id == receipt.tx_id
    assert [b.batch_id for b, _ in ledger.list_site(h.site)] == [h.batch_id]
    ledger.close()


def test_with_one_orgs_peer_down_anchoring_fails_clearly_then_succeeds_once_after_restart(
        fabric_ledger: FabricLedger, fabric_network: FabricNetwork) -> None:
    s = site()
    h0 = make_header(s, 0, GENESIS_HASH)
    fabric_ledger.anchor(h0)
    h1 = make_header(s, 1, header_hash(h0))
    impatient = FabricLedger.from_profile(fabric_network.profile().to_json(), retry_for=3)
    fabric_network.stop("peer-org2")
    try:
        t0 = time.monotonic()
        with pytest.raises(LedgerUnavailable) as info:
            impatient.anchor(h1)
        assert time.monotonic() - t0 < 30
        msg = str(info.value)
        assert h1.batch_id in msg and ("Org2MSP" in msg or "endorsement policy" in msg), msg
        assert "is every one running?" in msg, msg
        assert fabric_ledger.head(s) == header_hash(h0)  # nothing half-anchored
    finally:
        fabric_network.start_peer("org2")
    patient = FabricLedger.from_profile(fabric_network.profile().to_json(), retry_for=90)
    receipt = patient.anchor(h1)
    assert receipt.header_hash == header_hash(h1)
    assert [b.batch_id for b, _ in patient.list_site(s)] == [h0.batch_id, h1.batch_id]  # once each
    events = [e.header.batch_id for e in patient.events() if e.header.site == s]
    assert events == [h0.batch_id, h1.batch_id]
    impatient.close()
    patient.close()


def test_seal_anchor_tamper_verify_names_the_reading_against_fabric(store_db: str, fabric_ledger: FabricLedger) -> None:
    run = simulate(sites=1, days=0.125, seed=77, start_ms=1_781_000_000_000 - 1_781_000_000_000 % 3_600_000)
    for d in run.devices:
        register_device(store_db, d.record)
    ingest_payloads(store_db, [(m.topic, m.payload) for m in run.messages()])
    made = seal_windows(store_db, fabric_ledger)
    assert len(made) == 3 and all(r.status == "intact" for r in verify(store_db, fabric_ledger))
    with psycopg.connect(store_db) as conn:
        receipt = conn.execute("SELECT receipt FROM batches ORDER BY window_start LIMIT 1").fetchone()[0]  # type: ignore[index]
        assert receipt["backend"] == "fabric" and receipt["block"] and receipt["tx_id"]
        key = conn.execute("SELECT k.d, k.s, k.i FROM batches b, unnest(b.leaf_devices, b.leaf_seqs, b.leaf_idxs) "
                           "AS k(d, s, i) WHERE b.batch_id = %s ORDER BY 1, 2, 3 OFFSET 7 LIMIT 1",
                           (made[1].header.batch_id,)).fetchone()
        conn.execute("UPDATE readings SET energy_wh = energy_wh + 5 WHERE (device_id, seq, idx) = (%s, %s, %s)", key)
    bad = [r for r in verify(store_db, fabric_ledger) if r.status != "intact"]
    assert len(bad) == 1 and bad[0].batch_id == made[1].header.batch_id and bad[0].changed == [tuple(key)]  # type: ignore[arg-type]


def test_fabric_cli_up_status_down(tmp_path: Path) -> None:
    """`wattproof fabric up|status|down` on a network of its own (free ports)."""
    from typer.testing import CliRunner

    from wattproof.cli import app

    d = tmp_path / f"net-{uuid.uuid4().hex[:6]}"
    runner = CliRunner()
    try:
        r = runner.invoke(app, ["fabric", "up", "--dir", str(d), "--base-port", "0"])
        assert r.exit_code == 0, r.output
        assert (d / "profile.json").exists()
        r = runner.invoke(app, ["fabric", "status", "--dir", str(d), "--json"])
        assert r.exit_code == 0, r.output
        st = json.loads(r.output)
        assert st["running"] and st["height"] >= 4  # genesis, two approvals, commit
    finally:
        r = runner.invoke(app, ["fabric", "down", "--dir", str(d)])
    assert r.exit_code == 0
    r = runner.invoke(app, ["fabric", "status", "--dir", str(d)])
    assert r.exit_code == 1 and "stopped" in r.output


def test_a_fast_sequential_chain_survives_a_lagging_endorser(fabric_ledger: FabricLedger) -> None:
    """Each anchoring is endorsed by both orgs' peers; the other org's peer may not have committed the
    previous block yet and then refuses with CHAIN_BROKEN. The backend must tell that apart from a
    stale prev_hash (regression: found by bench_fabric)."""
    s = site()
    prev = GENESIS_HASH
    for n in range(25):
        h = make_header(s, n, prev)
        fabric_ledger.anchor(h)
        prev = header_hash(h)
    assert fabric_ledger.head(s) == prev
    assert len(fabric_ledger.list_site(s)) == 25


def test_down_never_signals_a_pid_that_is_no_longer_ours(tmp_path: Path) -> None:
    """network.json outlives its processes; a recorded pid reused by another process must be left alone."""
    import subprocess

    from ledger.fabric.network import State

    bystander = subprocess.Popen(["sleep", "60"])
    try:
        net = FabricNetwork(tmp_path / "stale", Ports.free())
        net.state.pids["orderer"] = bystander.pid  # as if the orderer had this pid once …
        net.state.started["orderer"] = 1  # … in a process that started at another time
        net.state.save()
        again = FabricNetwork(tmp_path / "stale")
        assert State.load(tmp_path / "stale") is not None and not again.status()["processes"]["orderer"]
        again.down()
        assert bystander.poll() is None  # still running
    finally:
        bystander.kill()
