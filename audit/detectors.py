"""Detectors: one device channel's arrays → findings (pure; numbers in, dataclasses out).

Owns: the rules that turn kernel output into findings, with their thresholds in one place
(``Thresholds``) and the evidence a person needs to check each finding. See docs/audit.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audit.kernels import rolling_median_mad, runs

DETECTOR_VERSION = "1"


@dataclass(frozen=True)
class Thresholds:
    gap_factor: float = 5.0  # a step longer than 5 × the device's usual interval is a gap
    stuck_min_readings: int = 10  # register flat this long while power says energy flows
    stuck_min_power_w: float = 20.0
    spike_half_window: int = 30  # rolling median/MAD over 61 readings
    spike_k: float = 12.0  # power > median + k·MAD (and > 3 × median)
    spike_floor_fraction: float = 0.25  # ... and > 25 % of the rated power
    over_rating_factor: float = 1.05
    over_rating_min_readings: int = 3
    pv_night_min_w: float = 10.0
    pv_night_min_readings: int = 5
    pv_clear_sky_factor: float = 1.15  # above 115 % of the clear-sky envelope...
    pv_clear_sky_margin_w: float = 50.0  # ...plus a small absolute margin
    pv_clear_sky_min_readings: int = 5
    clock_drift_s: float = 60.0  # send time vs receive time
    # site energy balance, per hour: |main net − (Σ sub − Σ PV)| > abs + rel × gross flow
    balance_abs_wh: float = 20.0
    balance_rel: float = 0.02  # five class-1 meters (±1 % each) cannot honestly disagree by more
    min_coverage: float = 0.8  # an hour (window) counts only if readings cover ≥ 80 % of it on every register used
    # register vs ∫power dt, per hour: |register − ∫p dt| > max(abs, rel × the larger) + sampling band
    register_power_abs_wh: float = 25.0
    register_power_rel: float = 0.05


@dataclass
class Finding:
    site: str
    device: str | None
    kind: str
    severity: str
    start_ms: int
    end_ms: int
    evidence: dict[str, Any] = field(default_factory=dict)
    detector: str = "wattproof.audit"
    detector_version: str = DETECTOR_VERSION


def register_findings(site: str, device: str, ts: np.ndarray, e: np.ndarray, p: np.ndarray,
                      seq: np.ndarray, th: Thresholds) -> list[Finding]:
    out: list[Finding] = []
    if ts.size < 2:
        return out
    dt = np.diff(ts)
    de = np.diff(e)
    for i in np.flatnonzero(de < 0):
        out.append(Finding(site, device, "register_rollback", "high", int(ts[i]), int(ts[i + 1]),
                           {"before_wh": int(e[i]), "after_wh": int(e[i + 1]), "drop_wh": int(-de[i])}))
    flat = (de == 0) & (p[1:] > th.stuck_min_power_w)
    for a, b in runs(flat, th.stuck_min_readings):
        expected = float(np.sum(p[a + 1:b + 1] * dt[a:b]) / 3_600_000)
        out.append(Finding(site, device, "stuck_register", "high", int(ts[a]), int(ts[b]),
                           {"register_wh": int(e[a]), "readings": int(b - a), "energy_by_power_wh": round(expected, 1)}))
    # In seq order a channel's timestamps must strictly increase: a step back is out of order (a device
    # clock set back, readings re-sent with other times); an equal one is two readings for one instant.
    for kind, mask in (("out_of_order", dt < 0), ("duplicate_timestamp", dt == 0)):
        for a, b in runs(mask, 1):
            out.append(Finding(site, device, kind, "medium", int(ts[a:b + 1].min()), int(ts[a:b + 1].max()),
                               {"readings": int(b - a), "seq_first": int(seq[a + 1]), "seq_last": int(seq[b]),
                                "largest_step_back_s": round(float(-dt[a:b].min()) / 1000, 3)}))
    usual = float(np.median(dt)) if dt.size else 0.0
    for i in np.flatnonzero(dt > th.gap_factor * max(usual, 1.0)):
        missing_frames = bool(seq[i + 1] - seq[i] > 1)
        out.append(Finding(site, device, "missing_frames" if missing_frames else "gap",
                           "medium", int(ts[i]), int(ts[i + 1]),
                           {"gap_s": int(dt[i] // 1000), "usual_interval_s": int(usual // 1000),
                            "seq_before": int(seq[i]), "seq_after": int(seq[i + 1])}))
    return out


def power_findings(site: str, device: str, ts: np.ndarray, p: np.ndarray, rated_w: float,
                   th: Thresholds) -> list[Finding]:
    out: list[Finding] = []
    if ts.size == 0:
        return out
    med, mad = rolling_median_mad(p.astype(np.float64), th.spike_half_window)
    floor = th.spike_floor_fraction * rated_w  # ignore swings that are small against the device's rating
    spikes = (p > med + th.spike_k * np.maximum(mad, floor / 10)) & (p > np.maximum(3 * med, floor))
    for i in np.flatnonzero(spikes):
        out.append(Finding(site, device, "spike", "low", int(ts[i]), int(ts[i]) + 60_000,
                           {"power_w": int(p[i]), "rolling_median_w": float(med[i]), "rolling_mad_w": float(mad[i])}))
    over = p > rated_w * th.over_rating_factor
    for a, b in runs(over & ~spikes, th.over_rating_min_readings):
        out.append(Finding(site, device, "power_above_rating", "medium", int(ts[a]), int(ts[b - 1]) + 60_000,
                           {"max_power_w": int(p[a:b].max()), "rated_power_w": int(rated_w)}))
    return out


def pv_findings(site: str, device: str, ts: np.ndarray, p: np.ndarray, clear_sky_w: np.ndarray,
                th: Thresholds) -> list[Finding]:
    """``clear_sky_w``: the inverter's clear-sky envelope (rated power × clear-sky GHI / 1000)."""
    out: list[Finding] = []
    night = (clear_sky_w <= 0) & (p > th.pv_night_min_w)
    for a, b in runs(night, th.pv_night_min_readings):
        out.append(Finding(site, device, "pv_at_night", "high", int(ts[a]), int(ts[b - 1]) + 60_000,
                           {"max_power_w": int(p[a:b].max()), "readings": int(b - a)}))
    above = (clear_sky_w > 0) & (p > clear_sky_w * th.pv_clear_sky_factor + th.pv_clear_sky_margin_w)
    for a, b in runs(above, th.pv_clear_sky_min_readings):
        excess = float(np.sum(p[a:b] - clear_sky_w[a:b]) * 60 / 3600)
        out.append(Finding(site, device, "pv_above_clear_sky", "high", int(ts[a]), int(ts[b - 1]) + 60_000,
                           {"max_power_w": int(p[a:b].max()), "max_clear_sky_w": round(float(clear_sky_w[a:b].max()), 1),
                            "excess_wh_approx": round(excess, 1)}))
    return out


def clock_findings(site: str, device: str, first_ts: np.ndarray, last_ts: np.ndarray, offset_s: np.ndarray,
                   th: Thresholds) -> list[Finding]:
    """Per frame: send time minus receive time (s). Runs of |offset| beyond the limit."""
    out: list[Finding] = []
    drift = np.abs(offset_s) > th.clock_drift_s
    for a, b in runs(drift, 1):
        out.append(Finding(site, device, "clock_drift", "medium", int(first_ts[a]), int(last_ts[b - 1]) + 60_000,
                           {"max_offset_s": round(float(offset_s[a:b][np.argmax(np.abs(offset_s[a:b]))]), 1),
                            "frames": int(b - a)}))
    return out
