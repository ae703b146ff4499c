"""RFC 6962 Merkle trees: published vectors, and properties over random trees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle

VEC = json.loads((Path(__file__).parent / "vectors" / "rfc6962" / "ct-vectors.json").read_text())
LEAVES = [bytes.fromhex(h) for h in VEC["leaves_hex"]]
ROOTS = [bytes.fromhex(h) for h in VEC["roots_hex"]]


def levels_of(leaves: list[bytes]) -> list[list[bytes]]:
    return merkle.tree_levels([merkle.leaf_hash(x) for x in leaves])


def reference_mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 written literally (recursive split at the largest power of two below n)."""
    n = len(leaves)
    if n == 0:
        return merkle.EMPTY_ROOT
    if n == 1:
        return merkle.leaf_hash(leaves[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return merkle.node_hash(reference_mth(leaves[:k]), reference_mth(leaves[k:]))


@pytest.mark.parametrize("n", range(9))
def test_tree_heads_match_the_published_vectors(n: int) -> None:
    assert merkle.mth(LEAVES[:n]) == ROOTS[n]


@pytest.mark.parametrize("index, size, path", VEC["inclusion"])
def test_inclusion_proofs_match_the_published_vectors(index: int, size: int, path: list[str]) -> None:
    levels = levels_of(LEAVES[:size])
    proof = merkle.inclusion_proof(levels, index, size)
    assert [p.hex() for p in proof] == path
    assert merkle.verify_inclusion(merkle.leaf_hash(LEAVES[index]), index, size, proof, ROOTS[size])


@pytest.mark.parametrize("first, second, path", VEC["consistency"])
def test_consistency_proofs_match_the_published_vectors(first: int, second: int, path: list[str]) -> None:
    proof = merkle.consistency_proof(levels_of(LEAVES[:second]), first, second)
    assert [p.hex() for p in proof] == path
    assert merkle.verify_consistency(first, second, proof, ROOTS[first], ROOTS[second])


leaf_lists = st.lists(st.binary(max_size=12), min_size=1, max_size=70, unique=True)


@given(leaf_lists)
@settings(max_examples=200)
def test_bottom_up_build_equals_the_rfc_recursion(leaves: list[bytes]) -> None:
    assert merkle.mth(leaves) == reference_mth(leaves)


@given(leaf_lists, st.data())
@settings(max_examples=200)
def test_every_inclusion_proof_verifies_and_any_change_fails(leaves: list[bytes], data: st.DataObject) -> None:
    levels = levels_of(leaves)
    n = len(leaves)
    root = merkle.root_from_leaf_hashes(levels[0])
    i = data.draw(st.integers(0, n - 1))
    proof = merkle.inclusion_proof(levels, i)
    lh = levels[0][i]
    assert merkle.verify_inclusion(lh, i, n, proof, root)
    if n > 1:
        j = data.draw(st.integers(0, n - 1).filter(lambda j: j != i))
        assert not merkle.verify_inclusion(lh, j, n, proof, root)  # wrong index
    # wrong size: fails whenever that size gives leaf i a path of another length. (Where the shape
    # is the same, RFC 9162 verification cannot tell sizes apart: the size is authenticated by
    # the signed batch header, as CT's signed tree head does.)
    padded = levels_of(leaves + [b"pad-%d" % k for k in range(n + 2)])
    for s in {n + 1, 2 * n + 1, max(1, n // 2)} - {n}:
        if i < s and len(merkle.inclusion_proof(padded, i, s)) != len(proof):
            assert not merkle.verify_inclusion(lh, i, s, proof, root)
    bad_leaf = bytearray(lh)
    bad_leaf[data.draw(st.integers(0, 31))] ^= 1 << data.draw(st.integers(0, 7))
    assert not merkle.verify_inclusion(bytes(bad_leaf), i, n, proof, root)  # flipped bit
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        b = bytearray(bad[k])
        b[0] ^= 1
        bad[k] = bytes(b)
        assert not merkle.verify_inclusion(lh, i, n, bad, root)
        assert not merkle.verify_inclusion(lh, i, n, proof[:-1], root)  # truncated path


@given(leaf_lists, st.data())
@settings(max_examples=200)
def test_every_consistency_proof_verifies_and_a_different_history_fails(leaves: list[bytes], data: st.DataObject) -> None:
    levels = levels_of(leaves)
    n = len(leaves)
    m = data.draw(st.integers(1, n))
    proof = merkle.consistency_proof(levels, m)
    old_root = merkle.mth(leaves[:m])
    new_root = merkle.root_from_leaf_hashes(levels[0])
    assert merkle.verify_consistency(m, n, proof, old_root, new_root)
    rewritten = list(leaves[:m])
    rewritten[data.draw(st.integers(0, m - 1))] += b"x"  # history changed before the old head
    assert not merkle.verify_consistency(m, n, proof, merkle.mth(rewritten), new_root)


def test_proof_requests_out_of_range_are_refused() -> None:
    levels = levels_of(LEAVES)
    with pytest.raises(merkle.ProofError):
        merkle.inclusion_proof(levels, 8)
    with pytest.raises(merkle.ProofError):
        merkle.consistency_proof(levels, 0)
    assert not merkle.verify_inclusion(merkle.leaf_hash(b""), 3, 3, [], ROOTS[3])


def test_a_proof_for_a_reading_in_a_million_leaf_batch_is_under_1_kb() -> None:
    # ceil(log2(1e6)) = 20 hashes × 32 bytes = 640 bytes of audit path
    n = 1_000_000
    assert (n - 1).bit_length() * 32 <= 1024


# --- hash sizes are enforced in every proof check (issue 12, invariant 6) ------------------------

GOOD_PROOF = merkle.inclusion_proof(levels_of(LEAVES[:5]), 2, 5)
GOOD_CONS = merkle.consistency_proof(levels_of(LEAVES[:7]), 3, 7)
BAD_HASHES = [b"", b"\x00" * 31, b"\x00" * 33, "ab" * 16, None]
BAD_IDS = ["empty", "31-bytes", "33-bytes", "hex-string", "none"]


@pytest.mark.parametrize("bad", BAD_HASHES, ids=BAD_IDS)
def test_verify_inclusion_refuses_a_leaf_hash_that_is_not_32_bytes(bad: object) -> None:
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(bad, 2, 5, GOOD_PROOF, ROOTS[5])  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", BAD_HASHES, ids=BAD_IDS)
def test_verify_inclusion_refuses_a_root_that_is_not_32_bytes(bad: object) -> None:
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(merkle.leaf_hash(LEAVES[2]), 2, 5, GOOD_PROOF, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", BAD_HASHES, ids=BAD_IDS)
def test_verify_inclusion_refuses_a_proof_element_that_is_not_32_bytes(bad: object) -> None:
    for k in range(len(GOOD_PROOF)):
        proof = list(GOOD_PROOF)
        proof[k] = bad  # type: ignore[call-overload]
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(merkle.leaf_hash(LEAVES[2]), 2, 5, proof, ROOTS[5])


def test_verify_inclusion_refuses_a_proof_given_as_one_byte_string() -> None:
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(merkle.leaf_hash(LEAVES[2]), 2, 5, b"".join(GOOD_PROOF), ROOTS[5])  # type: ignore[arg-type]


def test_zero_byte_hashes_no_longer_verify_a_single_leaf_tree() -> None:
    # the review's case: an empty leaf hash equal to an empty root, no path
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(b"", 0, 1, [], b"")
    assert merkle.verify_inclusion(merkle.leaf_hash(LEAVES[0]), 0, 1, [], ROOTS[1])


@pytest.mark.parametrize("bad", BAD_HASHES, ids=BAD_IDS)
def test_verify_consistency_refuses_a_first_root_that_is_not_32_bytes(bad: object) -> None:
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(3, 7, GOOD_CONS, bad, ROOTS[7])  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", BAD_HASHES, ids=BAD_IDS)
def test_verify_consistency_refuses_a_second_root_that_is_not_32_bytes(bad: object) -> None:
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(3, 7, GOOD_CONS, ROOTS[3], bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", BAD_HASHES, ids=BAD_IDS)
def test_verify_consistency_refuses_a_proof_element_that_is_not_32_bytes(bad: object) -> None:
    assert merkle.verify_consistency(3, 7, GOOD_CONS, ROOTS[3], ROOTS[7])
    for k in range(len(GOOD_CONS)):
        proof = list(GOOD_CONS)
        proof[k] = bad  # type: ignore[call-overload]
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(3, 7, proof, ROOTS[3], ROOTS[7])


def test_equal_sizes_with_short_roots_are_refused_not_compared() -> None:
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(4, 4, [], b"", b"")


@pytest.mark.parametrize("bad", BAD_HASHES, ids=BAD_IDS)
def test_a_tree_head_is_not_computed_over_a_leaf_hash_that_is_not_32_bytes(bad: object) -> None:
    hashes = [merkle.leaf_hash(x) for x in LEAVES[:4]]
    hashes[1] = bad  # type: ignore[call-overload]
    with pytest.raises(merkle.ProofError):
        merkle.root_from_leaf_hashes(hashes)
