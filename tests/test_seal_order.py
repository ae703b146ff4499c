"""The sorting shortcuts of sealing and of loading the queue (``ledger.seal``, ``ledger.sealqueue``) give exactly
the orders of the plain numpy calls they replace, on any input (ties, negative values, wide ranges)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.seal import _distinct_pairs, _leaf_order
from ledger.sealqueue import _order_by_frame_then_idx, _sorted_by

small = st.integers(-3, 3)
wide = st.integers(-(2**50), 2**50)


def cols(n: int, k: int, values: st.SearchStrategy[int]) -> st.SearchStrategy[list[list[int]]]:
    return st.lists(st.lists(values, min_size=n, max_size=n), min_size=k, max_size=k)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 30).flatmap(lambda n: st.tuples(cols(n, 7, small), cols(n, 7, wide), st.booleans())))
def test_leaf_order_is_the_lexsort_of_the_seven_keys(args: tuple[list[list[int]], list[list[int]], bool]) -> None:
    a, b, use_wide = args
    keys = [np.array(c, np.int64) for c in a]
    if use_wide:
        keys[3], keys[5] = np.array(b[3], np.int64), np.array(b[5], np.int64)
    assert np.array_equal(_leaf_order(*keys), np.lexsort(tuple(reversed(keys))))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 30).flatmap(lambda n: st.tuples(cols(n, 3, small), st.lists(wide, min_size=n, max_size=n))),
       st.booleans())
def test_readings_order_is_the_lexsort_of_device_seq_idx(args: tuple[list[list[int]], list[int]], wide_seq: bool) -> None:
    (d, s, i), w = args
    dev, seq, idx = (np.array(c, np.int64) for c in (d, w if wide_seq else s, i))
    assert np.array_equal(_order_by_frame_then_idx(dev, seq, idx), np.lexsort((idx, seq, dev)))
    o = np.lexsort((idx, seq, dev))
    assert _sorted_by(dev[o], seq[o], idx[o]) and _sorted_by(dev, seq, idx) == bool(np.array_equal(o, np.arange(len(o))))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(-50, 50)), max_size=40), st.integers(1, 4))
def test_distinct_windows_are_the_sorted_set(pairs: list[tuple[int, int]], w: int) -> None:
    W = 1000 * w
    site = np.array([p[0] for p in pairs], np.int64)
    win = np.array([946_684_800_000 + p[1] * W for p in pairs], np.int64)
    assert _distinct_pairs(site, win, W) == sorted(set(zip(site.tolist(), win.tolist(), strict=True)))
