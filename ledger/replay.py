"""Bulk replay: ``verify`` over many batches from a few binary COPYs, with the checks done on columns.

Owns: the same checks and the same report as ``ledger.verify.verify_rows`` (docs/proofs.md, Verify),
done in one exported snapshot with a few binary COPYs on parallel connections: the batches' stored
leaves, their readings (one row of arrays per batch, in two halves), and the frames, whose SHA-256 and
Ed25519 signature are re-checked once each — by the native library on threads while the leaves are
compared, or, without it, by worker processes (libsodium, then the reference). Leaf hashes are recomputed with ``ledger.bulk`` and compared with the stored ones as
arrays; only the differences become Python objects. Every reading and every frame of every batch
is still checked: nothing is sampled. A batch record the bulk reader cannot take apart (arrays of
different lengths, a hash blob that is not a multiple of 32 bytes) is replayed row by row.
Pure reporting: it never writes.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import re
from collections.abc import Generator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import zstandard

from device import ed25519
from device.wire import MAX_FRAME_BYTES
from ledger import bulk, nativelib
from ledger.backend import LedgerBackend, header_bytes
from ledger.complete import stored_keys
from ledger.pgbinary import Rows, copy_out
from ledger.trust import DeviceKeys

CHANNELS = ["export", "import", "pv"]  # sorted: codes order like the strings (the schema's CHECK)
_EPOCH_2000_US = 946_684_800_000_000
_INLINE_FRAMES = 20_000  # fewer frames than this: checked in this process (no worker start-up)

BATCH_FILTER = ("WHERE (%(site)s::text IS NULL OR site_id = %(site)s) AND (%(start)s::timestamptz IS NULL OR "
                "window_end > %(start)s) AND (%(end)s::timestamptz IS NULL OR window_start < %(end)s) "
                "ORDER BY site_id, window_start, batch_id")


def ed25519_ok(public_key: bytes, sig: bytes, msg: bytes) -> bool:
    """Ed25519 by wattproof's one acceptance rule (``device.ed25519``; docs/wire-format.md)."""
    return ed25519.verify(public_key, sig, msg)


def _frame_ok_fast(raw_z: bytes, sha: bytes, public_key: bytes | None, unz: zstandard.ZstdDecompressor) -> bool:
    """True when the frame passes every check of ``verify.frame_problem`` (libsodium for Ed25519);
    False means "not sure": the caller then asks ``frame_problem`` for the verdict and its wording."""
    from device.wire import b64url, b64url_decode, canonical_bytes, decode_frame

    if public_key is None:
        return False
    try:
        raw = unz.decompress(raw_z)
        if hashlib.sha256(raw).digest() != sha:
            return False
        frame = decode_frame(raw)
        sig = b64url_decode(frame.sig)  # type: ignore[arg-type]
        return b64url(sig) == frame.sig and ed25519.verify(public_key, sig, canonical_bytes(frame))
    except Exception:  # noqa: BLE001 — any doubt goes to the reference check
        return False


def _enter_snapshot(conn: psycopg.Connection[Any], snapshot: str) -> None:
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    if not re.fullmatch(r"[0-9A-Fa-f-]+", snapshot):
        raise ValueError(f"not a snapshot id: {snapshot!r}")
    conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")  # takes no parameter
    _bulk_settings(conn)


def _bulk_settings(conn: psycopg.Connection[Any]) -> None:
    """For the bulk reads of this transaction: no JIT (compiling the plans costs more than it saves here), room
    for the hash joins with the sealing queue's frames to stay in memory (spilled to disk, they cost more and hand
    the readings over out of their stored order), and no parallel workers (the reads already run several
    connections at once beside the client's own work: workers only add the cost of passing rows to a leader)."""
    conn.execute("SET LOCAL jit = off")
    conn.execute("SET LOCAL work_mem = '256MB'")
    conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")


@contextlib.contextmanager
def read_snapshot(dsn: str, snapshot: str | None = None) -> Any:
    """``(connection, snapshot id)`` in a read-only REPEATABLE READ transaction: the caller's exported ``snapshot``
    (so that several passes read one store), or a new one, exported for the side connections."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if snapshot is None:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            _bulk_settings(conn)
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
        else:
            _enter_snapshot(conn, snapshot)
        try:
            yield conn, snapshot
        finally:
            conn.execute("ROLLBACK")  # read only: nothing to keep


def _copy_in_snapshot(dsn: str, snapshot: str, query: str, params: Any) -> np.ndarray:
    with psycopg.connect(dsn, autocommit=True) as conn:
        _enter_snapshot(conn, snapshot)
        out = copy_out(conn, query, params)
        conn.execute("COMMIT")
    return out


FRAME_ONLY = ("AND (f.device_id, f.seq) IN (SELECT r.device_id, r.seq FROM batches b JOIN devices d ON d.site_id = b.site_id "
              "JOIN readings r ON r.device_id = d.device_id AND r.ts >= b.window_start AND r.ts < b.window_end "
              "WHERE b.batch_id = ANY(%(b)s))")
FRAMES_OF = ("FROM frames f JOIN unnest(%(d)s::text[]) WITH ORDINALITY AS dv(device_id, dno) USING (device_id) "
             "WHERE ((f.seq %% %(n)s) + %(n)s) %% %(n)s = %(k)s ")


def _frames_query(devices: list[str], batch_ids: list[str] | None, part: int = 0, parts: int = 1,
                  with_bytes: bool = True) -> tuple[str, dict[str, Any]]:
    """The frames the check covers (all, or those the batches' readings came in), one share of them by
    ``seq`` mod ``parts``: (device code, seq, recorded SHA-256[, zstd bytes])."""
    cols = "(dv.dno - 1)::int4, f.seq, f.frame_sha256" + (", f.raw_zstd " if with_bytes else " ")
    return ("SELECT " + cols + FRAMES_OF + ("" if batch_ids is None else FRAME_ONLY),
            {"d": devices, "n": parts, "k": part, "b": batch_ids})


def _frame_index(conn: psycopg.Connection[Any], devices: list[str],
                 batch_ids: list[str] | None) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """Every frame the check covers, without its bytes: (device code, seq, recorded SHA-256), for the leaves."""
    return _index_of(Rows(copy_out(conn, *_frames_query(devices, batch_ids, with_bytes=False)), 3))


STORED_QUERY = "SELECT leaf_devices, leaf_seqs, leaf_idxs, leaf_hashes FROM batches " + BATCH_FILTER


def _index_of_frames(frames: Any) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """``_index_of`` for the frames a completeness pass loaded (``ledger.sealqueue.FrameRows``)."""
    ln = np.maximum(frames.ln[:, 3], 0)
    blob = bulk.gather(frames.buf, frames.off[:, 3], ln).tobytes()
    ends = np.cumsum(ln).tolist()
    return (frames.ints(0).astype(np.int32), frames.ints(1),
            [blob[e - n:e] for e, n in zip(ends, ln.tolist(), strict=True)])


def _index_of(rows: Rows) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    ln = np.maximum(rows.ln[:, 2], 0)  # a NULL hash (length -1) reads as empty: it matches no leaf
    blob = bulk.gather(rows.buf, rows.off[:, 2], ln).tobytes()
    ends = np.cumsum(ln).tolist()
    return (rows.ints(0).astype(np.int32), rows.ints(1),
            [blob[e - n:e] for e, n in zip(ends, ln.tolist(), strict=True)])


def _frame_problems(rows: Rows, todo: Any, devices: list[str], raw_keys: dict[str, DeviceKeys],
                    try_fast: bool) -> list[tuple[int, int, str]]:
    """(device code, seq, why) of the frames ``todo`` (row numbers of ``rows``) that fail the reference check."""
    from ledger.verify import frame_problem

    unz = zstandard.ZstdDecompressor()
    keys = raw_keys  # the reference checks each frame with a key valid at its signed sent_ms
    dno, seq, off, ln, buf = rows.ints(0), rows.ints(1), rows.off, rows.ln, rows.buf
    bad = []
    for i in todo:
        raw_z, sha = buf[off[i, 3]:off[i, 3] + ln[i, 3]].tobytes(), buf[off[i, 2]:off[i, 2] + ln[i, 2]].tobytes()
        if try_fast and _frame_ok_fast(raw_z, sha, _only_key(raw_keys.get(devices[dno[i]])), unz):
            continue
        why = frame_problem(raw_z, sha, keys.get(devices[dno[i]]), unz)
        if why is not None:
            bad.append((int(dno[i]), int(seq[i]), why))
    return bad


def _only_key(keys: DeviceKeys | None) -> bytes | None:
    """The device's key when it has one valid at every time; else None (the reference then picks, per frame, the
    key valid at its signed sent_ms: these rows do not carry it)."""
    return keys.only if keys is not None else None


def _native_frame_check(rows: Rows, devices: list[str], raw_keys: dict[str, DeviceKeys],
                        threads: int) -> list[tuple[int, int, str]]:
    """The frames of ``rows`` through the native check; those it does not prove through the reference."""
    dev_keys = [_only_key(raw_keys.get(d)) for d in devices]
    proven = nativelib.check_frames(rows.buf, rows.off[:, 3], rows.ln[:, 3], rows.off[:, 2], rows.ln[:, 2],
                                    dev_keys, rows.ints(0).astype(np.int32), MAX_FRAME_BYTES, threads)
    return _frame_problems(rows, np.flatnonzero(~proven).tolist(), devices, raw_keys, try_fast=False)


def _lower_priority() -> None:
    """Frame workers yield the CPU to the loading and comparing (which wait for nobody) and use what is left."""
    with contextlib.suppress(OSError):
        os.nice(10)


def _frames_part(dsn: str, devices: list[str], batch_ids: list[str] | None, part: int, parts: int,
                 snapshot: str | None = None, keys: dict[str, DeviceKeys] | None = None) -> list[tuple[int, int, str]]:
    """The problems of one share of the frames (by ``seq`` mod ``parts``): (device code, seq, why) of each
    frame that is unreadable, differs from its recorded SHA-256 or whose device signature does not verify.
    ``snapshot``: the caller's exported snapshot, so that every share sees the same store as it does.
    (The worker-process path, for when the native library is not built.)"""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if snapshot is not None:
            _enter_snapshot(conn, snapshot)
        raw_keys = keys if keys is not None else stored_keys(conn)
        rows = Rows(copy_out(conn, *_frames_query(devices, batch_ids, part, parts)), 4)
        if snapshot is not None:
            conn.execute("COMMIT")
    return _frame_problems(rows, range(len(rows)), devices, raw_keys, try_fast=True)


def _frames_then_check(rows_out: Future[Rows], dsn: str, snapshot: str, devices: list[str],
                       batch_ids: list[str] | None, raw_keys: dict[str, DeviceKeys]) -> list[tuple[int, int, str]]:
    try:
        rows = _frames_in_snapshot(dsn, snapshot, devices, batch_ids)
    except BaseException as exc:
        rows_out.set_exception(exc)
        raise
    rows_out.set_result(rows)
    return _native_frame_check(rows, devices, raw_keys, 2)


def _frames_in_snapshot(dsn: str, snapshot: str, devices: list[str], batch_ids: list[str] | None) -> Rows:
    return Rows(_copy_in_snapshot(dsn, snapshot, *_frames_query(devices, batch_ids)), 4)


def _attach_bad_frames(reports: list[Any], seen: Seen, findex: tuple[np.ndarray, np.ndarray, list[bytes]],
                       bad: list[tuple[int, int, str]]) -> None:
    """Each batch lists the bad frames its readings came in (from any window), once each, by (device, seq)."""
    if not bad:
        return
    c_bno, frame_row, all_devs = seen
    f_dev, f_seq = findex[0], findex[1]
    why = {(d, q): w for d, q, w in bad}
    rows = {(int(d), int(q)): i for i, (d, q) in enumerate(zip(f_dev.tolist(), f_seq.tolist(), strict=True))
            if (d, q) in why}
    bad_mask = np.zeros(len(f_dev), bool)
    bad_mask[list(rows.values())] = True
    hit = (frame_row >= 0) & bad_mask[np.maximum(frame_row, 0)]
    for b, fr in sorted(set(zip(c_bno[hit].tolist(), frame_row[hit].tolist(), strict=True)),
                        key=lambda t: (t[0], all_devs[int(f_dev[t[1]])], int(f_seq[t[1]]))):
        d, q = int(f_dev[fr]), int(f_seq[fr])
        reports[b].bad_frames.append((all_devs[d], q, why[(d, q)]))


def _mask(m: np.ndarray) -> np.ndarray | bool:
    """``True`` when the boolean mask keeps everything (the usual case: then nothing is copied), else the mask."""
    return True if bool(m.all()) else m


def _take(a: np.ndarray, m: np.ndarray | bool) -> np.ndarray:
    return a if m is True else a[m]


def _argsort(key: np.ndarray) -> np.ndarray:
    """A stable argsort; keys that are already in order (the usual case: the store returns them so) cost one pass."""
    if key.size < 2 or bool((key[1:] >= key[:-1]).all()):
        return np.arange(key.size, dtype=np.int64)
    return np.argsort(key, kind="stable")


def _dense(*cols: np.ndarray) -> tuple[list[np.ndarray], int]:
    """Order-preserving small codes for the values of several int64 arrays taken together, and their count."""
    lo = min((int(c.min()) for c in cols if c.size), default=0)
    hi = max((int(c.max()) for c in cols if c.size), default=0)
    if hi - lo < 2**31:
        return [c - lo for c in cols], hi - lo + 1
    uniq = np.unique(np.concatenate(cols))
    return [np.searchsorted(uniq, c) for c in cols], len(uniq)


def _pack(parts: list[tuple[np.ndarray, int]]) -> np.ndarray:
    total = 1
    for _, size in parts:
        total *= size
    if total >= 2**63:
        raise OverflowError("keys do not fit in 64 bits")
    key = np.zeros(len(parts[0][0]), np.int64)
    for col, size in parts:
        key = key * size + col.astype(np.int64)
    return key


def verify_bulk(dsn: str, backend: LedgerBackend, site: str | None = None, start: datetime | None = None,
                end: datetime | None = None, workers: int | None = None,
                keys: dict[str, DeviceKeys] | None = None, pending: set[tuple[str, int, int]] | None = None,
                frame_bad: list[tuple[int, int, str]] | None = None, snapshot: str | None = None,
                shared: dict[str, Any] | None = None) -> list[Any]:
    """``keys``: the device keys frames are checked with (the verifier's pinned ones); default: the store's.
    ``frame_bad``: every frame's verdict is already known (a full verify's completeness pass checked them all):
    the invalid ones as (device code in sorted device order, seq, why); their bytes are then not read again.
    ``snapshot``: read in this exported snapshot; ``shared``: what the completeness pass loaded in it (every
    reading and frame, ``ledger.complete_bulk.check_bulk``), used instead of loading them again."""
    gc_was_on = gc.isenabled()
    gc.disable()  # millions of short-lived objects and no cycles: the collector only costs time here
    try:
        return _verify_bulk(dsn, backend, site, start, end, workers, keys, pending or set(), frame_bad, snapshot,
                            shared or {})
    finally:
        if gc_was_on:
            gc.enable()


def _verify_bulk(dsn: str, backend: LedgerBackend, site: str | None, start: datetime | None,
                 end: datetime | None, workers: int | None, keys: dict[str, DeviceKeys] | None,
                 pending: set[tuple[str, int, int]], frame_bad: list[tuple[int, int, str]] | None,
                 snapshot: str | None, shared: dict[str, Any]) -> list[Any]:
    steps = replay_steps(dsn, backend, site, start, end, workers, keys, frame_bad is not None, snapshot, shared)
    next(steps)
    return finish(steps, pending, frame_bad)


Steps = Generator[None, tuple[set[tuple[str, int, int]], list[tuple[int, int, str]] | None], list[Any]]


def finish(steps: Steps, pending: set[tuple[str, int, int]], frame_bad: list[tuple[int, int, str]] | None) -> list[Any]:
    """The reports of a replay started with ``replay_steps`` (and advanced to its pause), given the signed late
    readings (``pending``) and, when it was told the frames are checked elsewhere, their verdicts (``frame_bad``)."""
    try:
        steps.send((pending, frame_bad))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise RuntimeError("the replay did not finish")


def replay_steps(dsn: str, backend: LedgerBackend, site: str | None, start: datetime | None, end: datetime | None,
                 workers: int | None, keys: dict[str, DeviceKeys] | None, frames_checked: bool, snapshot: str | None,
                 shared: dict[str, Any]) -> Steps:
    """The replay in two steps: ``next()`` loads and compares everything (batches, leaves, roots, readings), then
    pauses; ``finish`` hands it what only the completeness pass knows (``pending``; the frames' verdicts when
    ``frames_checked``) and gets the reports. So a whole-store verify replays while the completeness pass's
    signature checks run (``ledger.verify.verify_all``)."""
    from ledger.verify import verify_one_batch_rows

    params = {"site": site, "start": start, "end": end}
    with read_snapshot(dsn, snapshot) as (conn, snap):
        devices = sorted(d for (d,) in conn.execute("SELECT device_id FROM devices"))
        meta = conn.execute("SELECT batch_id, site_id, window_start, window_end, header, cardinality(leaf_devices), "
                            "cardinality(leaf_seqs), cardinality(leaf_idxs), length(leaf_hashes) FROM batches "
                            + BATCH_FILTER, params).fetchall()
        full = site is None and start is None and end is None
        batch_ids = [m[0] for m in meta]
        est = conn.execute("SELECT reltuples FROM pg_class WHERE oid = 'frames'::regclass").fetchone()
        n_frames = int(est[0]) if est and est[0] >= 0 else \
            conn.execute("SELECT count(*) FROM frames").fetchone()[0]  # type: ignore[index]
        only = None if full else batch_ids
        # the batches' windows: a batch's readings are its window's readings that its leaves hold, and those
        # no batch of the window holds (inserted, or late and not yet amended) — docs/proofs.md, "Batch"
        windows: list[Window] = []
        wno: dict[tuple[str, Any, Any], int] = {}
        for m in meta:
            k = (m[1], m[2], m[3])
            if k not in wno:
                wno[k] = len(windows)
                windows.append(k)
        bno_wno = np.array([wno[(m[1], m[2], m[3])] for m in meta], np.int64)
        raw_keys = keys if keys is not None else stored_keys(conn)
        side = ThreadPoolExecutor(2)
        pool = None
        try:
            # the stored leaves and (with the native check) the frames come over connections of their
            # own in the same snapshot while this one loads the readings
            stored_fut = shared.get("stored") or side.submit(_copy_in_snapshot, dsn, snap, STORED_QUERY, params)
            q = shared.get("queued") if full and shared.get("devices") == devices else None
            if frames_checked:
                # the caller checks every frame (verify_all's completeness pass): only their index, and
                # today's readings as it loaded them (in this snapshot) when it did
                cur = _current_of(q, windows, conn) if q is not None else None
                if cur is None:
                    cur = load_current(conn, windows, devices, snap, dsn)
                findex = _index_of_frames(q.frames) if q is not None else _frame_index(conn, devices, only)
            elif nativelib.LIB is not None:
                # the frames' bytes, then their check (which releases the GIL), on a side thread from
                # as soon as they arrive, while this thread loads the readings and compares the leaves
                frames_fut: Future[Rows] = Future()
                check_fut = side.submit(_frames_then_check, frames_fut, dsn, snap, devices, only, raw_keys)
                cur = load_current(conn, windows, devices, snap, dsn)
                findex = _index_of(frames_fut.result())
            else:
                procs = workers if workers is not None else (1 if n_frames < _INLINE_FRAMES else 2)
                parts = procs * 3 if procs > 1 else 1
                pool = ProcessPoolExecutor(procs, initializer=_lower_priority) if procs > 1 else None
                futs = [pool.submit(_frames_part, dsn, devices, only, k, parts, snap, raw_keys)
                        for k in range(parts)] if pool else []
                cur = load_current(conn, windows, devices, snap, dsn)
                findex = _frame_index(conn, devices, only)
            stored = Rows(stored_fut.result(), 4)
            reports, on_ledger, check, slow = _ledger_side(meta, backend, cur)
            seen = _compare(reports, meta, on_ledger, check, stored, cur, findex, devices, bno_wno, set())
            pending, frame_bad = yield
            if frames_checked:
                bad = frame_bad or []
            elif nativelib.LIB is not None:
                bad = check_fut.result()
            elif pool:
                # the shares no worker has started yet are done here, so no core idles at the end
                mine = {k: _frames_part(dsn, devices, only, k, parts, snap, raw_keys)
                        for k in reversed(range(parts)) if futs[k].cancel()}
                bad = [p for k in range(parts) for p in (mine[k] if k in mine else futs[k].result())]
            else:
                bad = _frames_part(dsn, devices, only, 0, 1, snap, raw_keys)
        finally:
            side.shutdown()
            if pool:
                pool.shutdown()
        if pending:  # a signed late reading awaiting its amendment is not "inserted"
            for rep in reports:
                if rep.inserted:
                    rep.inserted = [k for k in rep.inserted if k not in pending]
        if seen is not None:
            _attach_bad_frames(reports, seen, findex, bad)
        for b in np.flatnonzero(check):
            rep = reports[b]
            if rep.changed or rep.deleted or rep.inserted or rep.bad_frames:
                rep.status = "tampered"
        if slow:
            pubs = raw_keys
            unz = zstandard.ZstdDecompressor()
            for b in slow:
                m = meta[b]
                reports[b] = verify_one_batch_rows(conn, backend, m[0], m[1], m[2], m[3], bytes(m[4]), pubs, unz,
                                                   pending)
    return reports


def _ledger_side(meta: list[Any], backend: LedgerBackend,
                 cur: dict[str, np.ndarray]) -> tuple[list[Any], list[Any], np.ndarray, list[int]]:
    """Reports, the ledger's records, which batches the column path checks and which go row by row."""
    from ledger.verify import BatchReport

    reports = [BatchReport(m[0], m[1]) for m in meta]
    on_ledger = [backend.get(m[0]) for m in meta]
    check = np.zeros(len(meta), bool)
    slow: list[int] = []
    for b, (m, got) in enumerate(zip(meta, on_ledger, strict=True)):
        if got is None:
            reports[b].status = "missing_on_ledger"
        elif m[5] != m[6] or m[5] != m[7] or (m[8] or 0) != 32 * (m[5] or 0):
            slow.append(b)
        else:
            check[b] = True
            if header_bytes(got[0]) != bytes(m[4]):
                reports[b].status = "header_mismatch"
    if (cur["ch"] == 3).any():  # a channel outside the schema's CHECK: let the row path name it
        slow = [b for b in range(len(meta)) if check[b]] + slow
        check[:] = False
    return reports, on_ledger, check, slow


CURRENT_QUERY = """
SELECT (w.wno - 1)::int4, x.n, x.dno, x.ts, x.ch, x.e, x.p, x.seq, x.idx
FROM unnest(%(s)s::text[], %(a)s::timestamptz[], %(z)s::timestamptz[]) WITH ORDINALITY AS w(site_id, a, z, wno)
CROSS JOIN LATERAL (
    SELECT count(*)::int4 AS n, array_agg((dv.dno - 1)::int4) AS dno, array_agg(r.ts) AS ts,
           array_agg(CASE r.channel WHEN 'export' THEN 0 WHEN 'import' THEN 1 WHEN 'pv' THEN 2 ELSE 3 END::int2) AS ch,
           array_agg(r.energy_wh) AS e, array_agg(r.power_w) AS p, array_agg(r.seq) AS seq, array_agg(r.idx) AS idx
    FROM readings r JOIN devices d ON d.device_id = r.device_id
    JOIN unnest(%(d)s::text[]) WITH ORDINALITY AS dv(device_id, dno) ON dv.device_id = r.device_id
    WHERE d.site_id = w.site_id AND r.ts >= w.a AND r.ts < w.z
) x
"""
_CUR_COLS = ("dno", "ts", "ch", "e", "p", "seq", "idx")


Window = tuple[str, Any, Any]  # (site, window start, window end)


def _wparams(windows: list[Window], devices: list[str]) -> dict[str, Any]:
    return {"s": [w[0] for w in windows], "a": [w[1] for w in windows], "z": [w[2] for w in windows], "d": devices}


def load_current(conn: psycopg.Connection[Any], windows: list[Window], devices: list[str],
                 snapshot: str | None = None, dsn: str | None = None) -> dict[str, np.ndarray]:
    """Today's readings of the batches' windows as columns (``wno``: the window's number): every reading of
    the window's site and time range, sealed or not, frame or not. One binary COPY row per window: its
    readings come as arrays, so the client does no work per reading (psycopg hands COPY output over row by
    row). With ``snapshot`` (exported by ``conn``'s transaction) and ``dsn``, the second half of the windows
    comes over a second connection at the same time, so the server works on two cores."""
    if snapshot is None or dsn is None or len(windows) < 2:
        return _current_columns([(Rows(copy_out(conn, CURRENT_QUERY, _wparams(windows, devices)), 9), 0)])
    half = len(windows) // 2
    with ThreadPoolExecutor(1) as side:
        fut = side.submit(_copy_in_snapshot, dsn, snapshot, CURRENT_QUERY, _wparams(windows[half:], devices))
        first = Rows(copy_out(conn, CURRENT_QUERY, _wparams(windows[:half], devices)), 9)
        second = Rows(fut.result(), 9)
    return _current_columns([(first, 0), (second, half)])


_EPOCH_2000 = datetime(2000, 1, 1, tzinfo=UTC)


def _current_of(q: Any, windows: list[Window], conn: psycopg.Connection[Any]) -> dict[str, np.ndarray] | None:
    """``load_current``'s columns from the readings a completeness pass loaded in this snapshot (every reading of
    every registered device, ``ledger.sealqueue.Queued``): each reading in the window of its device's site that
    holds its ts. None when a site's windows overlap (a reading would then count in several): load them then."""
    site_of = dict(conn.execute("SELECT device_id, site_id FROM devices").fetchall())
    sites = sorted(set(site_of.values()) | {w[0] for w in windows})
    scode = {s_: i for i, s_ in enumerate(sites)}
    dev_site = np.array([scode[site_of[d]] for d in q.devices], np.int64)
    us = q.us
    a = np.array([(w[1] - _EPOCH_2000) // timedelta(microseconds=1) for w in windows], np.int64)
    z = np.array([(w[2] - _EPOCH_2000) // timedelta(microseconds=1) for w in windows], np.int64)
    ws = np.array([scode[w[0]] for w in windows], np.int64)
    lo = min(int(a.min()) if a.size else 0, int(us.min()) if us.size else 0)
    hi = max(int(z.max()) if z.size else 0, int(us.max()) if us.size else 0)
    span = hi - lo + 1
    if span * (len(sites) + 1) >= 2**62:
        return None
    order = np.lexsort((a, ws))
    wa, wz = ws[order] * span + (a[order] - lo), ws[order] * span + (z[order] - lo)
    if bool((wz[:-1] > wa[1:]).any()) or bool((wz < wa).any()):
        return None  # overlapping (or inverted) windows: the query's semantics, reading by reading
    key = dev_site[q.dev] * span + (us - lo)
    pos = np.searchsorted(wa, key, side="right") - 1
    inside = (pos >= 0) & (key < wz[np.maximum(pos, 0)])
    sel = np.flatnonzero(inside)
    return {"wno": order[pos[sel]].astype(np.int64), "dno": q.dev[sel], "ts": us[sel], "ch": q.ch[sel], "e": q.e[sel],
            "p": q.p[sel], "seq": q.seq[sel], "idx": q.idx[sel]}


def _current_columns(parts: list[tuple[Rows, int]]) -> dict[str, np.ndarray]:
    """The columns of one or more COPY results of CURRENT_QUERY (each with the batch number its rows
    count from), written straight into one array per column."""
    counts = [rows.ints(1) for rows, _ in parts]
    sizes = [int(c.sum()) for c in counts]
    total = sum(sizes)
    out = {"wno": np.concatenate([np.repeat(rows.ints(0) + base, c) for (rows, base), c in zip(parts, counts, strict=True)])}
    for k, name in enumerate(_CUR_COLS, start=2):
        col = np.empty(total, np.int64)
        at = 0
        for (rows, _), c, size in zip(parts, counts, sizes, strict=True):
            got, per_row = rows.array_ints_into(k, col[at:at + size])
            if got != size or not np.array_equal(per_row, c):
                raise ValueError("readings arrays of unequal length")  # cannot happen: one aggregate pass
            at += size
        out[name] = col
    return out


Seen = tuple[np.ndarray, np.ndarray, list[str]]  # (batch of each checked reading, its frame row or -1, device names)


def _compare(reports: list[Any], meta: list[Any], on_ledger: list[Any], check: np.ndarray, stored: Rows,
             cur: dict[str, np.ndarray], findex: tuple[np.ndarray, np.ndarray, list[bytes]],
             devices: list[str], bno_wno: np.ndarray, pending: set[tuple[str, int, int]]) -> Seen | None:
    """Leaves and roots of the checked batches; returns which frame each of their readings came in."""
    nb = len(meta)
    if not check.any():
        return None
    # Batch records whose arrays disagree in length (replayed row by row) are left out here, so that
    # the other batches' columns stay aligned.
    good = np.array([m[5] == m[6] == m[7] and (m[8] or 0) == 32 * (m[5] or 0) for m in meta], bool)
    counts = np.array([m[5] or 0 for m in meta], np.int64) * good

    def column(k: int) -> tuple[np.ndarray, np.ndarray]:
        return np.repeat(good, [m[k] or 0 for m in meta]), np.array([m[k] or 0 for m in meta], np.int64)

    # --- stored leaves: keys and hashes of every batch, in leaf order
    in_good, n_all = column(5)
    eo, el, _ = stored.array_elems(0, int(n_all.sum()))
    in_good = _mask(in_good)
    eo, el = _take(eo, in_good), _take(el, in_good)
    runs = stored.elem_runs(eo, el)
    sbuf = stored.buf
    names = [sbuf[eo[i]:eo[i] + el[i]].tobytes().decode() for i in runs]
    all_devs = list(devices)
    code = {d: i for i, d in enumerate(all_devs)}
    for nm in sorted(set(names) - code.keys()):  # sealed devices no longer registered
        all_devs.append(nm)
    all_devs_sorted = sorted(all_devs)
    rank = np.array([all_devs_sorted.index(d) for d in all_devs], np.int64) if len(all_devs) != len(devices) \
        else np.arange(len(devices), dtype=np.int64)
    code = {d: i for i, d in enumerate(all_devs)}
    run_code = np.array([code[nm] for nm in names], np.int64)
    s_dev = rank[np.repeat(run_code, np.diff(np.append(runs, eo.size)))] if eo.size else np.zeros(0, np.int64)
    s_seq = _take(stored.array_ints(1, int(column(6)[1].sum()))[0], _mask(column(6)[0]))
    s_idx = _take(stored.array_ints(2, int(column(7)[1].sum()))[0], _mask(column(7)[0]))
    hoff, hln = stored.off[:, 3], stored.ln[:, 3]
    s_hash = bulk.gather(stored.buf, hoff[good], np.maximum(hln[good], 0)).reshape(-1, 32)
    starts = np.concatenate([[0], np.cumsum(counts)])
    cur["bno"] = _batch_of(cur, bno_wno, counts, s_dev, s_seq, s_idx, rank, len(all_devs))
    side = ThreadPoolExecutor(1)  # the roots (GIL released) while this thread goes on
    roots_fut = side.submit(bulk.roots, s_hash, starts)
    try:
        seen = _compare_leaves(reports, nb, check, s_hash, s_dev, s_seq, s_idx, counts, cur, findex, all_devs,
                               all_devs_sorted, rank, pending)
        roots = roots_fut.result()
    finally:
        side.shutdown()
    for b in np.flatnonzero(check):
        header = on_ledger[b][0]
        if roots[b].tobytes().hex() != header.root or counts[b] != header.leaf_count:
            reports[b].status = "tampered"
    return seen


def _batch_of(cur: dict[str, np.ndarray], bno_wno: np.ndarray, counts: np.ndarray, s_dev: np.ndarray,
              s_seq: np.ndarray, s_idx: np.ndarray, rank: np.ndarray, nd: int) -> np.ndarray:
    """The batch each current reading belongs to: the batch of its window whose leaves hold its key; else the
    first batch of the window holding its frame; else the window's first batch (then it shows as inserted)."""
    nb, nw = len(bno_wno), int(bno_wno.max()) + 1 if len(bno_wno) else 0
    c_wno = cur["wno"]
    if c_wno.size == 0:
        return np.zeros(0, np.int64)
    s_bno = np.repeat(np.arange(nb, dtype=np.int64), counts)
    s_wno = bno_wno[s_bno]
    c_dev = rank[cur["dno"]]
    (ss, cs), ns = _dense(s_seq, cur["seq"])
    (si, ci), ni = _dense(s_idx, cur["idx"])
    first = np.full(nw, -1, np.int64)
    for b in range(nb - 1, -1, -1):  # meta is ordered by site, window, batch id: the seal batch comes first
        first[bno_wno[b]] = b
    out = first[c_wno].copy()
    if s_bno.size == 0:
        return out

    def lookup(skey: np.ndarray, ckey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # == np.lexsort((s_bno, skey)): s_bno never decreases along the stored leaves, so a stable sort by skey
        # keeps equal keys in batch order
        o = np.argsort(skey, kind="stable")
        sk = skey[o]
        p = np.searchsorted(sk, ckey)
        pc = np.minimum(p, len(sk) - 1)
        return (p < len(sk)) & (sk[pc] == ckey), s_bno[o[pc]]

    by_frame, b_frame = lookup(_pack([(s_wno, nw), (s_dev, nd), (ss, ns)]), _pack([(c_wno, nw), (c_dev, nd), (cs, ns)]))
    out = np.where(by_frame, b_frame, out)
    by_key, b_key = lookup(_pack([(s_wno, nw), (s_dev, nd), (ss, ns), (si, ni)]),
                           _pack([(c_wno, nw), (c_dev, nd), (cs, ns), (ci, ni)]))
    return np.where(by_key, b_key, out)


def _compare_leaves(reports: list[Any], nb: int, check: np.ndarray, s_hash: np.ndarray, s_dev: np.ndarray,
                    s_seq: np.ndarray, s_idx: np.ndarray, counts: np.ndarray, cur: dict[str, np.ndarray],
                    findex: tuple[np.ndarray, np.ndarray, list[bytes]], all_devs: list[str],
                    all_devs_sorted: list[str], rank: np.ndarray, pending: set[tuple[str, int, int]]) -> Seen:
    s_bno = np.repeat(np.arange(nb, dtype=np.int64), counts)
    # --- frames: recorded SHA-256 (for the leaves), by (device, seq)
    f_dev, f_seq, f_sha = findex[0].astype(np.int64), findex[1], findex[2]

    # --- current readings of the checked batches
    c_bno = cur["bno"]
    keep = _mask(check[c_bno] if c_bno.size else np.zeros(0, bool))
    c_bno = _take(c_bno, keep)
    c_dev = rank[_take(cur["dno"], keep)]
    f_dev_r = rank[f_dev] if f_dev.size else f_dev
    c_seq = _take(cur["seq"], keep)
    (fs, cs), ns = _dense(f_seq, c_seq)
    fkey = _pack([(f_dev_r, len(all_devs)), (fs, ns)])
    order = _argsort(fkey)
    fkey_sorted = fkey[order]
    ckey = _pack([(c_dev, len(all_devs)), (cs, ns)])
    pos = np.searchsorted(fkey_sorted, ckey)
    pos_c = np.minimum(pos, max(len(fkey_sorted) - 1, 0))
    has_frame = (pos < len(fkey_sorted)) & (fkey_sorted[pos_c] == ckey) if len(fkey_sorted) else np.zeros(len(ckey), bool)
    frame_row = np.where(has_frame, order[pos_c] if len(order) else 0, -1)

    seen = (c_bno, frame_row, all_devs)

    # leaves as they are today: in the batch's window and site (as loaded), with their frame
    live = _mask(has_frame)
    us = _take(_take(cur["ts"], keep), live)
    rel = us + _EPOCH_2000_US
    ts_ms = np.where(rel >= 0, (rel + 500) // 1000, -((-rel + 500) // 1000))  # numeric → bigint rounds half away
    dev_tab = bulk.StringTable.of_json(all_devs)
    cols = bulk.LeafColumns(devices=dev_tab, channels=bulk.StringTable.of_json(CHANNELS),
                            frames=bulk.StringTable.of_bytes(f_sha),
                            device=_take(_take(cur["dno"], keep), live).astype(np.int32),
                            channel=_take(_take(cur["ch"], keep), live).astype(np.int32),
                            frame=_take(frame_row, live).astype(np.int32), ts_ms=ts_ms,
                            energy_wh=_take(_take(cur["e"], keep), live), power_w=_take(_take(cur["p"], keep), live),
                            seq=_take(c_seq, live), idx=_take(_take(cur["idx"], keep), live))
    c_hash = bulk.leaf_hashes(cols, threads=2, strict=False)  # a tampered out-of-range value is named, not raised
    c_bno, c_dev, c_seq, c_idx = _take(c_bno, live), _take(c_dev, live), _take(c_seq, live), cols.idx
    c_ch, c_ts = cols.channel, ts_ms

    # --- compare by key (batch, device, seq, idx); keys sort like the report's tuples
    sel = _mask(check[s_bno] if s_bno.size else np.zeros(0, bool))
    (ss, cs2), nseq = _dense(_take(s_seq, sel), c_seq)
    (si, ci), nidx = _dense(_take(s_idx, sel), c_idx)
    nd = len(all_devs)
    skey = _pack([(_take(s_bno, sel), nb), (_take(s_dev, sel), nd), (ss, nseq), (si, nidx)])
    ckey = _pack([(c_bno, nb), (c_dev, nd), (cs2, nseq), (ci, nidx)])
    s_rows = np.arange(len(s_bno), dtype=np.int64) if sel is True else np.flatnonzero(sel)
    so = _argsort(skey)
    skey, s_rows = skey[so], s_rows[so]
    last = np.append(skey[1:] != skey[:-1], skey.size > 0)  # a repeated stored key: the last one in leaf order counts
    skey, s_rows = skey[last], s_rows[last]
    co = _argsort(ckey)
    ckey_s = ckey[co]
    dup = np.flatnonzero(ckey_s[1:] == ckey_s[:-1])
    if dup.size:  # a repeated key today: the last in leaf order (ts, then channel) counts, as with a dict
        drop = set()
        for lo in np.flatnonzero(np.diff(np.concatenate([[False], ckey_s[1:] == ckey_s[:-1], [False]]).astype(np.int8)) == 1):
            hi = lo
            while hi + 1 < len(ckey_s) and ckey_s[hi + 1] == ckey_s[lo]:
                hi += 1
            group = [int(j) for j in co[lo:hi + 1]]
            drop.update(group)
            drop.discard(max(group, key=lambda j: (int(c_ts[j]), int(c_ch[j]))))
        kept = np.array([j for j in co if j not in drop], np.int64)
        co, ckey_s = kept, ckey[kept]
    p = np.searchsorted(skey, ckey_s)
    pc = np.minimum(p, max(len(skey) - 1, 0))
    found = (p < len(skey)) & (skey[pc] == ckey_s) if len(skey) else np.zeros(len(ckey_s), bool)
    diff = found & bulk.rows_differ(s_hash, s_rows[pc], c_hash, co) if len(skey) else found
    q = np.searchsorted(ckey_s, skey)
    qc = np.minimum(q, max(len(ckey_s) - 1, 0))
    still = (q < len(ckey_s)) & (ckey_s[qc] == skey) if len(ckey_s) else np.zeros(len(skey), bool)

    def name(dev: int, seq: int, idx: int) -> tuple[str, int, int]:
        return (all_devs_sorted[dev], seq, idx)

    for j in np.flatnonzero(diff):
        r = co[j]
        reports[int(c_bno[r])].changed.append(name(int(c_dev[r]), int(c_seq[r]), int(c_idx[r])))
    for j in np.flatnonzero(~found):
        r = co[j]
        key = name(int(c_dev[r]), int(c_seq[r]), int(c_idx[r]))
        if key not in pending:  # a signed late reading awaiting its amendment is not "inserted"
            reports[int(c_bno[r])].inserted.append(key)
    for j in np.flatnonzero(~still):
        r = s_rows[j]
        reports[int(s_bno[r])].deleted.append(name(int(s_dev[r]), int(s_seq[r]), int(s_idx[r])))
    return seen
