"""RFC 6962 / RFC 9162 Merkle trees: tree heads, inclusion and consistency proofs, verification.

Owns: the hashing scheme and proof algorithms exactly as the RFCs define them, over leaves given
as bytes (the canonical leaf encoding is ledger/canonical.py's concern). Pure: no I/O.

- Leaf hash   ``SHA-256(0x00 || leaf)``            (RFC 6962 §2.1, RFC 9162 §2.1.1)
- Node hash   ``SHA-256(0x01 || left || right)``
- MTH of n > 1 leaves splits at k, the largest power of two < n (RFC 6962 §2.1). Building the tree
  bottom-up and carrying an odd last node up a level unchanged gives the same heads, and is what
  ``tree_levels`` does (one pass per level, no recursion).
- Inclusion proof PATH(m, D[n])          (RFC 6962 §2.1.1), verified per RFC 9162 §2.1.3.2.
- Consistency proof PROOF(m, D[n])       (RFC 6962 §2.1.2), verified per RFC 9162 §2.1.4.2.

Every hash handed in (a leaf hash, a root, a proof element) must be exactly 32 bytes (SHA-256,
RFC 9162 §2.1.1): anything else raises ``ProofError`` rather than being hashed into a verdict.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from device.errors import WattproofError

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


HASH_BYTES = 32


class ProofError(WattproofError, ValueError):
    """A proof request or a proof that is malformed (index out of range, wrong length...)."""


def _hash(name: str, value: object) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_BYTES:
        what = f"{len(value)} bytes" if isinstance(value, bytes | bytearray) else type(value).__name__
        raise ProofError(f"{name} must be a {HASH_BYTES}-byte SHA-256 hash, not {what}")
    return bytes(value)


def _hashes(name: str, values: Sequence[bytes]) -> list[bytes]:
    if isinstance(values, bytes | str):  # a string would be iterated byte by byte
        raise ProofError(f"{name} must be a sequence of {HASH_BYTES}-byte hashes, not {type(values).__name__}")
    out = list(values)
    for i, v in enumerate(out):
        _hash(f"{name}[{i}]", v)
    return out


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def tree_levels(leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """All levels, leaves first; an odd last node is carried up unchanged (== RFC 6962 MTH)."""
    levels = [list(leaf_hashes)]
    if any(not isinstance(h, bytes | bytearray) or len(h) != HASH_BYTES for h in levels[0]):
        _hashes("leaf_hashes", levels[0])
    sha = hashlib.sha256
    while len(levels[-1]) > 1:
        cur = levels[-1]
        nxt = [sha(NODE_PREFIX + cur[i] + cur[i + 1]).digest() for i in range(0, len(cur) - 1, 2)]
        if len(cur) % 2:
            nxt.append(cur[-1])
        levels.append(nxt)
    return levels


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    if not leaf_hashes:
        return EMPTY_ROOT
    return tree_levels(leaf_hashes)[-1][0]


def mth(leaves: Sequence[bytes]) -> bytes:
    """Merkle Tree Hash of raw leaves (RFC 6962 §2.1)."""
    return root_from_leaf_hashes([leaf_hash(x) for x in leaves])


def _largest_power_of_two_below(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def _subtree_root(levels: list[list[bytes]], start: int, size: int) -> bytes:
    """Root of leaves [start, start+size) where size is a power of two and start is aligned."""
    height = size.bit_length() - 1
    return levels[height][start >> height]


def _mth_range(levels: list[list[bytes]], start: int, end: int) -> bytes:
    """MTH of leaves [start, end) using the precomputed levels for the aligned full subtrees."""
    n = end - start
    if n & (n - 1) == 0 and start % n == 0:
        return _subtree_root(levels, start, n)
    k = _largest_power_of_two_below(n)
    return node_hash(_mth_range(levels, start, start + k), _mth_range(levels, start + k, end))


def inclusion_proof(levels: list[list[bytes]], index: int, size: int | None = None) -> list[bytes]:
    """PATH(m, D[n]) of RFC 6962 §2.1.1 for leaf ``index`` in the tree of the first ``size`` leaves."""
    n = len(levels[0]) if size is None else size
    if not 0 <= index < n <= len(levels[0]):
        raise ProofError(f"leaf index {index} not in a tree of {n} leaves")

    def path(m: int, start: int, end: int) -> list[bytes]:
        if end - start == 1:
            return []
        k = _largest_power_of_two_below(end - start)
        if m < k:
            return path(m, start, start + k) + [_mth_range(levels, start + k, end)]
        return path(m - k, start + k, end) + [_mth_range(levels, start, start + k)]

    return path(index, 0, n)


def consistency_proof(levels: list[list[bytes]], first: int, second: int | None = None) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 6962 §2.1.2: the tree of ``first`` leaves is a prefix of ``second``."""
    n = len(levels[0]) if second is None else second
    if not 0 < first <= n <= len(levels[0]):
        raise ProofError(f"no consistency proof from size {first} to {n}")

    def subproof(m: int, start: int, end: int, complete: bool) -> list[bytes]:
        if m == end - start:
            return [] if complete else [_mth_range(levels, start, end)]
        k = _largest_power_of_two_below(end - start)
        if m <= k:
            return subproof(m, start, start + k, complete) + [_mth_range(levels, start + k, end)]
        return subproof(m - k, start + k, end, False) + [_mth_range(levels, start, start + k)]

    return subproof(first, 0, n, True)


def verify_inclusion(leaf_hash_: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: recompute the root from a leaf hash and its audit path.

    ``ProofError`` if ``leaf_hash_``, ``root`` or a proof element is not a 32-byte hash."""
    leaf_hash_, root, proof = _hash("leaf_hash", leaf_hash_), _hash("root", root), _hashes("proof", proof)
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf_hash_
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first: int, second: int, proof: Sequence[bytes], first_root: bytes, second_root: bytes) -> bool:
    """RFC 9162 §2.1.4.2: check that ``first_root`` (size ``first``) is a prefix of ``second_root``.

    ``ProofError`` if ``first_root``, ``second_root`` or a proof element is not a 32-byte hash."""
    first_root, second_root = _hash("first_root", first_root), _hash("second_root", second_root)
    proof = _hashes("proof", proof)
    if not 0 < first <= second:
        return False
    if first == second:
        return len(proof) == 0 and first_root == second_root
    path = list(proof)
    if first & (first - 1) == 0:  # first is a power of two: its root is the implicit first node
        path.insert(0, first_root)
    if not path:
        return False
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root
