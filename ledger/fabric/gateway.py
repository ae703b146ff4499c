"""A small client of the Fabric Gateway gRPC service (Fabric ≥ 2.4), written against Fabric's
published protobuf definitions (``hyperledger-fabric-protos``), ``grpcio`` and ``cryptography``.

Owns: the client identity (X.509 + ECDSA P-256 key, low-S signatures over SHA-256), building and
signing proposals, the Endorse → Submit → CommitStatus flow, Evaluate, the Gateway's ChaincodeEvents
stream, reading blocks from the peer's Deliver service, and turning gRPC failures into
``GatewayError`` with the per-peer details the Gateway attaches (decoded with ``grpcio-status``).
Knows nothing about wattproof's batches; ``ledger.fabric.backend`` does.

What is signed (see docs/fabric.md): the proposal bytes (SignedProposal), the prepared transaction's
payload bytes (Envelope), the serialized CommitStatusRequest / ChaincodeEventsRequest / Deliver
SeekInfo payload — each as ECDSA-SHA256, DER, with s normalised to the lower half of the curve order
as Fabric requires.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from fabric_protos.common import common_pb2, ledger_pb2
from fabric_protos.gateway import gateway_pb2, gateway_pb2_grpc
from fabric_protos.msp import identities_pb2
from fabric_protos.orderer import ab_pb2
from fabric_protos.peer import (
    chaincode_event_pb2,
    chaincode_pb2,
    events_pb2_grpc,
    proposal_pb2,
    proposal_response_pb2,
    transaction_pb2,
)
from google.protobuf import timestamp_pb2
from grpc_status import rpc_status

from device.errors import WattproofError

# order of the P-256 group (for low-S normalisation)
_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class GatewayError(WattproofError):
    """A Gateway call failed. ``code`` is the gRPC status code name, ``details`` what each peer said."""

    def __init__(self, op: str, code: str, message: str, details: list[tuple[str, str, str]]) -> None:
        self.op, self.code, self.message, self.details = op, code, message, details
        text = f"{op} failed ({code}): {message}"
        if details:
            text += "; " + "; ".join(f"{msp}@{addr}: {msg}" for addr, msp, msg in details)
        super().__init__(text)

    @property
    def all_messages(self) -> str:
        return " ".join([self.message, *(d[2] for d in self.details)])


class CommitError(WattproofError):
    """The transaction was ordered but the peers marked it invalid (e.g. MVCC_READ_CONFLICT)."""

    def __init__(self, tx_id: str, code: str, block: int) -> None:
        self.tx_id, self.code, self.block = tx_id, code, block
        super().__init__(f"transaction {tx_id} committed as {code} in block {block}")


def _gateway_error(op: str, exc: grpc.RpcError) -> GatewayError:
    details: list[tuple[str, str, str]] = []
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    if status is not None:
        for anyd in status.details:
            d = gateway_pb2.ErrorDetail()
            if anyd.Unpack(d):
                details.append((d.address, d.msp_id, d.message))
    code = exc.code().name if hasattr(exc, "code") and exc.code() is not None else "UNKNOWN"
    message = exc.details() if hasattr(exc, "details") else str(exc)
    return GatewayError(op, code, message or "", details)


@dataclass(frozen=True)
class Identity:
    """A client identity: MSP id, PEM certificate and its ECDSA P-256 private key."""

    msp_id: str
    cert_pem: bytes
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def from_files(cls, msp_id: str, cert: str | Path, key: str | Path) -> Identity:
        cert_pem = Path(cert).read_bytes()
        x509.load_pem_x509_certificate(cert_pem)  # fail early on a bad certificate
        k = serialization.load_pem_private_key(Path(key).read_bytes(), password=None)
        if not isinstance(k, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key}: not an EC private key")
        return cls(msp_id, cert_pem, k)

    @property
    def serialized(self) -> bytes:
        return identities_pb2.SerializedIdentity(mspid=self.msp_id, id_bytes=self.cert_pem).SerializeToString()

    def sign(self, message: bytes) -> bytes:
        """ECDSA over SHA-256(message), DER-encoded, low-S."""
        r, s = decode_dss_signature(self.key.sign(message, ec.ECDSA(hashes.SHA256())))
        if s > _P256_N // 2:
            s = _P256_N - s
        return encode_dss_signature(r, s)


@dataclass(frozen=True)
class Proposal:
    tx_id: str
    signed: proposal_pb2.SignedProposal


@dataclass(frozen=True)
class Committed:
    tx_id: str
    block: int
    result: bytes  # the chaincode's response payload


@dataclass(frozen=True)
class ChaincodeEvent:
    block: int
    tx_index: int  # index of the transaction within its block (-1 when the Gateway stream does not say)
    tx_id: str
    name: str
    payload: bytes


def _timestamp() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


class Gateway:
    """A connection to one peer's Gateway service for one identity and channel."""

    def __init__(self, endpoint: str, tls_ca: str | Path | None, identity: Identity, channel: str,
                 timeout: float = 30.0) -> None:
        self.identity, self.channel, self.timeout = identity, channel, timeout
        self.endpoint = endpoint
        opts = [("grpc.max_receive_message_length", 100 * 1024 * 1024),
                ("grpc.keepalive_time_ms", 60_000)]
        if tls_ca is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes())
            self._chan = grpc.secure_channel(endpoint, creds, options=opts)
        else:
            self._chan = grpc.insecure_channel(endpoint, options=opts)
        self._gw = gateway_pb2_grpc.GatewayStub(self._chan)
        self._deliver = events_pb2_grpc.DeliverStub(self._chan)

    def close(self) -> None:
        self._chan.close()

    # ---- proposals -----------------------------------------------------------------------------
    def proposal(self, chaincode: str, fn: str, args: list[bytes]) -> Proposal:
        creator = self.identity.serialized
        nonce = os.urandom(24)
        tx_id = hashlib.sha256(nonce + creator).hexdigest()
        cc_id = chaincode_pb2.ChaincodeID(name=chaincode)
        ch = common_pb2.ChannelHeader(
            type=common_pb2.ENDORSER_TRANSACTION, channel_id=self.channel, tx_id=tx_id, timestamp=_timestamp(),
            extension=proposal_pb2.ChaincodeHeaderExtension(chaincode_id=cc_id).SerializeToString())
        header = common_pb2.Header(
            channel_header=ch.SerializeToString(),
            signature_header=common_pb2.SignatureHeader(creator=creator, nonce=nonce).SerializeToString())
        spec = chaincode_pb2.ChaincodeInvocationSpec(chaincode_spec=chaincode_pb2.ChaincodeSpec(
            type=chaincode_pb2.ChaincodeSpec.GOLANG, chaincode_id=cc_id,
            input=chaincode_pb2.ChaincodeInput(args=[fn.encode(), *args])))
        payload = proposal_pb2.ChaincodeProposalPayload(input=spec.SerializeToString())
        prop = proposal_pb2.Proposal(header=header.SerializeToString(), payload=payload.SerializeToString())
        raw = prop.SerializeToString()
        return Proposal(tx_id, proposal_pb2.SignedProposal(proposal_bytes=raw, signature=self.identity.sign(raw)))

    # ---- calls ---------------------------------------------------------------------------------
    def evaluate(self, chaincode: str, fn: str, args: list[bytes]) -> bytes:
        p = self.proposal(chaincode, fn, args)
        try:
            resp = self._gw.Evaluate(gateway_pb2.EvaluateRequest(
                transaction_id=p.tx_id, channel_id=self.channel, proposed_transaction=p.signed), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise _gateway_error("evaluate", exc) from None
        return bytes(resp.result.payload)

    def endorse(self, p: Proposal) -> common_pb2.Envelope:
        try:
            resp = self._gw.Endorse(gateway_pb2.EndorseRequest(
                transaction_id=p.tx_id, channel_id=self.channel, proposed_transaction=p.signed), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise _gateway_error("endorse", exc) from None
        env = resp.prepared_transaction
        env.signature = self.identity.sign(env.payload)
        return env

    def submit(self, tx_id: str, env: common_pb2.Envelope) -> None:
        try:
            self._gw.Submit(gateway_pb2.SubmitRequest(transaction_id=tx_id, channel_id=self.channel,
                                                      prepared_transaction=env), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise _gateway_error("submit", exc) from None

    def commit_status(self, tx_id: str, timeout: float | None = None) -> tuple[str, int]:
        """Wait for the transaction's commit; returns (validation code name, block number)."""
        req = gateway_pb2.CommitStatusRequest(transaction_id=tx_id, channel_id=self.channel,
                                              identity=self.identity.serialized).SerializeToString()
        try:
            resp = self._gw.CommitStatus(gateway_pb2.SignedCommitStatusRequest(
                request=req, signature=self.identity.sign(req)), timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise _gateway_error("commit status", exc) from None
        return transaction_pb2.TxValidationCode.Name(resp.result), int(resp.block_number)

    def submit_transaction(self, chaincode: str, fn: str, args: list[bytes]) -> Committed:
        """Endorse, submit and wait for commit; raises GatewayError / CommitError."""
        p = self.proposal(chaincode, fn, args)
        env = self.endorse(p)
        result = result_of(env)
        self.submit(p.tx_id, env)
        code, block = self.commit_status(p.tx_id)
        if code != "VALID":
            raise CommitError(p.tx_id, code, block)
        return Committed(p.tx_id, block, result)

    def height(self) -> int:
        """The channel's block height as the peer sees it (qscc GetChainInfo)."""
        info = ledger_pb2.BlockchainInfo.FromString(self.evaluate("qscc", "GetChainInfo", [self.channel.encode()]))
        return int(info.height)

    def block_of(self, tx_id: str) -> int:
        """Number of the block holding transaction ``tx_id`` (qscc GetBlockByTxID)."""
        block = common_pb2.Block.FromString(self.evaluate("qscc", "GetBlockByTxID", [self.channel.encode(),
                                                                                     tx_id.encode()]))
        return int(block.header.number)

    # ---- events and blocks ---------------------------------------------------------------------
    def chaincode_events(self, chaincode: str, start_block: int | None = None,
                         timeout: float | None = None) -> Iterator[ChaincodeEvent]:
        """The Gateway's live stream of a chaincode's events (from ``start_block``, else from now)."""
        kw = {}
        if start_block is not None:
            kw["start_position"] = ab_pb2.SeekPosition(specified=ab_pb2.SeekSpecified(number=start_block))
        req = gateway_pb2.ChaincodeEventsRequest(channel_id=self.channel, chaincode_id=chaincode,
                                                 identity=self.identity.serialized, **kw).SerializeToString()
        stream = self._gw.ChaincodeEvents(gateway_pb2.SignedChaincodeEventsRequest(
            request=req, signature=self.identity.sign(req)), timeout=timeout)
        try:
            for resp in stream:
                for ev in resp.events:
                    yield ChaincodeEvent(int(resp.block_number), -1, ev.tx_id, ev.event_name, bytes(ev.payload))
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return
            raise _gateway_error("chaincode events", exc) from None
        finally:
            stream.cancel()

    def blocks(self, start: int, stop: int | None = None) -> Iterator[common_pb2.Block]:
        """Blocks ``start..stop`` (default: up to the newest at call time) from the peer's Deliver
        service; finite — the stream ends at ``stop``."""
        stop_pos = (ab_pb2.SeekPosition(specified=ab_pb2.SeekSpecified(number=stop)) if stop is not None
                    else ab_pb2.SeekPosition(newest=ab_pb2.SeekNewest()))
        seek = ab_pb2.SeekInfo(start=ab_pb2.SeekPosition(specified=ab_pb2.SeekSpecified(number=start)),
                               stop=stop_pos, behavior=ab_pb2.SeekInfo.BLOCK_UNTIL_READY)
        creator = self.identity.serialized
        ch = common_pb2.ChannelHeader(type=common_pb2.DELIVER_SEEK_INFO, channel_id=self.channel,
                                      timestamp=_timestamp())
        payload = common_pb2.Payload(
            header=common_pb2.Header(channel_header=ch.SerializeToString(), signature_header=common_pb2.SignatureHeader(
                creator=creator, nonce=os.urandom(24)).SerializeToString()),
            data=seek.SerializeToString()).SerializeToString()
        env = common_pb2.Envelope(payload=payload, signature=self.identity.sign(payload))
        try:
            for resp in self._deliver.Deliver(iter([env]), timeout=self.timeout):
                kind = resp.WhichOneof("Type")
                if kind == "block":
                    yield resp.block
                elif kind == "status":
                    if resp.status != common_pb2.SUCCESS:
                        raise GatewayError("deliver", common_pb2.Status.Name(resp.status),
                                           f"blocks {start}..{stop if stop is not None else 'newest'}", [])
                    return
        except grpc.RpcError as exc:
            raise _gateway_error("deliver", exc) from None

    def events_in_blocks(self, chaincode: str, start: int, stop: int | None = None) -> Iterator[ChaincodeEvent]:
        """Events of ``chaincode`` in valid transactions of blocks ``start..stop``, with tx positions."""
        for block in self.blocks(start, stop):
            yield from block_events(block, chaincode)


def _action_of(payload: common_pb2.Payload) -> proposal_pb2.ChaincodeAction:
    tx = transaction_pb2.Transaction.FromString(payload.data)
    cap = transaction_pb2.ChaincodeActionPayload.FromString(tx.actions[0].payload)
    prp = proposal_response_pb2.ProposalResponsePayload.FromString(cap.action.proposal_response_payload)
    return proposal_pb2.ChaincodeAction.FromString(prp.extension)


def result_of(env: common_pb2.Envelope) -> bytes:
    return bytes(_action_of(common_pb2.Payload.FromString(env.payload)).response.payload)


def block_events(block: common_pb2.Block, chaincode: str) -> Iterator[ChaincodeEvent]:
    """Chaincode events of valid endorser transactions in ``block`` (validation codes are in the
    block's TRANSACTIONS_FILTER metadata; code 0 is VALID)."""
    md = block.metadata.metadata
    flags = md[common_pb2.TRANSACTIONS_FILTER] if len(md) > common_pb2.TRANSACTIONS_FILTER else b""
    number = int(block.header.number)
    for i, raw in enumerate(block.data.data):
        if i < len(flags) and flags[i] != transaction_pb2.VALID:
            continue
        payload = common_pb2.Payload.FromString(common_pb2.Envelope.FromString(raw).payload)
        ch = common_pb2.ChannelHeader.FromString(payload.header.channel_header)
        if ch.type != common_pb2.ENDORSER_TRANSACTION:
            continue
        action = _action_of(payload)
        if not action.events:
            continue
        ev = chaincode_event_pb2.ChaincodeEvent.FromString(action.events)
        if ev.chaincode_id == chaincode and ev.event_name:
            yield ChaincodeEvent(number, i, ch.tx_id, ev.event_name, bytes(ev.payload))

