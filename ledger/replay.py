"""Bulk replay: ``verify`` over many batches from a few binary COPYs, with the checks done on columns.

Owns: the same checks and the same report as ``ledger.verify.verify_rows`` (docs/proofs.md, Verify),
done with one COPY of the batches' stored leaves, one COPY of their readings and a COPY of the
frames split between worker processes that each re-check their frames' SHA-256 and Ed25519
signature once. Leaf hashes are recomputed with ``ledger.bulk`` and compared with the stored ones as
arrays; only the differences become Python objects. Every reading and every frame of every batch
is still checked: nothing is sampled. A batch record the bulk reader cannot take apart (arrays of
different lengths, a hash blob that is not a multiple of 32 bytes) is replayed row by row.
Pure reporting: it never writes.
"""

from __future__ import annotations

import hashlib
import re
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
import zstandard
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError, CryptoError

from ledger import bulk
from ledger.backend import LedgerBackend, header_bytes
from ledger.pgbinary import Rows, copy_out

CHANNELS = ["export", "import", "pv"]  # sorted: codes order like the strings (the schema's CHECK)
_EPOCH_2000_US = 946_684_800_000_000
_INLINE_FRAMES = 20_000  # fewer frames than this: checked in this process (no worker start-up)

BATCH_FILTER = ("WHERE (%(site)s::text IS NULL OR site_id = %(site)s) AND (%(start)s::timestamptz IS NULL OR "
                "window_end > %(start)s) AND (%(end)s::timestamptz IS NULL OR window_start < %(end)s) "
                "ORDER BY site_id, window_start, batch_id")


def ed25519_ok(public_key: bytes, sig: bytes, msg: bytes) -> bool:
    """Ed25519 verification with the semantics of ``cryptography`` (OpenSSL), at libsodium's speed.

    libsodium (``crypto_sign_open``) runs the same cofactorless check ``[S]B == R + [k]A`` on the
    same bytes and additionally refuses small-order or non-canonical keys and small-order R, so
    whatever it accepts OpenSSL accepts too; anything it refuses (rare: a bad frame) is decided by
    ``cryptography``, the reference. tests/test_bulk.py checks the two agree.
    """
    if len(sig) == 64 and len(public_key) == 32:
        try:
            crypto_sign_open(sig + msg, public_key)
            return True
        except (BadSignatureError, CryptoError, ValueError, TypeError):
            pass
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(sig, msg)
        return True
    except (InvalidSignature, ValueError):
        return False


def _frame_ok_fast(raw_z: bytes, sha: bytes, public_key: bytes | None, unz: zstandard.ZstdDecompressor) -> bool:
    """True when the frame passes every check of ``verify.frame_problem`` (libsodium for Ed25519);
    False means "not sure": the caller then asks ``frame_problem`` for the verdict and its wording."""
    from firmware_sim.wire import b64url_decode, canonical_bytes, decode_frame

    if public_key is None:
        return False
    try:
        raw = unz.decompress(raw_z)
        if hashlib.sha256(raw).digest() != sha:
            return False
        frame = decode_frame(raw)
        sig = b64url_decode(frame.sig)  # type: ignore[arg-type]
        if len(sig) != 64:
            return False
        crypto_sign_open(sig + canonical_bytes(frame), public_key)
        return True
    except Exception:  # noqa: BLE001 — any doubt goes to the reference check
        return False


def _frames_part(dsn: str, devices: list[str], batch_ids: list[str] | None, part: int, parts: int,
                 snapshot: str | None = None) -> tuple[np.ndarray, np.ndarray, list[bytes], dict[int, str]]:
    """One share of the frames (by ``seq`` mod ``parts``): (device code, seq, recorded SHA-256, problems).
    ``snapshot``: the caller's exported snapshot, so that every share sees the same store as it does."""
    from ledger.verify import frame_problem

    unz = zstandard.ZstdDecompressor()
    with psycopg.connect(dsn, autocommit=True) as conn:
        if snapshot is not None:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            if not re.fullmatch(r"[0-9A-Fa-f-]+", snapshot):
                raise ValueError(f"not a snapshot id: {snapshot!r}")
            conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")  # takes no parameter
        raw_keys = {d: bytes(k) for d, k in conn.execute("SELECT device_id, public_key FROM devices")}
        keys = {d: Ed25519PublicKey.from_public_bytes(k) for d, k in raw_keys.items()}
        only = ("" if batch_ids is None else
                "AND (f.device_id, f.seq) IN (SELECT device_id, seq FROM readings WHERE batch_id = ANY(%(b)s))")
        rows = Rows(copy_out(conn, "SELECT (dv.dno - 1)::int4, f.seq, f.frame_sha256, f.raw_zstd FROM frames f "
                                   "JOIN unnest(%(d)s::text[]) WITH ORDINALITY AS dv(device_id, dno) USING (device_id) "
                                   f"WHERE ((f.seq %% %(n)s) + %(n)s) %% %(n)s = %(k)s {only}",
                            {"d": devices, "n": parts, "k": part, "b": batch_ids}), 4)
        if snapshot is not None:
            conn.execute("COMMIT")
    dno, seq = rows.ints(0).astype(np.int32), rows.ints(1)
    raw = rows.raw()
    off, ln = rows.off, rows.ln
    shas = [raw[off[i, 2]:off[i, 2] + ln[i, 2]] for i in range(len(rows))]
    bad: dict[int, str] = {}
    dev_keys = [raw_keys.get(d) for d in devices]
    for i in range(len(rows)):
        raw_z = raw[off[i, 3]:off[i, 3] + ln[i, 3]]
        if _frame_ok_fast(raw_z, shas[i], dev_keys[dno[i]], unz):
            continue
        why = frame_problem(raw_z, shas[i], keys.get(devices[dno[i]]), unz)
        if why is not None:
            bad[i] = why
    return dno, seq, shas, bad


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
                end: datetime | None = None, workers: int | None = None) -> list[Any]:
    from ledger.verify import BatchReport, verify_one_batch_rows

    params = {"site": site, "start": start, "end": end}
    with psycopg.connect(dsn) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            devices = sorted(d for (d,) in conn.execute("SELECT device_id FROM devices"))
            meta = conn.execute("SELECT batch_id, site_id, window_start, window_end, header, cardinality(leaf_devices), "
                                "cardinality(leaf_seqs), cardinality(leaf_idxs), length(leaf_hashes) FROM batches "
                                + BATCH_FILTER, params).fetchall()
            full = site is None and start is None and end is None
            batch_ids = [m[0] for m in meta]
            est = conn.execute("SELECT reltuples FROM pg_class WHERE oid = 'frames'::regclass").fetchone()
            n_frames = int(est[0]) if est and est[0] >= 0 else \
                conn.execute("SELECT count(*) FROM frames").fetchone()[0]  # type: ignore[index]
            procs = workers if workers is not None else (1 if n_frames < _INLINE_FRAMES else 2)
            snap = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
            only = None if full else batch_ids
            # More shares than workers: this process takes the shares no worker has started once its
            # own work (the readings) is done, so no core idles at the end.
            parts = procs * 3 if procs > 1 else 1
            pool = ProcessPoolExecutor(procs) if procs > 1 else None
            try:
                futs = [pool.submit(_frames_part, dsn, devices, only, k, parts, snap)
                        for k in range(parts)] if pool else []
                stored = Rows(copy_out(conn, "SELECT leaf_devices, leaf_seqs, leaf_idxs, leaf_hashes FROM batches "
                                       + BATCH_FILTER, params), 4)
                cur = load_current(conn, batch_ids, devices)
                if pool:
                    mine = {k: _frames_part(dsn, devices, only, k, parts, snap)
                            for k in reversed(range(parts)) if futs[k].cancel()}
                    frames = [mine[k] if k in mine else futs[k].result() for k in range(parts)]
                else:
                    frames = [_frames_part(dsn, devices, only, 0, 1, snap)]
            finally:
                if pool:
                    pool.shutdown()

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
            _compare(reports, meta, on_ledger, check, stored, cur, frames, devices)
            if slow:
                keys = {d: Ed25519PublicKey.from_public_bytes(bytes(k))
                        for d, k in conn.execute("SELECT device_id, public_key FROM devices")}
                unz = zstandard.ZstdDecompressor()
                for b in slow:
                    m = meta[b]
                    reports[b] = verify_one_batch_rows(conn, backend, m[0], m[1], m[2], m[3], bytes(m[4]), keys, unz)
    return reports


CURRENT_QUERY = """
SELECT (b.bno - 1)::int4, x.n, x.dno, x.ts, x.ch, x.e, x.p, x.seq, x.idx
FROM unnest(%(b)s::text[]) WITH ORDINALITY AS b(batch_id, bno) JOIN batches bt ON bt.batch_id = b.batch_id
CROSS JOIN LATERAL (
    SELECT count(*)::int4 AS n, array_agg((dv.dno - 1)::int4) AS dno, array_agg(r.ts) AS ts,
           array_agg(CASE r.channel WHEN 'export' THEN 0 WHEN 'import' THEN 1 WHEN 'pv' THEN 2 ELSE 3 END::int2) AS ch,
           array_agg(r.energy_wh) AS e, array_agg(r.power_w) AS p, array_agg(r.seq) AS seq, array_agg(r.idx) AS idx
    FROM readings r JOIN devices d ON d.device_id = r.device_id
    JOIN unnest(%(d)s::text[]) WITH ORDINALITY AS dv(device_id, dno) ON dv.device_id = r.device_id
    WHERE d.site_id = bt.site_id AND r.ts >= bt.window_start AND r.ts < bt.window_end AND r.batch_id = bt.batch_id
) x
"""
_CUR_COLS = ("dno", "ts", "ch", "e", "p", "seq", "idx")


def load_current(conn: psycopg.Connection[Any], batch_ids: list[str], devices: list[str]) -> dict[str, np.ndarray]:
    """Today's readings of the batches as columns: those ``load_leaves`` would read for each (the batch's
    site and window, marked with its id), frame or not. One binary COPY row per batch: its readings
    come as arrays, so the client does no work per reading (psycopg hands COPY output over row by row)."""
    rows = Rows(copy_out(conn, CURRENT_QUERY, {"b": batch_ids, "d": devices}), 9)
    counts = rows.ints(1)
    total = int(counts.sum())
    out = {"bno": np.repeat(rows.ints(0), counts)}
    for k, name in enumerate(_CUR_COLS, start=2):
        vals, got = rows.array_ints(k, total)
        if not np.array_equal(got, counts):
            raise ValueError("readings arrays of unequal length")  # cannot happen: one aggregate pass
        out[name] = vals
    return out


def _compare(reports: list[Any], meta: list[Any], on_ledger: list[Any], check: np.ndarray, stored: Rows,
             cur: dict[str, np.ndarray],
             frames: list[tuple[np.ndarray, np.ndarray, list[bytes], dict[int, str]]], devices: list[str]) -> None:
    nb = len(meta)
    if not check.any():
        return
    # Batch records whose arrays disagree in length (replayed row by row) are left out here, so that
    # the other batches' columns stay aligned.
    good = np.array([m[5] == m[6] == m[7] and (m[8] or 0) == 32 * (m[5] or 0) for m in meta], bool)
    counts = np.array([m[5] or 0 for m in meta], np.int64) * good

    def column(k: int) -> tuple[np.ndarray, np.ndarray]:
        return np.repeat(good, [m[k] or 0 for m in meta]), np.array([m[k] or 0 for m in meta], np.int64)

    # --- stored leaves: keys and hashes of every batch, in leaf order
    in_good, n_all = column(5)
    eo, el, _ = stored.array_elems(0, int(n_all.sum()))
    eo, el = eo[in_good], el[in_good]
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
    s_seq = stored.array_ints(1, int(column(6)[1].sum()))[0][column(6)[0]]
    s_idx = stored.array_ints(2, int(column(7)[1].sum()))[0][column(7)[0]]
    s_bno = np.repeat(np.arange(nb, dtype=np.int64), counts)
    hoff, hln = stored.off[:, 3], stored.ln[:, 3]
    s_hash = np.concatenate([stored.buf[hoff[b]:hoff[b] + max(hln[b], 0)] for b in range(nb) if good[b]] + [np.zeros(0, np.uint8)]).reshape(-1, 32) \
        if nb else np.zeros((0, 32), np.uint8)
    starts = np.concatenate([[0], np.cumsum(counts)])
    for b in np.flatnonzero(check):
        header = on_ledger[b][0]
        if bulk.root(s_hash[starts[b]:starts[b + 1]]).hex() != header.root or counts[b] != header.leaf_count:
            reports[b].status = "tampered"

    # --- frames: recorded SHA-256 (for the leaves) and problems, by (device, seq)
    f_dev = np.concatenate([f[0] for f in frames]).astype(np.int64)
    f_seq = np.concatenate([f[1] for f in frames])
    f_sha = [s for f in frames for s in f[2]]
    bad: dict[int, str] = {}
    base = 0
    for f in frames:
        bad.update({base + i: why for i, why in f[3].items()})
        base += len(f[0])

    # --- current readings of the checked batches
    c_bno = cur["bno"]
    keep = check[c_bno] if c_bno.size else np.zeros(0, bool)
    c_bno = c_bno[keep]
    c_dev = rank[cur["dno"][keep]]
    f_dev_r = rank[f_dev] if f_dev.size else f_dev
    c_seq = cur["seq"][keep]
    (fs, cs), ns = _dense(f_seq, c_seq)
    fkey = _pack([(f_dev_r, len(all_devs)), (fs, ns)])
    order = np.argsort(fkey, kind="stable")
    fkey_sorted = fkey[order]
    ckey = _pack([(c_dev, len(all_devs)), (cs, ns)])
    pos = np.searchsorted(fkey_sorted, ckey)
    pos_c = np.minimum(pos, max(len(fkey_sorted) - 1, 0))
    has_frame = (pos < len(fkey_sorted)) & (fkey_sorted[pos_c] == ckey) if len(fkey_sorted) else np.zeros(len(ckey), bool)
    frame_row = np.where(has_frame, order[pos_c] if len(order) else 0, -1)

    # bad frames per batch: the distinct frames its readings came in (any window), once each
    if bad:
        bad_mask = np.zeros(len(f_dev), bool)
        bad_mask[list(bad)] = True
        hit = has_frame & bad_mask[np.maximum(frame_row, 0)]
        for b, fr in sorted(set(zip(c_bno[hit].tolist(), frame_row[hit].tolist(), strict=True)),
                            key=lambda t: (t[0], all_devs[int(f_dev[t[1]])], int(f_seq[t[1]]))):
            reports[b].bad_frames.append((all_devs[int(f_dev[fr])], int(f_seq[fr]), bad[fr]))

    # leaves as they are today: in the batch's window and site (as loaded), with their frame
    live = has_frame
    us = cur["ts"][keep][live]
    rel = us + _EPOCH_2000_US
    ts_ms = np.where(rel >= 0, (rel + 500) // 1000, -((-rel + 500) // 1000))  # numeric → bigint rounds half away
    dev_tab = bulk.StringTable.of_json(all_devs)
    cols = bulk.LeafColumns(devices=dev_tab, channels=bulk.StringTable.of_json(CHANNELS),
                            frames=bulk.StringTable.of_bytes(f_sha), device=cur["dno"][keep][live].astype(np.int32),
                            channel=cur["ch"][keep][live].astype(np.int32), frame=frame_row[live].astype(np.int32),
                            ts_ms=ts_ms, energy_wh=cur["e"][keep][live], power_w=cur["p"][keep][live],
                            seq=c_seq[live], idx=cur["idx"][keep][live])
    c_hash = bulk.leaf_hashes(cols)
    c_bno, c_dev, c_seq, c_idx = c_bno[live], c_dev[live], c_seq[live], cols.idx
    c_ch, c_ts = cols.channel, ts_ms

    # --- compare by key (batch, device, seq, idx); keys sort like the report's tuples
    sel = check[s_bno] if s_bno.size else np.zeros(0, bool)
    (ss, cs2), nseq = _dense(s_seq[sel], c_seq)
    (si, ci), nidx = _dense(s_idx[sel], c_idx)
    nd = len(all_devs)
    skey = _pack([(s_bno[sel], nb), (s_dev[sel], nd), (ss, nseq), (si, nidx)])
    ckey = _pack([(c_bno, nb), (c_dev, nd), (cs2, nseq), (ci, nidx)])
    s_rows = np.flatnonzero(sel)
    so = np.argsort(skey, kind="stable")
    skey, s_rows = skey[so], s_rows[so]
    last = np.append(skey[1:] != skey[:-1], skey.size > 0)  # a repeated stored key: the last one in leaf order counts
    skey, s_rows = skey[last], s_rows[last]
    co = np.argsort(ckey, kind="stable")
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
    diff = found & (s_hash[s_rows[pc]] != c_hash[co]).any(axis=1) if len(skey) else found
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
        reports[int(c_bno[r])].inserted.append(name(int(c_dev[r]), int(c_seq[r]), int(c_idx[r])))
    for j in np.flatnonzero(~still):
        r = s_rows[j]
        reports[int(s_bno[r])].deleted.append(name(int(s_dev[r]), int(s_seq[r]), int(s_idx[r])))
    for b in np.flatnonzero(check):
        rep = reports[b]
        if rep.changed or rep.deleted or rep.inserted or rep.bad_frames:
            rep.status = "tampered"
