"""A Fabric receipt verified offline (issue 12, invariant 4) on the session's real network: the
evidence collected for an anchoring verifies against the network's pinned roots, and every kind of
tampering — other roots, another header, altered block data, a missing transaction, another block
number, a missing or altered endorsement, a missing or altered orderer signature, an unpinned channel
or chaincode, an MVCC-conflicted transaction marked VALID — is refused with its own reason."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fabric_protos.common import common_pb2
from fabric_protos.peer import transaction_pb2

from ledger.fabric.backend import FabricLedger
from ledger.fabric.evidence import FORMAT, block_header_bytes, verify_evidence
from ledger.fabric.network import FabricNetwork
from ledger.trust import FabricTrust
from tests.vectors.fabric.forge import (
    block_of,
    edit_action,
    edit_signatures,
    flip_last,
    high_s,
    index_of,
    rehash,
    set_flag,
    with_block,
)
from tests.vectors.fabric.generate import Anchored, capture_chain, capture_conflict, other_roots


@pytest.fixture(scope="module")
def chain(fabric_session_ledger: FabricLedger) -> tuple[Anchored, Anchored]:
    """Two consecutive headers of one site, anchored (in two blocks) and their evidence collected."""
    return capture_chain(fabric_session_ledger)


@pytest.fixture(scope="module")
def other_trust(fabric_network: FabricNetwork, tmp_path_factory: pytest.TempPathFactory) -> FabricTrust:
    """Roots of another network made by cryptogen from the same spec: same names, other keys."""
    return other_roots(fabric_network.dir / "crypto-config.yaml", tmp_path_factory.mktemp("other-fabric"))


def check(a: Anchored, trust: FabricTrust, *, evidence: dict[str, Any] | None = None, header: bytes | None = None,
          receipt: dict[str, Any] | None = None) -> list[str]:
    return verify_evidence(a.evidence if evidence is None else evidence, a.header if header is None else header,
                           a.receipt if receipt is None else receipt, trust)


def refused(problems: list[str], *fragments: str) -> None:
    assert problems, "expected a refusal"
    for f in fragments:
        assert any(f in p for p in problems), f"no problem mentions {f!r}: {problems}"


def replace_trust(trust: FabricTrust, **changes: Any) -> FabricTrust:
    return msgspec.structs.replace(trust, **changes)


# ---- the evidence of a real anchoring verifies -----------------------------------------------------
def test_evidence_of_an_anchored_header_verifies_against_the_pinned_roots_of_its_network(
        chain: tuple[Anchored, Anchored], fabric_trust: FabricTrust) -> None:
    for a in chain:
        assert set(a.evidence) == {"format", "block_b64", "tx_id", "channel"} and a.evidence["format"] == FORMAT
        assert check(a, fabric_trust) == []
    assert chain[0].receipt["block"] < chain[1].receipt["block"]


def test_evidence_is_plain_json_and_verifies_after_a_round_trip(chain: tuple[Anchored, Anchored],
                                                                 fabric_trust: FabricTrust) -> None:
    a = chain[0]
    evidence, receipt = json.loads(json.dumps(a.evidence)), json.loads(json.dumps(a.receipt))
    assert verify_evidence(evidence, a.header, receipt, fabric_trust) == []


# ---- trust ----------------------------------------------------------------------------------------
def test_roots_of_another_network_with_the_same_names_are_refused(chain: tuple[Anchored, Anchored],
                                                                  other_trust: FabricTrust) -> None:
    problems = check(chain[0], other_trust)
    refused(problems, "creator: Org1MSP: certificate", "endorsement 0:", "endorsement 1:",
            "orderer signature 0: OrdererMSP: certificate", "does not chain to a pinned root",
            "endorsement policy not satisfied")


def test_an_org_root_pinned_under_the_other_msp_id_is_refused(chain: tuple[Anchored, Anchored],
                                                              fabric_trust: FabricTrust) -> None:
    swapped = {"Org1MSP": fabric_trust.orgs["Org2MSP"], "Org2MSP": fabric_trust.orgs["Org1MSP"]}
    refused(check(chain[0], replace_trust(fabric_trust, orgs=swapped)), "creator: Org1MSP",
            "does not chain to a pinned root of Org1MSP", "no valid endorsement by a peer of Org1MSP, Org2MSP")


def test_peer_roots_pinned_as_the_orderer_org_do_not_prove_the_block_signature(
        chain: tuple[Anchored, Anchored], fabric_trust: FabricTrust) -> None:
    fake = {"OrdererMSP": fabric_trust.orgs["Org1MSP"]}
    refused(check(chain[0], replace_trust(fabric_trust, orderer_orgs=fake)),
            "orderer signature 0: OrdererMSP: certificate", "does not chain to a pinned root of OrdererMSP")


def test_a_trust_file_pinning_no_endorsing_or_orderer_organisation_proves_nothing(
        chain: tuple[Anchored, Anchored], fabric_trust: FabricTrust) -> None:
    refused(check(chain[0], replace_trust(fabric_trust, endorsing_orgs=[])), "pins no endorsing organisations")
    refused(check(chain[0], replace_trust(fabric_trust, orderer_orgs={})), "pins no orderer organisation")


def test_a_channel_or_chaincode_other_than_the_pinned_one_is_refused(chain: tuple[Anchored, Anchored],
                                                                     fabric_trust: FabricTrust) -> None:
    refused(check(chain[0], replace_trust(fabric_trust, channel="other")), "not the pinned channel 'other'")
    refused(check(chain[0], replace_trust(fabric_trust, chaincode="other")), "not the pinned chaincode 'other'",
            "does not write the record")


# ---- the header and the receipt -------------------------------------------------------------------------
def test_a_header_with_one_byte_changed_is_refused_even_with_its_hash_recomputed(
        chain: tuple[Anchored, Anchored], fabric_trust: FabricTrust) -> None:
    a = chain[0]
    changed = a.header.replace(b'"leaf_count":10', b'"leaf_count":11')
    assert changed != a.header and len(changed) == len(a.header)
    refused(check(a, fabric_trust, header=changed), "header_hash is not SHA-256 of the bundle's header",
            "header bytes it anchored are not the bundle's header bytes")
    recomputed = {**a.receipt, "header_hash": hashlib.sha256(changed).hexdigest()}
    refused(check(a, fabric_trust, header=changed, receipt=recomputed),
            "header bytes it anchored are not the bundle's header bytes",
            "the header in the written record is not the bundle's header bytes",
            "written record's header_hash is not the receipt's")


def test_the_header_of_another_batch_is_refused(chain: tuple[Anchored, Anchored], fabric_trust: FabricTrust) -> None:
    a, b = chain
    refused(check(a, fabric_trust, header=b.header), "header bytes it anchored are not the bundle's header bytes")
    as_b = {**a.receipt, "batch_id": b.receipt["batch_id"], "header_hash": b.receipt["header_hash"]}
    refused(check(a, fabric_trust, header=b.header, receipt=as_b), "does not write the record of batch")
    refused(check(a, fabric_trust, evidence=b.evidence), "the evidence is for transaction")


def test_receipt_fields_the_transaction_does_not_bind_are_refused(chain: tuple[Anchored, Anchored],
                                                                  fabric_trust: FabricTrust) -> None:
    a = chain[0]
    refused(check(a, fabric_trust, receipt={**a.receipt, "anchored_ms": a.receipt["anchored_ms"] + 1}),
            "tx_time_ms is not the transaction time / the receipt's anchored_ms")
    refused(check(a, fabric_trust, receipt={**a.receipt, "channel": "other"}), "the receipt names 'other'")
    refused(check(a, fabric_trust, receipt={**a.receipt, "backend": "local"}), "not a fabric receipt")


# ---- the block ------------------------------------------------------------------------------------------
def test_block_data_with_one_byte_flipped_is_refused_by_the_data_hash(chain: tuple[Anchored, Anchored],
                                                                       fabric_trust: FabricTrust) -> None:
    a = chain[0]
    block = block_of(a.evidence)
    i = index_of(block, a.receipt["tx_id"])
    raw = bytearray(block.data.data[i])
    at = bytes(raw).index(b'"leaf_count":10') + len(b'"leaf_count":1')
    raw[at] ^= 0x01  # "10" -> "11" inside the anchored header, as the endorsers signed it
    block.data.data[i] = bytes(raw)
    problems = check(a, fabric_trust, evidence=with_block(a.evidence, block))
    refused(problems, "data_hash in the header is not SHA-256 of the block's transactions")
    rehash(block)  # the forger recomputes the data hash: the header changes, the orderer's signature breaks
    refused(check(a, fabric_trust, evidence=with_block(a.evidence, block)),
            "orderer signature 0: signature of OrdererMSP:orderer.wattproof.test does not verify",
            "creator: signature of Org1MSP:User1@org1.wattproof.test does not verify")


def test_a_transaction_id_not_in_the_block_is_refused(chain: tuple[Anchored, Anchored],
                                                      fabric_trust: FabricTrust) -> None:
    a, b = chain
    other = b.receipt["tx_id"]
    refused(check(a, fabric_trust, evidence={**a.evidence, "tx_id": other}, receipt={**a.receipt, "tx_id": other}),
            f"transaction {other} is not in block {a.receipt['block']}")


def test_a_block_number_other_than_the_receipts_is_refused(chain: tuple[Anchored, Anchored],
                                                           fabric_trust: FabricTrust) -> None:
    a = chain[0]
    n = a.receipt["block"]
    refused(check(a, fabric_trust, receipt={**a.receipt, "block": n + 1}), f"block number {n} is not the receipt's")
    block = block_of(a.evidence)
    block.header.number = n + 1  # renumbered to match a forged receipt: the orderer signed the number
    refused(check(a, fabric_trust, evidence=with_block(a.evidence, block), receipt={**a.receipt, "block": n + 1}),
            "orderer signature 0: signature of OrdererMSP:orderer.wattproof.test does not verify")


def test_block_bytes_that_are_not_a_canonical_block_are_refused(chain: tuple[Anchored, Anchored],
                                                                fabric_trust: FabricTrust) -> None:
    a = chain[0]
    raw = base64.b64decode(a.evidence["block_b64"])
    refused(check(a, fabric_trust, evidence={**a.evidence, "block_b64": base64.b64encode(raw[:-7]).decode()}),
            "does not parse as a (canonically encoded) Fabric block")
    refused(check(a, fabric_trust, evidence={**a.evidence, "block_b64": base64.b64encode(raw + b"\x00").decode()}),
            "does not parse as a (canonically encoded) Fabric block")
    refused(check(a, fabric_trust, evidence={**a.evidence, "block_b64": a.evidence["block_b64"] + "\n"}),
            "not canonical base64")
    refused(check(a, fabric_trust, evidence={**a.evidence, "extra": "x"}), "exactly: format, block_b64, tx_id, channel")
    refused(check(a, fabric_trust, evidence={**a.evidence, "format": "wattproof-fabric-evidence/0"}), "format")


# ---- endorsements ---------------------------------------------------------------------------------------
def test_with_one_endorsement_removed_the_endorsement_policy_is_not_satisfied(
        chain: tuple[Anchored, Anchored], fabric_trust: FabricTrust) -> None:
    a = chain[0]
    problems = check(a, fabric_trust, evidence=edit_action(a.evidence, a.receipt["tx_id"], lambda cap: cap.action.endorsements.pop()))
    refused(problems, "endorsement policy not satisfied: no valid endorsement by a peer of Org2MSP")


def test_an_organisation_the_trust_requires_that_did_not_endorse_is_named(
        chain: tuple[Anchored, Anchored], fabric_trust: FabricTrust, other_trust: FabricTrust) -> None:
    three = replace_trust(fabric_trust, endorsing_orgs=["Org1MSP", "Org2MSP", "Org3MSP"],
                          orgs={**fabric_trust.orgs, "Org3MSP": other_trust.orgs["Org1MSP"]})
    assert check(chain[0], three) == ["endorsement policy not satisfied: no valid endorsement by a peer of Org3MSP"]


def test_an_endorsement_with_a_flipped_signature_is_refused(chain: tuple[Anchored, Anchored],
                                                            fabric_trust: FabricTrust) -> None:
    a = chain[0]

    def flip(cap: transaction_pb2.ChaincodeActionPayload) -> None:
        cap.action.endorsements[1].signature = flip_last(cap.action.endorsements[1].signature)

    refused(check(a, fabric_trust, evidence=edit_action(a.evidence, a.receipt["tx_id"], flip)),
            "endorsement 1: signature of Org2MSP:peer0.org2.wattproof.test does not verify",
            "no valid endorsement by a peer of Org2MSP")


def test_an_endorsement_signature_in_high_s_form_is_refused_as_fabric_does(
        chain: tuple[Anchored, Anchored], fabric_trust: FabricTrust) -> None:
    a = chain[0]

    def to_high_s(cap: transaction_pb2.ChaincodeActionPayload) -> None:
        cap.action.endorsements[0].signature = high_s(cap.action.endorsements[0].signature)

    refused(check(a, fabric_trust, evidence=edit_action(a.evidence, a.receipt["tx_id"], to_high_s)), "endorsement 0: signature of Org1MSP",
            "has a high S (Fabric accepts only low-S signatures)")


def test_an_endorsement_by_a_client_of_the_org_is_not_a_peer_endorsement(
        chain: tuple[Anchored, Anchored], fabric_trust: FabricTrust) -> None:
    """The policy is AND('Org1MSP.peer','Org2MSP.peer'): a client certificate (OU=client) is not a peer."""
    a = chain[0]
    block = block_of(a.evidence)
    env = common_pb2.Envelope.FromString(block.data.data[index_of(block, a.receipt["tx_id"])])
    creator = common_pb2.SignatureHeader.FromString(common_pb2.Payload.FromString(env.payload).header.signature_header).creator

    def client_endorses(cap: transaction_pb2.ChaincodeActionPayload) -> None:
        cap.action.endorsements[0].endorser = creator

    refused(check(a, fabric_trust, evidence=edit_action(a.evidence, a.receipt["tx_id"], client_endorses)), "endorsement 0: Org1MSP: certificate",
            "is not a peer (OU)")


def test_a_creator_signature_that_does_not_verify_is_refused(chain: tuple[Anchored, Anchored],
                                                             fabric_trust: FabricTrust) -> None:
    a = chain[0]
    block = block_of(a.evidence)
    i = index_of(block, a.receipt["tx_id"])
    env = common_pb2.Envelope.FromString(block.data.data[i])
    env.signature = high_s(env.signature)
    block.data.data[i] = env.SerializeToString()
    rehash(block)
    refused(check(a, fabric_trust, evidence=with_block(a.evidence, block)),
            "creator: signature of Org1MSP:User1@org1.wattproof.test has a high S")


# ---- the orderer's signature ----------------------------------------------------------------------------
def test_a_block_without_its_orderer_signature_is_refused(chain: tuple[Anchored, Anchored],
                                                          fabric_trust: FabricTrust) -> None:
    a = chain[0]
    evidence = edit_signatures(a.evidence, lambda md: md.ClearField("signatures"))
    assert check(a, fabric_trust, evidence=evidence) == [f"block {a.receipt['block']} carries no orderer signature"]


def test_a_flipped_orderer_signature_is_refused(chain: tuple[Anchored, Anchored], fabric_trust: FabricTrust) -> None:
    a = chain[0]

    def flip(md: common_pb2.Metadata) -> None:
        md.signatures[0].signature = flip_last(md.signatures[0].signature)

    assert check(a, fabric_trust, evidence=edit_signatures(a.evidence, flip)) == [
        f"block {a.receipt['block']}: orderer signature 0: signature of OrdererMSP:orderer.wattproof.test does not verify"]

    def high(md: common_pb2.Metadata) -> None:
        md.signatures[0].signature = high_s(md.signatures[0].signature)

    refused(check(a, fabric_trust, evidence=edit_signatures(a.evidence, high)), "orderer signature 0", "has a high S")

    def other_value(md: common_pb2.Metadata) -> None:
        md.value = flip_last(md.value)  # the signed metadata value (last config, consenter metadata)

    refused(check(a, fabric_trust, evidence=edit_signatures(a.evidence, other_value)), "orderer signature 0", "does not verify")


# ---- validity: the transactions filter is not signed -----------------------------------------------------
@dataclass(frozen=True)
class Conflict:
    winner: Anchored
    loser: Anchored
    block: int


@pytest.fixture(scope="module")
def conflict(fabric_session_ledger: FabricLedger) -> Conflict:
    """Two headers for the same chain position, both endorsed against the same head and submitted
    together: ordered into one block, the first is VALID and the second MVCC_READ_CONFLICT."""
    return Conflict(*capture_conflict(fabric_session_ledger))


def test_the_valid_one_of_two_conflicting_transactions_verifies(conflict: Conflict, fabric_trust: FabricTrust) -> None:
    assert check(conflict.winner, fabric_trust) == []


def test_an_mvcc_conflicted_transaction_is_refused_as_marked(conflict: Conflict, fabric_trust: FabricTrust) -> None:
    refused(check(conflict.loser, fabric_trust), "is marked MVCC_READ_CONFLICT", "they conflict (MVCC)")


def test_an_mvcc_conflicted_transaction_flagged_valid_is_caught_by_the_conflict_not_by_a_signature(
        conflict: Conflict, fabric_trust: FabricTrust) -> None:
    """The filter is peer metadata: neither the data hash nor the orderer's signature covers it. What
    catches the forged flag is the endorsed read/write sets: an earlier transaction of the block,
    endorsed under the pinned policy, writes the chain head this one read."""
    loser = conflict.loser
    forged = set_flag(loser.evidence, loser.receipt["tx_id"], transaction_pb2.VALID)
    problems = check(loser, fabric_trust, evidence=forged)
    assert not any("data_hash" in p or "orderer signature" in p for p in problems), problems
    assert len(problems) == 1 and "they conflict (MVCC)" in problems[0], problems
    both = set_flag(forged, conflict.winner.receipt["tx_id"], transaction_pb2.MVCC_READ_CONFLICT)
    refused(check(loser, fabric_trust, evidence=both), "they conflict (MVCC)")


def test_a_valid_transaction_flagged_invalid_is_refused(conflict: Conflict, fabric_trust: FabricTrust) -> None:
    w = conflict.winner
    forged = set_flag(w.evidence, w.receipt["tx_id"], transaction_pb2.ENDORSEMENT_POLICY_FAILURE)
    assert check(w, fabric_trust, evidence=forged) == [
        f"transaction {w.receipt['tx_id']} is marked ENDORSEMENT_POLICY_FAILURE in block {conflict.block}, not VALID"]


# ---- every signed byte ----------------------------------------------------------------------------------
def test_any_bit_flip_in_the_block_header_data_or_orderer_signature_is_refused(
        chain: tuple[Anchored, Anchored], fabric_trust: FabricTrust) -> None:
    """300 random single-bit flips over the bytes the data hash and the orderer's signature cover
    (header, data, SIGNATURES metadata): every one is refused, none makes the verifier fail open.
    (The other metadata entries — the filter, covered by the MVCC check above, and the peer's commit
    hash, which nothing uses — are outside this range.)"""
    a = chain[0]
    raw = base64.b64decode(a.evidence["block_b64"])
    block = common_pb2.Block.FromString(raw)
    head_and_data = len(common_pb2.Block(header=block.header, data=block.data).SerializeToString())
    signatures = bytes(block.metadata.metadata[common_pb2.SIGNATURES])
    covered = raw.index(signatures, head_and_data) + len(signatures)  # metadata entry 0 comes first
    rng = random.Random(12)
    for pos in rng.sample(range(covered), 300):
        forged = bytearray(raw)
        forged[pos] ^= 1 << rng.randrange(8)
        problems = check(a, fabric_trust, evidence={**a.evidence, "block_b64": base64.b64encode(forged).decode()})
        assert problems and not any("could not be checked" in p for p in problems), (pos, problems)


def test_block_header_bytes_are_fabrics_der_encoding() -> None:
    """protoutil.BlockHeaderBytes: DER SEQUENCE {INTEGER number, OCTET STRING previous_hash, OCTET
    STRING data_hash}; the INTEGER is minimal two's complement (a leading 0 byte from 128 on)."""
    def der(number: int, prev: bytes = b"", data: bytes = b"") -> str:
        return block_header_bytes(common_pb2.BlockHeader(number=number, previous_hash=prev, data_hash=data)).hex()

    assert der(0) == "300702010004000400"
    assert der(127) == "300702017f04000400"
    assert der(128) == "300802020080" + "04000400"
    assert der(5, b"\x01" * 32, b"\x02" * 32) == "3047020105" + "0420" + "01" * 32 + "0420" + "02" * 32
    assert der(1, data=b"\x03" * 200).startswith("3081d0020101040004" + "81c8")


# ---- network-independent vectors (tests/vectors/fabric/vectors, made by generate.py) --------------------
VECTORS = sorted((Path(__file__).parent / "vectors" / "fabric" / "vectors").glob("*.json"))


@pytest.mark.parametrize("path", VECTORS, ids=[p.stem for p in VECTORS])
def test_fabric_evidence_vector(path: Path) -> None:
    v = json.loads(path.read_text())
    problems = verify_evidence(v["evidence"], base64.b64decode(v["header_b64"]), v["receipt"],
                               msgspec.convert(v["trust"], FabricTrust))
    if v["error"] is None:
        assert problems == [], f"{v['desc']}: {problems}"
    else:
        refused(problems, v["error"])
