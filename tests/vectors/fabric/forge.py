"""Forgeries of Fabric evidence (``ledger.fabric.evidence``): what an attacker holding a real block
can change. Shared by tests/test_fabric_evidence.py and the vector generator next to this file."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from fabric_protos.common import common_pb2
from fabric_protos.peer import transaction_pb2

from ledger.fabric.identities import P256_N


def block_of(evidence: dict[str, str]) -> common_pb2.Block:
    return common_pb2.Block.FromString(base64.b64decode(evidence["block_b64"]))


def with_block(evidence: dict[str, str], block: common_pb2.Block) -> dict[str, str]:
    return {**evidence, "block_b64": base64.b64encode(block.SerializeToString()).decode()}


def index_of(block: common_pb2.Block, tx_id: str) -> int:
    for i, raw in enumerate(block.data.data):
        payload = common_pb2.Payload.FromString(common_pb2.Envelope.FromString(raw).payload)
        if common_pb2.ChannelHeader.FromString(payload.header.channel_header).tx_id == tx_id:
            return i
    raise AssertionError(f"{tx_id} not in block")


def rehash(block: common_pb2.Block) -> None:
    """Recompute the header's data hash (as a forger would after changing the data)."""
    block.header.data_hash = hashlib.sha256(b"".join(block.data.data)).digest()


def edit_action(evidence: dict[str, str], tx_id: str,
                edit: Callable[[transaction_pb2.ChaincodeActionPayload], None]) -> dict[str, str]:
    """The evidence with the transaction's endorsed action edited and the data hash recomputed, so what
    is left to catch the edit is the signatures over it."""
    block = block_of(evidence)
    i = index_of(block, tx_id)
    env = common_pb2.Envelope.FromString(block.data.data[i])
    payload = common_pb2.Payload.FromString(env.payload)
    tx = transaction_pb2.Transaction.FromString(payload.data)
    cap = transaction_pb2.ChaincodeActionPayload.FromString(tx.actions[0].payload)
    edit(cap)
    tx.actions[0].payload = cap.SerializeToString()
    payload.data = tx.SerializeToString()
    env.payload = payload.SerializeToString()
    block.data.data[i] = env.SerializeToString()
    rehash(block)
    return with_block(evidence, block)


def edit_signatures(evidence: dict[str, str], edit: Callable[[common_pb2.Metadata], None]) -> dict[str, str]:
    """The evidence with the block's SIGNATURES metadata (the orderer's signatures) edited."""
    block = block_of(evidence)
    md = common_pb2.Metadata.FromString(block.metadata.metadata[common_pb2.SIGNATURES])
    edit(md)
    block.metadata.metadata[common_pb2.SIGNATURES] = md.SerializeToString()
    return with_block(evidence, block)


def set_flag(evidence: dict[str, str], tx_id: str, code: int) -> dict[str, str]:
    """The evidence with the transaction's TRANSACTIONS_FILTER flag (peer metadata) set to ``code``."""
    block = block_of(evidence)
    flags = bytearray(block.metadata.metadata[common_pb2.TRANSACTIONS_FILTER])
    flags[index_of(block, tx_id)] = code
    block.metadata.metadata[common_pb2.TRANSACTIONS_FILTER] = bytes(flags)
    return with_block(evidence, block)


def flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


def high_s(signature: bytes) -> bytes:
    """The same ECDSA signature in its other form (s → n − s): valid maths, refused by Fabric."""
    r, s = decode_dss_signature(signature)
    return encode_dss_signature(r, P256_N - s)
