"""The native frame checks (ledger/native, Rust) agree with the Python reference, and are built.

The contract (ledger/native/src/lib.rs): "proven good" only for a frame the reference also finds
good, whatever the bytes; every honestly signed frame proven good; the reference decides the rest.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from device.wire import MAX_FRAME_BYTES, Frame, Reading, encode_frame, sign_frame
from ledger import nativelib
from ledger.verify import frame_problem

CRATE = Path(__file__).resolve().parents[1] / "ledger" / "native"
KEYS = [Ed25519PrivateKey.generate() for _ in range(3)]
PUBS = [k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) for k in KEYS]
Z = zstandard.ZstdCompressor(level=3)
UNZ = zstandard.ZstdDecompressor()


def frame(seq: int, key: int = 0, n: int = 15) -> bytes:
    f = Frame(v=1, site="s01", device=f"s01-d{key}", seq=seq, sent_ms=1_780_000_000_000 + seq,
              readings=[Reading(ts_ms=1_780_000_000_000 + 60_000 * i, channel="import", energy_wh=1000 + i,
                                power_w=-5 + i) for i in range(n)])
    return encode_frame(sign_frame(f, KEYS[key]))


def native(stored: list[tuple[bytes, bytes, int]], keys: list[bytes | None] | None = None,
           threads: int = 1) -> np.ndarray:
    """Run ``check_frames`` over ``(zstd bytes, recorded sha, key index)`` laid out like a COPY buffer."""
    buf = b"".join(z + s for z, s, _ in stored)
    pos, raw_off, raw_len, sha_off, sha_len = 0, [], [], [], []
    for z, s, _ in stored:
        raw_off.append(pos)
        raw_len.append(len(z))
        sha_off.append(pos + len(z))
        sha_len.append(len(s))
        pos += len(z) + len(s)
    args = (np.frombuffer(buf or b"\0", np.uint8), np.array(raw_off), np.array(raw_len), np.array(sha_off),
            np.array(sha_len), list(PUBS) if keys is None else keys, np.array([k for _, _, k in stored], np.int32),
            MAX_FRAME_BYTES, threads)
    proven = nativelib.check_frames(*args)
    # the same check handing back the frames' bytes: the same verdicts, and for each frame it proves the bytes the
    # reference reads (python-zstandard), hashing to the recorded SHA-256, with the offset just past `,"sig":"`
    got = nativelib.check_frames_raw(*args)
    assert got.proven.tolist() == proven.tolist()
    for i in np.flatnonzero(got.proven).tolist():
        raw = got.buf[got.off[i]:got.off[i] + got.ln[i]].tobytes()
        assert got.raw_ok[i] and raw == UNZ.decompress(stored[i][0]) and hashlib.sha256(raw).digest() == stored[i][1]
        assert got.sig_at[i] == (raw.find(b',"sig":"') + 8 if b',"sig":"' in raw else -1)
    for i in np.flatnonzero(got.raw_ok).tolist():  # bytes handed back only when they hash to the recorded SHA-256
        assert hashlib.sha256(got.buf[got.off[i]:got.off[i] + got.ln[i]].tobytes()).digest() == stored[i][1]
    return proven


def reference_ok(z: bytes, sha: bytes, key: int) -> bool:
    pub = Ed25519PublicKey.from_public_bytes(PUBS[key]) if 0 <= key < len(PUBS) else None
    return frame_problem(z, sha, pub, UNZ) is None


def stored_of(raw: bytes, key: int) -> tuple[bytes, bytes, int]:
    return Z.compress(raw), hashlib.sha256(raw).digest(), key


def test_the_native_library_is_built_and_loaded() -> None:
    # `make test` builds it (ledger/native/build.sh); without it verify and ingest fall back to the slow
    # Python checks and the benchmark figures in benchmarks/RESULTS.md do not hold.
    assert nativelib.LIB is not None, f"libwattproof_native not found at {nativelib.DEFAULT_PATH}"


def test_the_crate_unit_tests_pass() -> None:
    cargo = shutil.which("cargo") or os.path.expanduser("~/.cargo/bin/cargo")
    if not os.path.exists(cargo):
        pytest.fail("cargo is not installed (needed to build ledger/native)")
    env = {**os.environ, "CARGO_TARGET_DIR": str(CRATE.parents[1] / ".cache" / "native")}
    if os.uname().machine == "x86_64":  # as build.sh builds it: the backends chosen at run time include AVX-512 IFMA
        env["RUSTFLAGS"] = (env.get("RUSTFLAGS", "") + ' --cfg curve25519_dalek_backend="avx512"').strip()
    proc = subprocess.run([cargo, "test", "--release", "--locked", "--quiet"], cwd=CRATE, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_honest_frames_are_proven_in_one_batch_and_across_threads() -> None:
    stored = [stored_of(frame(s, key=s % 3, n=1 + s % 40), s % 3) for s in range(700)]
    for threads in (1, 3):
        assert native(stored, threads=threads).all()


def test_each_kind_of_bad_frame_is_left_to_the_reference_and_its_neighbours_stay_proven() -> None:
    good = [stored_of(frame(s), 0) for s in range(600)]
    raw = frame(10_000)
    z, sha, _ = stored_of(raw, 0)
    at = raw.index(b'"sig":"') + 7
    flipped_sig = raw[:at] + (b"B" if raw[at:at + 1] != b"B" else b"C") + raw[at + 1:]
    bad = {
        "signature altered": stored_of(flipped_sig, 0),
        "content altered": stored_of(raw.replace(b'"energy_wh":1000', b'"energy_wh":1001', 1), 0),
        "another device's key": (z, sha, 1),
        "unknown device": (z, sha, -1),
        "recorded sha differs": (z, hashlib.sha256(b"x").digest(), 0),
        "short sha": (z, sha[:31], 0),
        "not zstd": (raw, sha, 0),
        "truncated zstd": (z[:-3], sha, 0),
        "no signature": stored_of(raw[:raw.index(b',"sig"')] + raw[raw.index(b'","site"') + 1:], 0),
        # Not in the shape the native check proves, and not canonical: the reference refuses them too
        # (frames on the wire are their RFC 8785 form, docs/wire-format.md).
        "two sig members":
            stored_of(raw.replace(b'"site"', raw[raw.index(b'"sig"'):raw.index(b',"site"')] + b',"site"'), 0),
        "whitespace between members": stored_of(raw.replace(b",", b", "), 0),
    }
    for name, item in bad.items():
        stored = good[:300] + [item] + good[300:]
        got = native(stored)
        assert not got[300], name
        assert got[:300].all() and got[301:].all(), name
        assert not reference_ok(*item), name


def test_a_frame_of_several_zstd_frames_or_without_a_declared_size_is_left_to_the_reference() -> None:
    # python-zstandard (the reference) reads the first zstd frame only: natively, a frame is proven only when it
    # decompresses to exactly the size its first zstd frame declares, so both read the same bytes
    raw = frame(3)
    two = Z.compress(raw[:100]) + Z.compress(raw[100:])  # all of it decompresses to raw; the first part alone not
    no_size = zstandard.ZstdCompressor(write_content_size=False).compress(raw)
    good = [stored_of(frame(s), 0) for s in range(5)]
    odd = [(two, hashlib.sha256(raw).digest(), 0), (no_size, hashlib.sha256(raw).digest(), 0)]
    got = native(good + odd)
    assert got[:5].all() and not got[5:].any()
    assert not reference_ok(*odd[0])


def test_a_key_that_is_not_a_curve_point_proves_nothing() -> None:
    item = stored_of(frame(1), 0)
    assert not native([item], keys=[bytes([0xFF] * 32)])[0]  # y >= p: not a valid encoding
    assert not native([item], keys=[None])[0]


mutation = st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from(["flip", "insert", "delete"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(n=3, muts=[(0, 0, "flip"), (0, 0, "flip")], on_compressed=False)  # found by CI: the frame unchanged
@given(st.integers(1, 60), st.lists(mutation, min_size=1, max_size=4), st.booleans())
def test_native_never_proves_what_the_reference_refuses(n: int, muts: list[tuple[int, int, str]],
                                                        on_compressed: bool) -> None:
    raw = frame(7, n=n)
    z, sha, _ = stored_of(raw, 0)
    data = bytearray(z if on_compressed else raw)
    for pos, byte, op in muts:
        p = pos % (len(data) + 1)
        if op == "insert":
            data.insert(p, byte)
        elif data:
            p = min(p, len(data) - 1)
            if op == "flip":
                data[p] ^= byte or 1
            else:
                del data[p]
    item = (bytes(data), sha, 0) if on_compressed else stored_of(bytes(data), 0)
    if native([item])[0]:
        assert reference_ok(*item)


def test_verify_batch_finds_the_one_bad_signature_among_many() -> None:
    msgs = [f"message {i}".encode() * (i % 7 + 1) for i in range(513)]
    sigs = [KEYS[i % 3].sign(m) for i, m in enumerate(msgs)]
    keys = [PUBS[i % 3] for i in range(513)]
    assert nativelib.verify_batch(msgs, sigs, keys).all()
    for bad in (0, 255, 256, 512):
        tampered = list(msgs)
        tampered[bad] = tampered[bad] + b"!"
        got = nativelib.verify_batch(tampered, sigs, keys)
        assert not got[bad] and got.sum() == 512
    short = list(sigs)
    short[3] = short[3][:63]
    got = nativelib.verify_batch(msgs, short, keys)
    assert not got[3] and got.sum() == 512
    assert nativelib.verify_batch([], [], []).shape == (0,)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=50), st.integers(1, 4))
def test_sha256_of_many_ranges_equals_hashlib(chunks: list[bytes], threads: int) -> None:
    buf = np.frombuffer(b"".join(chunks) or b"\0", np.uint8)
    offs = np.zeros(len(chunks) + 1, np.int64)
    np.cumsum([len(c) for c in chunks], out=offs[1:])
    out = np.empty((len(chunks), 32), np.uint8)
    nativelib.sha256_ranges(buf, offs, out, threads)
    assert [bytes(r) for r in out] == [hashlib.sha256(c).digest() for c in chunks]


def test_sha256_ranges_refuses_offsets_outside_the_buffer() -> None:
    with pytest.raises(ValueError):
        nativelib.sha256_ranges(np.zeros(4, np.uint8), np.array([0, 5]), np.empty((1, 32), np.uint8))
    with pytest.raises(ValueError):
        nativelib.sha256_ranges(np.zeros(4, np.uint8), np.array([3, 1]), np.empty((1, 32), np.uint8))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 70), max_size=12), st.integers(1, 4))
def test_merkle_roots_of_many_runs_equal_the_rfc6962_reference(sizes: list[int], threads: int) -> None:
    from ledger import merkle

    total = sum(sizes)
    hashes = np.frombuffer(b"".join(hashlib.sha256(b"\0" + i.to_bytes(4, "big")).digest() for i in range(total))
                           or b"", np.uint8).reshape(-1, 32)
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    got = nativelib.merkle_roots(hashes, starts, threads)
    for b in range(len(sizes)):
        run = [bytes(hashes[i]) for i in range(starts[b], starts[b + 1])]
        assert bytes(got[b]) == merkle.root_from_leaf_hashes(run)
