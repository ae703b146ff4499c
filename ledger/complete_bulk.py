"""The completeness checks of ``ledger.complete`` on columns: the same problems, at the scale of the store.

Owns ``check_bulk``: in one read-only snapshot, the frames in scope (stored bytes) and the readings in scope
(binary COPY, arrays per device) are checked together by ``ledger.sealqueue.check`` — a frame's stored
readings rebuild its canonical signed bytes exactly, or the reference decides reading by reading — and
every problem kind of ``ledger.complete`` is derived with array operations; only problems become Python
objects. The row-by-row ``ledger.complete.check_rows`` is the reference (tests compare both).
Pure reporting: never writes.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg

from device.wire import READING_WINDOW, WireError, decode_frame, reading_window_problem
from ledger import complete as c
from ledger.backend import LedgerBackend
from ledger.pgbinary import Rows, copy_out
from ledger.replay import STORED_QUERY, _copy_in_snapshot, read_snapshot
from ledger.sealqueue import CHANNELS, FRAME_ARRAYS, FrameRows, Queued, assemble, frames_then_check
from ledger.sealqueue import check as check_frames_and_readings
from ledger.trust import DeviceKeys, Trust

SCOPE_FRAMES = FRAME_ARRAYS + """
FROM frames f JOIN unnest(%(devs)s::text[]) WITH ORDINALITY AS dv(device_id, dno) USING (device_id)
WHERE f.device_id = ANY(%(scope)s)
  AND (%(lo)s::bigint IS NULL OR f.sent_ms >= %(lo)s - %(after)s)
  AND (%(hi)s::bigint IS NULL OR f.sent_ms < %(hi)s + %(before)s)
GROUP BY dv.dno, f.seq / 1024
ORDER BY dv.dno, f.seq / 1024  -- a few rows: the columns then come in (device, seq) order
"""
SCOPE_READINGS = """
SELECT (dv.dno - 1)::int4, count(*)::int4, array_agg(r.seq), array_agg(r.idx), array_agg(r.ts),
       array_agg(CASE r.channel WHEN 'export' THEN 0 WHEN 'import' THEN 1 WHEN 'pv' THEN 2 ELSE 3 END::int2),
       array_agg(r.energy_wh), array_agg(r.power_w)
FROM readings r JOIN unnest(%(devs)s::text[]) WITH ORDINALITY AS dv(device_id, dno) USING (device_id)
WHERE r.device_id = ANY(%(scope)s)
  AND (%(start)s::timestamptz IS NULL OR r.ts >= %(start)s) AND (%(end)s::timestamptz IS NULL OR r.ts < %(end)s)
GROUP BY dv.dno
ORDER BY dv.dno  -- one row per device: the columns then come in device order
"""
_PACK = 1 << 21  # idx < 2^21 (a frame holds at most 4096 readings), seq < 2^22 per device code


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def check_bulk(dsn: str, backend: LedgerBackend, trust: Trust | None, site: str | None = None,
               start: datetime | None = None, end: datetime | None = None, snapshot: str | None = None,
               shared: dict[str, Any] | None = None, between: Callable[[], None] | None = None) -> c.Completeness:
    """``snapshot``: read in the caller's exported snapshot. ``shared`` (a whole-store check only): receives what
    was loaded — ``queued`` (every reading and frame, ``Queued``), ``devices``, and ``stored`` (a future of the
    batches' stored leaves, ``ledger.replay.STORED_QUERY``) — so that the replay in the same snapshot reuses them;
    ``between`` is then called as soon as they are, while the frames' signatures are still being checked."""
    lo = _ms(start) if start else None
    hi = _ms(end) if end else None
    problems: list[c.Problem] = []
    whole = site is None and start is None and end is None
    early = ThreadPoolExecutor(1)  # queries whose answers are needed later, meanwhile
    try:
        with read_snapshot(dsn, snapshot) as (conn, snap):
            held_fut = early.submit(_copy_in_snapshot, dsn, snap, HELD_QUERY, {"site": site, "start": start, "end": end})
            if shared is not None and whole and snapshot is not None:  # read later, while the caller's snapshot lives
                shared["stored"] = early.submit(_copy_in_snapshot, dsn, snap, STORED_QUERY,
                                                {"site": None, "start": None, "end": None})
            keys, key_problems = c.device_keys(conn, trust, site)
            problems += key_problems
            reg = dict(conn.execute("SELECT device_id, site_id FROM devices").fetchall())
            devices = sorted(reg)
            scope = [d for d in devices if site is None or reg[d] == site]
            params = {"devs": devices, "scope": scope, "lo": lo, "hi": hi, "after": c._AFTER_SEND_MS,
                      "before": c._BEFORE_SEND_MS, "start": start, "end": end}
            key_list = [keys.get(d) for d in devices]
            half = len(scope) // 2
            with ThreadPoolExecutor(2) as side:  # frames and their signatures (GIL released) while readings load
                frames_fut: Future[FrameRows] = Future()
                fut = side.submit(frames_then_check, frames_fut, dsn, snap, SCOPE_FRAMES, params, key_list)
                second = side.submit(_copy_in_snapshot, dsn, snap, SCOPE_READINGS, {**params, "scope": scope[half:]}) \
                    if half else None
                rows = [Rows(copy_out(conn, SCOPE_READINGS, {**params, "scope": scope[:half] if half else scope}), 8)]
                if second is not None:
                    rows.append(Rows(second.result(), 8))
                frames = frames_fut.result()
                q = assemble(devices, frames, rows)
                if shared is not None and whole:
                    shared["queued"], shared["devices"] = q, devices
                    if between is not None:
                        between()  # while the signatures are checked
                proven = fut.result()
            site_of = [reg[d] for d in devices]
            ok, valid, same, raws = check_frames_and_readings(q, site_of, key_list, proven)
            frame_problems = _frame_problems(q, valid, raws, keys)
            problems += frame_problems
            problems += _reading_problems(q, ok, valid, same, raws, lo, hi)
            batches = conn.execute("SELECT batch_id, site_id, window_start, window_end FROM batches").fetchall()
            pending = _pending(conn, q, ok, reg, batches, site, start, end, held_fut)
            problems += c._ledger_vs_store(backend, {b[0] for b in batches}, site, lo, hi)
    finally:
        early.shutdown(wait=False)
    code = {d: i for i, d in enumerate(devices)}
    frame_bad = [(code[p.ref[0]], int(p.ref[1]), p.detail) for p in frame_problems]
    return c.Completeness(problems, pending, len(q.seq), len(frames), frame_bad)


def _frame_problems(q: Queued, valid: np.ndarray, raws: list[bytes], keys: dict[str, DeviceKeys]) -> list[c.Problem]:
    """Each invalid frame, worded by the reference (``ledger.verify.frame_problem``)."""
    import zstandard

    from ledger.verify import frame_problem

    out = []
    unz = zstandard.ZstdDecompressor()
    fr = q.frames
    for i in np.flatnonzero(~valid).tolist():
        dev = q.devices[int(q.f_dev[i])]
        raw_z = fr.buf[fr.off[i, 4]:fr.off[i, 4] + max(int(fr.ln[i, 4]), 0)].tobytes()
        sha = fr.buf[fr.off[i, 3]:fr.off[i, 3] + max(int(fr.ln[i, 3]), 0)].tobytes()
        key = keys.get(dev)
        why = frame_problem(raw_z, sha, key, unz) if key else \
            "no key to check the device's signature with"
        if why is None and raws[i]:
            try:
                f = decode_frame(raws[i])
            except WireError as exc:
                why = f"{exc.reason}: {exc.detail}"
            else:
                window = reading_window_problem(f)
                if window is not None:
                    why = f"{READING_WINDOW}: {window}"
                elif (f.device, f.seq) != (dev, int(q.f_seq[i])):
                    why = f"the signed frame is {f.device} seq {f.seq}, stored as {dev} seq {int(q.f_seq[i])}"
        why = why or "not a canonical wattproof frame with one sig member"
        out.append(c.Problem(c.FRAME_INVALID, "frame", (dev, int(q.f_seq[i])), why))
    return out


def _reading_problems(q: Queued, ok: np.ndarray, valid: np.ndarray, same: np.ndarray, raws: list[bytes],
                      lo: int | None, hi: int | None) -> list[c.Problem]:
    out: list[c.Problem] = []
    n = len(q.seq)
    name = q.devices
    if n:
        key = (q.dev * _PACK + q.seq) * _PACK + q.idx  # sorted: readings come sorted by (device, seq, idx)
        dup = np.flatnonzero(key[1:] == key[:-1]) + 1
        for j in np.unique(key[dup], return_index=True)[1].tolist():
            r = dup[j]
            k = (name[int(q.dev[r])], int(q.seq[r]), int(q.idx[r]))
            out.append(c.Problem(c.DUPLICATE_KEY, "reading", k, f"reading key {k} is stored more than once"))
    bad = np.flatnonzero(~ok)
    decoded: dict[int, Any] = {}
    for r in bad.tolist():
        k = (name[int(q.dev[r])], int(q.seq[r]), int(q.idx[r]))
        row = int(q.frame_row[r])
        if row < 0 or not valid[row]:
            why = "its frame is invalid" if row >= 0 else "no valid signed frame holds it"
            out.append(c.Problem(c.READING_UNBACKED, "reading", k, f"stored reading {k}: {why}"))
            continue
        frame = decoded.setdefault(row, decode_frame(raws[row]))
        if not 0 <= k[2] < len(frame.readings):
            out.append(c.Problem(c.READING_UNBACKED, "reading", k, f"stored reading {k}: no valid signed frame holds it"))
            continue
        fr = frame.readings[k[2]]
        ch = int(q.ch[r])
        have = (int(q.ts_ms[r]), CHANNELS[ch] if 0 <= ch < 3 else "?", int(q.e[r]), int(q.p[r]))
        out.append(c.Problem(c.READING_DIFFERS, "reading", k, f"stored reading {k} is {have}, the device signed "
                             f"{(fr.ts_ms, fr.channel, fr.energy_wh, fr.power_w)}"))
    # readings of valid frames (in scope) that are not stored: only frames whose readings did not rebuild them
    differ = valid & ~same
    stored = set()
    if differ.any():
        for r in np.flatnonzero((q.frame_row >= 0) & differ[np.maximum(q.frame_row, 0)]).tolist():
            stored.add((int(q.frame_row[r]), int(q.idx[r])))
    for row in np.flatnonzero(valid & ~same).tolist():
        frame = decoded.setdefault(row, decode_frame(raws[row]))
        dev, seq = name[int(q.f_dev[row])], int(q.f_seq[row])
        for i, rd in enumerate(frame.readings):
            if (lo is None or rd.ts_ms >= lo) and (hi is None or rd.ts_ms < hi) and (row, i) not in stored:
                out.append(c.Problem(c.SIGNED_READING_MISSING, "reading", (dev, seq, i),
                                     f"reading {(dev, seq, i)} of a valid signed frame is not in the store"))
    return sorted(out, key=lambda p: (p.kind, p.ref))


def _pending(conn: psycopg.Connection[Any], q: Queued, ok: np.ndarray, reg: dict[str, str],
             batches: list[tuple[Any, ...]], site: str | None, start: datetime | None,
             end: datetime | None, held_fut: Future[np.ndarray]) -> list[tuple[str, int, int]]:
    """Backed readings in a window that has a batch, that no batch of it holds: late arrivals."""
    if not batches or not len(q.seq):
        return []
    held = _held_keys(conn, q.devices, site, start, end, held_fut.result())
    key = (q.dev * _PACK + q.seq) * _PACK + q.idx
    held.sort()
    pos = np.minimum(np.searchsorted(held, key), max(len(held) - 1, 0))
    cand = np.flatnonzero(ok & ~((held[pos] == key) if len(held) else np.zeros(len(key), bool)))
    if cand.size == 0:
        return []
    windows: dict[str, list[tuple[int, int]]] = {}
    for _, s_, w0, w1 in batches:
        windows.setdefault(s_, []).append((_ms(w0.astimezone(UTC)), _ms(w1.astimezone(UTC))))
    out = []
    for r in cand.tolist():
        dev = q.devices[int(q.dev[r])]
        ts = int(q.ts_ms[r])
        if any(w0 <= ts < w1 for w0, w1 in windows.get(reg[dev], [])):
            out.append((dev, int(q.seq[r]), int(q.idx[r])))
    return out


HELD_QUERY = ("SELECT cardinality(leaf_devices), leaf_devices, leaf_seqs, leaf_idxs FROM batches "
              "WHERE (%(site)s::text IS NULL OR site_id = %(site)s) "
              "AND (%(start)s::timestamptz IS NULL OR window_end > %(start)s) "
              "AND (%(end)s::timestamptz IS NULL OR window_start < %(end)s)")


def _held_keys(conn: psycopg.Connection[Any], devices: list[str], site: str | None, start: datetime | None,
               end: datetime | None, copied: np.ndarray) -> np.ndarray:
    """Every leaf key of the batches in scope, packed like the readings' keys (``copied``: the binary COPY of
    ``HELD_QUERY``, made in the same snapshot; no Python lists)."""
    rows = Rows(copied, 4)
    if len(rows) == 0:
        return np.zeros(0, np.int64)
    total = int(rows.ints(0).sum())
    eo, el, _ = rows.array_elems(1, total)
    runs = rows.elem_runs(eo, el)
    code = {d: i for i, d in enumerate(devices)}
    run_code = np.array([code.get(rows.buf[eo[i]:eo[i] + el[i]].tobytes().decode(), -1) for i in runs.tolist()],
                        np.int64)
    dev = np.repeat(run_code, np.diff(np.append(runs, eo.size))) if eo.size else np.zeros(0, np.int64)
    try:
        seq, n_seq = rows.array_ints(2, total)
        idx, n_idx = rows.array_ints(3, total)
    except ValueError:
        n_seq = n_idx = None
    if n_seq is None or not (np.array_equal(n_seq, rows.ints(0)) and np.array_equal(n_idx, rows.ints(0))):
        # a batch record whose leaf arrays differ in length (the replay names it): its keys, pair by pair
        out = []
        for devs, seqs, idxs in conn.execute(
                "SELECT leaf_devices, leaf_seqs, leaf_idxs FROM batches WHERE (%(site)s::text IS NULL OR site_id = %(site)s) "
                "AND (%(start)s::timestamptz IS NULL OR window_end > %(start)s) "
                "AND (%(end)s::timestamptz IS NULL OR window_start < %(end)s)", {"site": site, "start": start, "end": end}):
            out += [(code.get(d, -1) * _PACK + q) * _PACK + i for d, q, i in zip(devs, seqs, idxs, strict=False)]
        return np.array(out, np.int64)
    return (dev * _PACK + seq) * _PACK + idx
