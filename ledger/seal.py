"""Sealing: every complete window of a site's readings becomes a Merkle-rooted, anchored batch.

Owns: finding windows to seal (per site, fixed length, older than a grace period, holding
unsealed readings), reading them in the documented leaf order (device_id, ts, channel, seq, idx),
building the RFC 6962 root over their canonical leaves, the header (hash-chained per site),
anchoring it on a ``LedgerBackend`` and recording the batch (with its leaf keys and hashes) in
the store. A window sealed before gets an *amendment* batch for readings that arrived late.
Docs: docs/proofs.md.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
import rfc8785

from ledger import bulk, merkle
from ledger.backend import (
    AlreadyAnchored,
    BatchHeader,
    LedgerBackend,
    LedgerMismatch,
    Receipt,
    header_hash,
)
from ledger.canonical import Leaf, leaf_bytes

#: SHA-256 of the RFC 8785 encoding of the empty findings list (``[]``).
EMPTY_FINDINGS_DIGEST = hashlib.sha256(b"[]").hexdigest()


#: The readings of one batch as the replay sees them (docs/proofs.md, "Batch"): those of its site and window
#: whose key is one of its sealed leaves, and those of the window that no batch of it holds, attributed to the
#: batch holding their frame (else the window's first batch) — so a forged or late reading shows as inserted.
LEAF_QUERY = """
WITH wb AS (SELECT b.batch_id, k.d, k.s, k.i FROM batches b, unnest(b.leaf_devices, b.leaf_seqs, b.leaf_idxs) AS k(d, s, i)
            WHERE b.site_id = %(site)s AND b.window_start = %(a)s)
SELECT r.device_id, (extract(epoch FROM r.ts) * 1000)::bigint, r.channel, r.energy_wh, r.power_w, r.seq, r.idx,
       f.frame_sha256
FROM readings r JOIN devices d USING (device_id) JOIN frames f USING (device_id, seq)
WHERE d.site_id = %(site)s AND r.ts >= %(a)s AND r.ts < %(b)s AND (
    EXISTS (SELECT 1 FROM wb WHERE wb.batch_id = %(id)s AND (wb.d, wb.s, wb.i) = (r.device_id, r.seq, r.idx))
    OR (NOT EXISTS (SELECT 1 FROM wb WHERE (wb.d, wb.s, wb.i) = (r.device_id, r.seq, r.idx))
        AND %(id)s = coalesce((SELECT min(wb.batch_id) FROM wb WHERE (wb.d, wb.s) = (r.device_id, r.seq)),
                              (SELECT min(wb.batch_id) FROM wb))))
ORDER BY r.device_id, r.ts, r.channel, r.seq, r.idx
"""


@dataclass(frozen=True)
class SealedBatch:
    """A batch sealed by this run: its header and its leaves (keys and hashes, in leaf order)."""

    header: BatchHeader
    _keys: tuple[list[str], np.ndarray, np.ndarray, np.ndarray]  # (device names, device code, seq, idx)
    _hashes: np.ndarray  # (n, 32)

    @property
    def leaf_keys(self) -> list[tuple[str, int, int]]:
        names, dev, seq, idx = self._keys
        return list(zip([names[d] for d in dev.tolist()], seq.tolist(), idx.tolist(), strict=True))

    @property
    def leaf_hashes(self) -> list[bytes]:
        return bulk.as_bytes_list(self._hashes)


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def load_leaves(conn: psycopg.Connection[Any], site: str, start: datetime, end: datetime,
                batch_id: str) -> list[tuple[tuple[str, int, int], bytes]]:
    """(key, leaf hash) of the batch's readings as they are now (``LEAF_QUERY``), in leaf order: the row
    reference of the replay."""
    out = []
    for dev, ts_ms, ch, e, p, seq, idx, fsha in conn.execute(LEAF_QUERY, {"site": site, "a": start, "b": end,
                                                                          "id": batch_id}):
        out.append(((dev, seq, idx), _leaf_hash_or_sentinel(dev, ts_ms, ch, e, p, seq, idx, bytes(fsha))))
    return out


#: The "hash" of a stored row that no canonical leaf can encode (a value outside the leaf's domain, e.g. an
#: integer beyond ±(2^53−1) written into the store): it equals no real leaf hash, so the row is named as
#: changed/inserted instead of stopping the replay, and sealing refuses it (no signed frame holds it).
UNENCODABLE = b"\xff" * 32


def _leaf_hash_or_sentinel(dev: str, ts_ms: int, ch: str, e: int, p: int, seq: int, idx: int, fsha: bytes) -> bytes:
    try:
        leaf = Leaf(device=dev, ts_ms=ts_ms, channel=ch, energy_wh=e, power_w=p, seq=seq, idx=idx,
                    frame_sha256=fsha.hex())
        return merkle.leaf_hash(leaf_bytes(leaf))
    except ValueError:  # CanonicalError: not representable as a canonical leaf
        return UNENCODABLE


#: The window's readings as one binary COPY row of arrays (no per-reading client work): device rank
#: in the database's own ``ORDER BY device_id`` (the collation LEAF_QUERY sorts with), ts in µs,
#: channel code, values, and the frame's SHA-256 per reading. Same rows as LEAF_QUERY.
_ORIGIN_MS = 946_684_800_000  # windows are aligned to 2000-01-01T00:00Z (PostgreSQL's date_bin origin here)


def seal_windows(dsn: str, backend: LedgerBackend, window_s: int = 3600, grace_s: int = 900,
                 now_ms: int | None = None, site: str | None = None,
                 progress: Callable[[int, int], None] | None = None, max_workers: int = 8,
                 refused_out: list[tuple[str, int, int]] | None = None) -> list[SealedBatch]:
    """Seal every complete window holding queued readings; return the batches made, in (site, window) order.

    One read-write snapshot: the queued frames (``unsealed_frames``) with readings before the cut (the last
    window boundary at least ``grace_s`` before now) and all their readings are loaded in bulk and checked
    against their signed frames (``ledger.sealqueue.backed``); the backed readings of each (site, window)
    not already in one of its batches become its batch (a window sealed before gets an amendment); headers
    are chained per site and anchored (sites concurrently, up to ``max_workers``); batches are recorded and
    fully sealed frames dequeued in the same transaction. Readings no valid signed frame backs are never
    sealed: their keys go to ``refused_out`` and ``verify`` names each. Readings are never rewritten.
    """
    with bulk.reusing_freed_memory():  # large columns come and go: reuse their pages
        return _seal_windows(dsn, backend, window_s, grace_s, now_ms, site, progress, max_workers, refused_out)


def _seal_windows(dsn: str, backend: LedgerBackend, window_s: int, grace_s: int, now_ms: int | None,
                  site: str | None, progress: Callable[[int, int], None] | None, max_workers: int,
                  refused_out: list[tuple[str, int, int]] | None) -> list[SealedBatch]:
    from ledger.complete import stored_keys
    from ledger.replay import _bulk_settings
    from ledger.sealqueue import check, load_queue

    W = window_s * 1000
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    cut = _ORIGIN_MS + ((now - grace_s * 1000 - _ORIGIN_MS) // W) * W
    if refused_out is None:
        refused_out = []
    with psycopg.connect(dsn) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            _bulk_settings(conn)
            _fast_toast(conn)
            n_queued, lo_ms, hi_ms = conn.execute(
                "SELECT count(*), min(q.min_ts_ms), max(q.max_ts_ms) FROM unsealed_frames q JOIN devices d USING (device_id) "
                "WHERE q.min_ts_ms < %s AND (%s::text IS NULL OR d.site_id = %s)", (cut, site, site)).fetchone()  # type: ignore[misc]
            if not n_queued:
                return []
            devices = sorted(d for (d,) in conn.execute("SELECT device_id FROM devices"))
            code = {d: i for i, d in enumerate(devices)}
            reg = dict(conn.execute("SELECT device_id, site_id FROM devices").fetchall())
            history = stored_keys(conn)  # each frame with the registered key valid at its signed sent_ms
            db_order = [d for (d,) in conn.execute("SELECT device_id FROM devices ORDER BY device_id")]
            rank = np.zeros(len(devices), np.int64)
            rank[[code[d] for d in db_order]] = np.arange(len(db_order))  # the leaf order is the database's
            snap = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
            key_list: list[Any] = [history.get(d) for d in devices]
            q, proven = load_queue(conn, dsn, snap, devices, key_list, cut, site, lo_ms, hi_ms)
            site_of = [reg[d] for d in devices]
            ok = check(q, site_of, key_list, proven)[0]
            done = _seal_backed(conn, backend, q, ok, rank, site_of, W, cut, refused_out, progress, max_workers)
            # dequeue the frames whose readings all lie before the cut (sealed, or refused for good)
            # (a DELETE in this REPEATABLE READ transaction sees only the rows of its snapshot: frames queued by ingest
            # meanwhile stay queued for the next run)
            conn.execute("DELETE FROM unsealed_frames u USING devices d WHERE d.device_id = u.device_id "
                         "AND u.min_ts_ms < %s AND u.max_ts_ms < %s AND (%s::text IS NULL OR d.site_id = %s)",
                         (cut, cut, site, site))
    return done


def _seal_backed(conn: psycopg.Connection[Any], backend: LedgerBackend, q: Any, ok: np.ndarray, rank: np.ndarray,
                 site_of: list[str], W: int, cut: int, refused_out: list[tuple[str, int, int]],
                 progress: Callable[[int, int], None] | None, max_workers: int) -> list[SealedBatch]:
    from ledger.sealqueue import CHANNELS

    sites = sorted(set(site_of))
    site_code = np.array([sites.index(s_) for s_ in site_of], np.int64)
    before = q.ts_ms < cut
    bad = before & ~ok
    if bad.any():
        refused_out.extend(zip([q.devices[d] for d in q.dev[bad].tolist()], q.seq[bad].tolist(), q.idx[bad].tolist(),
                               strict=True))
    sel = np.flatnonzero(before & ok)
    if sel.size == 0:
        return []
    r_site = site_code[q.dev[sel]]
    r_win = _ORIGIN_MS + (q.ts_ms[sel] - _ORIGIN_MS) // W * W
    # readings already sealed in one of their window's batches (a frame sealed up to an earlier cut)
    pairs = _distinct_pairs(r_site, r_win, W)
    prior = _prior_batches(conn, sites, pairs)
    if prior:
        keep = np.ones(sel.size, bool)
        for (sc, w), (_, leaf) in prior.items():
            m = np.flatnonzero((r_site == sc) & (r_win == w))
            for j in m.tolist():
                r = sel[j]
                if (q.devices[int(q.dev[r])], int(q.seq[r]), int(q.idx[r])) in leaf:
                    keep[j] = False
        sel, r_site, r_win = sel[keep], r_site[keep], r_win[keep]
        if sel.size == 0:
            return []
    ts = q.ts_ms[sel]  # within a (site, window): the window's number, and ts from its start, order like ts
    order = _leaf_order(r_site, (r_win - r_win.min()) // W, rank[q.dev[sel]], ts - r_win, q.ch[sel], q.seq[sel],
                        q.idx[sel])
    sel, r_site, r_win = sel[order], r_site[order], r_win[order]
    cols = bulk.LeafColumns(devices=bulk.StringTable.of_json(q.devices), channels=bulk.StringTable.of_json(CHANNELS),
                            frames=_sha_table(q), device=q.dev[sel].astype(np.int32), channel=q.ch[sel].astype(np.int32),
                            frame=q.frame_row[sel].astype(np.int32), ts_ms=q.ts_ms[sel], energy_wh=q.e[sel],
                            power_w=q.p[sel], seq=q.seq[sel], idx=q.idx[sel])
    hashes = bulk.leaf_hashes(cols, threads=2)
    brk = np.flatnonzero((np.diff(r_site) != 0) | (np.diff(r_win) != 0)) + 1
    starts = np.concatenate([[0], brk, [sel.size]]).astype(np.int64)
    roots = bulk.roots(hashes, starts, threads=2)
    groups = [(int(r_site[a]), int(r_win[a]), int(a), int(b)) for a, b in zip(starts[:-1], starts[1:], strict=True)]
    digests = _findings_digests(conn, sites, groups, W)
    now_sealed = int(time.time() * 1000)
    by_site: dict[int, list[int]] = {}
    for g, (sc, _, _, _) in enumerate(groups):
        by_site.setdefault(sc, []).append(g)
    lock = threading.Lock()
    count = [0]

    def header_of(g: int, prev: str) -> BatchHeader:
        sc, w, a, b = groups[g]
        n_prior = prior.get((sc, w), (0, set()))[0]
        base = f"{sites[sc]}:{datetime.fromtimestamp(w / 1000, UTC).strftime('%Y%m%dT%H%M%SZ')}"
        return BatchHeader(batch_id=base if n_prior == 0 else f"{base}:a{n_prior}", site=sites[sc],
                           kind="seal" if n_prior == 0 else "amendment", window_start_ms=w, window_end_ms=w + W,
                           leaf_count=b - a, root=roots[g].tobytes().hex(), prev_hash=prev,
                           findings_digest=digests[g], sealed_ms=now_sealed, amends=base if n_prior else None)

    def chain(sc: int) -> list[tuple[int, BatchHeader, Receipt]]:
        gs = by_site[sc]
        many = getattr(backend, "anchor_many", None)
        if many is not None:  # the local ledger: the site's whole chain in one append (one fsync)
            headers, prev = [], backend.head(sites[sc])
            for g in gs:
                headers.append(header_of(g, prev))
                prev = header_hash(headers[-1])
            try:
                receipts = many(headers)
            except AlreadyAnchored:
                pass  # an earlier run anchored some and died before recording them: one by one, adopting those
            else:
                tick(len(gs))
                return list(zip(gs, headers, receipts, strict=True))
        out, prev = [], backend.head(sites[sc])
        for g in gs:
            header, receipt = _anchor(backend, header_of(g, prev))
            prev = header_hash(header)
            out.append((g, header, receipt))
            tick(1)
        return out

    def tick(n: int) -> None:
        if progress:
            with lock:
                count[0] += n
                progress(count[0], len(groups))

    from ledger.batchcopy import BatchWriter

    site_list = sorted(by_site)
    anchored: list[tuple[int, BatchHeader, Receipt]] = []
    with BatchWriter(conn, cols, hashes, q.devices) as out:
        def record(chained: list[tuple[int, BatchHeader, Receipt]]) -> None:
            anchored.extend(chained)
            out.write([(header, receipt, groups[g][2], groups[g][3]) for g, header, receipt in chained])

        if max_workers <= 1 or len(site_list) <= 1:
            for sc in site_list:
                record(chain(sc))
        else:  # each site's rows stream to the server as soon as its chain is anchored, while others anchor
            with ThreadPoolExecutor(min(max_workers, len(site_list)), thread_name_prefix="seal") as pool:
                for f in [pool.submit(chain, sc) for sc in site_list]:
                    record(f.result())
    anchored.sort(key=lambda t: t[0])
    made = []
    for g, header, _ in anchored:
        a, b = groups[g][2], groups[g][3]
        made.append(SealedBatch(header, (q.devices, cols.device[a:b], cols.seq[a:b], cols.idx[a:b]), hashes[a:b]))
    return made


def _fast_toast(conn: psycopg.Connection[Any]) -> None:
    """Batch records carry large leaf arrays: TOAST them with lz4 where the server has it (PostgreSQL >= 14 built
    with lz4), which writes them faster than pglz. Only how the bytes are stored differs, never what is read."""
    row = conn.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'").fetchone()
    if row and row[0]:
        conn.execute("SET LOCAL default_toast_compression = 'lz4'")


def _distinct_pairs(r_site: np.ndarray, r_win: np.ndarray, W: int) -> list[tuple[int, int]]:
    """The distinct (site code, window start) pairs of the readings, sorted (as ``sorted(set(zip(...)))``)."""
    if r_site.size == 0:
        return []
    w0 = int(r_win.min())
    widx = (r_win - w0) // W
    nw = int(widx.max()) + 1
    key = r_site * nw + widx
    cells = (int(r_site.max()) + 1) * nw
    if cells <= 50_000_000:  # a grid of (site, window) cells: one pass, no sort
        seen = np.zeros(cells, bool)
        seen[key] = True
        u = np.flatnonzero(seen)
    else:
        u = np.unique(key)
    return list(zip((u // nw).tolist(), (w0 + (u % nw) * W).tolist(), strict=True))


def _leaf_order(*keys: np.ndarray) -> np.ndarray:
    """``np.lexsort`` of ``keys`` (most significant first), by one stable argsort of the keys packed into one
    int64 when they fit and the packed keys leave no tie to the (seq, idx) below them; else the lexsort."""
    packed = keys[:5]  # site, window, device rank, ts, channel; (seq, idx) only break ties of duplicates
    total, key = 1, None
    if keys[0].size:
        lo = [int(k.min()) for k in packed]
        sizes = [int(k.max()) - m + 1 for k, m in zip(packed, lo, strict=True)]
        for size in sizes:
            total *= size
        if total < 2**62:
            key = np.zeros(keys[0].size, np.int64)
            for k, m, size in zip(packed, lo, sizes, strict=True):
                key = key * size + (k - m)
    if key is not None:
        order = np.argsort(key, kind="stable")
        ks = key[order]
        tie = ks[1:] == ks[:-1]
        if not bool(tie.any()):
            return order
        # rows with equal packed keys: order those among themselves by (seq, idx), the rest stays
        in_tie = np.zeros(ks.size, bool)
        in_tie[1:] |= tie
        in_tie[:-1] |= tie
        at = np.flatnonzero(in_tie)
        run = np.cumsum(np.concatenate([[True], ~tie]))[at]  # which run of equal keys each row is in
        rows = order[at]
        order[at] = rows[np.lexsort((keys[6][rows], keys[5][rows], run))]
        return order
    return np.lexsort(tuple(reversed(keys)))


def _anchor(backend: LedgerBackend, header: BatchHeader) -> tuple[BatchHeader, Receipt]:
    try:
        return header, backend.anchor(header)
    except AlreadyAnchored:
        # anchored by an earlier run that died before recording it: adopt it if it is this batch
        got = backend.get(header.batch_id)
        if got is None or got[0].root != header.root or got[0].leaf_count != header.leaf_count:
            raise LedgerMismatch(f"batch {header.batch_id} on the ledger differs from the store's readings") from None
        return got


def _sha_table(q: Any) -> bulk.StringTable:
    fr = q.frames
    n = len(fr)
    ln = np.maximum(fr.ln[:, 3], 0)
    blob = bulk.gather(fr.buf, fr.off[:, 3], ln)
    off = np.zeros(n + 1, np.int64)
    off[1:] = np.cumsum(ln)
    return bulk.StringTable(blob, off)


def _prior_batches(conn: psycopg.Connection[Any], sites: list[str],
                   pairs: list[tuple[int, int]]) -> dict[tuple[int, int], tuple[int, set[tuple[str, int, int]]]]:
    """For the (site, window) pairs that already have batches: how many, and the keys they hold."""
    if not pairs:
        return {}
    lo = datetime.fromtimestamp(min(w for _, w in pairs) / 1000, UTC)
    hi = datetime.fromtimestamp(max(w for _, w in pairs) / 1000, UTC)
    want = {(sites[sc], w) for sc, w in pairs}
    out: dict[tuple[int, int], tuple[int, set[tuple[str, int, int]]]] = {}
    for s_, w0, devs, seqs, idxs in conn.execute(
            "SELECT site_id, window_start, leaf_devices, leaf_seqs, leaf_idxs FROM batches "
            "WHERE site_id = ANY(%s) AND window_start >= %s AND window_start <= %s", (sorted({x for x, _ in want}), lo, hi)):
        w = _ms(w0)
        if (s_, w) not in want:
            continue
        k = (sites.index(s_), w)
        n, leaf = out.get(k, (0, set()))
        leaf |= set(zip(devs, seqs, idxs, strict=True))
        out[k] = (n + 1, leaf)
    return out


def _findings_digests(conn: psycopg.Connection[Any], sites: list[str], groups: list[tuple[int, int, int, int]],
                      W: int) -> list[str]:
    """``findings_digest`` of every group's window, from one query per run (findings are few)."""
    out = [EMPTY_FINDINGS_DIGEST] * len(groups)
    if not groups:
        return out
    lo = datetime.fromtimestamp(min(g[1] for g in groups) / 1000, UTC)
    hi = datetime.fromtimestamp((max(g[1] for g in groups) + W) / 1000, UTC)
    rows = conn.execute(
        "SELECT site_id, coalesce(device_id, ''), kind, severity, (extract(epoch FROM start_ts) * 1000)::bigint, "
        "(extract(epoch FROM end_ts) * 1000)::bigint, detector, detector_version FROM findings "
        "WHERE site_id = ANY(%s) AND start_ts < %s AND end_ts >= %s", (sites, hi, lo)).fetchall()
    if not rows:
        return out
    by_window: dict[tuple[int, int], list[tuple[Any, ...]]] = {}
    for s_, d, k, sev, a, b, det, v in rows:
        if s_ not in sites:
            continue
        sc = sites.index(s_)
        w = _ORIGIN_MS + (a - _ORIGIN_MS) // W * W
        while w <= b:  # every window [w, w + W) with start < w + W and end >= w
            by_window.setdefault((sc, w), []).append((d, k, a, b, det, v, sev))
            w += W
    for g, (sc, w, _, _) in enumerate(groups):
        items = sorted(by_window.get((sc, w), []))
        if items:
            out[g] = hashlib.sha256(rfc8785.dumps([
                {"device": d, "kind": k, "severity": sev, "start_ms": a, "end_ms": b, "detector": det,
                 "detector_version": v} for d, k, a, b, det, v, sev in items])).hexdigest()
    return out
