"""The machine-readable files of a report: hourly CSV and Parquet, ``report.json`` and ``batches.jsonl``.

Owns: writing them (and nothing else). Hourly table (docs/reports.md, "Files"): one row per site and hour,
columns ``site, hour_start`` (ISO 8601 UTC), ``hour_start_ms, import_wh, export_wh, pv_wh, consumption_wh,
coverage``; unknown values are empty in CSV and null in Parquet. Floats are written with Python's ``repr``
(shortest round-trip), so reading the CSV gives back the same numbers. ``batches.jsonl``: one JSON object per
batch the figures rest on, with its receipt, in (site, window) order.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from audit.reports.gather import ms
from audit.reports.model import HOURLY_COLUMNS


def _iso(hour_ms: np.ndarray) -> np.ndarray:
    return np.char.add(np.datetime_as_string(hour_ms.astype("datetime64[ms]"), unit="s"), "Z")


def write_csv(path: Path, cols: dict[str, np.ndarray]) -> None:
    iso = _iso(cols["hour_start_ms"])
    num = [cols[k] for k in ("import_wh", "export_wh", "pv_wh", "consumption_wh", "coverage")]

    def cell(x: float) -> str:
        return repr(float(x)) if math.isfinite(x) else ""

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(HOURLY_COLUMNS)
        site, hms = cols["site"], cols["hour_start_ms"].tolist()
        numl = [a.tolist() for a in num]
        for i in range(len(hms)):
            w.writerow([site[i], iso[i], hms[i], *(cell(a[i]) for a in numl)])


def write_parquet(path: Path, cols: dict[str, np.ndarray]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def col(a: np.ndarray) -> pa.Array:
        return pa.array(a, mask=~np.isfinite(a), type=pa.float64())

    table = pa.table({
        "site": pa.array(cols["site"].tolist(), type=pa.string()).dictionary_encode(),
        "hour_start": pa.array(cols["hour_start_ms"], type=pa.timestamp("ms", tz="UTC")),
        "hour_start_ms": pa.array(cols["hour_start_ms"], type=pa.int64()),
        **{k: col(cols[k]) for k in ("import_wh", "export_wh", "pv_wh", "consumption_wh", "coverage")},
    })
    pq.write_table(table, path, compression="zstd")


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=1, sort_keys=True, allow_nan=False) + "\n")


def write_batches(path: Path, rows: Iterable[tuple[Any, ...]], anchored: set[str]) -> None:
    """``batches.jsonl``: the receipt text is written as stored (one JSON object per line)."""
    with open(path, "w") as fh:
        for bid, site, kind, amends, w0, w1, leaf_count, root, hh, receipt in rows:
            head = json.dumps({"batch_id": bid, "site": site, "kind": kind, "amends": amends,
                               "window_start_ms": ms(w0), "window_end_ms": ms(w1), "leaf_count": int(leaf_count),
                               "root": root, "header_hash": hh, "on_ledger": bid in anchored},
                              sort_keys=True, separators=(",", ":"))
            fh.write(head[:-1] + ',"receipt":' + receipt.replace("\n", " ") + "}\n")
