"""Numba kernels over one device's column arrays (pure: arrays in, arrays out, no I/O).

Owns: the hot loops of the audit. Inputs are the store's columns for one device and channel,
sorted by time: ``ts_ms`` (int64, UTC ms) and ``energy_wh`` (int64 cumulative register).
Every kernel has a plain-Python reference in ``tests/test_kernels.py`` that must give identical
results on any array the store can hold (hypothesis).

``bucket_energy``: energy per fixed bucket (15 min, 1 h, ...) from a cumulative register. The
register increase between two consecutive readings is spread uniformly over the time between them
and apportioned to the buckets that interval overlaps (so a bucket edge between two readings splits
their energy by time, as GHG/ISO 50001 interval data expects). Non-increasing steps (a rollback, a
repeated timestamp) contribute nothing here: they are findings of their own detectors.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _bucket_energy_sorted(ts_ms: np.ndarray, energy_wh: np.ndarray, bucket_ms: np.int64,
                          first_bucket: np.int64, out: np.ndarray) -> None:
    for i in range(1, ts_ms.shape[0]):
        t0 = ts_ms[i - 1]
        t1 = ts_ms[i]
        d = energy_wh[i] - energy_wh[i - 1]
        if t1 <= t0 or d <= 0:
            continue
        span = float(t1 - t0)
        b0 = t0 // bucket_ms
        b1 = (t1 - 1) // bucket_ms
        if b0 == b1:
            out[b0 - first_bucket] += d
            continue
        per_ms = d / span
        edge = (b0 + 1) * bucket_ms
        out[b0 - first_bucket] += per_ms * (edge - t0)
        for b in range(b0 + 1, b1):
            out[b - first_bucket] += per_ms * bucket_ms
        out[b1 - first_bucket] += per_ms * (t1 - b1 * bucket_ms)


def bucket_energy(ts_ms: np.ndarray, energy_wh: np.ndarray, bucket_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """(bucket start ms, energy Wh) for every bucket from the first reading's to the last's.

    Unsorted input is sorted (stably) by time first. Empty or single-reading input gives no energy
    (one bucket of 0.0 for a single reading, none for empty).
    """
    if bucket_ms <= 0:
        raise ValueError("bucket_ms must be positive")
    ts = np.asarray(ts_ms, dtype=np.int64)
    e = np.asarray(energy_wh, dtype=np.int64)
    if ts.shape != e.shape:
        raise ValueError("ts_ms and energy_wh differ in length")
    if ts.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    if ts.size > 1 and np.any(ts[1:] < ts[:-1]):
        order = np.argsort(ts, kind="stable")
        ts, e = ts[order], e[order]
    first = ts[0] // bucket_ms
    last = ts[-1] // bucket_ms
    out = np.zeros(int(last - first + 1), np.float64)
    _bucket_energy_sorted(ts, e, np.int64(bucket_ms), np.int64(first), out)
    return (np.arange(first, last + 1, dtype=np.int64) * bucket_ms), out


@njit(cache=True)
def runs(mask: np.ndarray, min_len: int) -> np.ndarray:
    """[start, end) index pairs of runs of True at least ``min_len`` long, shape (k, 2)."""
    out = np.empty((mask.shape[0] // max(min_len, 1) + 1, 2), np.int64)
    k = 0
    i = 0
    n = mask.shape[0]
    while i < n:
        if mask[i]:
            j = i
            while j < n and mask[j]:
                j += 1
            if j - i >= min_len:
                out[k, 0] = i
                out[k, 1] = j
                k += 1
            i = j
        else:
            i += 1
    return out[:k]


@njit(cache=True)
def _rolling_median_mad_by_sort(x: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """The definition: sort every window (kept for input with NaN, whose order np.sort defines)."""
    n = x.shape[0]
    med = np.empty(n, np.float64)
    mad = np.empty(n, np.float64)
    for i in range(n):
        lo = max(0, i - half)
        hi = min(n, i + half + 1)
        w = np.sort(x[lo:hi])
        m = w.shape[0]
        md = w[m // 2] if m % 2 else 0.5 * (w[m // 2 - 1] + w[m // 2])
        dev = np.sort(np.abs(w - md))
        med[i] = md
        mad[i] = dev[m // 2] if m % 2 else 0.5 * (dev[m // 2 - 1] + dev[m // 2])
    return med, mad


@njit(cache=True)
def _insert_sorted(w: np.ndarray, m: int, v: float) -> None:
    lo = np.searchsorted(w[:m], v, side="right")  # first position holding a value > v
    for j in range(m, lo, -1):
        w[j] = w[j - 1]
    w[lo] = v


@njit(cache=True)
def _remove_sorted(w: np.ndarray, m: int, v: float) -> None:
    lo = np.searchsorted(w[:m], v)  # first position holding a value >= v (v is present)
    for j in range(lo, m - 1):
        w[j] = w[j + 1]


@njit(cache=True)
def _kth_deviation(w: np.ndarray, m: int, md: float, k: int) -> tuple[float, float]:
    """The k-th and (k+1)-th smallest (0-based) of |w − md| over a sorted window, k + 1 < m.

    The deviations below the median, L[i] = md − w[r−1−i], and above it, R[j] = w[r+j] − md
    (r = first index with w ≥ md), are both ascending: the answer is the split of the k+1 smallest
    between them (binary search), as in the k-th element of two sorted arrays.
    """
    r = int(np.searchsorted(w[:m], md))
    n_left = r
    n_right = m - r
    need = k + 1
    a_lo = max(0, need - n_right)
    a_hi = min(need, n_left)
    while a_lo < a_hi:  # a = how many of the k+1 smallest come from L
        a = (a_lo + a_hi) // 2
        # L[a] < R[need−1−a]: L's next element belongs in, take more from L
        if md - w[r - 1 - a] < w[r + need - 1 - a] - md:
            a_lo = a + 1
        else:
            a_hi = a
    a = a_lo
    b = need - a
    kth = -1.0
    if a > 0:
        kth = md - w[r - a]
    if b > 0:
        kth = max(kth, w[r + b - 1] - md)
    nxt = np.inf
    if a < n_left:
        nxt = md - w[r - 1 - a]
    if b < n_right:
        nxt = min(nxt, w[r + b] - md)
    return kth, nxt


@njit(cache=True)
def _rolling_median_mad_sliding(x: np.ndarray, half: int, med: np.ndarray, mad: np.ndarray) -> None:
    n = x.shape[0]
    w = np.empty(2 * half + 2, np.float64)
    m = 0
    lo = 0
    hi = 0
    for i in range(n):
        new_lo = max(0, i - half)
        new_hi = min(n, i + half + 1)
        while lo < new_lo:
            _remove_sorted(w, m, x[lo])
            m -= 1
            lo += 1
        while hi < new_hi:
            _insert_sorted(w, m, x[hi])
            m += 1
            hi += 1
        md = w[m // 2] if m % 2 else 0.5 * (w[m // 2 - 1] + w[m // 2])
        med[i] = md
        if m == 1:
            mad[i] = abs(w[0] - md)
        elif m % 2:
            d, _ = _kth_deviation(w, m, md, m // 2)
            mad[i] = d
        else:
            d0, d1 = _kth_deviation(w, m, md, m // 2 - 1)
            mad[i] = 0.5 * (d0 + d1)


def rolling_median_mad(x: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """Centred rolling median and median absolute deviation over 2·half+1 points (edges shrink).

    Equal to sorting every window (``np.median`` of the window and of its absolute deviations), but
    the window is kept sorted as it slides (one insert, one delete) and the MAD's middle elements are
    found by merging the deviations below and above the median: O(half) per point, not O(half·log half).
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    if np.isnan(x).any():
        return _rolling_median_mad_by_sort(x, half)
    med = np.empty(x.shape[0], np.float64)
    mad = np.empty(x.shape[0], np.float64)
    _rolling_median_mad_sliding(x, half, med, mad)
    return med, mad


@njit(cache=True)
def _register_vs_power(ts_ms: np.ndarray, energy_wh: np.ndarray, power_w: np.ndarray, window_ms: np.int64,
                       first_window: np.int64, max_step_ms: np.int64, register_out: np.ndarray,
                       power_out: np.ndarray, band_out: np.ndarray, covered_out: np.ndarray) -> None:
    for i in range(1, ts_ms.shape[0]):
        t0 = ts_ms[i - 1]
        t1 = ts_ms[i]
        if t1 <= t0 or t1 - t0 > max_step_ms:
            continue
        d = energy_wh[i] - energy_wh[i - 1]
        p0 = power_w[i - 1]
        p1 = power_w[i]
        if d < 0 or p0 != p0 or p1 != p1:  # rollback (its own finding) or unknown power (NaN)
            continue
        w = t0 // window_ms - first_window
        register_out[w] += d
        power_out[w] += 0.5 * (p0 + p1) * (t1 - t0) / 3_600_000.0
        band_out[w] += 0.5 * abs(p1 - p0) * (t1 - t0) / 3_600_000.0
        covered_out[w] += t1 - t0


def register_vs_power(ts_ms: np.ndarray, energy_wh: np.ndarray, power_w: np.ndarray, window_ms: int,
                      max_step_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per window: (start ms, register energy Wh, ∫power dt Wh, sampling band Wh, time covered ms).

    Input in the device's own order (``seq``, ``idx``), not re-sorted: a register counts up along
    it. Each step between consecutive readings is used when it moves forward in time by at most
    ``max_step_ms`` (longer steps are gaps: no power is known there), its register does not fall
    (a rollback is ``register_rollback``'s) and both powers are known (not NaN). A step counts
    whole in the window holding its start: register increase on one side, trapezoid ½(p₀+p₁)·Δt
    on the other. The band, ½·|p₁ − p₀|·Δt summed, is how far the left or right Riemann sum lies
    from the trapezoid: instantaneous samples cannot place the true integral more precisely.
    Windows run from the earliest reading's to the latest's.
    """
    if window_ms <= 0:
        raise ValueError("window_ms must be positive")
    ts = np.asarray(ts_ms, dtype=np.int64)
    e = np.asarray(energy_wh, dtype=np.int64)
    p = np.asarray(power_w, dtype=np.float64)
    if not ts.shape == e.shape == p.shape:
        raise ValueError("ts_ms, energy_wh and power_w differ in length")
    if ts.size == 0:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, np.int64)
    first = ts.min() // window_ms
    last = ts.max() // window_ms
    k = int(last - first + 1)
    reg, pw, band, cov = np.zeros(k), np.zeros(k), np.zeros(k), np.zeros(k, np.int64)
    _register_vs_power(ts, e, p, np.int64(window_ms), np.int64(first), np.int64(max_step_ms), reg, pw, band, cov)
    return np.arange(first, last + 1, dtype=np.int64) * window_ms, reg, pw, band, cov


@njit(cache=True)
def _frame_spans(frame_seq: np.ndarray, reading_seq: np.ndarray, ts_ms: np.ndarray, first: np.ndarray,
                 last: np.ndarray, count: np.ndarray) -> None:
    for i in range(reading_seq.shape[0]):
        s = reading_seq[i]
        lo = np.searchsorted(frame_seq, s)
        if lo == frame_seq.shape[0] or frame_seq[lo] != s:
            continue  # a reading whose frame is not listed
        t = ts_ms[i]
        if count[lo] == 0 or t < first[lo]:
            first[lo] = t
        if count[lo] == 0 or t > last[lo]:
            last[lo] = t
        count[lo] += 1


def frame_spans(frame_seq: np.ndarray, reading_seq: np.ndarray, ts_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame (``frame_seq`` sorted ascending, unique): (first ts ms, last ts ms, readings) of the
    readings carrying that seq; frames with no reading have count 0 (their first/last are 0)."""
    fs = np.ascontiguousarray(frame_seq, dtype=np.int64)
    if fs.size > 1 and np.any(fs[1:] <= fs[:-1]):
        raise ValueError("frame_seq must be sorted ascending and unique")
    first = np.zeros(fs.size, np.int64)
    last = np.zeros(fs.size, np.int64)
    count = np.zeros(fs.size, np.int64)
    _frame_spans(fs, np.ascontiguousarray(reading_seq, dtype=np.int64), np.ascontiguousarray(ts_ms, dtype=np.int64),
                 first, last, count)
    return first, last, count
