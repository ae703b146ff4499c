"""The sealing queue's frames and readings, loaded and checked against the signed bytes in bulk.

Owns ``load_queue``: in the caller's snapshot, the queued frames (``unsealed_frames``, filled by the ingest
writer) with readings in complete windows, their stored bytes and all their readings as columns; and
``check``: which of those readings a valid signed frame holds exactly (invariant 1, docs/proofs.md).
A frame is *backed* when its stored bytes hash to the recorded SHA-256, carry the registered device's
valid signature (native check, the reference for what it does not prove) and equal the canonical frame
rebuilt from its stored readings (``ledger.framewriter``) — one comparison per frame. Frames that differ
are decided reading by reading by the reference (strict decode, per-reading comparison), so a single
edited reading refuses only itself. Pure apart from the two COPYs in ``load_queue``.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
import zstandard

from device.wire import (
    MAX_FRAME_BYTES,
    READING_AFTER_SEND_MS,
    WireError,
    decode_frame,
    reading_window_problem,
)
from ledger import nativelib
from ledger.bulk import StringTable
from ledger.framewriter import rebuilt_equal
from ledger.pgbinary import Rows, copy_out
from ledger.replay import _copy_in_snapshot
from ledger.trust import DeviceKeys, as_device_keys, key_slots

CHANNELS = ["export", "import", "pv"]  # codes sort like the names (the schema's CHECK)
_EPOCH_2000_US = 946_684_800_000_000

#: Frames come as arrays (one row per device and block of 1,024 seqs): psycopg hands COPY output over one row at a
#: time (~30 µs each), so a row per frame would cost more than checking it.
FRAME_ARRAYS = ("SELECT (dv.dno - 1)::int4, count(*)::int4, array_agg(f.seq), array_agg(f.sent_ms), "
                "array_agg(f.frame_sha256), array_agg(f.raw_zstd) ")
#: the queued frames of this run, in the run's snapshot (every connection below shares it): the same set each time
QUEUED = """unsealed_frames k JOIN devices qd ON qd.device_id = k.device_id
WHERE k.min_ts_ms < %(cut)s AND (%(site)s::text IS NULL OR qd.site_id = %(site)s)"""
FRAMES_QUERY = FRAME_ARRAYS + """
FROM (SELECT k.device_id, k.seq FROM """ + QUEUED + """) k JOIN frames f USING (device_id, seq)
JOIN unnest(%(devs)s::text[]) WITH ORDINALITY AS dv(device_id, dno) USING (device_id)
GROUP BY dv.dno, f.seq / 1024
ORDER BY dv.dno, f.seq / 1024  -- a few rows: the columns then come in (device, seq) order
"""


class FrameRows:
    """The frames of a ``FRAME_ARRAYS`` COPY, addressed like ``pgbinary.Rows`` of the columns
    (device code, seq, sent_ms, SHA-256, zstd bytes): ``ints(0..2)``, ``off``/``ln`` columns 3 and 4, ``buf``."""

    def __init__(self, buf: np.ndarray) -> None:
        rows = Rows(buf, 6)
        self.buf = buf
        counts = rows.ints(1) if len(rows) else np.zeros(0, np.int64)
        n = int(counts.sum())
        self._ints = [np.repeat(rows.ints(0), counts) if len(rows) else np.zeros(0, np.int64),
                      rows.array_ints(2, n)[0] if n else np.zeros(0, np.int64),
                      rows.array_ints(3, n)[0] if n else np.zeros(0, np.int64)]
        self.off = np.zeros((n, 5), np.int64)
        self.ln = np.zeros((n, 5), np.int64)
        if n:
            for k in (4, 5):
                eo, el, _ = rows.array_elems(k, n)
                self.off[:, k - 1], self.ln[:, k - 1] = eo, el

    def __len__(self) -> int:
        return len(self._ints[0])

    def ints(self, col: int) -> np.ndarray:
        return self._ints[col]
READINGS_QUERY = """
SELECT (dv.dno - 1)::int4, count(*)::int4, array_agg(r.seq), array_agg(r.idx), array_agg(r.ts),
       array_agg(CASE r.channel WHEN 'export' THEN 0 WHEN 'import' THEN 1 WHEN 'pv' THEN 2 ELSE 3 END::int2),
       array_agg(r.energy_wh), array_agg(r.power_w)
FROM readings r JOIN (SELECT k.device_id, k.seq FROM """ + QUEUED + """) k USING (device_id, seq)
JOIN unnest(%(devs)s::text[]) WITH ORDINALITY AS dv(device_id, dno) USING (device_id)
WHERE r.ts >= %(lo)s AND r.ts <= %(hi)s AND (%(only)s::text[] IS NULL OR r.device_id = ANY(%(only)s))
GROUP BY dv.dno
ORDER BY dv.dno  -- one row per device: the columns then come in device order
"""
#: The same columns without a join per reading (a third less work for the server): every reading of the given
#: devices in the queue's time span, grouped by device, each group's device code looked up once. It also holds
#: readings of frames that are not queued (sealed before): ``assemble`` keeps only the queued ones. Used when
#: the span holds few frames besides the queued ones (``_span_is_mostly_queued``); else READINGS_QUERY.
READINGS_SPAN_QUERY = """
SELECT (array_position(%(devs)s::text[], g.device_id) - 1)::int4, g.n, g.seqs, g.idxs, g.tss, g.chs, g.es, g.ps
FROM (SELECT r.device_id, count(*)::int4 AS n, array_agg(r.seq) AS seqs, array_agg(r.idx) AS idxs,
             array_agg(r.ts) AS tss,
             array_agg(CASE r.channel WHEN 'export' THEN 0 WHEN 'import' THEN 1 WHEN 'pv' THEN 2 ELSE 3 END::int2) AS chs,
             array_agg(r.energy_wh) AS es, array_agg(r.power_w) AS ps
      FROM readings r WHERE r.ts >= %(lo)s AND r.ts <= %(hi)s AND r.device_id = ANY(%(only)s)
      GROUP BY r.device_id) g
ORDER BY 1
"""
#: each device's queued seqs (sorted): which frames' readings READINGS_SPAN_QUERY's rows belong to this run
QUEUED_SEQS = """SELECT (dv.dno - 1)::int4, count(*)::int4, array_agg(k.seq ORDER BY k.seq)
FROM (SELECT k.device_id, k.seq FROM """ + QUEUED + """) k
JOIN unnest(%(devs)s::text[]) WITH ORDINALITY AS dv(device_id, dno) ON dv.device_id = k.device_id
GROUP BY dv.dno ORDER BY dv.dno"""
#: about how many frames READINGS_SPAN_QUERY would read the readings of: those of the given devices sent from
#: the span's start (a reading is at most READING_AFTER_SEND_MS after its frame's sent_ms) to an hour after
#: its end (an estimate: a frame uploaded late from a spool may be sent any time after its readings)
FRAMES_IN_SPAN = """SELECT count(*) FROM frames WHERE device_id = ANY(%(only)s)
AND sent_ms >= %(lo_ms)s - %(after_ms)s AND sent_ms <= %(hi_ms)s + 3600000"""


@dataclass
class Queued:
    """The queued frames (by row of ``frames``) and their stored readings (columns, sorted by device, seq, idx)."""

    devices: list[str]  # codes index this (sorted)
    frames: FrameRows  # (dno, seq, sent_ms, sha, raw_zstd)
    f_dev: np.ndarray
    f_seq: np.ndarray
    dev: np.ndarray
    seq: np.ndarray
    idx: np.ndarray
    ts_ms: np.ndarray
    ch: np.ndarray
    e: np.ndarray
    p: np.ndarray
    frame_row: np.ndarray  # per reading: its row in ``frames``, or -1
    us: np.ndarray | None = None  # per reading: ts as stored (µs since 2000-01-01, PostgreSQL's epoch)


def frames_then_check(frames_out: Future[FrameRows], dsn: str, snapshot: str, query: str, params: dict[str, Any],
                      keys: list[bytes | None]) -> nativelib.CheckedFrames | None:
    """The frames of a ``FRAME_ARRAYS`` query in the exported snapshot, handed to ``frames_out`` as soon as they are
    loaded, then what the native check finds (which of them it proves, and their bytes; None without the library).
    Run on a side thread: the check releases the GIL."""
    try:
        frames = FrameRows(_copy_in_snapshot(dsn, snapshot, query, params))
    except BaseException as exc:
        frames_out.set_exception(exc)
        raise
    frames_out.set_result(frames)
    if nativelib.LIB is None or len(frames) == 0:
        return None
    return _native_check(frames, keys)


def _native_check(frames: FrameRows, keys: list[bytes | DeviceKeys | None]) -> nativelib.CheckedFrames:
    table, key_idx = key_slots(keys, frames.ints(0), frames.ints(2))  # the key valid at each frame's sent_ms
    return nativelib.check_frames_raw(frames.buf, frames.off[:, 4], frames.ln[:, 4], frames.off[:, 3], frames.ln[:, 3],
                                      table, key_idx, MAX_FRAME_BYTES, 2)


def load_queue(conn: psycopg.Connection[Any], dsn: str, snapshot: str, devices: list[str], keys: list[bytes | None],
               cut: int, site: str | None, lo_ms: int, hi_ms: int) -> tuple[Queued, nativelib.CheckedFrames | None]:
    """The queued frames with readings before ``cut`` and all their readings, and which frames the native check
    proves: the frames and their signature check on one side connection, the readings in two halves of the
    devices on this one and another, all at once in the caller's exported snapshot; the readings are put in order
    while the signatures are checked."""
    from datetime import UTC, datetime

    lo = datetime.fromtimestamp(lo_ms / 1000, UTC)
    hi = datetime.fromtimestamp(hi_ms / 1000, UTC)
    params: dict[str, Any] = {"cut": cut, "site": site, "devs": devices, "lo": lo, "hi": hi}
    queued = queued_keys(Rows(copy_out(conn, QUEUED_SEQS, params), 3), len(devices))
    # the devices with queued frames, in two halves of about the same number of queued frames
    busy = sorted(queued)
    sizes = np.cumsum([len(queued[d]) for d in busy]) if busy else np.zeros(0, np.int64)
    cut_at = int(np.searchsorted(sizes, sizes[-1] / 2)) + 1 if busy else 0
    halves = [h for h in ([devices[d] for d in busy[:cut_at]], [devices[d] for d in busy[cut_at:]]) if h]
    n_queued = int(sizes[-1]) if busy else 0
    span = _span_is_mostly_queued(conn, busy and [devices[d] for d in busy], lo_ms, hi_ms, n_queued)
    query = READINGS_SPAN_QUERY if span else READINGS_QUERY
    with ThreadPoolExecutor(2) as side:
        frames_fut: Future[FrameRows] = Future()
        checked = side.submit(frames_then_check, frames_fut, dsn, snapshot, FRAMES_QUERY, params, keys)
        second = side.submit(_copy_in_snapshot, dsn, snapshot, query, {**params, "only": halves[1]}) \
            if len(halves) > 1 else None
        rows = [Rows(copy_out(conn, query, {**params, "only": halves[0] if halves else []}), 8)]
        if second is not None:
            rows.append(Rows(second.result(), 8))
        q = assemble(devices, frames_fut.result(), rows, queued if span else None)  # while signatures are checked
        return q, checked.result()


def _span_is_mostly_queued(conn: psycopg.Connection[Any], devices: list[str] | bool, lo_ms: int, hi_ms: int,
                           n_queued: int) -> bool:
    """Would READINGS_SPAN_QUERY read mostly queued readings? (the usual case: the queue holds each device's
    newest frames; not when one late frame stretches the span back over sealed ones). Only a choice of query:
    both give the same readings."""
    if not devices or n_queued == 0:
        return False
    n_span = conn.execute(FRAMES_IN_SPAN, {"only": devices, "lo_ms": lo_ms, "hi_ms": hi_ms,
                                           "after_ms": READING_AFTER_SEND_MS}).fetchone()[0]  # type: ignore[index]
    return int(n_span) <= 1.5 * n_queued + 1024


def queued_keys(rows: Rows, n_devices: int) -> dict[int, np.ndarray]:
    """``QUEUED_SEQS`` as {device code: its queued seqs, sorted}."""
    if len(rows) == 0:
        return {}
    devs, counts = rows.ints(0), rows.ints(1)
    seqs, _ = rows.array_ints(2, int(counts.sum()))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return {int(d): seqs[bounds[i]:bounds[i + 1]] for i, d in enumerate(devs.tolist()) if 0 <= d < n_devices}


def assemble(devices: list[str], frames: FrameRows, rows: list[Rows],
             queued: dict[int, np.ndarray] | None = None) -> Queued:
    """Frames (``FRAMES_QUERY`` columns) and readings (``READINGS_QUERY`` rows) as a ``Queued``: readings sorted
    by (device, seq, idx), each with its frame's row. ``queued`` (rows of READINGS_SPAN_QUERY): only the readings
    of these frames ({device code: seqs}) are kept."""
    cols = _columns(rows)
    if queued is not None:
        cols = _only_queued(cols, queued, len(devices))
    f_dev, f_seq = frames.ints(0), frames.ints(1)
    if not _sorted_by(cols["dev"], cols["seq"], cols["idx"]):
        order = _order_by_frame_then_idx(cols["dev"], cols["seq"], cols["idx"])
        for k in cols:
            cols[k] = cols[k][order]
    fkey = f_dev.astype(np.int64) * (1 << 40) + f_seq
    forder = np.arange(len(fkey)) if _sorted_by(fkey) else np.argsort(fkey, kind="stable")
    rkey = cols["dev"] * (1 << 40) + cols["seq"]
    pos = np.searchsorted(fkey[forder], rkey)
    pos_c = np.minimum(pos, max(len(forder) - 1, 0))
    hit = (pos < len(forder)) & (fkey[forder][pos_c] == rkey) if len(forder) else np.zeros(len(rkey), bool)
    frame_row = np.where(hit, forder[pos_c] if len(forder) else 0, -1)
    rel = cols["us"] + _EPOCH_2000_US
    ts_ms = np.where(rel >= 0, (rel + 500) // 1000, -((-rel + 500) // 1000))
    return Queued(devices, frames, f_dev, f_seq, cols["dev"], cols["seq"], cols["idx"], ts_ms, cols["ch"], cols["e"],
                  cols["p"], frame_row, cols["us"])


def _only_queued(cols: dict[str, np.ndarray], queued: dict[int, np.ndarray], n_devices: int) -> dict[str, np.ndarray]:
    """The readings whose (device, seq) is queued: inside the device's queued seq range, and, where its queued
    seqs leave gaps, one of them."""
    lo = np.ones(n_devices, np.int64)
    hi = np.zeros(n_devices, np.int64)  # an empty range: nothing of the device is queued
    for d, seqs in queued.items():
        lo[d], hi[d] = seqs[0], seqs[-1]
    dev, seq = cols["dev"], cols["seq"]
    keep = (seq >= lo[dev]) & (seq <= hi[dev])
    for d, seqs in queued.items():
        if int(seqs[-1]) - int(seqs[0]) + 1 != len(seqs):  # gaps: frames inside the range that are not queued
            at = np.flatnonzero(keep & (dev == d))
            s = seq[at]
            pos = np.minimum(np.searchsorted(seqs, s), len(seqs) - 1)
            keep[at[seqs[pos] != s]] = False
    if bool(keep.all()):
        return cols
    return {k: v[keep] for k, v in cols.items()}


def _order_by_frame_then_idx(dev: np.ndarray, seq: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``np.lexsort((idx, seq, dev))``: one stable sort of the three packed in an int64 when they fit (the store hands
    readings over nearly in this order, which that sort turns to account), else the lexsort."""
    if dev.size:
        key = np.zeros(dev.size, np.int64)
        total = 1
        for col in (dev, seq, idx):
            lo, span = int(col.min()), int(col.max()) - int(col.min()) + 1
            total *= span
            if total >= 2**62:
                break
            key = key * span + (col - lo)
        else:
            return np.argsort(key, kind="stable")
    return np.lexsort((idx, seq, dev))


def _sorted_by(*keys: np.ndarray) -> bool:
    """Are the rows already in (stable) lexicographic order of ``keys``, most significant first?"""
    if keys[0].size < 2:
        return True
    later = np.zeros(keys[0].size - 1, bool)  # the row is already greater on a more significant key
    for k in keys:
        d = np.diff(k)
        if bool((~later & (d < 0)).any()):
            return False
        later |= d > 0
    return True


def _columns(rows: list[Rows]) -> dict[str, np.ndarray]:
    counts = [r.ints(1) for r in rows]
    total = int(sum(int(c.sum()) for c in counts))
    out: dict[str, np.ndarray] = {"dev": np.concatenate([np.repeat(r.ints(0), c) for r, c in zip(rows, counts, strict=True)])
                                  if rows else np.zeros(0, np.int64)}
    for k, name in enumerate(("seq", "idx", "us", "ch", "e", "p"), start=2):
        col = np.empty(total, np.int64)
        at = 0
        for r, c in zip(rows, counts, strict=True):
            got, _ = r.array_ints_into(k, col[at:at + int(c.sum())])
            at += got
        out[name] = col
    out["dev"] = out["dev"].astype(np.int64)
    return out


class FrameBytes:
    """Each frame's stored bytes as decompressed by the check (``b""`` where unreadable): ``raws[i]``."""

    def __init__(self, buf: np.ndarray, off: np.ndarray, ln: np.ndarray) -> None:
        self.buf, self.off, self.ln = buf, off, ln

    def __len__(self) -> int:
        return len(self.off)

    def __getitem__(self, i: int) -> bytes:
        n = int(self.ln[i])
        return self.buf[int(self.off[i]):int(self.off[i]) + n].tobytes() if n > 0 else b""


def check(q: Queued, site_of_dev: list[str], keys: list[bytes | None],
          proven: nativelib.CheckedFrames | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, FrameBytes]:
    """(per reading: backed; per frame: valid — readable, its recorded SHA-256, a valid signature; per frame:
    its stored readings rebuild it exactly; per frame: its raw bytes). ``proven``: the native check of these
    frames, already made by the caller (their signature is not checked again)."""
    fr = q.frames
    n_f = len(fr)
    ok_reading = np.zeros(len(q.seq), bool)
    if n_f == 0:
        return ok_reading, np.zeros(0, bool), np.zeros(0, bool), FrameBytes(np.zeros(0, np.uint8), np.zeros(0, np.int64),
                                                                             np.zeros(0, np.int64))
    if proven is None and nativelib.LIB is not None:
        proven = _native_check(fr, keys)
    sig_at = np.zeros(n_f, np.int64)
    sig_len = np.zeros(n_f, np.int64)
    valid = np.zeros(n_f, bool)
    if proven is not None:
        # proven by the native check: its bytes are the ones it hashed and whose signature it verified
        native = proven.proven & proven.raw_ok & (proven.sig_at >= 0)
        valid[native], sig_at[native], sig_len[native] = True, proven.sig_at[native], 86
        off, ln = proven.off.copy(), np.where(proven.raw_ok, proven.ln, 0)
        rawbuf, todo = proven.buf, np.flatnonzero(~proven.proven)
    else:
        off, ln = np.zeros(n_f, np.int64), np.zeros(n_f, np.int64)
        rawbuf, todo = np.zeros(0, np.uint8), np.arange(n_f)
    if todo.size:
        rawbuf = _reference_check(fr, q.f_dev.astype(np.int32), keys, todo, rawbuf, off, ln, sig_at, sig_len, valid)
    raws = FrameBytes(rawbuf, off, ln)
    # readings grouped by frame row (they are sorted by device, seq, idx; frames by row need their runs)
    has = q.frame_row >= 0
    rows_r = q.frame_row[has]
    rpos = np.flatnonzero(has)
    counts = np.bincount(rows_r, minlength=n_f)
    order = np.argsort(rows_r, kind="stable")  # by frame row, then (idx) as sorted
    rsel = rpos[order]
    first = np.zeros(n_f + 1, np.int64)
    first[1:] = np.cumsum(counts)
    contiguous = np.ones(n_f, bool)
    expect_idx = np.arange(len(rsel)) - np.repeat(first[:-1], counts)
    bad_idx = q.idx[rsel] != expect_idx
    if bad_idx.any():
        contiguous[np.unique(q.frame_row[rsel[bad_idx]])] = False
    sites = sorted(set(site_of_dev))
    site_code = np.array([sites.index(s) for s in site_of_dev], np.int64)
    rebuilt = rebuilt_equal(StringTable.of_json(q.devices), StringTable.of_json(sites), StringTable.of_json(CHANNELS),
                            q.f_dev, site_code[q.f_dev], q.f_seq, fr.ints(2), rawbuf, off + sig_at, sig_len, first,
                            np.minimum(q.ch[rsel], 2), q.e[rsel], q.p[rsel], q.ts_ms[rsel], rawbuf, off, ln)
    odd_channel = np.bincount(q.frame_row[rsel][q.ch[rsel] > 2], minlength=n_f) > 0 if len(rsel) else np.zeros(n_f, bool)
    same = (rebuilt & valid & contiguous & ~odd_channel
            & _within_schema(q, rsel, first, counts, fr.ints(2)))
    ok_reading[rsel] = np.repeat(same, counts)
    for i in np.flatnonzero(valid & ~same):  # the reference decides these frames and names the readings that differ
        try:
            frame = decode_frame(raws[i])
        except WireError:
            frame = None
        if frame is None or reading_window_problem(frame) is not None:
            valid[i] = False  # signed by the key holder, but not a frame the wire format admits: backs nothing
            continue
        if (frame.device, frame.seq) != (q.devices[int(q.f_dev[i])], int(q.f_seq[i])):
            valid[i] = False  # a genuine frame stored under another (device, seq) backs nothing there
            continue
        if frame.sent_ms != int(fr.ints(2)[i]) and not _signed_in_period(frame, keys[int(q.f_dev[i])]):
            valid[i] = False  # its key was chosen by a stored sent_ms the device did not sign
            continue
        for j in rsel[first[i]:first[i + 1]]:
            k = int(q.idx[j])
            if 0 <= k < len(frame.readings):
                r = frame.readings[k]
                ch = int(q.ch[j])
                ok_reading[j] = (ch <= 2 and (r.ts_ms, r.channel, r.energy_wh, r.power_w)
                                 == (int(q.ts_ms[j]), CHANNELS[ch], int(q.e[j]), int(q.p[j])))
    return ok_reading, valid, same, raws


def _reference_check(fr: FrameRows, f_dev: np.ndarray, keys: list[bytes | None], todo: np.ndarray,
                     native_buf: np.ndarray, off: np.ndarray, ln: np.ndarray, sig_at: np.ndarray, sig_len: np.ndarray,
                     valid: np.ndarray) -> np.ndarray:
    """The frames ``todo`` (not proven by the native check, or no native library) decided by the reference:
    their bytes (python-zstandard), recorded SHA-256, strict decoding and signature (``device``). Fills
    ``off``/``ln``/``sig_at``/``sig_len``/``valid`` for them; returns the buffer holding every frame's bytes (the
    native one, with these frames' bytes after it)."""
    unz = zstandard.ZstdDecompressor()
    raw_off, raw_len, sha_off, sha_len = fr.off[:, 4], fr.ln[:, 4], fr.off[:, 3], fr.ln[:, 3]
    buf = fr.buf
    extra: list[bytes] = []
    at = native_buf.size
    for i in todo.tolist():
        try:
            raw = unz.decompress(buf[raw_off[i]:raw_off[i] + raw_len[i]].tobytes(), max_output_size=MAX_FRAME_BYTES)
        except zstandard.ZstdError:
            raw = b""
        off[i], ln[i] = at, len(raw)
        extra.append(raw)
        at += len(raw)
        if not raw:
            continue
        # the bytes compared below are the bytes hashed: one zstd frame, whose content is what was recorded (the
        # native check decompresses every concatenated zstd frame; python-zstandard reads only the first)
        if hashlib.sha256(raw).digest() != buf[sha_off[i]:sha_off[i] + sha_len[i]].tobytes():
            continue
        key = as_device_keys(keys[f_dev[i]]) if 0 <= f_dev[i] < len(keys) else None
        if key is None:
            continue
        try:
            frame = decode_frame(raw)
            key.verify_signature(frame)  # by a key valid at the frame's signed sent_ms
        except (WireError, ValueError):
            continue
        if reading_window_problem(frame) is not None:  # verify_signed_frame's second half
            continue
        a = raw.find(b',"sig":"')
        if a < 0:
            continue
        sig_at[i], sig_len[i] = a + 8, 86
        valid[i] = True
    return np.concatenate([native_buf, np.frombuffer(b"".join(extra), np.uint8)]) if extra else native_buf


def _signed_in_period(frame: Any, keys: bytes | DeviceKeys | None) -> bool:
    """The frame's signature verifies under a key valid at its signed ``sent_ms``."""
    dk = as_device_keys(keys)
    if dk is None:
        return False
    try:
        dk.verify_signature(frame)
    except WireError:
        return False
    return True


def _within_schema(q: Queued, rsel: np.ndarray, first: np.ndarray, counts: np.ndarray, sent: np.ndarray) -> np.ndarray:
    """Per frame: every value the wire decoder checks is in range (docs/wire-format.md: safe integers, at most
    MAX_READINGS_PER_FRAME readings, the reading window around ``sent_ms``), so a frame the column path accepts is
    one the reference decoder accepts too. Frames that fail go to the reference, which words the refusal."""
    from device.wire import (
        MAX_READINGS_PER_FRAME,
        MAX_SAFE_INT,
        READING_AFTER_SEND_MS,
        READING_HISTORY_MS,
        READING_SPAN_MS,
    )

    n_f = len(counts)
    ok = (counts >= 1) & (counts <= MAX_READINGS_PER_FRAME) & (q.f_seq >= 0) & (q.f_seq <= MAX_SAFE_INT) \
        & (sent >= 0) & (sent <= MAX_SAFE_INT)
    if len(rsel) == 0:
        return ok
    ts, e, p = q.ts_ms[rsel], q.e[rsel], q.p[rsel]
    bad = (ts < 0) | (ts > MAX_SAFE_INT) | (e < 0) | (e > MAX_SAFE_INT) | (np.abs(p) > MAX_SAFE_INT)
    nonempty = np.flatnonzero(counts > 0)
    starts = first[:-1][nonempty]
    lo = np.full(n_f, 0, np.int64)
    hi = np.full(n_f, 0, np.int64)
    lo[nonempty] = np.minimum.reduceat(ts, starts)
    hi[nonempty] = np.maximum.reduceat(ts, starts)
    any_bad = np.zeros(n_f, bool)
    any_bad[nonempty] = np.logical_or.reduceat(bad, starts)
    window = (hi <= sent + READING_AFTER_SEND_MS) & (hi - lo <= READING_SPAN_MS) & (lo >= sent - READING_HISTORY_MS)
    return ok & ~any_bad & window
