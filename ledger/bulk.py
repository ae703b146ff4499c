"""Canonical leaves, leaf hashes and RFC 6962 roots for a whole window at once, from column arrays.

Owns: the vectorised twin of ``ledger/canonical.py`` + ``ledger/merkle.py``. A window's readings
come in as columns (integer arrays, plus small tables of the distinct device, channel and frame
hash values); the leaf bytes are written by a Numba kernel following the fixed key order of the
documented leaf (docs/proofs.md), and hashed in the same loop. String values are JSON-encoded
once per distinct value by msgspec, exactly as ``canonical.leaf_bytes`` does, so the output is
byte-identical to it for every value the store can hold (tests/test_bulk.py proves it against
``rfc8785.dumps`` with hypothesis). Pure: no I/O.

Why this shape: per leaf, a Python-level ``hashlib`` call and a ``Leaf`` object cost more than the
SHA-256 itself. The kernel calls OpenSSL's SHA-256 (the libcrypto that ``hashlib`` uses, which has
the SHA-NI code path) once per leaf and per node with no Python in between. When that library
cannot be loaded, the same functions fall back to ``hashlib`` loops with the same results.

Range: the writer only produces RFC 8785 bytes for integers within ±(2^53−1) and strings that need
no escaping; ``check_columns`` proves that on the arrays (numpy min/max, a few ms per million rows)
and the writers raise ``LeafRangeError`` otherwise. ``strict=False`` writes such values as msgspec
would (what ``verify`` needs to *name* a tampered row instead of stopping at it).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
from numba import njit

from ledger import nativelib
from ledger.canonical import LEAF_VERSION, MAX_SAFE_INT, CanonicalError

_enc = msgspec.json.Encoder()


def _load_sha256() -> tuple[object, object, object] | None:
    name = ctypes.util.find_library("crypto")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        init, update, final = lib.SHA256_Init, lib.SHA256_Update, lib.SHA256_Final
    except (OSError, AttributeError):
        return None
    # Pointers are passed as size_t: Numba then hands them over as plain integers (same x86-64/arm64 ABI).
    init.argtypes, init.restype = [ctypes.c_size_t], ctypes.c_int
    update.argtypes, update.restype = [ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t], ctypes.c_int
    final.argtypes, final.restype = [ctypes.c_size_t, ctypes.c_size_t], ctypes.c_int
    return init, update, final


_SHA = _load_sha256()
NATIVE = _SHA is not None
CTX_BYTES = 256  # >= sizeof(SHA256_CTX) (112)


@dataclass(frozen=True)
class StringTable:
    """Distinct values, JSON-encoded once (``"s01-main"`` with its quotes), addressed by code."""

    buf: np.ndarray  # uint8, the encodings back to back
    off: np.ndarray  # int64, len(values) + 1 offsets

    @classmethod
    def of_json(cls, values: list[str]) -> StringTable:
        parts = [_enc.encode(v) for v in values]
        return cls._pack(parts)

    @classmethod
    def of_bytes(cls, values: list[bytes]) -> StringTable:
        return cls._pack(values)

    @classmethod
    def _pack(cls, parts: list[bytes]) -> StringTable:
        off = np.zeros(len(parts) + 1, np.int64)
        off[1:] = np.cumsum([len(p) for p in parts], dtype=np.int64)
        buf = np.frombuffer(b"".join(parts), np.uint8) if parts else np.zeros(0, np.uint8)
        return cls(np.ascontiguousarray(buf), off)

    def max_len(self) -> int:
        return int(np.diff(self.off).max()) if len(self.off) > 1 else 0


@dataclass(frozen=True)
class LeafColumns:
    """A window's readings as columns. ``device``/``channel``/``frame`` index the tables.

    ``frames`` holds the raw frame SHA-256 bytes (normally 32); the leaf carries them in hex.
    """

    devices: StringTable
    channels: StringTable
    frames: StringTable
    device: np.ndarray  # int32 codes
    channel: np.ndarray  # int32 codes
    frame: np.ndarray  # int32 codes
    ts_ms: np.ndarray  # int64
    energy_wh: np.ndarray  # int64
    power_w: np.ndarray  # int64
    seq: np.ndarray  # int64
    idx: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.ts_ms)

    def scratch_len(self) -> int:
        # fixed text + 6 integers of at most 20 characters + strings + hex
        return 160 + 6 * 20 + self.devices.max_len() + self.channels.max_len() + 2 * self.frames.max_len()


class LeafRangeError(CanonicalError):
    """Columns holding a value that canonical leaf bytes cannot carry exactly (RFC 8785)."""


def _table_problem(name: str, t: StringTable) -> str | None:
    """A JSON string table whose entries are not plain ``"..."`` of printable ASCII without escapes."""
    if len(t.off) < 2:
        return None
    starts, ends = t.off[:-1], t.off[1:] - 1
    if np.any(ends <= starts) or np.any(t.buf[starts] != 0x22) or np.any(t.buf[ends] != 0x22):
        return f"{name}: an entry is not a JSON string"
    inner = np.ones(len(t.buf), bool)
    inner[starts] = False
    inner[ends] = False
    b = t.buf[inner]
    if np.any((b < 0x20) | (b > 0x7E) | (b == 0x22) | (b == 0x5C)):
        return f"{name}: a value needs escaping or is not ASCII (leaf strings are ids: no escapes)"
    return None


def check_columns(c: LeafColumns) -> None:
    """Raise ``LeafRangeError`` unless every value can be written exactly as RFC 8785 writes it:
    integers within ±(2^53−1), codes inside their tables, strings needing no escapes."""
    for name in ("ts_ms", "energy_wh", "power_w", "seq", "idx"):
        a = getattr(c, name)
        if not np.issubdtype(a.dtype, np.integer):
            raise LeafRangeError(f"leaf column {name} holds {a.dtype}, not integers")
        if a.size and (int(a.min()) < -MAX_SAFE_INT or int(a.max()) > MAX_SAFE_INT):
            raise LeafRangeError(f"leaf column {name} holds a value outside ±(2^53−1) (RFC 8785 cannot write it exactly)")
    for name, table in (("device", c.devices), ("channel", c.channels), ("frame", c.frames)):
        codes = getattr(c, name)
        if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= len(table.off) - 1):
            raise LeafRangeError(f"leaf column {name} holds a code outside its table")
    for name, table in (("devices", c.devices), ("channels", c.channels)):
        problem = _table_problem(name, table)
        if problem is not None:
            raise LeafRangeError(problem)


_K_CHANNEL = np.frombuffer(b'\x00{"channel":', np.uint8)  # the 0x00 leaf prefix of RFC 6962 §2.1 first
_K_DEVICE = np.frombuffer(b',"device":', np.uint8)
_K_ENERGY = np.frombuffer(b',"energy_wh":', np.uint8)
_K_FRAME = np.frombuffer(b',"frame_sha256":"', np.uint8)
_K_IDX = np.frombuffer(b'","idx":', np.uint8)
_K_POWER = np.frombuffer(b',"power_w":', np.uint8)
_K_SEQ = np.frombuffer(b',"seq":', np.uint8)
_K_TS = np.frombuffer(b',"ts_ms":', np.uint8)
_K_END = np.frombuffer(b',"v":%d}' % LEAF_VERSION, np.uint8)
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


@njit(cache=True, inline="always")
def _put(out: np.ndarray, pos: int, src: np.ndarray, a: int, b: int) -> int:
    for j in range(a, b):
        out[pos] = src[j]
        pos += 1
    return pos


@njit(cache=True, inline="always")
def _put_int(out: np.ndarray, pos: int, v: np.int64, tmp: np.ndarray) -> int:
    # Decimal digits of an int64, as msgspec and RFC 8785 (for safe integers) write them.
    if v < 0:
        out[pos] = 45  # '-'
        pos += 1
        u = np.uint64(-(v + 1)) + np.uint64(1)  # no overflow at INT64_MIN
    else:
        u = np.uint64(v)
    n = 0
    while True:
        tmp[n] = np.uint8(48 + u % np.uint64(10))
        u //= np.uint64(10)
        n += 1
        if u == 0:
            break
    for j in range(n - 1, -1, -1):
        out[pos] = tmp[j]
        pos += 1
    return pos


@njit(cache=True)
def _write_leaf(out, pos, i, dev_buf, dev_off, dev, ch_buf, ch_off, ch, fr_buf, fr_off, fr, ts, e, p, seq, idx,
                tmp, kc, kd, ke, kf, ki, kp, ks, kt, kend, hexd):  # type: ignore[no-untyped-def]
    """0x00 || leaf bytes of reading ``i`` at ``out[pos:]``; returns the end position."""
    pos = _put(out, pos, kc, 0, kc.size)
    pos = _put(out, pos, ch_buf, ch_off[ch[i]], ch_off[ch[i] + 1])
    pos = _put(out, pos, kd, 0, kd.size)
    pos = _put(out, pos, dev_buf, dev_off[dev[i]], dev_off[dev[i] + 1])
    pos = _put(out, pos, ke, 0, ke.size)
    pos = _put_int(out, pos, e[i], tmp)
    pos = _put(out, pos, kf, 0, kf.size)
    for j in range(fr_off[fr[i]], fr_off[fr[i] + 1]):
        out[pos] = hexd[fr_buf[j] >> 4]
        out[pos + 1] = hexd[fr_buf[j] & 15]
        pos += 2
    pos = _put(out, pos, ki, 0, ki.size)
    pos = _put_int(out, pos, idx[i], tmp)
    pos = _put(out, pos, kp, 0, kp.size)
    pos = _put_int(out, pos, p[i], tmp)
    pos = _put(out, pos, ks, 0, ks.size)
    pos = _put_int(out, pos, seq[i], tmp)
    pos = _put(out, pos, kt, 0, kt.size)
    pos = _put_int(out, pos, ts[i], tmp)
    return _put(out, pos, kend, 0, kend.size)


@njit(cache=True, nogil=True)
def _encode_kernel(out, offs, dev_buf, dev_off, dev, ch_buf, ch_off, ch, fr_buf, fr_off, fr, ts, e, p, seq, idx,
                   kc, kd, ke, kf, ki, kp, ks, kt, kend, hexd):  # type: ignore[no-untyped-def]
    tmp = np.empty(24, np.uint8)
    pos = 0
    for i in range(ts.size):
        offs[i] = pos
        pos = _write_leaf(out, pos, i, dev_buf, dev_off, dev, ch_buf, ch_off, ch, fr_buf, fr_off, fr, ts, e, p, seq,
                          idx, tmp, kc, kd, ke, kf, ki, kp, ks, kt, kend, hexd)
    offs[ts.size] = pos


def _kernel_args(c: LeafColumns) -> tuple[object, ...]:
    return (c.devices.buf, c.devices.off, c.device.astype(np.int32, copy=False), c.channels.buf, c.channels.off,
            c.channel.astype(np.int32, copy=False), c.frames.buf, c.frames.off, c.frame.astype(np.int32, copy=False),
            c.ts_ms.astype(np.int64, copy=False), c.energy_wh.astype(np.int64, copy=False),
            c.power_w.astype(np.int64, copy=False), c.seq.astype(np.int64, copy=False),
            c.idx.astype(np.int64, copy=False))


_KEYS = (_K_CHANNEL, _K_DEVICE, _K_ENERGY, _K_FRAME, _K_IDX, _K_POWER, _K_SEQ, _K_TS, _K_END, _HEX)


def encode_leaves(c: LeafColumns, *, strict: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(buf, offs)``: leaf ``i`` is ``buf[offs[i] + 1:offs[i + 1]]`` (``buf[offs[i]]`` is the 0x00 prefix)."""
    if strict:
        check_columns(c)
    n = len(c)
    out = np.empty(n * c.scratch_len(), np.uint8)
    offs = np.empty(n + 1, np.int64)
    _encode_kernel(out, offs, *_kernel_args(c), *_KEYS)
    return out[: offs[n]], offs


def leaf_list(c: LeafColumns, *, strict: bool = True) -> list[bytes]:
    """The canonical leaf bytes, one ``bytes`` each (what ``canonical.leaf_bytes`` gives)."""
    buf, offs = encode_leaves(c, strict=strict)
    raw = buf.tobytes()
    return [raw[offs[i] + 1:offs[i + 1]] for i in range(len(c))]


if _SHA is not None:
    _sha_init, _sha_update, _sha_final = _SHA

    # ctypes functions are dynamic globals: these kernels cannot be cached on disk (compiled once per process).
    @njit(nogil=True)
    def _leaf_hash_kernel(hashes, lo, hi, dev_buf, dev_off, dev, ch_buf, ch_off, ch, fr_buf, fr_off, fr, ts, e, p, seq,
                          idx, scratch_len, kc, kd, ke, kf, ki, kp, ks, kt, kend, hexd):  # type: ignore[no-untyped-def]
        tmp = np.empty(24, np.uint8)
        buf = np.empty(scratch_len, np.uint8)
        ctx = np.zeros(CTX_BYTES, np.uint8)
        b, c, o = buf.ctypes.data, ctx.ctypes.data, hashes.ctypes.data
        for i in range(lo, hi):
            n = _write_leaf(buf, 0, i, dev_buf, dev_off, dev, ch_buf, ch_off, ch, fr_buf, fr_off, fr, ts, e, p, seq,
                            idx, tmp, kc, kd, ke, kf, ki, kp, ks, kt, kend, hexd)
            _sha_init(c)
            _sha_update(c, b, n)
            _sha_final(o + 32 * i, c)

    @njit(nogil=True)
    def _root_in_place(level, m, ctx, one):  # type: ignore[no-untyped-def]
        # RFC 6962 §2.1 bottom-up, in place over level[:m]: node i of the next level = SHA-256(0x01 || 2i || 2i+1),
        # which are adjacent in memory; an odd last node moves up unchanged (same heads as the recursive split).
        c, w, pre = ctx.ctypes.data, level.ctypes.data, one.ctypes.data
        while m > 1:
            half = m // 2
            for i in range(half):
                _sha_init(c)
                _sha_update(c, pre, 1)
                _sha_update(c, w + 64 * i, 64)
                _sha_final(w + 32 * i, c)
            if m % 2:
                level[half, :] = level[m - 1, :]
            m = half + m % 2

    @njit(nogil=True)
    def _root_kernel(level):  # type: ignore[no-untyped-def]
        _root_in_place(level, level.shape[0], np.zeros(CTX_BYTES, np.uint8), np.ones(1, np.uint8))

    @njit(nogil=True)
    def _roots_kernel(hashes, starts, out, empty):  # type: ignore[no-untyped-def]
        ctx = np.zeros(CTX_BYTES, np.uint8)
        one = np.ones(1, np.uint8)
        widest = 0
        for b in range(starts.size - 1):
            widest = max(widest, starts[b + 1] - starts[b])
        level = np.empty((max(widest, 1), 32), np.uint8)
        for b in range(starts.size - 1):
            m = starts[b + 1] - starts[b]
            if m == 0:
                out[b, :] = empty
                continue
            level[:m, :] = hashes[starts[b]:starts[b + 1], :]
            _root_in_place(level, m, ctx, one)
            out[b, :] = level[0, :]


def _spans(n: int, parts: int) -> list[tuple[int, int]]:
    cuts = [n * k // parts for k in range(parts + 1)]
    return [(cuts[k], cuts[k + 1]) for k in range(parts) if cuts[k + 1] > cuts[k]]


_CHUNK = 8192  # leaves encoded then hashed at a time: a few MB of leaf bytes, reused


def _leaf_hashes_native(c: LeafColumns, out: np.ndarray, threads: int) -> None:
    """Leaves encoded in chunks by the (cached, GIL-free) Numba writer and hashed by the native library."""
    n = len(c)
    args = _kernel_args(c)
    per_leaf = (2, 5, 8, 9, 10, 11, 12, 13)  # the per-leaf columns among the kernel's arguments
    scratch = c.scratch_len()

    def work(span: tuple[int, int]) -> None:
        buf = np.empty(_CHUNK * scratch, np.uint8)
        offs = np.empty(_CHUNK + 1, np.int64)
        for lo in range(span[0], span[1], _CHUNK):
            hi = min(lo + _CHUNK, span[1])
            part = tuple(a[lo:hi] if k in per_leaf else a for k, a in enumerate(args))  # type: ignore[index]
            _encode_kernel(buf, offs[:hi - lo + 1], *part, *_KEYS)
            nativelib.sha256_ranges(buf, offs[:hi - lo + 1], out[lo:hi])

    spans = _spans(n, threads if n >= 4 * _CHUNK else 1)
    if len(spans) == 1:
        work(spans[0])
    else:
        with ThreadPoolExecutor(len(spans)) as pool:
            list(pool.map(work, spans))


def leaf_hashes(c: LeafColumns, threads: int = 1, *, strict: bool = True) -> np.ndarray:
    """``(n, 32)`` uint8: SHA-256(0x00 || leaf) of every reading (RFC 6962 §2.1), on ``threads`` threads.
    ``LeafRangeError`` for values canonical leaves cannot carry, unless ``strict=False``."""
    if strict:
        check_columns(c)
    n = len(c)
    out = np.empty((n, 32), np.uint8)
    if n == 0:
        return out
    if nativelib.LIB is not None:
        _leaf_hashes_native(c, out, threads)
        return out
    if NATIVE:
        args = (*_kernel_args(c), c.scratch_len(), *_KEYS)
        spans = _spans(n, threads if n >= 100_000 else 1)
        if len(spans) == 1:
            _leaf_hash_kernel(out, 0, n, *args)
        else:  # the kernel releases the GIL: one thread per span
            with ThreadPoolExecutor(len(spans)) as pool:
                list(pool.map(lambda span: _leaf_hash_kernel(out, span[0], span[1], *args), spans))
        return out
    buf, offs = encode_leaves(c, strict=False)
    raw = buf.tobytes()
    sha = hashlib.sha256
    out[:] = np.frombuffer(b"".join(sha(raw[offs[i]:offs[i + 1]]).digest() for i in range(n)), np.uint8).reshape(n, 32)
    return out


EMPTY_ROOT = hashlib.sha256(b"").digest()


def root(hashes: np.ndarray) -> bytes:
    """RFC 6962 Merkle Tree Hash of the ``(n, 32)`` leaf hashes (== ``merkle.root_from_leaf_hashes``)."""
    n = hashes.shape[0]
    if n == 0:
        return EMPTY_ROOT
    if nativelib.LIB is not None:
        return nativelib.merkle_roots(hashes, np.array([0, n], np.int64))[0].tobytes()
    level = np.array(hashes, np.uint8, copy=True, order="C").reshape(n, 32)
    if NATIVE:
        _root_kernel(level)
        return level[0].tobytes()
    from ledger import merkle

    return merkle.root_from_leaf_hashes([level[i].tobytes() for i in range(n)])


def roots(hashes: np.ndarray, starts: np.ndarray, threads: int = 1) -> np.ndarray:
    """``(nb, 32)``: the RFC 6962 root of each run ``hashes[starts[b]:starts[b + 1]]`` (empty run: SHA-256 of "");
    with the native library, on ``threads`` threads."""
    nb = max(len(starts) - 1, 0)
    out = np.empty((nb, 32), np.uint8)
    starts = np.ascontiguousarray(starts, np.int64)
    if nativelib.LIB is not None:
        return nativelib.merkle_roots(hashes, starts, threads)
    if NATIVE:
        _roots_kernel(np.ascontiguousarray(hashes, np.uint8).reshape(-1, 32), starts, out,
                      np.frombuffer(EMPTY_ROOT, np.uint8))
        return out
    for b in range(nb):
        out[b] = np.frombuffer(root(hashes[starts[b]:starts[b + 1]]), np.uint8)
    return out


@njit(cache=True, nogil=True)
def _rows_differ(a, ai, b, bi, out):  # type: ignore[no-untyped-def]
    for j in range(ai.size):
        x, y = a[ai[j]], b[bi[j]]
        for k in range(x.size):
            if x[k] != y[k]:
                out[j] = True
                break


@njit(cache=True, nogil=True)
def _gather(buf, offs, lens, out):  # type: ignore[no-untyped-def]
    pos = 0
    for k in range(offs.size):
        out[pos:pos + lens[k]] = buf[offs[k]:offs[k] + lens[k]]
        pos += lens[k]


def gather(buf: np.ndarray, offs: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """``buf[offs[0]:+lens[0]] + buf[offs[1]:+lens[1]] + …`` as one uint8 array."""
    lens = np.ascontiguousarray(lens, np.int64)
    out = np.empty(int(lens.sum()), np.uint8)
    _gather(buf, np.ascontiguousarray(offs, np.int64), lens, out)
    return out


def rows_differ(a: np.ndarray, ai: np.ndarray, b: np.ndarray, bi: np.ndarray) -> np.ndarray:
    """``(m,)`` bool: ``a[ai[j]] != b[bi[j]]`` as whole rows (``(a[ai] != b[bi]).any(axis=1)`` without the copies)."""
    out = np.zeros(len(ai), bool)
    if len(ai):
        _rows_differ(a, np.ascontiguousarray(ai, np.int64), b, np.ascontiguousarray(bi, np.int64), out)
    return out


def as_bytes_list(hashes: np.ndarray) -> list[bytes]:
    raw = np.ascontiguousarray(hashes).tobytes()
    return [raw[i:i + 32] for i in range(0, len(raw), 32)]


def from_bytes(blob: bytes) -> np.ndarray:
    """The stored ``leaf_hashes`` blob (32-byte hashes back to back) as ``(n, 32)``; a ragged tail is dropped."""
    n = len(blob) // 32
    return np.frombuffer(blob, np.uint8, count=n * 32).reshape(n, 32)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


@contextlib.contextmanager
def reusing_freed_memory() -> Iterator[None]:
    """Within the block, memory freed by large temporaries is kept and reused instead of being handed back to the
    system and faulted in afresh by the next one (glibc maps blocks over 128 KiB anew each time by default; a
    column of 10M int64 is 80 MB, and fresh pages cost about 1 ms per MB on the benchmark machine). On leaving,
    glibc's defaults are set again and what is kept is handed back (``malloc_trim``). Elsewhere, a no-op."""
    libc = _libc()
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
        libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
        libc.malloc_trim(0)
