"""Audit kernels equal their plain-Python references on any array the store can hold."""

from __future__ import annotations

import math

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
@settings(max_examples=300, deadline=None)  # the first example may JIT-compile
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


from audit.kernels import register_vs_power  # noqa: E402


def reference_register_vs_power(ts: list[int], e: list[int], p: list[float], window_ms: int,
                                max_step_ms: int) -> tuple[list[int], list[float], list[float], list[float], list[int]]:
    """The definition, literally: each usable step counts whole in the window holding its start."""
    if not ts:
        return [], [], [], [], []
    first, last = min(ts) // window_ms, max(ts) // window_ms
    k = last - first + 1
    reg, pw, band, cov = [0.0] * k, [0.0] * k, [0.0] * k, [0] * k
    for i in range(1, len(ts)):
        t0, t1 = ts[i - 1], ts[i]
        d = e[i] - e[i - 1]
        p0, p1 = p[i - 1], p[i]
        if t1 <= t0 or t1 - t0 > max_step_ms or d < 0 or math.isnan(p0) or math.isnan(p1):
            continue
        w = t0 // window_ms - first
        reg[w] += d
        pw[w] += 0.5 * (p0 + p1) * (t1 - t0) / 3_600_000.0
        band[w] += 0.5 * abs(p1 - p0) * (t1 - t0) / 3_600_000.0
        cov[w] += t1 - t0
    return [b * window_ms for b in range(first, last + 1)], reg, pw, band, cov


power_values = st.one_of(st.integers(-2**53, 2**53).map(float), st.just(float("nan")))


@given(st.lists(st.tuples(ts_values, reg_values, power_values), max_size=60),
       st.sampled_from([1, 60_000, 3_600_000]), st.sampled_from([1, 300_000, 2**41]))
@settings(max_examples=400, deadline=None)
def test_register_vs_power_equals_the_reference(rows: list[tuple[int, int, float]], window_ms: int, max_step_ms: int) -> None:
    ts, e, p = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
    if rows and (max(ts) - min(ts)) // window_ms > 200_000:
        return  # keep the reference's window list small
    got = register_vs_power(np.array(ts, np.int64), np.array(e, np.int64), np.array(p, np.float64), window_ms, max_step_ms)
    ref = reference_register_vs_power(ts, e, p, window_ms, max_step_ms)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_array_equal(g, np.array(r, dtype=g.dtype))  # NaN equals NaN here, nothing else is loose


def test_register_vs_power_empty_single_nan_unsorted_and_huge() -> None:
    out = register_vs_power(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), 3_600_000, 300_000)
    assert all(a.size == 0 for a in out)
    starts, reg, pw, band, cov = register_vs_power(np.array([5]), np.array([7]), np.array([100.0]), 3_600_000, 300_000)
    assert starts.tolist() == [0] and reg.tolist() == [0.0] and cov.tolist() == [0]
    # NaN power: the steps touching it are skipped on both sides (register and power)
    ts = np.array([0, 60_000, 120_000, 180_000], np.int64)
    _, reg, pw, _, cov = register_vs_power(ts, np.array([0, 10, 20, 30]), np.array([600.0, 600.0, np.nan, 600.0]), 3_600_000, 300_000)
    assert reg.tolist() == [10.0] and pw.tolist() == [10.0] and cov.tolist() == [60_000]
    # device order, not time order: a step back in time is skipped, not re-sorted
    _, reg, _, _, cov = register_vs_power(np.array([0, 120_000, 60_000, 180_000]), np.array([0, 20, 30, 40]),
                                          np.full(4, 600.0), 3_600_000, 300_000)
    assert reg.tolist() == [20.0 + 10.0] and cov.tolist() == [240_000]
    # huge registers and powers stay exact where float64 can be
    big = 2**52
    _, reg, pw, _, _ = register_vs_power(np.array([0, 3_600_000]), np.array([big, big + 3]), np.array([3.0, 3.0]), 2**41, 2**41)
    assert reg.tolist() == [3.0] and pw.tolist() == [3.0]


def test_a_steady_load_integrates_to_its_register() -> None:
    ts = np.arange(0, 2 * 3_600_000 + 1, 60_000, dtype=np.int64)
    e = (ts // 3_600_000 * 1000 + (ts % 3_600_000) * 1000 // 3_600_000).astype(np.int64)  # 1 kW
    _, reg, pw, band, cov = register_vs_power(ts, e, np.full(ts.size, 1000.0), 3_600_000, 300_000)
    assert reg[:2].tolist() == [1000.0, 1000.0] and np.allclose(pw[:2], 1000.0) and band[:2].tolist() == [0.0, 0.0]
    assert cov[:2].tolist() == [3_600_000, 3_600_000]


@given(st.lists(st.integers(-3, 3), max_size=90), st.integers(0, 12))
@settings(max_examples=300, deadline=None)
def test_rolling_median_mad_with_many_ties_equals_the_reference(values: list[int], half: int) -> None:
    x = np.array(values, dtype=np.float64)  # ties everywhere: the sliding window's insert/delete and MAD merge
    med, mad = rolling_median_mad(x, half)
    for i in range(len(values)):
        w = x[max(0, i - half): i + half + 1]
        assert med[i] == np.median(w)
        assert mad[i] == np.median(np.abs(w - np.median(w)))


def test_rolling_median_mad_with_nan_sorts_each_window_like_numpy() -> None:
    x = np.array([1.0, np.nan, 3.0, 2.0, 5.0])
    med, mad = rolling_median_mad(x, 1)
    for i in range(x.size):
        w = np.sort(x[max(0, i - 1): i + 2])
        m = w.size
        ref = w[m // 2] if m % 2 else 0.5 * (w[m // 2 - 1] + w[m // 2])
        assert med[i] == ref or (np.isnan(med[i]) and np.isnan(ref))


from audit.kernels import frame_spans  # noqa: E402


@given(st.lists(st.integers(0, 30), max_size=40, unique=True),
       st.lists(st.tuples(st.integers(0, 35), st.integers(-10**6, 10**6)), max_size=80))
@settings(max_examples=300, deadline=None)
def test_frame_spans_equal_the_reference(frames: list[int], readings: list[tuple[int, int]]) -> None:
    fs = sorted(frames)
    first, last, count = frame_spans(np.array(fs, np.int64), np.array([r[0] for r in readings], np.int64),
                                     np.array([r[1] for r in readings], np.int64))
    for k, s in enumerate(fs):
        ts = [t for q, t in readings if q == s]
        assert count[k] == len(ts)
        if ts:
            assert (first[k], last[k]) == (min(ts), max(ts))
