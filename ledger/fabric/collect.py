"""Gathering what ``ledger.fabric.evidence`` checks offline, from a running network.

Owns: ``collect_evidence`` (a receipt → the serialized block holding its transaction, read from the
peer's Deliver service) and ``trust_from_network`` (the ``fabric`` section of a trust file built from
the local test network's cryptogen material, for tests and ``wattproof trust export``). The
collected evidence carries no trust: the verifier pins roots itself.
"""

from __future__ import annotations

import base64
from pathlib import Path

from ledger.backend import LedgerError, LedgerUnavailable, Receipt
from ledger.fabric.backend import FabricLedger
from ledger.fabric.evidence import FORMAT
from ledger.fabric.gateway import GatewayError
from ledger.fabric.network import CHAINCODE, CHANNEL, DOMAIN, ORGS, _msp_id
from ledger.trust import FabricTrust

ORDERER_MSP = "OrdererMSP"  # as configured by ledger.fabric.network (configtx.yaml)


def collect_evidence(backend: FabricLedger, receipt: Receipt) -> dict[str, str]:
    """``{"format", "block_b64", "tx_id", "channel"}`` for a Fabric receipt: the block numbered
    ``receipt.block`` (or, when the receipt lacks it, the block qscc names for the transaction),
    serialized as Fabric's ``common.Block``, standard base64."""
    if receipt.backend != "fabric" or not receipt.tx_id:
        raise LedgerError(f"receipt of {receipt.batch_id} is not a Fabric receipt with a transaction id")
    if receipt.channel is not None and receipt.channel != backend.gw.channel:
        raise LedgerError(f"receipt of {receipt.batch_id} is for channel {receipt.channel!r}, "
                          f"connected to {backend.gw.channel!r}")
    try:
        number = receipt.block if receipt.block is not None else backend.gw.block_of(receipt.tx_id)
        block = next(iter(backend.gw.blocks(number, number)), None)
    except GatewayError as exc:
        raise LedgerUnavailable(f"reading the block of {receipt.batch_id}: {exc}") from None
    if block is None or int(block.header.number) != number:
        raise LedgerUnavailable(f"the peer did not deliver block {number}")
    return {"format": FORMAT, "block_b64": base64.b64encode(block.SerializeToString()).decode(),
            "tx_id": receipt.tx_id, "channel": backend.gw.channel}


def _cacerts(msp_dir: Path) -> list[str]:
    certs = sorted((msp_dir / "cacerts").glob("*.pem"))
    if not certs:
        raise FileNotFoundError(f"no CA certificate in {msp_dir / 'cacerts'}")
    return [p.read_text() for p in certs]


def trust_from_network(network_dir: str | Path) -> FabricTrust:
    """The pinned Fabric trust of a network made by ``ledger.fabric.network``: the identity root CA
    of each peer organisation (both must endorse, as the chaincode's policy says) and of the orderer
    organisation, read from ``<network_dir>/crypto``."""
    crypto = Path(network_dir) / "crypto"
    orgs = {_msp_id(o): _cacerts(crypto / "peerOrganizations" / f"{o}.{DOMAIN}" / "msp") for o in ORGS}
    orderer = {ORDERER_MSP: _cacerts(crypto / "ordererOrganizations" / DOMAIN / "msp")}
    return FabricTrust(channel=CHANNEL, chaincode=CHAINCODE, endorsing_orgs=sorted(orgs), orgs=orgs,
                       orderer_orgs=orderer)
