"""The column encoder and batched hashing equal the RFC 8785 library and the RFC 6962 reference."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import numpy as np
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import bulk, merkle
from ledger.canonical import CanonicalError, Leaf, leaf_bytes

MAX_SAFE = 2**53 - 1
safe = st.integers(min_value=0, max_value=MAX_SAFE) | st.sampled_from([0, 1, 9, 10, MAX_SAFE, 2**52])
signed = st.integers(min_value=-MAX_SAFE, max_value=MAX_SAFE) | st.sampled_from([0, -1, -10, -MAX_SAFE, -(2**52)])
leaves = st.builds(Leaf, device=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}", fullmatch=True), ts_ms=safe,
                   channel=st.sampled_from(["import", "export", "pv"]), energy_wh=safe, power_w=signed, seq=safe,
                   idx=st.integers(0, 4095), frame_sha256=st.binary(min_size=32, max_size=32).map(bytes.hex))


def columns(ls: list[Leaf]) -> bulk.LeafColumns:
    devs = sorted({x.device for x in ls})
    chans = sorted({x.channel for x in ls})
    frames = sorted({x.frame_sha256 for x in ls})

    def codes(values: list[str], attr: str) -> np.ndarray:
        pos = {v: i for i, v in enumerate(values)}
        return np.array([pos[getattr(x, attr)] for x in ls], np.int32)

    def ints(attr: str) -> np.ndarray:
        return np.array([getattr(x, attr) for x in ls], np.int64)

    return bulk.LeafColumns(
        devices=bulk.StringTable.of_json(devs), channels=bulk.StringTable.of_json(chans),
        frames=bulk.StringTable.of_bytes([bytes.fromhex(f) for f in frames]), device=codes(devs, "device"),
        channel=codes(chans, "channel"), frame=codes(frames, "frame_sha256"), ts_ms=ints("ts_ms"),
        energy_wh=ints("energy_wh"), power_w=ints("power_w"), seq=ints("seq"), idx=ints("idx"))


@given(st.lists(leaves, min_size=1, max_size=40))
@settings(max_examples=300, deadline=None)
def test_column_encoder_gives_the_rfc8785_bytes_of_every_leaf(ls: list[Leaf]) -> None:
    got = bulk.leaf_list(columns(ls))
    assert got == [rfc8785.dumps(msgspec.to_builtins(x)) for x in ls]
    assert got == [leaf_bytes(x) for x in ls]


@given(st.lists(leaves, min_size=1, max_size=70))
@settings(max_examples=200, deadline=None)
def test_batched_leaf_hashes_and_root_equal_the_reference(ls: list[Leaf]) -> None:
    hashes = bulk.leaf_hashes(columns(ls))
    ref = [merkle.leaf_hash(leaf_bytes(x)) for x in ls]
    assert bulk.as_bytes_list(hashes) == ref
    assert bulk.root(hashes) == merkle.root_from_leaf_hashes(ref)


def test_out_of_range_store_values_are_written_as_msgspec_writes_them() -> None:
    # The store's bigint columns can hold values the wire never admits (a tampered row): the leaf
    # must still be today's bytes so that the change is detected and named, not crash.
    # The strict writers refuse them (a canonical leaf cannot carry them); replay uses strict=False.
    import msgspec

    fields = dict(v=1, device="d", ts_ms=2**63 - 1, channel="pv", energy_wh=2**60, power_w=-(2**63), seq=0, idx=0,
                  frame_sha256="00" * 32)
    with pytest.raises(CanonicalError):
        Leaf(**fields)  # type: ignore[arg-type]
    ok = Leaf(**{**fields, "ts_ms": 1, "energy_wh": 1, "power_w": 1})  # type: ignore[arg-type]
    c = columns([ok])
    c = bulk.LeafColumns(**{**c.__dict__, "ts_ms": np.array([2**63 - 1]), "energy_wh": np.array([2**60]),
                            "power_w": np.array([-(2**63)])})
    with pytest.raises(bulk.LeafRangeError):
        bulk.leaf_list(c)
    assert bulk.leaf_list(c, strict=False) == [msgspec.json.Encoder(order="sorted").encode(fields)]


def test_a_frame_hash_of_another_length_is_hexed_like_the_row_path() -> None:
    c = columns([Leaf(device="d", ts_ms=1, channel="pv", energy_wh=1, power_w=1, seq=1, idx=0, frame_sha256="00")])
    c = bulk.LeafColumns(**{**c.__dict__, "frames": bulk.StringTable.of_bytes([b"\x01\xfe\x00"])})
    assert bulk.leaf_list(c)[0] == leaf_bytes(Leaf(device="d", ts_ms=1, channel="pv", energy_wh=1, power_w=1, seq=1,
                                                  idx=0, frame_sha256="01fe00"))


VEC = json.loads((Path(__file__).parent / "vectors" / "rfc6962" / "ct-vectors.json").read_text())


@pytest.mark.parametrize("n", range(9))
def test_batched_root_matches_the_published_vectors(n: int) -> None:
    hashes = [merkle.leaf_hash(bytes.fromhex(h)) for h in VEC["leaves_hex"][:n]]
    arr = np.frombuffer(b"".join(hashes), np.uint8).reshape(n, 32)
    assert bulk.root(arr).hex() == VEC["roots_hex"][n]


def test_the_native_sha256_path_is_in_use() -> None:
    # Not a correctness condition (the hashlib fallback gives the same bytes), but the throughput
    # figures in benchmarks/RESULTS.md assume it: say so loudly when libcrypto was not found.
    assert bulk.NATIVE


def test_libsodium_and_openssl_ed25519_agree_on_valid_and_invalid_signatures() -> None:
    """The bulk verify checks signatures with libsodium (PyNaCl); ``cryptography`` (OpenSSL) is the
    reference. Both must accept and refuse the same signatures."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    from nacl.bindings import crypto_sign_open
    from nacl.exceptions import BadSignatureError

    from ledger.replay import ed25519_ok

    L = 2**252 + 27742317777372353535851937790883648493  # order of the Ed25519 base point

    def openssl(pk: bytes, sig: bytes, msg: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(pk).verify(sig, msg)
            return True
        except InvalidSignature:
            return False

    def sodium(pk: bytes, sig: bytes, msg: bytes) -> bool:
        try:
            crypto_sign_open(sig + msg, pk)
            return True
        except BadSignatureError:
            return False

    k1, k2 = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    pk1, pk2 = (k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) for k in (k1, k2))
    cases = []
    for msg in (b"", b"x", b'{"device":"s01-main","readings":[]}' * 40):
        sig = k1.sign(msg)
        s = int.from_bytes(sig[32:], "little")
        cases += [(pk1, sig, msg, True),
                  (pk2, sig, msg, False),  # a wrong key
                  (pk1, sig, msg + b" ", False),  # another message
                  (pk1, sig[:32] + (s + L).to_bytes(32, "little"), msg, False),  # non-canonical S (S + L)
                  (pk1, sig[:32] + (s | (1 << 255)).to_bytes(32, "little"), msg, False)]  # high bit of S
        for bit in (0, 7, 255, 256, 300, 511):  # a flipped bit in R or S
            bad = bytearray(sig)
            bad[bit // 8] ^= 1 << (bit % 8)
            cases.append((pk1, bytes(bad), msg, False))
        bad_pk = bytearray(pk1)
        bad_pk[3] ^= 0x10
        cases.append((bytes(bad_pk), sig, msg, False))  # a flipped bit in the key
    for pk, sig, msg, want in cases:
        assert openssl(pk, sig, msg) is want
        assert sodium(pk, sig, msg) is want
        assert ed25519_ok(pk, sig, msg) is want
