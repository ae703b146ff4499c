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

import msgspec
import numpy as np
import psycopg
import rfc8785
import zstandard

from firmware_sim.wire import b64url
from ledger import bulk, merkle
from ledger.backend import (
    AlreadyAnchored,
    BatchHeader,
    LedgerBackend,
    LedgerMismatch,
    header_bytes,
    header_hash,
)
from ledger.canonical import Leaf, leaf_bytes

#: SHA-256 of the RFC 8785 encoding of the empty findings list (``[]``).
EMPTY_FINDINGS_DIGEST = hashlib.sha256(b"[]").hexdigest()


def findings_digest(conn: psycopg.Connection[Any], site: str, start: datetime, end: datetime) -> str:
    """SHA-256 of the RFC 8785 list of the audit findings overlapping the window (docs/proofs.md)."""
    rows = conn.execute(
        "SELECT coalesce(device_id, ''), kind, severity, (extract(epoch FROM start_ts) * 1000)::bigint, "
        "(extract(epoch FROM end_ts) * 1000)::bigint, detector, detector_version FROM findings "
        "WHERE site_id = %s AND start_ts < %s AND end_ts >= %s ORDER BY 1, 2, 4, 5, 6, 7", (site, end, start)).fetchall()
    items = [{"device": d, "kind": k, "severity": s, "start_ms": a, "end_ms": b, "detector": det,
              "detector_version": v} for d, k, s, a, b, det, v in rows]
    return hashlib.sha256(rfc8785.dumps(items)).hexdigest()

LEAF_QUERY = """
SELECT r.device_id, (extract(epoch FROM r.ts) * 1000)::bigint, r.channel, r.energy_wh, r.power_w, r.seq, r.idx,
       f.frame_sha256
FROM readings r JOIN devices d USING (device_id) JOIN frames f USING (device_id, seq)
WHERE d.site_id = %s AND r.ts >= %s AND r.ts < %s AND {filter}
ORDER BY r.device_id, r.ts, r.channel, r.seq, r.idx
"""


@dataclass(frozen=True)
class SealedBatch:
    header: BatchHeader
    leaf_keys: list[tuple[str, int, int]]
    leaf_hashes: list[bytes]


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def load_leaves(conn: psycopg.Connection[Any], site: str, start: datetime, end: datetime,
                batch_id: str | None) -> list[tuple[tuple[str, int, int], bytes]]:
    """(key, leaf hash) of the window's readings: unsealed ones, or those of ``batch_id``."""
    flt = "r.batch_id IS NULL" if batch_id is None else "r.batch_id = %s"
    params: tuple[Any, ...] = (site, start, end) if batch_id is None else (site, start, end, batch_id)
    out = []
    for dev, ts_ms, ch, e, p, seq, idx, fsha in conn.execute(LEAF_QUERY.format(filter=flt), params):
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
BULK_QUERY = """
SELECT count(*)::int4, array_agg(dv.dno), array_agg(r.ts),
       array_agg(CASE r.channel WHEN 'export' THEN 0 WHEN 'import' THEN 1 WHEN 'pv' THEN 2 ELSE 3 END::int2),
       array_agg(r.energy_wh), array_agg(r.power_w), array_agg(r.seq), array_agg(r.idx), array_agg(f.frame_sha256)
FROM readings r JOIN devices d USING (device_id) JOIN frames f USING (device_id, seq)
JOIN (SELECT device_id, (row_number() OVER (ORDER BY device_id) - 1)::int4 AS dno FROM devices WHERE site_id = %(s)s) dv
  USING (device_id)
WHERE d.site_id = %(s)s AND r.ts >= %(a)s AND r.ts < %(b)s AND {filter}
"""
_CHANNELS = ["export", "import", "pv"]
_EPOCH_2000_US = 946_684_800_000_000


def _collation_ok(conn: psycopg.Connection[Any]) -> bool:
    """Whether the database sorts the three channel names like the codes above (it does in every
    collation we know; checked, not assumed, since the leaf order depends on it)."""
    row = conn.execute("SELECT array_agg(c ORDER BY c) FROM unnest(%s::text[]) c", (_CHANNELS[::-1],)).fetchone()
    return row is not None and list(row[0]) == _CHANNELS


def load_leaves_bulk(conn: psycopg.Connection[Any], site: str, start: datetime, end: datetime,
                     batch_id: str | None) -> tuple[list[tuple[str, int, int]], np.ndarray] | None:
    """``load_leaves`` from one binary COPY row of arrays, hashed with ``ledger.bulk``: (keys, ``(n, 32)``
    hashes) in the same order with the same bytes, or None when a value is outside what the bulk path
    handles (the caller then uses ``load_leaves``)."""
    got = load_window_bulk(conn, site, start, end, batch_id)
    return None if got is None else (got[0], got[1])


Values = list[tuple[int, str, int, int]]  # per leaf: (ts_ms, channel, energy_wh, power_w)


def load_window_bulk(conn: psycopg.Connection[Any], site: str, start: datetime, end: datetime,
                     batch_id: str | None) -> tuple[list[tuple[str, int, int]], np.ndarray, Values] | None:
    """``load_leaves_bulk`` and, per leaf, the reading's values (to be checked against its signed frame)."""
    from ledger.pgbinary import Rows, copy_out

    flt = "r.batch_id IS NULL" if batch_id is None else "r.batch_id = %(id)s"
    devs = [d for (d,) in conn.execute("SELECT device_id FROM devices WHERE site_id = %s ORDER BY device_id", (site,))]
    rows = Rows(copy_out(conn, BULK_QUERY.format(filter=flt), {"s": site, "a": start, "b": end, "id": batch_id}), 9)
    n = int(rows.ints(0)[0]) if len(rows) else 0
    if n == 0:
        return [], np.zeros((0, 32), np.uint8), []
    cols = []
    for k in range(1, 8):
        try:
            vals, cnt = rows.array_ints(k, n)
        except ValueError:
            return None
        if int(cnt[0]) != n:
            return None
        cols.append(vals)
    dno, us, ch, e, p, seq, idx = cols
    if (ch == 3).any():
        return None
    eo, el, _ = rows.array_elems(8, n)
    if (el != 32).any():
        return None
    raw = rows.buf
    sha = raw[(eo[:, None] + np.arange(32)).ravel()].reshape(n, 32)
    # ORDER BY device_id, ts, channel, seq, idx — a total order (the primary key is in it)
    order = np.lexsort((idx, seq, ch, us, dno))
    dno, us, ch, e, p, seq, idx, sha = (a[order] for a in (dno, us, ch, e, p, seq, idx, sha))
    rel = us + _EPOCH_2000_US
    ts_ms = np.where(rel >= 0, (rel + 500) // 1000, -((-rel + 500) // 1000))  # numeric → bigint rounds half away
    table = bulk.StringTable(np.ascontiguousarray(sha).reshape(-1), np.arange(n + 1, dtype=np.int64) * 32)
    c = bulk.LeafColumns(devices=bulk.StringTable.of_json(devs), channels=bulk.StringTable.of_json(_CHANNELS),
                         frames=table, device=dno.astype(np.int32), channel=ch.astype(np.int32),
                         frame=np.arange(n, dtype=np.int32), ts_ms=ts_ms, energy_wh=e, power_w=p, seq=seq, idx=idx)
    hashes = bulk.leaf_hashes(c, strict=False)  # out-of-range rows are refused by the frame check, not raised here
    keys = list(zip([devs[i] for i in dno.tolist()], seq.tolist(), idx.tolist(), strict=True))
    values = list(zip(ts_ms.tolist(), [_CHANNELS[i] for i in ch.tolist()], e.tolist(), p.tolist(), strict=True))
    return keys, hashes, values


def seal_windows(dsn: str, backend: LedgerBackend, window_s: int = 3600, grace_s: int = 900,
                 now_ms: int | None = None, site: str | None = None,
                 progress: Callable[[int, int], None] | None = None, max_workers: int = 8,
                 refused_out: list[tuple[str, int, int]] | None = None) -> list[SealedBatch]:
    """Seal every complete window with unsealed readings; return the batches made, in order.

    Sites are sealed concurrently (up to ``max_workers`` threads, each with its own connection):
    a site's windows are sealed strictly in order on one thread (its header chain), different sites'
    chains are independent, so a slow remote ledger (Fabric: one commit per anchor) is not
    serialised across sites. ``progress(done, total)`` is called under a lock, from any thread.
    On an error, no new window is started; the first error is raised once the others have stopped.
    Readings no valid signed frame backs are not sealed: their keys are added to ``refused_out`` and
    they stay unsealed (``verify`` names each one).
    """
    if refused_out is None:
        refused_out = []
    now = datetime.fromtimestamp((now_ms or int(time.time() * 1000)) / 1000, UTC)
    with psycopg.connect(dsn, autocommit=True) as conn:
        windows = conn.execute(
            "SELECT d.site_id, date_bin(make_interval(secs => %s), r.ts, timestamptz '2000-01-01') AS w "
            "FROM readings r JOIN devices d USING (device_id) "
            "WHERE r.batch_id IS NULL AND (%s::text IS NULL OR d.site_id = %s) GROUP BY 1, 2 ORDER BY 1, 2",
            (window_s, site, site)).fetchall()
        bulk_ok = _collation_ok(conn)
    todo = [(s, w) for s, w in windows if (now - w).total_seconds() >= window_s + grace_s]
    by_site: dict[str, list[datetime]] = {}
    for site_id, start in todo:
        by_site.setdefault(site_id, []).append(start)
    lock = threading.Lock()
    done = [0]
    stop = threading.Event()

    def seal_site(site_id: str) -> list[SealedBatch]:
        out: list[SealedBatch] = []
        with psycopg.connect(dsn, autocommit=True) as c:
            for start in by_site[site_id]:
                if stop.is_set():
                    break
                c.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                try:
                    with c.transaction():
                        made = _seal_one(c, backend, site_id, start, window_s, bulk_ok, refused_out)
                        if made is not None:
                            out.append(made)
                except BaseException:
                    stop.set()
                    raise
                if progress:
                    with lock:
                        done[0] += 1
                        progress(done[0], len(todo))
        return out

    sites = list(by_site)  # in site order: the result keeps the (site, window) order
    if max_workers <= 1 or len(sites) <= 1:
        return [b for s in sites for b in seal_site(s)]
    with ThreadPoolExecutor(min(max_workers, len(sites)), thread_name_prefix="seal") as pool:
        futs = [pool.submit(seal_site, s) for s in sites]
        errors = [f.exception() for f in futs]
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    return [b for f in futs for b in f.result()]


def _load_window_rows(conn: psycopg.Connection[Any], site: str, start: datetime,
                      end: datetime) -> tuple[list[tuple[str, int, int]], list[bytes], Values]:
    keys, hashes, values = [], [], []
    for dev, ts_ms, ch, e, p, seq, idx, fsha in conn.execute(LEAF_QUERY.format(filter="r.batch_id IS NULL"),
                                                             (site, start, end)):
        keys.append((dev, seq, idx))
        hashes.append(_leaf_hash_or_sentinel(dev, ts_ms, ch, e, p, seq, idx, bytes(fsha)))
        values.append((ts_ms, ch, e, p))
    return keys, hashes, values


def backed_by_frames(conn: psycopg.Connection[Any], keys: list[tuple[str, int, int]], values: Values) -> list[bool]:
    """For each reading: does a valid signed frame hold exactly it? The frame's stored bytes must hash to
    their recorded SHA-256, decode strictly as a wire frame of that (device, seq), and carry the device's
    valid signature (the registered key); the reading must equal the frame's reading at ``idx``."""
    from firmware_sim.wire import WireError, decode_frame, verify_signature
    from ingest.validate import _public_key

    wanted = sorted({(d, q) for d, q, _ in keys})
    if not wanted:
        return []
    unz = zstandard.ZstdDecompressor()
    signed: dict[tuple[str, int], list[tuple[int, str, int, int]]] = {}
    rows = conn.execute(
        "SELECT f.device_id, f.seq, f.frame_sha256, f.raw_zstd, d.public_key FROM frames f JOIN devices d USING (device_id) "
        "JOIN unnest(%s::text[], %s::bigint[]) AS k(device_id, seq) USING (device_id, seq)",
        ([d for d, _ in wanted], [q for _, q in wanted])).fetchall()
    for dev, seq, sha, raw_z, key in rows:
        try:
            raw = unz.decompress(bytes(raw_z))
            if hashlib.sha256(raw).digest() != bytes(sha):
                continue
            frame = decode_frame(raw)
            verify_signature(frame, _public_key(b64url(bytes(key))))
        except (zstandard.ZstdError, WireError):
            continue
        if (frame.device, frame.seq) == (dev, seq):
            signed[(dev, seq)] = [(r.ts_ms, r.channel, r.energy_wh, r.power_w) for r in frame.readings]
    out = []
    for (dev, seq, idx), v in zip(keys, values, strict=True):
        fr = signed.get((dev, seq))
        out.append(fr is not None and 0 <= idx < len(fr) and fr[idx] == v)
    return out


def _seal_one(conn: psycopg.Connection[Any], backend: LedgerBackend, site: str, start: datetime,
              window_s: int, bulk_ok: bool = True,
              refused_out: list[tuple[str, int, int]] | None = None) -> SealedBatch | None:
    end = datetime.fromtimestamp(start.timestamp() + window_s, UTC)
    got = load_window_bulk(conn, site, start, end, None) if bulk_ok else None
    if got is None:
        keys, hashes, values = _load_window_rows(conn, site, start, end)
    else:
        keys, arr, values = got
        hashes = bulk.as_bytes_list(arr)
    # Invariant 1: nothing is sealed that no valid signed frame backs (docs/proofs.md)
    ok = backed_by_frames(conn, keys, values)
    refused = [k for k, good in zip(keys, ok, strict=True) if not good]
    if refused:
        keys = [k for k, good in zip(keys, ok, strict=True) if good]
        hashes = [h for h, good in zip(hashes, ok, strict=True) if good]
        if refused_out is not None:
            refused_out.extend(refused)
        if not keys:
            return None  # nothing in the window is backed: no batch (verify names the readings)
    root = bulk.root(got[1]) if got is not None and not refused else merkle.root_from_leaf_hashes(hashes)
    base_id = f"{site}:{start.strftime('%Y%m%dT%H%M%SZ')}"
    earlier = conn.execute("SELECT count(*) FROM batches WHERE site_id = %s AND window_start = %s",
                           (site, start)).fetchone()
    n_prior = int(earlier[0]) if earlier else 0
    batch_id = base_id if n_prior == 0 else f"{base_id}:a{n_prior}"
    header = BatchHeader(batch_id=batch_id, site=site, kind="seal" if n_prior == 0 else "amendment",
                         window_start_ms=_ms(start), window_end_ms=_ms(end), leaf_count=len(keys),
                         root=root.hex(), prev_hash=backend.head(site),
                         findings_digest=findings_digest(conn, site, start, end), sealed_ms=int(time.time() * 1000),
                         amends=base_id if n_prior else None)
    try:
        receipt = backend.anchor(header)
    except AlreadyAnchored:
        # Anchored by an earlier run that died before recording it: adopt it if it is this batch.
        got = backend.get(batch_id)
        if got is None or got[0].root != header.root or got[0].leaf_count != header.leaf_count:
            raise LedgerMismatch(f"batch {batch_id} on the ledger differs from the store's readings") from None
        header, receipt = got
    conn.execute(
        "INSERT INTO batches (batch_id, site_id, kind, amends, window_start, window_end, leaf_count, root, header, "
        "header_hash, leaf_devices, leaf_seqs, leaf_idxs, leaf_hashes, receipt) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %b, %b, %b, %s, %s)",  # %b: binary arrays, no quoting pass
        (batch_id, site, header.kind, header.amends, start, end, len(keys), bytes.fromhex(header.root),
         header_bytes(header), bytes.fromhex(header_hash(header)), [k[0] for k in keys], [k[1] for k in keys],
         [k[2] for k in keys], b"".join(hashes), msgspec.json.encode(receipt).decode()))
    # Same REPEATABLE READ snapshot as the load: marks exactly the readings that were sealed, not ones
    # committed by ingest meanwhile (those stay unsealed for the next amendment) nor refused ones.
    if refused:
        conn.execute("UPDATE readings r SET batch_id = %s FROM unnest(%s::text[], %s::bigint[], %s::int[]) "
                     "AS k(device_id, seq, idx) WHERE r.device_id = k.device_id AND r.seq = k.seq AND r.idx = k.idx "
                     "AND r.ts >= %s AND r.ts < %s AND r.batch_id IS NULL",
                     (batch_id, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], start, end))
    else:
        conn.execute("UPDATE readings r SET batch_id = %s FROM devices d WHERE d.device_id = r.device_id "
                     "AND d.site_id = %s AND r.ts >= %s AND r.ts < %s AND r.batch_id IS NULL",
                     (batch_id, site, start, end))
    return SealedBatch(header, keys, hashes)
