"""Binary COPY arrays read into columns (``ledger.pgbinary``): the strided read of long arrays and the per-element
kernel give what a plain decoder of PostgreSQL's ``array_send`` format gives, on any mix of types, NULLs and
shapes; a shape the strided read does not take is left to the kernel."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.pgbinary import SIGNATURE, Rows, _array_ints_into, _array_ints_strided

TYPES = {20: 8, 23: 4, 21: 2, 1184: 8}  # int8, int4, int2, timestamptz


def array_send(oid: int, values: list[int | None]) -> bytes:
    w = TYPES[oid]
    if not values:
        return struct.pack(">iii", 0, 0, oid)
    body = b"".join(struct.pack(">i", -1) if v is None else struct.pack(">i", w) + v.to_bytes(w, "big", signed=True)
                    for v in values)
    return struct.pack(">iiiii", 1, int(None in values), oid, len(values), 1) + body


def copy_of(fields: list[bytes | None]) -> np.ndarray:
    rows = b"".join(struct.pack(">h", 1) + (struct.pack(">i", -1) if f is None else struct.pack(">i", len(f)) + f)
                    for f in fields)
    return np.frombuffer(bytearray(SIGNATURE + b"\0" * 8 + rows + struct.pack(">h", -1)), np.uint8)


@st.composite
def arrays(draw: st.DrawFn) -> tuple[int, list[int | None]] | None:
    if draw(st.integers(0, 9)) == 0:
        return None  # a NULL field
    oid = draw(st.sampled_from(sorted(TYPES)))
    bits = 8 * TYPES[oid]
    value = st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return oid, draw(st.lists(st.one_of(value, st.none()) if draw(st.booleans()) else value, max_size=12))


@settings(max_examples=300, deadline=None)
@given(st.lists(arrays(), max_size=6))
def test_integer_arrays_read_as_a_plain_decoder_reads_them(rows: list[tuple[int, list[int | None]] | None]) -> None:
    buf = copy_of([None if r is None else array_send(*r) for r in rows])
    got = Rows(buf, 1)
    want = [v for r in rows if r is not None for v in r[1]]
    out = np.zeros(len(want) + 3, np.int64)
    if None in want:  # a NULL element: refused, whichever way it is read
        with pytest.raises(ValueError):
            got.array_ints_into(0, out)
        assert _array_ints_strided(buf, got.off[:, 0], got.ln[:, 0], out) is None
        return
    k, counts = got.array_ints_into(0, out)
    assert k == len(want) and out[:k].tolist() == want
    assert counts.tolist() == [0 if r is None else len(r[1]) for r in rows]
    kernel = np.zeros_like(out)
    k2, c2, ok = _array_ints_into(buf, np.ascontiguousarray(got.off[:, 0]), np.ascontiguousarray(got.ln[:, 0]), kernel)
    assert ok and k2 == k and c2.tolist() == counts.tolist() and kernel[:k].tolist() == want


def test_more_elements_than_the_output_holds_are_refused() -> None:
    buf = copy_of([array_send(20, [1, 2, 3])])
    with pytest.raises(ValueError):
        Rows(buf, 1).array_ints_into(0, np.zeros(2, np.int64))


def test_an_array_of_another_type_is_left_to_the_kernel() -> None:
    text = struct.pack(">iiiii", 1, 0, 25, 1, 1) + struct.pack(">i", 8) + b"abcdefgh"  # text[] of one 8-byte string
    buf = copy_of([text])
    rows = Rows(buf, 1)
    assert _array_ints_strided(buf, rows.off[:, 0], rows.ln[:, 0], np.zeros(1, np.int64)) is None
