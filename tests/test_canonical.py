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
