"""Hourly site energy for the claims engine, read from the store's rollup ``readings_15min``.

Owns: ``load_site_hours`` (store → ``SiteHours``) and ``metered_production_wh`` (a device's
metered PV production, for the certificate guard). Reads only; the figures are ``compute.py``'s.

The hourly energies are exactly those of the ``energy_hourly`` view (migration 0301.rollups) read
with the session time zone UTC: per device and channel, the hour's register (the max of its 15-minute
buckets' last values) minus that of the previous hour *with data* — a lag over the buckets present,
so the first hour after a gap carries the gap's energy and the totals stay exact. Differences the
view would give as NULL (no earlier data) or negative (the register fell: reset or replaced meter)
are NaN here: unknown, never zero. The fast path pulls the rollup rows of the period as one binary
COPY row of arrays per device and channel (``ledger.pgbinary``), plus each register's last hour before
the period, and does the differences in numpy on a (channels × hours) grid.

Roles (docs/claims.md): ``main_meter`` devices' ``import``/``export`` channels are the site's grid
import/export, ``pv_inverter`` devices' ``pv`` channel its generation (summed over devices of a
role); sub-meters are loads inside the main meter and are never added. A site's hour is NaN in a
series if any of its devices' registers of that series is unknown; a site without a PV inverter has
PV zeros.

Coverage per hour and channel: readings in the hour / readings expected per hour, capped at 1, where
the expected count is the mode of the channel's hourly counts over the hours of the period that have
data (the largest mode on a tie) — the device's own reading interval, since most hours are complete;
0 where the hour's energy is unknown. A site's coverage is the minimum over its channels.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
import psycopg

from audit.claims.model import HOUR_MS, ClaimsError, SiteHours
from ledger.pgbinary import Rows, copy_out

PG_EPOCH_MS = 946_684_800_000  # 2000-01-01 in ms since 1970-01-01
CHANNELS_OF_KIND = {"main_meter": ("import", "export"), "pv_inverter": ("pv",)}

DEVICES = ("SELECT device_id, site_id, kind FROM devices WHERE site_id = ANY(%s) "
           "AND kind IN ('main_meter', 'pv_inverter') ORDER BY device_id")
#: One COPY row of arrays per device and channel (a COPY message per rollup row would cost more than the rest).
BUCKETS = ("SELECT device_id, channel, array_agg(bucket), array_agg(last_wh), array_agg(n_readings) "
           "FROM readings_15min WHERE device_id = ANY(%s) AND bucket >= %s AND bucket < %s GROUP BY 1, 2")
#: Each register's value in the last hour with data before the period (energy_hourly's lag for hour 0).
PREVIOUS = """SELECT k.device_id, k.channel,
       (SELECT max(r.last_wh) FROM readings_15min r WHERE r.device_id = k.device_id AND r.channel = k.channel
          AND r.bucket >= date_trunc('hour', l.bucket, 'UTC') AND r.bucket <= l.bucket)
FROM unnest(%s::text[], %s::text[]) AS k(device_id, channel)
CROSS JOIN LATERAL (SELECT bucket FROM readings_15min r WHERE r.device_id = k.device_id AND r.channel = k.channel
                    AND r.bucket < %s ORDER BY bucket DESC LIMIT 1) l"""


def _ts(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _connect(conn_or_dsn: psycopg.Connection[Any] | str) -> tuple[psycopg.Connection[Any], bool]:
    if isinstance(conn_or_dsn, str):
        return psycopg.connect(conn_or_dsn), True
    return conn_or_dsn, False


def _text(rows: Rows, col: int) -> list[str]:
    off, ln = rows.off[:, col], rows.ln[:, col]
    return [rows.buf[o:o + n].tobytes().decode() for o, n in zip(off, ln, strict=True)]


def expected_per_hour(counts: np.ndarray) -> int:
    """The mode of the hourly reading counts of the hours with data (the largest on a tie); 0 if none."""
    c = counts[counts > 0].astype(np.int64)
    if c.size == 0:
        return 0
    freq = np.bincount(c)
    return int(np.flatnonzero(freq == freq.max()).max())


def hourly_registers(buckets_ms: np.ndarray, last_wh: np.ndarray, n_readings: np.ndarray, row: np.ndarray,
                     n_rows: int, start_ms: int, hours: int) -> tuple[np.ndarray, np.ndarray]:
    """(register of each hour = max of its buckets' last values, −1 where no bucket; readings per hour),
    both [n_rows, hours], from the rollup rows of the period (``row``: which channel each belongs to)."""
    g = row * hours + (buckets_ms - start_ms) // HOUR_MS
    reg = np.full(n_rows * hours, -1, np.int64)  # registers are ≥ 0 (CHECK on readings)
    if g.size and np.all(g[1:] >= g[:-1]):  # as the rows came: one reduceat over the runs of each hour
        firsts = np.flatnonzero(np.concatenate(([True], g[1:] != g[:-1])))
        reg[g[firsts]] = np.maximum.reduceat(last_wh, firsts)
    else:
        np.maximum.at(reg, g, last_wh)
    n = np.bincount(g, weights=n_readings, minlength=n_rows * hours)
    return reg.reshape(n_rows, hours), n.reshape(n_rows, hours)


def hourly_energy(reg: np.ndarray, n: np.ndarray, prev_wh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energy per hour (Wh, NaN where unknown) and coverage per hour, [rows, hours], from
    ``hourly_registers`` and each row's register in the last hour with data before the period
    (NaN if none): energy_hourly's difference to the previous hour present."""
    rows, hours = reg.shape
    present = n > 0
    at = np.where(present, np.arange(hours), -1)
    last_at = np.maximum.accumulate(at, axis=1)  # the latest hour ≤ h with data
    prev_at = np.concatenate((np.full((rows, 1), -1), last_at[:, :-1]), axis=1)
    prev = np.where(prev_at >= 0, np.take_along_axis(reg, np.maximum(prev_at, 0), axis=1).astype(np.float64),
                    prev_wh[:, None])
    energy = np.where(present, reg - prev, np.nan)
    energy[energy < 0] = np.nan  # the register fell: this hour's energy is unknown
    expected = np.array([expected_per_hour(r) for r in n], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = np.where(np.isfinite(energy), np.minimum(n / expected[:, None], 1.0), 0.0)
    return energy, cov


def load_site_hours(conn_or_dsn: psycopg.Connection[Any] | str, sites: Sequence[str], start_ms: int,
                    end_ms: int) -> list[SiteHours]:
    """The sites' hourly energy over [start_ms, end_ms) (both hour-aligned), in the order of ``sites``."""
    if start_ms % HOUR_MS or end_ms % HOUR_MS or end_ms <= start_ms:
        raise ClaimsError(f"period [{start_ms}, {end_ms}) must be whole UTC hours, non-empty")
    hours = (end_ms - start_ms) // HOUR_MS
    conn, own = _connect(conn_or_dsn)
    try:
        devices = conn.execute(DEVICES, (list(sites),)).fetchall()
        keys = [(d, ch) for d, _, kind in devices for ch in CHANNELS_OF_KIND[kind]]
        slot = {k: i for i, k in enumerate(keys)}
        dev_ids = [d for d, _, _ in devices]
        buf = copy_out(conn, BUCKETS, (dev_ids, _ts(start_ms), _ts(end_ms)))
        prev_rows = conn.execute(PREVIOUS, ([k[0] for k in keys], [k[1] for k in keys], _ts(start_ms))).fetchall()
    finally:
        if own:
            conn.close()
    rows = Rows(buf, 5)
    total = buf.size // 12 + 1  # every array element takes ≥ 12 bytes (length + int8)
    b_us, counts = rows.array_ints(2, total)
    last, _ = rows.array_ints(3, total)
    nread, _ = rows.array_ints(4, total)
    row_slot = np.array([slot.get((d, c), -1) for d, c in zip(_text(rows, 0), _text(rows, 1), strict=True)],
                        dtype=np.int64)
    el_slot = np.repeat(row_slot, counts)
    keep = el_slot >= 0  # a channel outside the device's role (e.g. import on a PV inverter) is not used
    reg, n = hourly_registers(b_us[keep] // 1000 + PG_EPOCH_MS, last[keep], nread[keep], el_slot[keep],
                              len(keys), start_ms, hours)
    prev = np.full(len(keys), np.nan)
    for d, ch, v in prev_rows:
        if v is not None:
            prev[slot[(d, ch)]] = float(v)
    energy, cov = hourly_energy(reg, n, prev)
    return [_site(site, devices, slot, energy, cov, start_ms, hours) for site in sites]


def _site(site: str, devices: list[tuple[str, str, str]], slot: dict[tuple[str, str], int], energy: np.ndarray,
          cov: np.ndarray, start_ms: int, hours: int) -> SiteHours:
    def series(kind: str, channel: str) -> list[int]:
        return [slot[(d, channel)] for d, s, k in devices if s == site and k == kind]

    imp, exp, pv = series("main_meter", "import"), series("main_meter", "export"), series("pv_inverter", "pv")
    unknown = np.full(hours, np.nan)
    used = imp + exp + pv
    return SiteHours(
        site, start_ms,
        energy[imp].sum(axis=0) if imp else unknown,
        energy[exp].sum(axis=0) if exp else unknown.copy(),
        energy[pv].sum(axis=0) if pv else np.zeros(hours),
        cov[used].min(axis=0) if imp else np.zeros(hours))


PRODUCTION = """SELECT sum(greatest(d, 0))::float8 FROM (
    SELECT energy_wh - lag(energy_wh) OVER (ORDER BY ts, seq, idx) AS d FROM readings
    WHERE device_id = %(d)s AND channel = 'pv' AND ts < %(end)s
      AND ts >= coalesce((SELECT max(ts) FROM readings WHERE device_id = %(d)s AND channel = 'pv'
                          AND ts < %(start)s), %(start)s)) x"""


def metered_production_wh(conn: psycopg.Connection[Any], device_id: str, start_ms: int, end_ms: int) -> float | None:
    """What the device's ``pv`` register shows it produced in [start_ms, end_ms) (Wh): the sum of the
    rises between consecutive readings, from the last reading before ``start_ms`` to the last before
    ``end_ms`` (a fall — reset or replaced meter — adds nothing, so a reset never inflates the figure).
    At reading resolution, any alignment. None if the device is not in the registry; 0.0 if it has no
    such readings. Whether those readings are anchored is the verdict's check (the period's batches),
    not this figure's."""
    if conn.execute("SELECT 1 FROM devices WHERE device_id = %s", (device_id,)).fetchone() is None:
        return None
    row = conn.execute(PRODUCTION, {"d": device_id, "start": _ts(start_ms), "end": _ts(end_ms)}).fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0
