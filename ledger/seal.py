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
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
import rfc8785

from ledger import merkle
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
        leaf = Leaf(device=dev, ts_ms=ts_ms, channel=ch, energy_wh=e, power_w=p, seq=seq, idx=idx,
                    frame_sha256=bytes(fsha).hex())
        out.append(((dev, seq, idx), merkle.leaf_hash(leaf_bytes(leaf))))
    return out


def seal_windows(dsn: str, backend: LedgerBackend, window_s: int = 3600, grace_s: int = 900,
                 now_ms: int | None = None, site: str | None = None,
                 progress: Callable[[int, int], None] | None = None) -> list[SealedBatch]:
    """Seal every complete window with unsealed readings; return the batches made, in order."""
    now = datetime.fromtimestamp((now_ms or int(time.time() * 1000)) / 1000, UTC)
    made: list[SealedBatch] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        windows = conn.execute(
            "SELECT d.site_id, date_bin(make_interval(secs => %s), r.ts, timestamptz '2000-01-01') AS w "
            "FROM readings r JOIN devices d USING (device_id) "
            "WHERE r.batch_id IS NULL AND (%s::text IS NULL OR d.site_id = %s) GROUP BY 1, 2 ORDER BY 1, 2",
            (window_s, site, site)).fetchall()
        todo = [(s, w) for s, w in windows if (now - w).total_seconds() >= window_s + grace_s]
        for i, (site_id, start) in enumerate(todo):
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with conn.transaction():
                made.append(_seal_one(conn, backend, site_id, start, window_s))
            if progress:
                progress(i + 1, len(todo))
    return made


def _seal_one(conn: psycopg.Connection[Any], backend: LedgerBackend, site: str, start: datetime,
              window_s: int) -> SealedBatch:
    end = datetime.fromtimestamp(start.timestamp() + window_s, UTC)
    leaves = load_leaves(conn, site, start, end, None)
    base_id = f"{site}:{start.strftime('%Y%m%dT%H%M%SZ')}"
    earlier = conn.execute("SELECT count(*) FROM batches WHERE site_id = %s AND window_start = %s",
                           (site, start)).fetchone()
    n_prior = int(earlier[0]) if earlier else 0
    batch_id = base_id if n_prior == 0 else f"{base_id}:a{n_prior}"
    hashes = [h for _, h in leaves]
    header = BatchHeader(batch_id=batch_id, site=site, kind="seal" if n_prior == 0 else "amendment",
                         window_start_ms=_ms(start), window_end_ms=_ms(end), leaf_count=len(leaves),
                         root=merkle.root_from_leaf_hashes(hashes).hex(), prev_hash=backend.head(site),
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
    keys = [k for k, _ in leaves]
    conn.execute(
        "INSERT INTO batches (batch_id, site_id, kind, amends, window_start, window_end, leaf_count, root, header, "
        "header_hash, leaf_devices, leaf_seqs, leaf_idxs, leaf_hashes, receipt) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %b, %b, %b, %s, %s)",  # %b: binary arrays, no quoting pass
        (batch_id, site, header.kind, header.amends, start, end, len(leaves), bytes.fromhex(header.root),
         header_bytes(header), bytes.fromhex(header_hash(header)), [k[0] for k in keys], [k[1] for k in keys],
         [k[2] for k in keys], b"".join(hashes), msgspec.json.encode(receipt).decode()))
    # Same REPEATABLE READ snapshot as load_leaves: marks exactly the readings that were sealed,
    # not ones committed by ingest meanwhile (those stay unsealed for the next amendment).
    conn.execute("UPDATE readings r SET batch_id = %s FROM devices d WHERE d.device_id = r.device_id "
                 "AND d.site_id = %s AND r.ts >= %s AND r.ts < %s AND r.batch_id IS NULL",
                 (batch_id, site, start, end))
    return SealedBatch(header, keys, hashes)
