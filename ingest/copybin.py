"""PostgreSQL binary COPY rows for readings, built column-wise with numpy.

Owns: turning the readings of many frames into one ``COPY readings (device_id, seq, idx, ts,
channel, energy_wh, power_w) FROM STDIN (FORMAT BINARY)`` payload without a Python call per field
(psycopg's ``write_row`` costs ~2 µs per row; this ~0.3 µs). Rows are grouped by the byte lengths
of their two text fields so that each group is one fixed-layout numpy structured array; row order
does not matter to COPY. Equivalence with ``write_row`` is tested (tests/test_ingest_copybin.py).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)  # signature, flags, no header extension
TRAILER = struct.pack(">h", -1)
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00Z in µs since the Unix epoch


def _dtype(dev_len: int, ch_len: int) -> np.dtype[Any]:
    return np.dtype([
        ("nf", ">i2"), ("l_dev", ">i4"), ("dev", f"S{dev_len}"), ("l_seq", ">i4"), ("seq", ">i8"),
        ("l_idx", ">i4"), ("idx", ">i4"), ("l_ts", ">i4"), ("ts", ">i8"), ("l_ch", ">i4"), ("ch", f"S{ch_len}"),
        ("l_e", ">i4"), ("e", ">i8"), ("l_p", ">i4"), ("p", ">i8")])


def readings_copy(frames: Iterable[tuple[str, int, Sequence[Any]]]) -> tuple[bytes, int]:
    """(COPY payload incl. header and trailer, number of rows) for ``(device, seq, readings)``;
    a reading has ``ts_ms``, ``channel``, ``energy_wh``, ``power_w``."""
    cols: dict[tuple[int, int], tuple[list[bytes], list[int], list[int], list[int], list[bytes], list[int], list[int]]] = {}
    n = 0
    for device, seq, readings in frames:
        dev = device.encode()
        chans = [r.channel for r in readings]
        first = chans[0]
        if all(c == first for c in chans):
            parts: list[tuple[str, list[int]]] = [(first, list(range(len(readings))))]
        else:
            by: dict[str, list[int]] = {}
            for i, c in enumerate(chans):
                by.setdefault(c, []).append(i)
            parts = list(by.items())
        for ch, idxs in parts:
            chb = ch.encode()
            c = cols.get((len(dev), len(chb)))
            if c is None:
                c = cols[(len(dev), len(chb))] = ([], [], [], [], [], [], [])
            k = len(idxs)
            sel = [readings[i] for i in idxs] if k != len(readings) else readings
            c[0].extend([dev] * k)
            c[1].extend([seq] * k)
            c[2].extend(idxs)
            c[3].extend([r.ts_ms for r in sel])
            c[4].extend([chb] * k)
            c[5].extend([r.energy_wh for r in sel])
            c[6].extend([r.power_w for r in sel])
            n += k
    chunks = [HEADER]
    for (dl, cl), (devs, seqs, idxs, tss, chs, es, ps) in cols.items():
        a = np.empty(len(devs), dtype=_dtype(dl, cl))
        a["nf"] = 7
        a["l_dev"], a["l_seq"], a["l_idx"], a["l_ts"], a["l_ch"], a["l_e"], a["l_p"] = dl, 8, 4, 8, cl, 8, 8
        a["dev"] = devs
        a["seq"] = seqs
        a["idx"] = idxs
        a["ts"] = np.asarray(tss, dtype=np.int64) * 1000 - PG_EPOCH_US
        a["ch"] = chs
        a["e"] = es
        a["p"] = ps
        chunks.append(a.tobytes())
    chunks.append(TRAILER)
    return b"".join(chunks), n
