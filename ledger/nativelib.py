"""The native helpers (``ledger/native``, Rust: ed25519-dalek strict verification, zstd, sha2) via ctypes.

Owns: finding and loading ``libwattproof_native`` and its calls on numpy buffers. Where it is looked for, in
order: the file named by ``$WATTPROOF_NATIVE_LIB``; ``ledger/_native<ext suffix>`` inside the installed
package (built by setuptools-rust when the wheel is built: setup.py); ``.cache/native`` of a source checkout
(``ledger/native/build.sh``, run by ``make``; an editable install builds no copy into the package, so a
rebuilt library is never shadowed by a stale one). The two signature checks answer per
item "proven good" or "not proven" under the Ed25519 acceptance rule (``device.ed25519``; each
signature alone, so no item's verdict depends on the others); callers decide every "not proven" item
with their reference check (decode, RFC 8785, ``device.ed25519``), which also words the problem. The two hashing
calls (SHA-256 of many byte ranges, RFC 6962 roots of many runs of leaf hashes) are exact and tested
against ``hashlib`` and ``ledger.merkle``. Without the
library, ``LIB`` is None and callers use their reference path for everything (slower, same verdicts).
ctypes releases the GIL for the call, so a thread of the caller keeps working meanwhile.
"""

from __future__ import annotations

import ctypes
import os
from importlib import machinery, resources
from pathlib import Path

import numpy as np

ABI_VERSION = 4  # 3: the acceptance rule (strict keys, R and S), one signature at a time; 4: frames' bytes handed back
# a source checkout's build (ledger/native/build.sh); looked at only when the package holds no library
DEFAULT_PATH = Path(__file__).resolve().parents[1] / ".cache" / "native" / "release" / "libwattproof_native.so"
_P = ctypes.c_void_p
_N = ctypes.c_size_t


def packaged_path() -> Path | None:
    """``ledger/_native<suffix>`` of the installed package (setup.py builds it there), or None."""
    here = resources.files("ledger")
    for suffix in machinery.EXTENSION_SUFFIXES:
        candidate = here / f"_native{suffix}"
        if candidate.is_file():
            return Path(str(candidate))  # installed wheels are unpacked: a real file ctypes can open
    return None


def library_path() -> Path | None:
    """The library ``LIB`` is loaded from: ``$WATTPROOF_NATIVE_LIB``, else the package's, else ``.cache/native``."""
    env = os.environ.get("WATTPROOF_NATIVE_LIB")
    if env:
        return Path(env)
    return packaged_path() or (DEFAULT_PATH if DEFAULT_PATH.is_file() else None)


def _load() -> ctypes.CDLL | None:
    path = library_path()
    if path is None or not path.is_file():
        return None
    lib = ctypes.CDLL(str(path))
    lib.wp_abi_version.restype = ctypes.c_uint32
    if lib.wp_abi_version() != ABI_VERSION:
        return None  # a stale build: `make` rebuilds it
    lib.wp_check_frames.argtypes = [_N, _P, _N, _P, _P, _P, _P, _P, _N, _P, _N, _N, _P]
    lib.wp_check_frames.restype = ctypes.c_int32
    lib.wp_zstd_sizes.argtypes = [_N, _P, _N, _P, _P, _N, _P]
    lib.wp_zstd_sizes.restype = ctypes.c_int32
    lib.wp_check_frames_raw.argtypes = [_N, _P, _N, _P, _P, _P, _P, _P, _N, _P, _N, _N, _P, _P, _N, _P, _P, _P]
    lib.wp_check_frames_raw.restype = ctypes.c_int32
    lib.wp_verify_batch.argtypes = [_N, _P, _P, _P, _P, _P]
    lib.wp_verify_batch.restype = ctypes.c_int32
    lib.wp_sha256_ranges.argtypes = [_N, _P, _N, _P, _N, _P]
    lib.wp_sha256_ranges.restype = ctypes.c_int32
    lib.wp_merkle_roots.argtypes = [_N, _P, _P, _N, _P]
    lib.wp_merkle_roots.restype = ctypes.c_int32
    return lib


LIB = _load()


def _ptr(a: np.ndarray) -> int:
    return int(a.ctypes.data)


def check_frames(buf: np.ndarray, raw_off: np.ndarray, raw_len: np.ndarray, sha_off: np.ndarray,
                 sha_len: np.ndarray, keys: list[bytes | None], key_idx: np.ndarray, max_raw: int,
                 threads: int = 1) -> np.ndarray:
    """``(n,)`` bool: True where frame ``i`` (zstd bytes at ``buf[raw_off[i]:+raw_len[i]]``, recorded SHA-256
    at ``buf[sha_off[i]:+sha_len[i]]``, device key ``keys[key_idx[i]]``) is proven authentic: readable, same
    SHA-256, and signed by that key over its bytes without the ``sig`` member (see ledger/native/src/lib.rs).
    A key index < 0 or a ``None`` key is never proven."""
    if LIB is None:
        raise RuntimeError("libwattproof_native is not built (make builds it into .cache/native)")
    n = int(raw_off.shape[0])
    out = np.ones(n, np.uint8)
    if n == 0:
        return out == 0
    table, idx = _key_table(keys, key_idx)
    cols = [np.ascontiguousarray(c, np.int64) for c in (raw_off, raw_len, sha_off, sha_len)]
    b = np.ascontiguousarray(buf, np.uint8)
    rc = LIB.wp_check_frames(n, _ptr(b), b.size, *(_ptr(c) for c in cols), _ptr(table), len(keys), _ptr(idx),
                             max_raw, max(1, threads), _ptr(out))
    if rc != 0:
        raise RuntimeError(f"wp_check_frames returned {rc}")
    return out == 0


class CheckedFrames:
    """What ``check_frames_raw`` found: per frame ``proven``; ``raw_ok`` (its bytes decompressed to exactly the
    size its zstd header declares and hash to the recorded SHA-256); those bytes at ``buf[off[i]:off[i] + ln[i]]``
    (``ln[i]`` is -1 where not ``raw_ok``); ``sig_at[i]``: the offset in them just past the first ``,"sig":"``,
    or -1."""

    def __init__(self, proven: np.ndarray, buf: np.ndarray, off: np.ndarray, ln: np.ndarray, sig_at: np.ndarray) -> None:
        self.proven, self.buf, self.off, self.ln, self.sig_at = proven, buf, off, ln, sig_at
        self.raw_ok = ln >= 0


def check_frames_raw(buf: np.ndarray, raw_off: np.ndarray, raw_len: np.ndarray, sha_off: np.ndarray,
                     sha_len: np.ndarray, keys: list[bytes | None], key_idx: np.ndarray, max_raw: int,
                     threads: int = 1) -> CheckedFrames:
    """``check_frames``, also handing back the frames' bytes (decompressed by the same call, on the same
    threads), so that callers need no per-frame Python work for the frames it proves."""
    if LIB is None:
        raise RuntimeError("libwattproof_native is not built (make builds it into .cache/native)")
    n = int(raw_off.shape[0])
    b = np.ascontiguousarray(buf, np.uint8)
    cols = [np.ascontiguousarray(c, np.int64) for c in (raw_off, raw_len, sha_off, sha_len)]
    sizes = np.empty(n, np.int64)
    if n and LIB.wp_zstd_sizes(n, _ptr(b), b.size, _ptr(cols[0]), _ptr(cols[1]), max_raw, _ptr(sizes)) != 0:
        raise RuntimeError("wp_zstd_sizes failed")
    slot = np.zeros(n + 1, np.int64)
    np.cumsum(np.maximum(sizes, 0), out=slot[1:])
    raw = np.empty(max(int(slot[-1]), 1), np.uint8)
    out = np.ones(n, np.uint8)
    ln = np.full(n, -1, np.int64)
    sig_at = np.full(n, -1, np.int64)
    if n == 0:
        return CheckedFrames(out == 0, raw, slot[:-1], ln, sig_at)
    table, idx = _key_table(keys, key_idx)
    rc = LIB.wp_check_frames_raw(n, _ptr(b), b.size, *(_ptr(c) for c in cols), _ptr(table), len(keys), _ptr(idx),
                                 max_raw, max(1, threads), _ptr(out), _ptr(raw), raw.size, _ptr(slot), _ptr(ln),
                                 _ptr(sig_at))
    if rc != 0:
        raise RuntimeError(f"wp_check_frames_raw returned {rc}")
    return CheckedFrames(out == 0, raw, slot[:-1], ln, sig_at)


def _key_table(keys: list[bytes | None], key_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The keys as one ``(k, 32)`` table and the key index per frame (-1 where the key is missing or malformed)."""
    table = np.zeros((max(len(keys), 1), 32), np.uint8)
    idx = np.ascontiguousarray(key_idx, np.int32).copy()
    for k, key in enumerate(keys):
        if key is not None and len(key) == 32:
            table[k] = np.frombuffer(key, np.uint8)
        else:
            idx[idx == k] = -1
    return table, idx


def verify_batch(msgs: list[bytes], sigs: list[bytes], keys: list[bytes]) -> np.ndarray:
    """``(n,)`` bool: True where ``sigs[i]`` is an Ed25519 signature of ``msgs[i]`` by ``keys[i]`` under the
    acceptance rule (``device.ed25519.verify`` gives the same verdict). An item whose signature is not
    64 bytes or key not 32 bytes is never proven; each item's verdict is independent of the others."""
    if LIB is None:
        raise RuntimeError("libwattproof_native is not built (make builds it into .cache/native)")
    n = len(msgs)
    out = np.ones(n, np.uint8)
    if n == 0:
        return out == 0
    shaped = [len(s) == 64 and len(k) == 32 for s, k in zip(sigs, keys, strict=True)]
    blob = np.frombuffer(b"".join(msgs), np.uint8) if any(msgs) else np.zeros(1, np.uint8)
    offs = np.zeros(n + 1, np.int64)
    np.cumsum([len(m) for m in msgs], out=offs[1:])
    s = np.frombuffer(b"".join(x if ok else bytes(64) for x, ok in zip(sigs, shaped, strict=True)), np.uint8)
    k = np.frombuffer(b"".join(x if ok else bytes(32) for x, ok in zip(keys, shaped, strict=True)), np.uint8)
    rc = LIB.wp_verify_batch(n, _ptr(blob), _ptr(offs), _ptr(s), _ptr(k), _ptr(out))
    if rc != 0:
        raise RuntimeError(f"wp_verify_batch returned {rc}")
    return (out == 0) & np.array(shaped, bool)


def sha256_ranges(buf: np.ndarray, offs: np.ndarray, out: np.ndarray, threads: int = 1) -> None:
    """``out[i] = SHA-256(buf[offs[i]:offs[i + 1]])`` for every i; ``out`` is ``(n, 32)`` uint8, C order."""
    if LIB is None:
        raise RuntimeError("libwattproof_native is not built (make builds it into .cache/native)")
    n = int(offs.shape[0]) - 1
    assert out.shape == (n, 32) and out.dtype == np.uint8 and out.flags.c_contiguous
    b = np.ascontiguousarray(buf, np.uint8)
    o = np.ascontiguousarray(offs, np.int64)
    if LIB.wp_sha256_ranges(n, _ptr(b), b.size, _ptr(o), max(1, threads), _ptr(out)) != 0:
        raise ValueError("offsets out of order or outside the buffer")


def merkle_roots(hashes: np.ndarray, starts: np.ndarray, threads: int = 1) -> np.ndarray:
    """``(nb, 32)``: the RFC 6962 root of each run ``hashes[starts[b]:starts[b + 1]]`` of ``(n, 32)`` leaf hashes,
    the runs shared out over ``threads`` threads."""
    if LIB is None:
        raise RuntimeError("libwattproof_native is not built (make builds it into .cache/native)")
    nb = max(int(starts.shape[0]) - 1, 0)
    out = np.empty((nb, 32), np.uint8)
    h = np.ascontiguousarray(hashes, np.uint8).reshape(-1, 32)
    st = np.ascontiguousarray(starts, np.int64)
    if nb and (st[-1] > h.shape[0] or LIB.wp_merkle_roots(nb, _ptr(h), _ptr(st), max(1, threads), _ptr(out)) != 0):
        raise ValueError("run starts out of order or outside the hashes")
    return out
