"""Recording sealed batches in the store with one binary COPY, their leaf-key arrays built with numpy.

Owns ``BatchWriter``: the ``batches`` rows of a sealing run (header bytes, root, leaf keys and hashes in
leaf order, receipt), written as PostgreSQL binary COPY (docs: "COPY — Binary Format" and ``array_send``)
so that ten million leaf keys cost array operations, not ten million Python objects.
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from ledger import bulk
from ledger.backend import BatchHeader, Receipt, header_bytes

_OID_TEXT, _OID_INT8, _OID_INT4 = 25, 20, 23


def _array_header(oid: int, n: int) -> bytes:
    return struct.pack(">iiiii", 1, 0, oid, n, 1) if n else struct.pack(">iii", 0, 0, oid)


def int_array(values: np.ndarray, oid: int) -> bytes:
    """``array_send`` of a one-dimensional int8[] (oid 20) or int4[] (oid 23) without NULLs."""
    width = 8 if oid == _OID_INT8 else 4
    el = np.empty(len(values), np.dtype([("len", ">i4"), ("v", f">i{width}")]))
    el["len"] = width
    el["v"] = values
    return _array_header(oid, len(values)) + el.tobytes()


class TextArrays:
    """``array_send`` of text[] arrays whose elements come from a small table of strings, by code."""

    def __init__(self, names: list[str]) -> None:
        blobs = [struct.pack(">i", len(b)) + b for b in (n.encode() for n in names)]
        self.buf = np.frombuffer(b"".join(blobs), np.uint8) if blobs else np.zeros(0, np.uint8)
        self.off = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)

    def array(self, codes: np.ndarray) -> bytes:
        codes = np.asarray(codes, np.int64)
        body = bulk.gather(self.buf, self.off[codes], self.off[codes + 1] - self.off[codes])
        return _array_header(_OID_TEXT, len(codes)) + body.tobytes()


class BatchWriter:
    """The ``batches`` rows of one sealing run, streamed as one binary COPY while it is open: ``write`` sends a
    run of ``(header, receipt, a, b)`` (the batch's leaves are ``cols``/``hashes`` rows ``a:b``) as soon as it is
    anchored, so the server stores them while later sites are still anchoring. A failure inside the ``with``
    aborts the COPY, and the caller's transaction with it: nothing is recorded."""

    def __init__(self, conn: psycopg.Connection[Any], cols: bulk.LeafColumns, hashes: np.ndarray,
                 device_names: list[str]) -> None:
        self.conn, self.cols, self.hashes = conn, cols, hashes
        self.texts = TextArrays(device_names)
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> BatchWriter:
        cur = self._stack.enter_context(self.conn.cursor())
        self._cp = self._stack.enter_context(cur.copy(
            "COPY batches (batch_id, site_id, kind, amends, window_start, window_end, leaf_count, root, header, "
            "header_hash, leaf_devices, leaf_seqs, leaf_idxs, leaf_hashes, receipt) FROM STDIN (FORMAT BINARY)"))
        # the array columns are sent as their binary encodings: declared bytea so psycopg passes them through
        self._cp.set_types(["text", "text", "text", "text", "timestamptz", "timestamptz", "int4", "bytea", "bytea",
                            "bytea", "bytea", "bytea", "bytea", "bytea", "jsonb"])
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.__exit__(*exc)

    def write(self, made: list[tuple[BatchHeader, Receipt, int, int]]) -> None:
        cols, hashes = self.cols, self.hashes
        for header, receipt, a, b in made:
            hb = header_bytes(header)
            self._cp.write_row((
                header.batch_id, header.site, header.kind, header.amends,
                datetime.fromtimestamp(header.window_start_ms / 1000, UTC),
                datetime.fromtimestamp(header.window_end_ms / 1000, UTC), b - a, bytes.fromhex(header.root),
                hb, hashlib.sha256(hb).digest(), self.texts.array(cols.device[a:b]),
                int_array(cols.seq[a:b], _OID_INT8), int_array(cols.idx[a:b], _OID_INT4),
                np.ascontiguousarray(hashes[a:b]).tobytes(), Jsonb(msgspec.to_builtins(receipt))))
