"""Hourly outdoor temperature from a CSV file (the simulator's ``weather.csv`` or a real export).

Owns: reading ``site,timestamp,temperature_c`` (UTC ISO 8601; header required, extra columns
ignored) with errors that name the file, the line and the column. Must not: fetch weather from
anywhere else or guess a missing value.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from device.errors import WattproofError

REQUIRED = ("site", "timestamp", "temperature_c")


class WeatherError(WattproofError, ValueError):
    """A weather file that cannot be used; the message names file, line and column."""


def _parse_ts_ms(text: str) -> int:
    t = np.datetime64(text.strip().removesuffix("Z").removesuffix("+00:00"), "ms")
    if np.isnat(t):
        raise ValueError("not a time")
    return int(t.astype(np.int64))


def read_weather(path: str | Path, site: str) -> tuple[np.ndarray, np.ndarray]:
    """(hour start ms, temperature °C) of ``site``, sorted by time. Times are floored to the hour."""
    p = Path(path)
    try:
        fh = open(p, newline="")
    except OSError as exc:
        raise WeatherError(f"{p}: cannot read weather file ({exc.strerror})") from None
    hours: dict[int, float] = {}
    with fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise WeatherError(f"{p}:1: empty file (expected the header {','.join(REQUIRED)})")
        cols = [h.strip() for h in header]
        missing = [c for c in REQUIRED if c not in cols]
        if missing:
            raise WeatherError(f"{p}:1: missing column(s) {', '.join(missing)} (header is {','.join(cols)})")
        i_site, i_ts, i_temp = (cols.index(c) for c in REQUIRED)
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) < len(cols):
                raise WeatherError(f"{p}:{line}: {len(row)} fields, the header has {len(cols)}")
            if row[i_site].strip() != site:
                continue
            try:
                ts = _parse_ts_ms(row[i_ts])
            except ValueError:
                raise WeatherError(f"{p}:{line}: column timestamp: {row[i_ts]!r} is not an ISO 8601 time") from None
            try:
                temp = float(row[i_temp])
            except ValueError:
                raise WeatherError(f"{p}:{line}: column temperature_c: {row[i_temp]!r} is not a number") from None
            if not math.isfinite(temp) or not -90.0 <= temp <= 70.0:
                raise WeatherError(f"{p}:{line}: column temperature_c: {temp} °C is not a plausible outdoor temperature")
            hour = ts - ts % 3_600_000
            if hour in hours:
                raise WeatherError(f"{p}:{line}: column timestamp: a second row for site {site} at {row[i_ts].strip()}")
            hours[hour] = temp
    if not hours:
        raise WeatherError(f"{p}: no rows for site {site!r}")
    ts_arr = np.array(sorted(hours), dtype=np.int64)
    return ts_arr, np.array([hours[t] for t in ts_arr.tolist()], dtype=float)
