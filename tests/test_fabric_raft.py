"""A Fabric network that survives losing a node (issue 15), on a real local network of its own: three
Raft orderers (etcdraft, each with its own TLS identity), two peers, the chaincode as a service.

- The Raft leader stopped while batches are being anchored: a new leader is elected, anchoring goes
  on, and every batch is on the channel exactly once (the chaincode's list, the block events and the
  receipts agree). The stopped orderer, restarted, catches up.
- Two of the three orderers stopped (no majority): anchoring is refused with a clear error and
  nothing is anchored; one restarted, anchoring resumes.
- One peer stopped: the endorsement policy ``AND('Org1MSP.peer','Org2MSP.peer')`` cannot be met, so
  anchoring is refused with a clear error (transactions endorsed before the stop still commit);
  restarted, the peer catches up to the same ledger height and anchoring resumes.

The network is its own (not the session's): these tests stop nodes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import msgspec
import pytest

from ledger.backend import (
    GENESIS_HASH,
    BatchHeader,
    LedgerUnavailable,
    Receipt,
    header_bytes,
    header_hash,
)
from ledger.fabric.backend import FabricLedger, wait_ready
from ledger.fabric.collect import collect_evidence, trust_from_network
from ledger.fabric.evidence import verify_evidence
from ledger.fabric.gateway import Gateway, GatewayError, Identity
from ledger.fabric.network import FabricNetwork, Ports
from tests.ledger_conformance import make_header, site

pytestmark = pytest.mark.fabric


@pytest.fixture(scope="module")
def raft_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FabricNetwork]:
    net = FabricNetwork(tmp_path_factory.mktemp("fabric-raft"), Ports.free(), orderers=3)
    net.up()
    yield net
    net.down()


@pytest.fixture(scope="module")
def raft_ledger(raft_network: FabricNetwork) -> Iterator[FabricLedger]:
    ledger = FabricLedger.from_profile(raft_network.profile().to_json(), retry_for=120)
    wait_ready(ledger)
    yield ledger
    ledger.close()


@pytest.fixture
def all_nodes_up(raft_network: FabricNetwork) -> FabricNetwork:
    """Every orderer and peer running and a Raft leader elected (a previous test may have stopped some)."""
    for name in raft_network.orderers:
        if not raft_network.status()["processes"][name]:
            raft_network.start_orderer(name)
    for org in ("org1", "org2"):
        if not raft_network.status()["processes"][f"peer-{org}"]:
            raft_network.start_peer(org)
    raft_network.wait_raft_leader()
    return raft_network


def gateway_for(net: FabricNetwork, org: str) -> Gateway:
    p = net.profile()
    return Gateway(p.peers[org], p.tls_ca[org], Identity.from_files(p.msp_id[org], p.user_cert[org], p.user_key[org]),
                   p.channel)


def poll(what: str, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``condition`` until true; a node still starting (GatewayError) counts as not yet."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            if condition():
                return
        except GatewayError as exc:  # e.g. the peer's health endpoint answers before its gRPC port
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:.0f} s (last error: {last})")
        time.sleep(0.2)


def assert_each_batch_once(ledger: FabricLedger, chains: dict[str, list[BatchHeader]],
                           receipts: dict[str, Receipt]) -> None:
    """The chaincode's list of every site is exactly its headers, in order, each once; the receipt
    each anchor() returned names the transaction that holds it; the block events carry each once."""
    for s, headers in chains.items():
        listed = ledger.list_site(s)
        assert [h.batch_id for h, _ in listed] == [h.batch_id for h in headers], s
        assert [header_hash(h) for h, _ in listed] == [header_hash(h) for h in headers], s
        assert [r.tx_id for _, r in listed] == [receipts[h.batch_id].tx_id for h in headers], s
        assert ledger.head(s) == header_hash(headers[-1])
    anchored = [e.header.batch_id for e in ledger.events() if e.header.site in chains]
    assert sorted(anchored) == sorted(receipts) and len(anchored) == len(set(anchored))


def test_anchoring_continues_after_the_raft_leader_is_stopped_with_no_batch_lost_or_anchored_twice(
        all_nodes_up: FabricNetwork, raft_ledger: FabricLedger) -> None:
    net = all_nodes_up
    leader = net.wait_raft_leader()
    sites = [site() for _ in range(6)]
    per_site = 12
    chains: dict[str, list[BatchHeader]] = {s: [] for s in sites}
    receipts: dict[str, Receipt] = {}
    done_at: dict[str, float] = {}
    lock = threading.Lock()
    quarter = threading.Event()
    errors: list[BaseException] = []

    def chain(s: str) -> None:
        prev = GENESIS_HASH
        try:
            for n in range(per_site):
                h = make_header(s, n, prev)
                r = raft_ledger.anchor(h)
                with lock:
                    chains[s].append(h)
                    receipts[h.batch_id] = r
                    done_at[h.batch_id] = time.monotonic()
                    if len(receipts) >= len(sites) * per_site // 4:
                        quarter.set()
                prev = header_hash(h)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
            quarter.set()

    threads = [threading.Thread(target=chain, args=(s,)) for s in sites]
    for t in threads:
        t.start()
    assert quarter.wait(120)
    net.stop(leader)  # SIGTERM to the leader's process while the chains are anchoring
    stopped_at = time.monotonic()
    new_leader = net.wait_raft_leader(timeout=30, other_than=leader)
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert new_leader != leader and not net.status()["processes"][leader]
    after = [b for b, t in done_at.items() if t > stopped_at]
    assert len(after) >= len(sites) * per_site // 2, "the leader was not stopped mid-stream"
    assert_each_batch_once(raft_ledger, chains, receipts)
    # a block delivered after the stop is signed by another orderer (each has its own identity): the
    # receipt is still proven offline against the orderer organisation's pinned root
    last = receipts[chains[sites[0]][-1].batch_id]
    assert done_at[last.batch_id] > stopped_at
    assert verify_evidence(collect_evidence(raft_ledger, last), header_bytes(chains[sites[0]][-1]),
                           msgspec.to_builtins(last), trust_from_network(net.dir)) == []

    # the old leader comes back as a follower and catches up with the channel
    net.start_orderer(leader)
    poll(f"{leader} catching up", lambda: net.orderer_metric(leader, "ledger_blockchain_height")
         == net.orderer_metric(new_leader, "ledger_blockchain_height"))
    info = net.orderer_channel(leader)
    assert info["consensusRelation"] == "consenter" and info["status"] == "active"


def test_with_one_follower_orderer_stopped_anchoring_goes_on(all_nodes_up: FabricNetwork,
                                                             raft_ledger: FabricLedger) -> None:
    net = all_nodes_up
    leader = net.wait_raft_leader()
    follower = next(n for n in net.orderers if n != leader)
    net.stop(follower)
    s, prev, headers = site(), GENESIS_HASH, []
    for n in range(5):
        headers.append(make_header(s, n, prev))
        raft_ledger.anchor(headers[-1])
        prev = header_hash(headers[-1])
    assert [h.batch_id for h, _ in raft_ledger.list_site(s)] == [h.batch_id for h in headers]
    assert net.raft_leader() == leader  # no election was needed


def test_without_a_majority_of_orderers_anchoring_is_refused_and_resumes_when_one_returns(
        all_nodes_up: FabricNetwork) -> None:
    net = all_nodes_up
    s = site()
    h0 = make_header(s, 0, GENESIS_HASH)
    ledger = FabricLedger.from_profile(net.profile().to_json(), retry_for=4)
    ledger.anchor(h0)
    h1 = make_header(s, 1, header_hash(h0))
    leader = net.wait_raft_leader()
    stopped = [n for n in net.orderers if n != leader][:1] + [leader]  # two of three: no quorum left
    for name in stopped:
        net.stop(name)
    try:
        with pytest.raises(LedgerUnavailable) as info:
            ledger.anchor(h1)
        msg = str(info.value)
        assert h1.batch_id in msg and "failed for 4 s" in msg and "no orderers could successfully process" in msg, msg
        assert ledger.head(s) == header_hash(h0)  # nothing half-anchored
    finally:
        net.start_orderer(stopped[0])
    patient = FabricLedger.from_profile(net.profile().to_json(), retry_for=120)
    assert patient.anchor(h1).header_hash == header_hash(h1)
    assert [b.batch_id for b, _ in patient.list_site(s)] == [h0.batch_id, h1.batch_id]
    ledger.close()
    patient.close()


def test_with_one_peer_stopped_anchoring_is_refused_clearly_and_the_restarted_peer_catches_up(
        all_nodes_up: FabricNetwork, raft_ledger: FabricLedger) -> None:
    net = all_nodes_up
    gw1, gw2 = gateway_for(net, "org1"), gateway_for(net, "org2")
    # endorsed by both organisations while both peers run …
    endorsed = []
    heads = [make_header(site(), 0, GENESIS_HASH) for _ in range(5)]
    for h in heads:
        p = gw1.proposal("wattproof", "AnchorBatch", [header_bytes(h)])
        endorsed.append((p.tx_id, gw1.endorse(p)))
    net.stop("peer-org2")
    try:
        # … still commit: ordering and org1's peer need no Org2 peer; these blocks are missed by org2's peer
        for tx_id, env in endorsed:
            gw1.submit(tx_id, env)
        assert [gw1.commit_status(tx_id)[0] for tx_id, _ in endorsed] == ["VALID"] * 5
        # a new anchoring cannot be endorsed under AND(Org1, Org2): refused, with what to check
        s = site()
        impatient = FabricLedger.from_profile(net.profile().to_json(), retry_for=3)
        with pytest.raises(LedgerUnavailable) as info:
            impatient.anchor(make_header(s, 0, GENESIS_HASH))
        msg = str(info.value)
        assert "Org2MSP" in msg or "endorsement policy" in msg, msg
        assert "is every one running?" in msg, msg
        assert raft_ledger.list_site(s) == []
        impatient.close()
    finally:
        net.start_peer("org2")
    poll("peer-org2 catching up", lambda: gw2.height() == gw1.height())
    for h in heads:  # the restarted peer has the blocks it missed
        assert gw2.evaluate("wattproof", "GetBatch", [h.batch_id.encode()])
    h = make_header(site(), 0, GENESIS_HASH)
    assert raft_ledger.anchor(h).header_hash == header_hash(h)  # endorsement by both works again
    poll("both peers at the same height", lambda: gw2.height() == gw1.height())
    gw1.close()
    gw2.close()
