"""A Fabric receipt verified offline: the block holding the anchoring transaction, the transaction's
endorsements and the orderer's block signature, checked against the organisation roots the verifier
pins (``FabricTrust`` of the trust file) — never against roots the evidence carries.

Owns: the evidence format ``wattproof-fabric-evidence/1`` (docs/fabric.md "Receipts checked
offline") and ``verify_evidence`` (evidence + the bundle's header bytes + its receipt + trust → a
list of problems; empty means proven). Follows what a Fabric v2.5 peer checks when it validates a
block (``protoutil.BlockDataHash`` / ``VerifyTransactionsAreWellFormed`` / ``BlockSignatureVerifier``,
``core/common/validation/msgvalidation.go``, the endorsement signature set of the validation plugin)
and adds what binds the transaction to wattproof's header. Pure: no network, no files.
``ledger.fabric.collect`` gathers the evidence from a running network.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
from typing import Any, Final

from fabric_protos.common import common_pb2
from fabric_protos.ledger.rwset import rwset_pb2
from fabric_protos.ledger.rwset.kvrwset import kv_rwset_pb2
from fabric_protos.peer import (
    chaincode_event_pb2,
    chaincode_pb2,
    proposal_pb2,
    proposal_response_pb2,
    transaction_pb2,
)
from google.protobuf.message import DecodeError

from ledger.fabric.identities import IdentityError, PinnedRoots
from ledger.trust import FabricTrust

FORMAT: Final = "wattproof-fabric-evidence/1"
ANCHOR_FUNCTIONS: Final = (b"AnchorBatch", b"wattproof:AnchorBatch")  # contractapi: default contract, or named
ANCHOR_EVENT: Final = "BatchAnchored"
_TX_ID = re.compile(r"^[0-9a-f]{64}$")
_RECORD_FIELDS = {"batch_id", "site", "header", "header_hash", "seq", "tx_id", "tx_time_ms"}


class _Stop(Exception):
    """A problem after which the remaining checks have nothing to look at."""


def verify_evidence(evidence: dict[str, Any], header: bytes, receipt: dict[str, Any],
                    trust: FabricTrust) -> list[str]:
    """Problems with a Fabric receipt (``[]`` = proven): ``header`` (the bundle's header bytes for the
    batch) was endorsed by every pinned endorsing organisation, anchored by transaction
    ``receipt["tx_id"]`` on the pinned channel and chaincode, in block ``receipt["block"]`` whose
    orderer signature verifies under a pinned orderer root, and that block marks it VALID."""
    problems: list[str] = []
    try:
        _verify(evidence, header, receipt, trust, problems)
    except _Stop as exc:
        problems.append(str(exc))
    except Exception as exc:  # noqa: BLE001 - fail closed on input no check foresaw
        problems.append(f"fabric evidence could not be checked ({type(exc).__name__}: {exc})")
    return problems


def block_header_bytes(header: common_pb2.BlockHeader) -> bytes:
    """Fabric's ``protoutil.BlockHeaderBytes``: DER SEQUENCE {INTEGER number, OCTET STRING
    previous_hash, OCTET STRING data_hash} — what the orderer's block signature covers."""
    def der(tag: int, body: bytes) -> bytes:
        n = len(body)
        if n < 0x80:
            return bytes([tag, n]) + body
        size = n.to_bytes((n.bit_length() + 7) // 8, "big")
        return bytes([tag, 0x80 | len(size)]) + size + body

    number = int(header.number)  # a non-negative INTEGER: minimal big-endian, a leading 0 if the top bit is set
    body = (der(0x02, number.to_bytes(number.bit_length() // 8 + 1, "big"))
            + der(0x04, bytes(header.previous_hash)) + der(0x04, bytes(header.data_hash)))
    return der(0x30, body)


# ---- the checks ---------------------------------------------------------------------------------
def _verify(evidence: dict[str, Any], header: bytes, receipt: dict[str, Any], trust: FabricTrust,
            problems: list[str]) -> None:
    tx_id, block = _inputs(evidence, header, receipt, trust, problems)
    number = int(block.header.number)
    if type(receipt.get("block")) is not int or receipt["block"] != number:
        problems.append(f"block number {number} is not the receipt's block {receipt.get('block')!r}")
    if hashlib.sha256(b"".join(block.data.data)).digest() != bytes(block.header.data_hash):
        problems.append(f"block {number}: data_hash in the header is not SHA-256 of the block's transactions "
                        "(the block data was altered)")
    envelopes: list[common_pb2.Envelope | None] = []
    for i, raw in enumerate(block.data.data):
        env = _parse(common_pb2.Envelope, raw)
        if env is None or not env.payload or not env.signature or env.SerializeToString() != raw:
            problems.append(f"block {number}: transaction {i} is not a well-formed envelope")
            env = None
        envelopes.append(env)
    txs = [_Tx.parse(env) if env is not None else None for env in envelopes]
    mine = [i for i, t in enumerate(txs) if t is not None and t.tx_id == tx_id]
    if not mine:
        raise _Stop(f"transaction {tx_id} is not in block {number}")
    if len(mine) > 1:
        problems.append(f"transaction {tx_id} appears {len(mine)} times in block {number}")
    index = mine[0]
    tx = txs[index]
    assert tx is not None
    flags = bytes(_metadata(block, common_pb2.TRANSACTIONS_FILTER))
    if len(flags) != len(block.data.data):
        problems.append(f"block {number}: the transactions filter has {len(flags)} flags for "
                        f"{len(block.data.data)} transactions")
    elif flags[index] != transaction_pb2.VALID:
        problems.append(f"transaction {tx_id} is marked {_code_name(flags[index])} in block {number}, not VALID")
    at = tx.time
    if at is None:
        raise _Stop(f"transaction {tx_id} has no (valid) timestamp")
    _check_orderer(block, trust, at, problems)
    orgs = PinnedRoots(trust.orgs, at)
    problems.extend(orgs.bad_roots)
    _check_transaction(tx, trust, orgs, problems)
    if tx.action is None:
        return
    endorsed = _endorsing_orgs(tx, orgs, problems)
    missing = [o for o in trust.endorsing_orgs if o not in endorsed]
    if not trust.endorsing_orgs:
        problems.append("the trust file pins no endorsing organisations: an endorsement proves nothing")
    elif missing:
        problems.append(f"endorsement policy not satisfied: no valid endorsement by a peer of {', '.join(missing)}")
    _check_binding(tx, header, receipt, trust, problems)
    _check_mvcc(txs, index, number, trust, orgs, problems)


def _inputs(evidence: dict[str, Any], header: bytes, receipt: dict[str, Any], trust: FabricTrust,
            problems: list[str]) -> tuple[str, common_pb2.Block]:
    if not isinstance(evidence, dict) or set(evidence) != {"format", "block_b64", "tx_id", "channel"}:
        raise _Stop("fabric evidence must be an object with exactly: format, block_b64, tx_id, channel")
    if evidence["format"] != FORMAT:
        raise _Stop(f"fabric evidence format is {evidence['format']!r}, expected {FORMAT!r}")
    tx_id, channel = evidence["tx_id"], evidence["channel"]
    if not isinstance(tx_id, str) or not _TX_ID.match(tx_id):
        raise _Stop("fabric evidence tx_id is not 64 lowercase hex digits")
    if not isinstance(receipt, dict) or receipt.get("backend") != "fabric":
        raise _Stop("the receipt is not a fabric receipt")
    if receipt.get("tx_id") != tx_id:
        problems.append(f"the evidence is for transaction {tx_id}, the receipt names {receipt.get('tx_id')!r}")
    if receipt.get("channel") != channel:
        problems.append(f"the evidence is for channel {channel!r}, the receipt names {receipt.get('channel')!r}")
    if channel != trust.channel:
        problems.append(f"channel {channel!r} is not the pinned channel {trust.channel!r}")
    if not isinstance(header, bytes):
        raise _Stop("the header must be given as bytes")
    if hashlib.sha256(header).hexdigest() != receipt.get("header_hash"):
        problems.append("the receipt's header_hash is not SHA-256 of the bundle's header bytes")
    text = evidence["block_b64"]
    try:
        raw = base64.b64decode(text, validate=True) if isinstance(text, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    if not raw or base64.b64encode(raw).decode() != text:
        raise _Stop("fabric evidence block_b64 is not canonical base64 of a block")
    block = _parse(common_pb2.Block, raw)
    if block is None or not block.HasField("header") or block.SerializeToString() != raw:
        raise _Stop("fabric evidence block does not parse as a (canonically encoded) Fabric block")
    return tx_id, block


class _Tx:
    """The parts of one endorser transaction the checks look at (None parts: did not parse)."""

    def __init__(self, env: common_pb2.Envelope, payload: common_pb2.Payload, ch: common_pb2.ChannelHeader) -> None:
        self.env, self.payload, self.ch = env, payload, ch
        self.tx_id = ch.tx_id
        self.time: dt.datetime | None = None
        if ch.HasField("timestamp"):
            try:
                self.time = dt.datetime.fromtimestamp(ch.timestamp.seconds + ch.timestamp.nanos // 1000 / 1e6, dt.UTC)
            except (OverflowError, ValueError, OSError):
                pass  # out of range: refused as "no timestamp"
        self.shdr = _parse(common_pb2.SignatureHeader, payload.header.signature_header)
        self.tx = _parse(transaction_pb2.Transaction, payload.data) if ch.type == common_pb2.ENDORSER_TRANSACTION else None
        self.cap = self.prp_bytes = self.action = None
        if self.tx is not None and len(self.tx.actions) == 1:
            self.cap = _parse(transaction_pb2.ChaincodeActionPayload, self.tx.actions[0].payload)
        if self.cap is not None:
            self.prp_bytes = bytes(self.cap.action.proposal_response_payload)
            self.prp = _parse(proposal_response_pb2.ProposalResponsePayload, self.prp_bytes)
            if self.prp is not None:
                self.action = _parse(proposal_pb2.ChaincodeAction, self.prp.extension)

    @classmethod
    def parse(cls, env: common_pb2.Envelope) -> _Tx | None:
        payload = _parse(common_pb2.Payload, env.payload)
        ch = _parse(common_pb2.ChannelHeader, payload.header.channel_header) if payload is not None else None
        return cls(env, payload, ch) if payload is not None and ch is not None else None

    def rwset(self, namespace: str) -> tuple[dict[str, tuple[int, int]], set[str], dict[str, kv_rwset_pb2.KVWrite]]:
        """Reads (key → version; absent keys as (-1, -1)), written keys, writes by key, in ``namespace``."""
        reads: dict[str, tuple[int, int]] = {}
        writes: dict[str, kv_rwset_pb2.KVWrite] = {}
        rw = _parse(rwset_pb2.TxReadWriteSet, self.action.results) if self.action is not None else None
        for ns in rw.ns_rwset if rw is not None else []:
            kv = _parse(kv_rwset_pb2.KVRWSet, ns.rwset) if ns.namespace == namespace else None
            if kv is None:
                continue
            for r in kv.reads:
                reads[r.key] = (r.version.block_num, r.version.tx_num) if r.HasField("version") else (-1, -1)
            for w in kv.writes:
                writes[w.key] = w
        return reads, set(writes), writes


def _check_transaction(tx: _Tx, trust: FabricTrust, orgs: PinnedRoots, problems: list[str]) -> None:
    """msgvalidation.ValidateTransaction: header, creator signature, tx id, one action, proposal hash."""
    ch, shdr = tx.ch, tx.shdr
    if ch.type != common_pb2.ENDORSER_TRANSACTION:
        raise _Stop(f"transaction {tx.tx_id} is not an endorser transaction")
    if ch.channel_id != trust.channel:
        problems.append(f"transaction {tx.tx_id} is on channel {ch.channel_id!r}, not the pinned channel {trust.channel!r}")
    if ch.epoch != 0:
        problems.append(f"transaction {tx.tx_id} has epoch {ch.epoch} (Fabric requires 0)")
    ext = _parse(proposal_pb2.ChaincodeHeaderExtension, ch.extension)
    if ext is None or ext.chaincode_id.name != trust.chaincode:
        problems.append(f"transaction {tx.tx_id} invokes chaincode {ext.chaincode_id.name if ext else None!r}, "
                        f"not the pinned chaincode {trust.chaincode!r}")
    if shdr is None or not shdr.nonce or not shdr.creator:
        raise _Stop(f"transaction {tx.tx_id} has no valid signature header")
    if hashlib.sha256(bytes(shdr.nonce) + bytes(shdr.creator)).hexdigest() != tx.tx_id:
        problems.append(f"transaction id {tx.tx_id} is not SHA-256(nonce ‖ creator) of its header")
    try:
        orgs.signed_by(bytes(shdr.creator), bytes(tx.env.payload), bytes(tx.env.signature))
    except IdentityError as exc:
        problems.append(f"transaction {tx.tx_id}: creator: {exc}")
    if tx.tx is None or len(tx.tx.actions) != 1 or tx.cap is None or tx.action is None:
        problems.append(f"transaction {tx.tx_id} is not one well-formed chaincode action")
        tx.action = None
        return
    act = tx.tx.actions[0]
    if bytes(act.header) != bytes(tx.payload.header.signature_header):
        problems.append(f"transaction {tx.tx_id}: the action's signature header is not the transaction's")
    want = hashlib.sha256(bytes(tx.payload.header.channel_header) + bytes(act.header)
                          + bytes(tx.cap.chaincode_proposal_payload)).digest()
    if bytes(tx.prp.proposal_hash) != want:
        problems.append(f"transaction {tx.tx_id}: the endorsed proposal hash does not match the proposal it carries")
    if tx.action.chaincode_id.name != trust.chaincode:
        problems.append(f"transaction {tx.tx_id}: the endorsed action is of chaincode "
                        f"{tx.action.chaincode_id.name!r}, not the pinned chaincode {trust.chaincode!r}")
    if tx.action.response.status != 200:
        problems.append(f"transaction {tx.tx_id}: the chaincode answered status {tx.action.response.status}, not 200")


def _endorsing_orgs(tx: _Tx, orgs: PinnedRoots, problems: list[str] | None) -> set[str]:
    """MSP ids with a valid peer endorsement: signature over proposal_response_payload ‖ endorser,
    by a peer certificate chaining to that MSP's pinned root. Each bad endorsement is a problem
    (Fabric would only skip it; an altered endorsement in our evidence is tampering)."""
    ok: set[str] = set()
    assert tx.cap is not None and tx.prp_bytes is not None
    for i, e in enumerate(tx.cap.action.endorsements):
        try:
            ok.add(orgs.signed_by(bytes(e.endorser), tx.prp_bytes + bytes(e.endorser), bytes(e.signature),
                                  role="peer").msp_id)
        except IdentityError as exc:
            if problems is not None:
                problems.append(f"transaction {tx.tx_id}: endorsement {i}: {exc}")
    return ok


def _check_binding(tx: _Tx, header: bytes, receipt: dict[str, Any], trust: FabricTrust, problems: list[str]) -> None:
    """The endorsed input, write set, event and response hold exactly this batch's header bytes."""
    assert tx.cap is not None and tx.action is not None
    who = f"transaction {tx.tx_id}"
    cpp = _parse(proposal_pb2.ChaincodeProposalPayload, tx.cap.chaincode_proposal_payload)
    spec = _parse(chaincode_pb2.ChaincodeInvocationSpec, cpp.input) if cpp is not None else None
    args = list(spec.chaincode_spec.input.args) if spec is not None else []
    if len(args) != 2 or args[0] not in ANCHOR_FUNCTIONS:
        problems.append(f"{who} is not an AnchorBatch call with one argument")
    elif bytes(args[1]) != header:
        problems.append(f"{who}: the header bytes it anchored are not the bundle's header bytes")
    batch_id = receipt.get("batch_id")
    key = f"\x00batch\x00{batch_id}\x00"
    _, _, writes = tx.rwset(trust.chaincode)
    w = writes.get(key)
    if w is None or w.is_delete:
        problems.append(f"{who} does not write the record of batch {batch_id!r}")
        return
    value = bytes(w.value)
    record = _strict_json(value)
    if not isinstance(record, dict) or set(record) != _RECORD_FIELDS:
        problems.append(f"{who}: the record it writes for batch {batch_id!r} is not a wattproof record")
        return
    if _utf8(record["header"]) != header:
        problems.append(f"{who}: the header in the written record is not the bundle's header bytes")
    if record["header_hash"] != hashlib.sha256(header).hexdigest() or record["header_hash"] != receipt.get("header_hash"):
        problems.append(f"{who}: the written record's header_hash is not the receipt's / the header's")
    if record["batch_id"] != batch_id:
        problems.append(f"{who}: the written record is for batch {record['batch_id']!r}, not {batch_id!r}")
    if record["tx_id"] != tx.tx_id:
        problems.append(f"{who}: the written record names transaction {record['tx_id']!r}")
    ts = tx.ch.timestamp
    if record["tx_time_ms"] != ts.seconds * 1000 + ts.nanos // 1_000_000 or record["tx_time_ms"] != receipt.get("anchored_ms"):
        problems.append(f"{who}: the written record's tx_time_ms is not the transaction time / the receipt's anchored_ms")
    ev = _parse(chaincode_event_pb2.ChaincodeEvent, tx.action.events)
    if (ev is None or ev.chaincode_id != trust.chaincode or ev.event_name != ANCHOR_EVENT or ev.tx_id != tx.tx_id
            or bytes(ev.payload) != value):
        problems.append(f"{who}: its {ANCHOR_EVENT} event is not the written record")
    if bytes(tx.action.response.payload) != value:
        problems.append(f"{who}: the chaincode's endorsed response is not the written record")


def _check_mvcc(txs: list[_Tx | None], index: int, number: int, trust: FabricTrust, orgs: PinnedRoots,
                problems: list[str]) -> None:
    """What one block can show about an MVCC conflict (the VALID flag itself is not signed): the
    transaction read a key that an earlier transaction of the block, endorsed under the pinned
    policy, writes — then at most one of them is valid, and nothing signed says which — or a key
    another such transaction read at a newer version (our read was stale)."""
    me = txs[index]
    assert me is not None
    reads, _, _ = me.rwset(trust.chaincode)
    for key, (blk, _) in reads.items():
        if blk >= number:
            problems.append(f"transaction {me.tx_id} read {key!r} at a version of block {blk}, not before block {number}")
    others: list[tuple[int, dict[str, tuple[int, int]], set[str]]] = []
    for j, t in enumerate(txs):
        if j == index or t is None or t.action is None or t.ch.type != common_pb2.ENDORSER_TRANSACTION:
            continue
        r, w, _ = t.rwset(trust.chaincode)
        if not (set(r) | w) & set(reads):
            continue
        if t.cap is None or not set(trust.endorsing_orgs) <= _endorsing_orgs(t, orgs, None) or not trust.endorsing_orgs:
            continue  # not endorsed under the pinned policy: could not have been valid for this chaincode
        others.append((j, r, w))
    newest = dict(reads)
    for _, r, _ in others:
        for k, v in r.items():
            if k in newest and v > newest[k]:
                newest[k] = v
    for k, v in reads.items():
        if newest[k] > v:
            problems.append(f"transaction {me.tx_id} read {k!r} at version {v}, but another transaction of block "
                            f"{number} read it at {newest[k]}: its read was stale (MVCC_READ_CONFLICT)")
    for j, r, w in others:
        stale = any(k in newest and v < newest[k] for k, v in r.items())
        hit = sorted(w & set(reads))
        if j < index and hit and not stale:
            problems.append(f"transaction {j} of block {number}, before {me.tx_id} and endorsed under the pinned "
                            f"policy, writes {hit[0]!r} which it read: they conflict (MVCC), and the block's "
                            "unsigned filter cannot show which is valid")


def _check_orderer(block: common_pb2.Block, trust: FabricTrust, at: dt.datetime, problems: list[str]) -> None:
    """protoutil.BlockSignatureVerifier (non-BFT): each signature over metadata value ‖ signature
    header ‖ BlockHeaderBytes, by the creator in the signature header; one valid one under a pinned
    orderer root is required (the channel's BlockValidation policy here is ANY orderer-org Writer)."""
    number = int(block.header.number)
    if not trust.orderer_orgs:
        problems.append("the trust file pins no orderer organisation: the block's signature proves nothing")
        return
    md = _parse(common_pb2.Metadata, _metadata(block, common_pb2.SIGNATURES))
    if md is None or not md.signatures:
        problems.append(f"block {number} carries no orderer signature")
        return
    roots = PinnedRoots(trust.orderer_orgs, at)
    problems.extend(roots.bad_roots)
    signed_header = block_header_bytes(block.header)
    for i, sig in enumerate(md.signatures):
        shdr = _parse(common_pb2.SignatureHeader, sig.signature_header) if sig.signature_header else None
        if shdr is None:
            problems.append(f"block {number}: orderer signature {i} has no signature header "
                            "(BFT identifier headers are not supported)")
            continue
        try:
            roots.signed_by(bytes(shdr.creator), bytes(md.value) + bytes(sig.signature_header) + signed_header,
                            bytes(sig.signature))
        except IdentityError as exc:
            problems.append(f"block {number}: orderer signature {i}: {exc}")


# ---- helpers ------------------------------------------------------------------------------------
def _parse(cls: Any, data: bytes) -> Any:
    try:
        return cls.FromString(data)
    except (DecodeError, RuntimeWarning, ValueError):
        return None


def _metadata(block: common_pb2.Block, index: int) -> bytes:
    md = block.metadata.metadata
    return bytes(md[index]) if len(md) > index else b""


def _code_name(code: int) -> str:
    try:
        return transaction_pb2.TxValidationCode.Name(code)
    except ValueError:
        return f"code {code}"


def _utf8(text: Any) -> bytes | None:
    try:
        return text.encode("utf-8") if isinstance(text, str) else None
    except UnicodeEncodeError:  # a lone surrogate: no bytes of ours read that way
        return None


def _strict_json(data: bytes) -> Any:
    """JSON with duplicate member names, NaN/Infinity and invalid UTF-8 refused (None if any)."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in items}) != len(items):
            raise ValueError("duplicate member")
        return dict(items)

    def constant(name: str) -> Any:
        raise ValueError(name)

    try:
        return json.loads(data.decode("utf-8", errors="strict"), object_pairs_hook=pairs, parse_constant=constant)
    except ValueError:
        return None
