"""Leaf canonicalisation equals the RFC 8785 library on every leaf the store can hold."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.canonical import Leaf, leaf_bytes, leaf_bytes_reference

safe = st.integers(min_value=0, max_value=2**53 - 1)
leaves = st.builds(Leaf, device=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}", fullmatch=True), ts_ms=safe,
                   channel=st.sampled_from(["import", "export", "pv"]), energy_wh=safe,
                   power_w=st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1), seq=safe,
                   idx=st.integers(0, 4095), frame_sha256=st.binary(min_size=32, max_size=32).map(bytes.hex))


@given(leaves)
@settings(max_examples=500)
def test_fast_leaf_bytes_equal_the_rfc8785_library(leaf: Leaf) -> None:
    assert leaf_bytes(leaf) == leaf_bytes_reference(leaf)


def test_leaf_bytes_are_the_documented_form() -> None:
    leaf = Leaf(device="s01-main", ts_ms=1780272000000, channel="import", energy_wh=2900217, power_w=263,
                seq=1, idx=0, frame_sha256="ab" * 32)
    assert leaf_bytes(leaf) == (b'{"channel":"import","device":"s01-main","energy_wh":2900217,"frame_sha256":"'
                                + b"ab" * 32 + b'","idx":0,"power_w":263,"seq":1,"ts_ms":1780272000000,"v":1}')


# --- encoders refuse what RFC 8785 cannot write exactly (issue 12, invariant 5) ------------------

import math  # noqa: E402

import msgspec  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ledger import bulk  # noqa: E402
from ledger.backend import (  # noqa: E402
    BatchHeader,
    HeaderNotCanonical,
    InvalidHeader,
    decode_header,
    header_bytes,
)
from ledger.canonical import CanonicalError, StrictJSONError, loads_strict  # noqa: E402

GOOD_LEAF = dict(device="s01-main", ts_ms=1, channel="import", energy_wh=1, power_w=-1, seq=1, idx=0,
                 frame_sha256="ab" * 32)


@pytest.mark.parametrize("bad", [
    {"ts_ms": 2**53}, {"power_w": -(2**53)}, {"energy_wh": 2**63}, {"seq": True}, {"idx": 1.0},
    {"power_w": math.nan}, {"energy_wh": math.inf}, {"ts_ms": np.int64(1)}, {"device": 'a"b'}, {"device": "a\\b"},
    {"device": "é"}, {"device": "a\n"}, {"channel": ""}, {"frame_sha256": "AB" * 32}, {"frame_sha256": "abc"},
    {"device": 7}, {"v": 2**60},
], ids=["ts-2^53", "power-minus-2^53", "energy-2^63", "bool", "float", "nan", "inf", "numpy-int", "quote",
        "backslash", "non-ascii", "control", "empty-channel", "upper-hex", "odd-hex", "int-device", "v-huge"])
def test_a_leaf_rfc8785_cannot_write_exactly_is_refused_when_built(bad: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(CanonicalError):
        Leaf(**(GOOD_LEAF | bad))


def test_a_leaf_decoded_from_a_bundle_with_an_unsafe_integer_is_a_validation_error() -> None:
    doc = dict(GOOD_LEAF, ts_ms=2**53, v=1)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(doc, Leaf, strict=True)


def _columns(**over: object) -> bulk.LeafColumns:
    n = 2
    base: dict[str, object] = dict(
        devices=bulk.StringTable.of_json(["s01-main"]), channels=bulk.StringTable.of_json(["import"]),
        frames=bulk.StringTable.of_bytes([b"\x01" * 32]), device=np.zeros(n, np.int32), channel=np.zeros(n, np.int32),
        frame=np.zeros(n, np.int32), ts_ms=np.ones(n, np.int64), energy_wh=np.ones(n, np.int64),
        power_w=np.ones(n, np.int64), seq=np.ones(n, np.int64), idx=np.arange(n, dtype=np.int64))
    return bulk.LeafColumns(**(base | over))  # type: ignore[arg-type]


def test_bulk_leaves_of_safe_columns_equal_the_row_encoder() -> None:
    assert bulk.leaf_list(_columns()) == [leaf_bytes(Leaf(**(GOOD_LEAF | dict(
        power_w=1, idx=i, frame_sha256="01" * 32)))) for i in range(2)]


@pytest.mark.parametrize("over", [
    {"ts_ms": np.array([1, 2**53], np.int64)}, {"power_w": np.array([-(2**53), 0], np.int64)},
    {"energy_wh": np.array([2**63 - 1, 0], np.int64)}, {"seq": np.array([2**64 - 1, 0], np.uint64)},
    {"idx": np.array([0.0, 1.0])}, {"device": np.array([0, 1], np.int32)}, {"channel": np.array([-1, 0], np.int32)},
    {"devices": bulk.StringTable.of_json(['s01"main'])}, {"devices": bulk.StringTable.of_json(["s01\\main"])},
    {"devices": bulk.StringTable.of_json(["s01-mé"])}, {"channels": bulk.StringTable.of_json(["imp\x01"])},
], ids=["ts", "power", "energy", "uint64-seq", "float-idx", "device-code", "channel-code", "quote", "backslash",
        "non-ascii", "control"])
def test_bulk_leaf_writer_refuses_values_outside_the_canonical_domain(over: dict) -> None:  # type: ignore[type-arg]
    c = _columns(**over)
    with pytest.raises(bulk.LeafRangeError):
        bulk.leaf_hashes(c)
    with pytest.raises(bulk.LeafRangeError):
        bulk.leaf_list(c)


def test_bulk_leaf_writer_without_strict_still_writes_a_tampered_row_so_verify_can_name_it() -> None:
    c = _columns(energy_wh=np.array([2**60, 1], np.int64))
    assert b'"energy_wh":1152921504606846976' in bulk.leaf_list(c, strict=False)[0]
    assert bulk.leaf_hashes(c, strict=False).shape == (2, 32)


HEADER = BatchHeader(batch_id="s01:2026-06-01T00", site="s01", kind="seal", window_start_ms=0, window_end_ms=3_600_000,
                     leaf_count=3, root="ab" * 32, prev_hash="0" * 64, findings_digest="cd" * 32, sealed_ms=5)


@pytest.mark.parametrize("bad", [
    {"leaf_count": 2**53}, {"sealed_ms": True}, {"sealed_ms": math.nan}, {"window_end_ms": 1.5},
    {"site": 's"1'}, {"batch_id": "b\\1"}, {"root": "AB" * 32}, {"kind": "other"}, {"amends": "é"},
], ids=["2^53", "bool", "nan", "float", "quote", "backslash", "upper-hex", "kind", "non-ascii"])
def test_a_header_built_with_a_value_rfc8785_cannot_carry_is_refused(bad: dict) -> None:  # type: ignore[type-arg]
    header = msgspec.structs.replace(HEADER, **bad)
    with pytest.raises(HeaderNotCanonical) as err:
        header_bytes(header)
    assert isinstance(err.value, InvalidHeader) and isinstance(err.value, ValueError)


def test_header_bytes_decode_back_to_the_header() -> None:
    assert decode_header(header_bytes(HEADER)) == HEADER


@pytest.mark.parametrize("edit", [
    lambda b: b.replace(b'"leaf_count":3', b'"leaf_count":4,"leaf_count":3', 1),
    lambda b: b.replace(b'"root":"', b'"root":"' + b"00" * 32 + b'","root":"', 1),
    lambda b: b + b" ", lambda b: b.replace(b",", b", ", 1), lambda b: b.replace(b'"leaf_count":3', b'"leaf_count":3.0', 1),
    lambda b: b.replace(b'"site":"s01"', rb'"site":"s0\u0031"', 1),
    lambda b: b.replace(b'{"amends":null,', b"{", 1).replace(b'"v":1}', b'"v":1,"amends":null}', 1),
], ids=["duplicate-leaf-count", "duplicate-root", "trailing-space", "whitespace", "1.0", "escape", "key-order"])
def test_header_bytes_that_are_not_the_canonical_encoding_are_refused(edit) -> None:  # type: ignore[no-untyped-def]
    data = edit(header_bytes(HEADER))
    assert data != header_bytes(HEADER)
    with pytest.raises((HeaderNotCanonical, msgspec.ValidationError)):
        decode_header(data)


# --- strict JSON (TEAM decision 4) ------------------------------------------------------------


@pytest.mark.parametrize("data", [
    b'{"a":1,"a":2}', b'{"a":1,"a":1}', b'[{"x":{"b":1,"b":2}}]', b'{"a":1,"\\u0061":2}', b"NaN", b"[Infinity]",
    b'{"x":-Infinity}', b"\xff", b'"\xed\xa0\x80"', b'"\\ud800"', b'{"\\udc00":1}', b'[["\\ud800"]]',
    b"\xef\xbb\xbf{}", b"{", b"", b"[1,]", b"'a'", b"[" * 50_000, "\ufeff{}", '{"a":1,"a":2}',
    b"\x00\x00\x00[", '["x"]'.encode("utf-16"),
], ids=["duplicate", "duplicate-same-value", "nested-duplicate", "escaped-duplicate", "nan", "infinity",
        "minus-infinity", "invalid-utf8", "surrogate-bytes", "lone-surrogate", "surrogate-name", "nested-surrogate",
        "bom", "truncated", "empty", "trailing-comma", "single-quotes", "too-deep", "str-bom", "str-duplicate",
        "utf32", "utf16"])
def test_loads_strict_refuses_what_i_json_forbids(data: bytes | str) -> None:
    with pytest.raises(StrictJSONError) as err:
        loads_strict(data)
    assert isinstance(err.value, ValueError) and str(err.value)


def test_loads_strict_reads_plain_json() -> None:
    assert loads_strict(b'{"a":[1,-2.5,"\\u00e9\\ud83d\\ude00",null,true],"b":{}}') == {
        "a": [1, -2.5, "é😀", None, True], "b": {}}
    assert loads_strict('{"a":1}') == {"a": 1}
