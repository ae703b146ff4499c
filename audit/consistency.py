"""Cross-checks between registers: the site energy balance and register vs. integrated power.

Owns: the rules that turn hourly energies into ``energy_imbalance`` and
``register_power_mismatch`` findings (pure: arrays in, findings out; thresholds in
``audit.detectors.Thresholds``). See docs/audit.md ("Consistency").

The balance identity comes from the simulator's site topology (firmware_sim/sim.py): the load is
split across the sub-meters (sub1: HVAC, sub2: everything else), the PV inverter offsets it, and
the main meter sees the net: ``import − export = max(net, 0) − max(−net, 0) = net = Σ sub − Σ PV``.
So, per hour, ``main import − main export − (Σ sub − Σ pv)`` is zero up to register resolution
(1 Wh per register and hour) and meter accuracy. A site whose sub-meters cover only part of the
load would satisfy only ``main net ≥ Σ sub − Σ pv``; wattproof's sites are fully sub-metered.
Must not: read the store (run.py loads the arrays).
"""

from __future__ import annotations

import numpy as np

from audit.detectors import Finding, Thresholds
from audit.kernels import runs

MS_PER_HOUR = 3_600_000


def balance_findings(site: str, hour_ms: np.ndarray, main_import_wh: np.ndarray, main_export_wh: np.ndarray,
                     sub_wh: np.ndarray, pv_wh: np.ndarray, complete: np.ndarray, th: Thresholds) -> list[Finding]:
    """One ``energy_imbalance`` finding per run of consecutive complete hours out of balance.

    ``complete``: every register of the site covered the hour (else the hour is not judged: a
    gap or a refused frame is reported by its own detector, and its energy is interpolated here).
    """
    net = main_import_wh - main_export_wh
    expected = sub_wh - pv_wh
    residual = net - expected
    gross = main_import_wh + main_export_wh + sub_wh + pv_wh
    tol = th.balance_abs_wh + th.balance_rel * gross
    bad = complete & (np.abs(residual) > tol)
    out = []
    for a, b in runs(bad, 1):
        out.append(Finding(site, None, "energy_imbalance", "high", int(hour_ms[a]), int(hour_ms[b - 1]) + MS_PER_HOUR,
                           {"hours": int(b - a), "residual_wh": round(float(residual[a:b].sum()), 1),
                            "max_abs_residual_wh": round(float(np.abs(residual[a:b]).max()), 1),
                            "main_net_wh": round(float(net[a:b].sum()), 1), "sub_meters_wh": round(float(sub_wh[a:b].sum()), 1),
                            "pv_wh": round(float(pv_wh[a:b].sum()), 1),
                            "identity": "main import - main export = sum(sub) - sum(pv)"}))
    return out


def register_power_findings(site: str, device: str, channel: str, window_ms: np.ndarray, register_wh: np.ndarray,
                            power_wh: np.ndarray, band_wh: np.ndarray, covered_ms: np.ndarray, window_len_ms: int,
                            th: Thresholds) -> list[Finding]:
    """One ``register_power_mismatch`` per run of covered windows whose register and ∫power disagree.

    Tolerance per window: max(abs, rel × the larger energy) + the sampling band (how far the
    left/right Riemann sums lie from the trapezoid; see ``audit.kernels.register_vs_power``).
    """
    diff = register_wh - power_wh
    tol = np.maximum(th.register_power_abs_wh, th.register_power_rel * np.maximum(register_wh, power_wh)) + band_wh
    bad = (covered_ms >= th.min_coverage * window_len_ms) & (np.abs(diff) > tol)
    out = []
    for a, b in runs(bad, 1):
        out.append(Finding(site, device, "register_power_mismatch", "medium", int(window_ms[a]),
                           int(window_ms[b - 1]) + window_len_ms,
                           {"channel": channel, "windows": int(b - a), "register_wh": round(float(register_wh[a:b].sum()), 1),
                            "integrated_power_wh": round(float(power_wh[a:b].sum()), 1),
                            "sampling_band_wh": round(float(band_wh[a:b].sum()), 1),
                            "difference_wh": round(float(diff[a:b].sum()), 1)}))
    return out
