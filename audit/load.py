"""Loading one device's readings and frames from the store into numpy columns, by binary COPY.

Owns: the two queries the audit reads per device and their decoding (``ledger.pgbinary`` splits
the COPY stream; timestamps are PostgreSQL's µs since 2000-01-01). Reads only; no detector logic.

Readings come as one row per channel and partition holding each column as an array (PostgreSQL
sends a COPY message per row; one per reading dominated the load). Within the arrays they are in
whatever order the server scans them (no ORDER BY: sorting a year of a device on the server needs
more than the default work_mem and spills to disk); they are put in the device's own order here — by channel, then (``seq``, ``idx``), as ``ORDER BY channel, seq, idx``
would (``(device, seq, idx)`` is unique: the frames table guards it). Timestamps become UTC ms
rounded half away from zero, as ``(extract(epoch FROM ts) * 1000)::bigint`` does.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg

from ledger.pgbinary import Rows, copy_out

PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in µs since 1970-01-01
CHANNEL_BY_FIRST_BYTE = {ord("e"): "export", ord("i"): "import", ord("p"): "pv"}  # the CHECK constraint's three


@dataclass(frozen=True)
class Channel:
    """One register of a device, in the device's order: UTC ms, Wh (cumulative), W, frame seq."""

    name: str
    ts_ms: np.ndarray
    energy_wh: np.ndarray
    power_w: np.ndarray
    seq: np.ndarray


@dataclass(frozen=True)
class DeviceReadings:
    channels: list[Channel]  # sorted by name
    seq: np.ndarray  # every reading's frame seq and ts (all channels), for the frames' time spans
    ts_ms: np.ndarray

    @property
    def n_readings(self) -> int:
        return int(self.seq.size)


def pg_us_to_ms(us_since_2000: np.ndarray) -> np.ndarray:
    """µs since 2000 → ms since 1970, rounded half away from zero (numeric → bigint)."""
    us = us_since_2000 + PG_EPOCH_US
    return np.where(us >= 0, (us + 500) // 1000, -((500 - us) // 1000))


READINGS_BY_CHANNEL_AND_PARTITION = (
    "SELECT channel, array_agg(seq), array_agg(idx), array_agg(ts), array_agg(energy_wh), array_agg(power_w) "
    "FROM readings WHERE device_id = %s AND (%s::timestamptz IS NULL OR ts >= %s) GROUP BY channel, tableoid")


def _column(rows: Rows, col: int, total: int) -> np.ndarray:
    eo, el, _ = rows.array_elems(col, total)
    return rows.elem_ints(eo, el)


def load_readings(conn: psycopg.Connection[Any], device: str, since: dt.datetime | None) -> DeviceReadings:
    """One COPY row per channel and partition (month), each column an array: PostgreSQL sends one
    message per COPY row, and a message per reading cost more than everything else (~3 µs)."""
    buf = copy_out(conn, READINGS_BY_CHANNEL_AND_PARTITION, (device, since, since))
    rows = Rows(buf, 6)
    if len(rows) == 0:
        empty = np.zeros(0, np.int64)
        return DeviceReadings([], empty, empty)
    total = buf.size // 8  # every element takes at least 8 bytes (length + int4)
    eo, el, counts = rows.array_elems(1, total)
    seq = rows.elem_ints(eo, el)
    idx, ts = _column(rows, 2, total), pg_us_to_ms(_column(rows, 3, total))
    energy, power = _column(rows, 4, total), _column(rows, 5, total)
    row_chan = buf[rows.off[:, 0]]  # first byte of the channel name
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    first_seq = seq[starts]  # array_agg makes no empty arrays
    order = np.concatenate([np.arange(starts[r], starts[r] + counts[r])
                            for r in np.lexsort((first_seq, row_chan))])  # groups by channel, then by their first seq
    chan = np.repeat(row_chan, counts)
    c, s, i = chan[order], seq[order], idx[order]
    same = c[1:] == c[:-1]
    if np.any(same & ((s[1:] < s[:-1]) | ((s[1:] == s[:-1]) & (i[1:] <= i[:-1])))):
        order = np.lexsort((idx, seq, chan))  # not already in (seq, idx) order within each channel
        c = chan[order]
    bounds = np.flatnonzero(np.diff(c)) + 1
    channels = []
    for part in np.split(order, bounds) if order.size else []:
        name = CHANNEL_BY_FIRST_BYTE[int(chan[part[0]])]
        channels.append(Channel(name, ts[part], energy[part], power[part], seq[part]))
    return DeviceReadings(channels, seq, ts)


def load_frames(conn: psycopg.Connection[Any], device: str) -> tuple[np.ndarray, np.ndarray]:
    """(seq ascending, send time − receive time in s) of the device's frames (one COPY row of arrays)."""
    buf = copy_out(conn, "SELECT array_agg(seq), array_agg(sent_ms), array_agg(received_at) FROM frames "
                         "WHERE device_id = %s", (device,))
    rows = Rows(buf, 3)
    total = buf.size // 12
    seq, sent_ms, received_us = _column(rows, 0, total), _column(rows, 1, total), _column(rows, 2, total) + PG_EPOCH_US
    if seq.size > 1 and np.any(seq[1:] < seq[:-1]):
        order = np.argsort(seq, kind="stable")
        seq, sent_ms, received_us = seq[order], sent_ms[order], received_us[order]
    # exact integer µs, then one correctly rounded division: the value numeric arithmetic gives
    return seq, (sent_ms * 1000 - received_us) / 1e6
