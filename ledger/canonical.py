"""Canonical leaf bytes: one stored reading as RFC 8785 (JCS) JSON, the input of a Merkle leaf.

Owns: the leaf schema (docs/proofs.md lists it field by field) and its encoding. All fields are
safe integers or ASCII strings that need no escaping, so JCS output is compact JSON with sorted
keys, produced by msgspec's compiled encoder; ``leaf_bytes_reference`` goes through the
``rfc8785`` library and the tests prove both agree. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
import rfc8785

LEAF_VERSION = 1


class Leaf(msgspec.Struct, frozen=True, kw_only=True):
    """A stored reading, as committed to by the ledger."""

    v: int = LEAF_VERSION
    device: str
    ts_ms: int
    channel: str
    energy_wh: int
    power_w: int
    seq: int
    idx: int
    frame_sha256: str  # hex SHA-256 of the signed frame the reading came in: links to the device signature


_encoder = msgspec.json.Encoder(order="sorted")


def leaf_bytes(leaf: Leaf) -> bytes:
    return _encoder.encode(leaf)


def leaf_bytes_reference(leaf: Leaf) -> bytes:
    return rfc8785.dumps(msgspec.to_builtins(leaf))


def leaves_bytes(leaves: Iterable[Leaf]) -> list[bytes]:
    enc = _encoder.encode
    return [enc(x) for x in leaves]
