"""Audit kernels equal their plain-Python references on any array the store can hold."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.kernels import bucket_energy


def reference_bucket_energy(ts_ms: list[int], energy_wh: list[int], bucket_ms: int) -> tuple[list[int], list[float]]:
    """The definition, literally: spread each positive step uniformly over its interval."""
    if not ts_ms:
        return [], []
    rows = sorted(zip(ts_ms, energy_wh, strict=True), key=lambda r: r[0])
    first, last = rows[0][0] // bucket_ms, rows[-1][0] // bucket_ms
    out = [0.0] * (last - first + 1)
    for (t0, e0), (t1, e1) in zip(rows, rows[1:], strict=False):
        d = e1 - e0
        if t1 <= t0 or d <= 0:
            continue
        b0, b1 = t0 // bucket_ms, (t1 - 1) // bucket_ms
        if b0 == b1:
            out[b0 - first] += d
            continue
        per_ms = d / float(t1 - t0)
        out[b0 - first] += per_ms * ((b0 + 1) * bucket_ms - t0)
        for b in range(b0 + 1, b1):
            out[b - first] += per_ms * bucket_ms
        out[b1 - first] += per_ms * (t1 - b1 * bucket_ms)
    return [b * bucket_ms for b in range(first, last + 1)], out


# Timestamps and registers as the store holds them (bigint), within the wire format's safe range.
ts_values = st.integers(min_value=0, max_value=2**41)  # up to year 2039 in ms
reg_values = st.integers(min_value=0, max_value=2**53 - 1)


@given(st.lists(st.tuples(ts_values, reg_values), max_size=60), st.sampled_from([1, 60_000, 900_000, 3_600_000]))
@settings(max_examples=400, deadline=None)
def test_bucket_energy_equals_the_reference(rows: list[tuple[int, int]], bucket_ms: int) -> None:
    ts = [r[0] for r in rows]
    e = [r[1] for r in rows]
    if rows and (max(ts) - min(ts)) // bucket_ms > 200_000:
        return  # keep the reference's bucket list small; the kernel handles it, the test would not
    starts, energy = bucket_energy(np.array(ts, np.int64), np.array(e, np.int64), bucket_ms)
    ref_starts, ref_energy = reference_bucket_energy(ts, e, bucket_ms)
    assert starts.tolist() == ref_starts
    assert energy.tolist() == ref_energy


def test_energy_is_conserved_across_bucket_edges() -> None:
    ts = np.arange(0, 4 * 3_600_000 + 1, 7 * 60_000, dtype=np.int64)  # 7-minute readings: edges fall inside steps
    e = (ts // 1000).astype(np.int64)  # 1 Wh per second, steady
    starts, energy = bucket_energy(ts, e, 900_000)
    assert energy.sum() == pytest.approx(float(e[-1] - e[0]))
    assert np.allclose(energy[:-1], 900.0)  # every full 15-minute bucket gets exactly 900 Wh


def test_rollbacks_and_repeated_timestamps_add_no_energy() -> None:
    ts = np.array([0, 60_000, 60_000, 120_000, 180_000], np.int64)
    e = np.array([100, 200, 250, 150, 160], np.int64)  # a repeat, then a rollback of 100 Wh
    _, energy = bucket_energy(ts, e, 3_600_000)
    assert energy.tolist() == [100.0 + 10.0]


def test_empty_and_single_readings() -> None:
    s, e = bucket_energy(np.zeros(0, np.int64), np.zeros(0, np.int64), 900_000)
    assert s.size == 0 and e.size == 0
    s, e = bucket_energy(np.array([1_000], np.int64), np.array([5], np.int64), 900_000)
    assert s.tolist() == [0] and e.tolist() == [0.0]
    with pytest.raises(ValueError):
        bucket_energy(np.array([1]), np.array([1, 2]), 900_000)


from audit.kernels import rolling_median_mad, runs  # noqa: E402


def reference_runs(mask: list[bool], min_len: int) -> list[tuple[int, int]]:
    out, start = [], None
    for i, m in enumerate([*mask, False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            if i - start >= min_len:
                out.append((start, i))
            start = None
    return out


@given(st.lists(st.booleans(), max_size=200), st.integers(1, 8))
@settings(max_examples=300)
def test_runs_equals_the_reference(mask: list[bool], min_len: int) -> None:
    got = runs(np.array(mask, dtype=np.bool_), min_len)
    assert [tuple(r) for r in got.tolist()] == reference_runs(mask, min_len)


@given(st.lists(st.integers(-10**12, 10**12), max_size=80), st.integers(0, 10))
@settings(max_examples=300, deadline=None)
def test_rolling_median_mad_equals_the_reference(values: list[int], half: int) -> None:
    x = np.array(values, dtype=np.float64)
    med, mad = rolling_median_mad(x, half)
    for i in range(len(values)):
        w = x[max(0, i - half): i + half + 1]
        assert med[i] == np.median(w)
        assert mad[i] == np.median(np.abs(w - np.median(w)))
