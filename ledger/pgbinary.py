"""PostgreSQL binary COPY output and binary arrays, parsed into numpy columns.

Owns: splitting ``COPY ... TO STDOUT (FORMAT BINARY)`` bytes into fields and decoding the integer
fields and one-dimensional arrays the ledger reads (PostgreSQL docs, "COPY — Binary Format" and
``array_send``). Pure: the caller runs the COPY and hands over the bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
from numba import njit

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


@njit(cache=True, inline="always")
def _be32(buf: np.ndarray, p: int) -> int:
    """The big-endian 32-bit word at ``buf[p:p + 4]`` (as int64; callers treat ≥ 2**31 as negative)."""
    return (np.int64(buf[p]) << 24) | (np.int64(buf[p + 1]) << 16) | (np.int64(buf[p + 2]) << 8) | np.int64(buf[p + 3])


@njit(cache=True)
def _fields(buf: np.ndarray, ncols: int) -> tuple[np.ndarray, np.ndarray]:
    pos = 11
    flags_ext = _be32(buf, pos + 4)
    pos += 8 + flags_ext
    cap = 1024
    off = np.empty((cap, ncols), np.int64)
    ln = np.empty((cap, ncols), np.int64)
    n = 0
    while pos + 2 <= buf.size:
        nf = (np.int64(buf[pos]) << 8) | buf[pos + 1]
        pos += 2
        if nf == 0xFFFF:  # trailer (-1)
            break
        if n == cap:
            cap *= 2
            o2 = np.empty((cap, ncols), np.int64)
            l2 = np.empty((cap, ncols), np.int64)
            o2[:n] = off[:n]
            l2[:n] = ln[:n]
            off, ln = o2, l2
        for k in range(ncols):
            x = _be32(buf, pos)
            if x >= 0x80000000:
                x = -1  # NULL
            pos += 4
            off[n, k] = pos
            ln[n, k] = x
            if x > 0:
                pos += x
        n += 1
    return off[:n], ln[:n]


@njit(cache=True)
def _ints(buf: np.ndarray, off: np.ndarray, ln: np.ndarray) -> np.ndarray:
    out = np.zeros(off.size, np.int64)
    for i in range(off.size):
        n = ln[i]
        if n <= 0:
            continue
        v = np.int64(0)
        for j in range(n):
            v = (v << 8) | np.int64(buf[off[i] + j])
        if n < 8 and buf[off[i]] >= 0x80:  # sign-extend int2 / int4
            v -= np.int64(1) << (8 * n)
        out[i] = v
    return out


@njit(cache=True, inline="always")
def _array_header(buf: np.ndarray, p: int) -> tuple[int, int]:
    """Skip a 1-D binary array's header (ndim, flags, element type, then per dimension its size and
    lower bound): (offset of the first element, element count; 0 for an empty array)."""
    ndim = _be32(buf, p)
    if ndim == 0:
        return p + 12, 0
    return p + 12 + 8 * ndim, _be32(buf, p + 12)


@njit(cache=True)
def _array_elems(buf: np.ndarray, off: np.ndarray, ln: np.ndarray, total: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Elements of 1-D binary arrays (``array_send``): (start, length) of each, and each array's count."""
    eo = np.empty(total, np.int64)
    el = np.empty(total, np.int64)
    counts = np.zeros(off.size, np.int64)
    k = 0
    for i in range(off.size):
        if ln[i] <= 0:
            continue
        p, cnt = _array_header(buf, off[i])
        counts[i] = cnt
        for _ in range(cnt):
            x = _be32(buf, p)
            if x >= 0x80000000:
                x = -1
            p += 4
            eo[k] = p
            el[k] = x
            k += 1
            if x > 0:
                p += x
    return eo[:k], el[:k], counts


@njit(cache=True)
def _array_ints_into(buf: np.ndarray, off: np.ndarray, ln: np.ndarray, out: np.ndarray) -> tuple[int, np.ndarray, bool]:
    """The integer elements of 1-D binary arrays of int2/int4/int8 (or timestamptz) straight into the
    int64 array ``out`` (no per-element offsets): (elements written, each array's count, ok). ``ok`` is
    False on a NULL element or more elements than ``out`` holds."""
    counts = np.zeros(off.size, np.int64)
    k = 0
    for i in range(off.size):
        if ln[i] <= 0:
            continue
        p, cnt = _array_header(buf, off[i])
        counts[i] = cnt
        if k + cnt > out.size:
            return k, counts, False
        for _ in range(cnt):
            n = _be32(buf, p)
            p += 4
            if n >= 0x80000000 or n == 0 or n > 8:
                return k, counts, False
            v = np.int64(0)
            for j in range(n):
                v = (v << 8) | np.int64(buf[p + j])
            if n < 8 and buf[p] >= 0x80:
                v -= np.int64(1) << (8 * n)
            out[k] = v
            k += 1
            p += n
    return k, counts, True


#: element width of the integer array types read here (int8, int4, int2, timestamptz, timestamp)
_WIDTH = {20: 8, 23: 4, 21: 2, 1184: 8, 1114: 8}


def _array_ints_strided(buf: np.ndarray, off: np.ndarray, ln: np.ndarray,
                        out: np.ndarray) -> tuple[int, np.ndarray] | None:
    """``_array_ints_into`` for a few long arrays (e.g. one per device): every element of an integer array without
    NULLs has the type's width, so each array is read as one strided big-endian view (no per-element loop). None
    when that shape does not hold (a NULL, another type, many short arrays): the kernel then reads them."""
    if len(off) > 1024:
        return None
    counts = np.zeros(len(off), np.int64)
    k = 0
    raw = buf.data
    for i in range(len(off)):
        if ln[i] <= 0:
            continue
        p = int(off[i])
        ndim, _flags, oid = (int.from_bytes(raw[p + j:p + j + 4], "big", signed=True) for j in (0, 4, 8))
        if ndim == 0:
            continue
        w = _WIDTH.get(oid)
        if ndim != 1 or w is None:
            return None
        cnt = int.from_bytes(raw[p + 12:p + 16], "big", signed=True)
        start = p + 20
        if cnt < 0 or k + cnt > out.size or int(ln[i]) != 20 + cnt * (4 + w):
            return None
        lens = np.ndarray((cnt,), ">i4", buf, start, (4 + w,))
        if not bool((lens == w).all()):
            return None
        out[k:k + cnt] = np.ndarray((cnt,), f">i{w}", buf, start + 4, (4 + w,))
        counts[i] = cnt
        k += cnt
    return k, counts


@njit(cache=True)
def _runs(buf: np.ndarray, eo: np.ndarray, el: np.ndarray) -> np.ndarray:
    """Indices where an element's bytes differ from the previous element's (start of each run)."""
    starts = np.empty(eo.size, np.int64)
    k = 0
    for i in range(eo.size):
        same = i > 0 and el[i] == el[i - 1]
        if same:
            for j in range(el[i]):
                if buf[eo[i] + j] != buf[eo[i - 1] + j]:
                    same = False
                    break
        if not same:
            starts[k] = i
            k += 1
    return starts[:k]


def copy_out(conn: psycopg.Connection[Any], query: str, params: Any = None) -> np.ndarray:
    """The raw bytes of ``COPY (query) TO STDOUT (FORMAT BINARY)`` as a uint8 array."""
    raw = bytearray()
    with conn.cursor() as cur, cur.copy(f"COPY ({query}) TO STDOUT (FORMAT BINARY)", params) as cp:
        for data in cp:
            raw += data  # one copy of each chunk, no list of bytes and no join
    if not raw.startswith(SIGNATURE):
        raise ValueError("not PostgreSQL binary COPY output")
    return np.frombuffer(raw, np.uint8)


class Rows:
    """The fields of a binary COPY result: integer columns, bytes, arrays."""

    def __init__(self, buf: np.ndarray, ncols: int) -> None:
        self.buf = buf
        self.off, self.ln = _fields(buf, ncols)

    def __len__(self) -> int:
        return int(self.off.shape[0])

    def ints(self, col: int) -> np.ndarray:
        return _ints(self.buf, np.ascontiguousarray(self.off[:, col]), np.ascontiguousarray(self.ln[:, col]))

    def null(self, col: int) -> np.ndarray:
        return self.ln[:, col] < 0

    def raw(self) -> bytes:
        return self.buf.tobytes()

    def array_elems(self, col: int, total: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _array_elems(self.buf, np.ascontiguousarray(self.off[:, col]), np.ascontiguousarray(self.ln[:, col]),
                            total)

    def array_ints(self, col: int, total: int) -> tuple[np.ndarray, np.ndarray]:
        """All elements of an integer array column as one int64 array, and each row's count."""
        out = np.empty(total, np.int64)
        k, counts = self.array_ints_into(col, out)
        return out[:k], counts

    def array_ints_into(self, col: int, out: np.ndarray) -> tuple[int, np.ndarray]:
        """``array_ints`` written into ``out`` (int64, C-contiguous): (elements written, each row's count)."""
        fast = _array_ints_strided(self.buf, self.off[:, col], self.ln[:, col], out)
        if fast is not None:
            return fast
        k, counts, ok = _array_ints_into(self.buf, np.ascontiguousarray(self.off[:, col]),
                                         np.ascontiguousarray(self.ln[:, col]), out)
        if not ok:
            raise ValueError("array holds a NULL, a non-integer or more elements than expected")
        return k, counts

    def elem_ints(self, eo: np.ndarray, el: np.ndarray) -> np.ndarray:
        return _ints(self.buf, eo, el)

    def elem_runs(self, eo: np.ndarray, el: np.ndarray) -> np.ndarray:
        return _runs(self.buf, eo, el)
