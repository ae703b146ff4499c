"""pytest fixtures for Fabric tests (registered in tests/conftest.py): one real local Fabric network
for the session — orderer, two peers, the chaincode as a service — on free 127.0.0.1 ports in a temp
dir, stopped after. Missing binaries are built (ledger/fabric/build-binaries.sh), never skipped."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ledger.fabric.backend import FabricLedger, wait_ready
from ledger.fabric.collect import trust_from_network
from ledger.fabric.network import FabricNetwork, Ports
from ledger.trust import FabricTrust


@pytest.fixture(scope="session")
def fabric_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FabricNetwork]:
    # one orderer: the evidence tests name the block signer (orderer.wattproof.test); the three-orderer
    # Raft set has its own network in tests/test_fabric_raft.py
    net = FabricNetwork(tmp_path_factory.mktemp("fabric"), Ports.free(), orderers=1)
    net.up()
    yield net
    net.down()


@pytest.fixture(scope="session")
def fabric_session_ledger(fabric_network: FabricNetwork) -> Iterator[FabricLedger]:
    ledger = FabricLedger.from_profile(fabric_network.profile().to_json(), retry_for=30)
    wait_ready(ledger)
    yield ledger
    ledger.close()


@pytest.fixture
def fabric_ledger(fabric_session_ledger: FabricLedger, fabric_network: FabricNetwork) -> FabricLedger:
    """The session's Fabric backend, with both peers running (a test may have stopped one)."""
    for org in ("org1", "org2"):
        if not fabric_network.status()["processes"][f"peer-{org}"]:
            fabric_network.start_peer(org)
    return fabric_session_ledger


@pytest.fixture(scope="session")
def fabric_trust(fabric_network: FabricNetwork) -> FabricTrust:
    """What a verifier pins for the session's network: its channel, chaincode, endorsing orgs and the
    root CAs of its peer and orderer organisations (from the network's cryptogen material)."""
    return trust_from_network(fabric_network.dir)
