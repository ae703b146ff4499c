"""Replay: recompute every sealed batch from the store, compare with the ledger, name what changed.

Owns: per batch — (1) the ledger holds the batch and its header equals the stored header bytes;
(2) the stored leaf hashes rebuild the anchored root (so they are authentic); (3) today's readings
of the batch, canonicalised again, give the same leaves — otherwise each difference is named by
its key (device, seq, idx): *changed*, *deleted* or *inserted*; (4) every frame the readings came
in still has its recorded SHA-256 and a valid device signature.
Pure reporting: it never writes.
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import psycopg
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from device.wire import WireError, decode_frame, verify_signature
from ledger import merkle
from ledger.backend import LedgerBackend, header_bytes
from ledger.seal import load_leaves
from ledger.trust import DeviceKeys

Key = tuple[str, int, int]


@dataclass
class BatchReport:
    batch_id: str
    site: str
    status: str = "intact"  # intact | tampered | missing_on_ledger | header_mismatch
    changed: list[Key] = field(default_factory=list)
    deleted: list[Key] = field(default_factory=list)
    inserted: list[Key] = field(default_factory=list)
    bad_frames: list[tuple[str, int, str]] = field(default_factory=list)  # (device, seq, why)

    def to_json(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "site": self.site, "status": self.status,
                "changed": [list(k) for k in self.changed], "deleted": [list(k) for k in self.deleted],
                "inserted": [list(k) for k in self.inserted],
                "bad_frames": [list(b) for b in self.bad_frames]}


def verify(dsn: str, backend: LedgerBackend, site: str | None = None, start: datetime | None = None,
           end: datetime | None = None, workers: int | None = None,
           keys: dict[str, DeviceKeys] | None = None, pending: set[Key] | None = None,
           frame_bad: list[tuple[int, int, str]] | None = None, snapshot: str | None = None,
           shared: dict[str, Any] | None = None) -> list[BatchReport]:
    """Replay every sealed batch in range (bulk: a few binary COPYs, checks on columns; see ledger/replay.py).

    ``workers``: without the native library, the processes re-checking frame signatures (default: 2, or
    none for a small store); with it, frames are checked on two threads and ``workers`` is not used.
    ``snapshot``, ``shared``: read in the caller's exported snapshot, reusing what its completeness pass loaded.
    """
    from ledger.replay import verify_bulk

    return verify_bulk(dsn, backend, site, start, end, workers, keys, pending, frame_bad, snapshot, shared)


def verify_rows(dsn: str, backend: LedgerBackend, site: str | None = None, start: datetime | None = None,
                end: datetime | None = None, keys: dict[str, bytes] | None = None,
                pending: set[Key] | None = None) -> list[BatchReport]:
    """The row-by-row replay (one query per batch, one ``Leaf`` per reading): the reference ``verify``
    is tested against, and what it falls back to for batch records it cannot read in bulk."""
    reports = []
    unz = zstandard.ZstdDecompressor()
    with psycopg.connect(dsn, autocommit=True) as conn:
        from ledger.complete import stored_keys

        pubs = keys if keys is not None else stored_keys(conn)  # each frame with a key valid at its signed sent_ms
        rows = conn.execute(
            "SELECT batch_id, site_id, window_start, window_end, header, leaf_devices, leaf_seqs, leaf_idxs, "
            "leaf_hashes FROM batches WHERE (%s::text IS NULL OR site_id = %s) "
            "AND (%s::timestamptz IS NULL OR window_end > %s) AND (%s::timestamptz IS NULL OR window_start < %s) "
            "ORDER BY site_id, window_start, batch_id", (site, site, start, start, end, end)).fetchall()
        for batch_id, site_id, w0, w1, header_raw, devs, seqs, idxs, hashes_raw in rows:
            reports.append(_replay_batch(conn, backend, batch_id, site_id, w0, w1, bytes(header_raw), devs, seqs, idxs,
                                         bytes(hashes_raw), pubs, unz, pending or set()))
    return reports


def verify_one_batch_rows(conn: psycopg.Connection[Any], backend: LedgerBackend, batch_id: str, site_id: str,
                          w0: datetime, w1: datetime, header_raw: bytes, keys: dict[str, DeviceKeys],
                          unz: zstandard.ZstdDecompressor, pending: set[Key] | None = None) -> BatchReport:
    row = conn.execute("SELECT leaf_devices, leaf_seqs, leaf_idxs, leaf_hashes FROM batches WHERE batch_id = %s",
                       (batch_id,)).fetchone()
    assert row is not None
    return _replay_batch(conn, backend, batch_id, site_id, w0, w1, header_raw, row[0], row[1], row[2], bytes(row[3]),
                         keys, unz, pending or set())


def _replay_batch(conn: psycopg.Connection[Any], backend: LedgerBackend, batch_id: str, site_id: str, w0: datetime,
                  w1: datetime, header_raw: bytes, devs: list[str], seqs: list[int], idxs: list[int],
                  hashes_raw: bytes, keys: dict[str, DeviceKeys],
                  unz: zstandard.ZstdDecompressor, pending: set[Key]) -> BatchReport:
    rep = BatchReport(batch_id, site_id)
    on_ledger = backend.get(batch_id)
    if on_ledger is None:
        rep.status = "missing_on_ledger"
        return rep
    header = on_ledger[0]
    if header_bytes(header) != header_raw:
        rep.status = "header_mismatch"
    stored_hashes = [hashes_raw[i:i + 32] for i in range(0, len(hashes_raw), 32)]
    if len(stored_hashes) != len(devs) or len(devs) != len(seqs) or len(seqs) != len(idxs):
        # the batch record itself is inconsistent: everything in it is suspect
        rep.status = "tampered"
        n = min(len(stored_hashes), len(devs), len(seqs), len(idxs))
        devs, seqs, idxs, stored_hashes = devs[:n], seqs[:n], idxs[:n], stored_hashes[:n]
    stored = dict(zip(zip(devs, seqs, idxs, strict=True), stored_hashes, strict=True))
    if merkle.root_from_leaf_hashes(stored_hashes).hex() != header.root or len(stored_hashes) != header.leaf_count:
        # the batch record itself was altered: compare keys only, everything is suspect
        rep.status = "tampered"
    current = dict(load_leaves(conn, site_id, w0, w1, batch_id))
    rep.changed = sorted(k for k in stored.keys() & current.keys() if stored[k] != current[k])
    rep.deleted = sorted(stored.keys() - current.keys())
    rep.inserted = sorted(current.keys() - stored.keys() - pending)
    rep.bad_frames = _check_frames(conn, sorted({(d, q) for d, q, _ in current}), keys, unz)
    if rep.changed or rep.deleted or rep.inserted or rep.bad_frames:
        rep.status = "tampered"
    return rep


def _check_frames(conn: psycopg.Connection[Any], frame_keys: list[tuple[str, int]], keys: dict[str, DeviceKeys],
                  unz: zstandard.ZstdDecompressor) -> list[tuple[str, int, str]]:
    """The problems of the frames the batch's current readings came in."""
    bad = []
    frames = conn.execute(
        "SELECT f.device_id, f.seq, f.frame_sha256, f.raw_zstd FROM frames f JOIN unnest(%s::text[], %s::bigint[]) "
        "AS k(device_id, seq) USING (device_id, seq) ORDER BY 1, 2",
        ([k[0] for k in frame_keys], [k[1] for k in frame_keys])).fetchall()
    for device, seq, sha, raw_z in frames:
        why = frame_problem(bytes(raw_z), bytes(sha), keys.get(device), unz)
        if why is not None:
            bad.append((device, seq, why))
    return bad


def frame_problem(raw_z: bytes, sha: bytes, key: Ed25519PublicKey | DeviceKeys | None,
                  unz: zstandard.ZstdDecompressor) -> str | None:
    """Why a stored frame fails its check (readable, recorded SHA-256, device signature — with ``DeviceKeys``, by
    a key valid at the frame's signed ``sent_ms``), or None."""
    try:
        raw = unz.decompress(raw_z)
    except zstandard.ZstdError:
        return "stored frame bytes are not readable"
    if hashlib.sha256(raw).digest() != sha:
        return "stored frame bytes do not match their recorded SHA-256"
    try:
        if key is None:
            raise KeyError("unknown device")
        if isinstance(key, DeviceKeys):
            key.verify_signature(decode_frame(raw))
        else:
            verify_signature(decode_frame(raw), key)
    except (WireError, KeyError) as exc:
        return f"device signature does not verify ({exc})"
    return None


@dataclass
class VerifyResult:
    """Everything ``wattproof verify`` found: per batch (replay) and across the store (completeness)."""

    reports: list[BatchReport]
    store_problems: list[Any]  # ledger.complete.Problem
    pending: list[Key]  # signed late readings of sealed windows awaiting their amendment
    pinned: bool  # trust came from the verifier; False: self-consistent at best, not verified
    readings: int = 0
    frames: int = 0

    @property
    def intact(self) -> bool:
        return not self.store_problems and all(r.status == "intact" for r in self.reports)

    @property
    def verdict(self) -> str:
        if not self.intact:
            return "tampered"
        return "verified" if self.pinned else "self-consistent only (no trust pinned): not verified"


#: the steps ``verify_all`` reports to ``progress``: keys, frames and completeness, the replay, the ledger's own
VERIFY_STEPS = 4


def verify_all(dsn: str, backend: LedgerBackend, trust: Any = None, site: str | None = None,
               start: datetime | None = None, end: datetime | None = None,
               progress: Callable[[int, int], None] | None = None) -> VerifyResult:
    """The whole check: the replay of every batch in scope (with the pinned device keys) and the
    completeness checks of ``ledger.complete`` (readings ↔ frames ↔ batches ↔ ledger, keys ↔ trust).
    ``progress(done, VERIFY_STEPS)`` after each step."""
    from ledger.bulk import reusing_freed_memory

    gc_was_on = gc.isenabled()
    gc.disable()  # millions of short-lived objects and no cycles: the collector only costs time here
    try:
        with reusing_freed_memory():  # large columns come and go: reuse their pages
            return _verify_all(dsn, backend, trust, site, start, end, progress or (lambda done, total: None))
    finally:
        if gc_was_on:
            gc.enable()


def _verify_all(dsn: str, backend: LedgerBackend, trust: Any, site: str | None, start: datetime | None,
                end: datetime | None, progress: Callable[[int, int], None]) -> VerifyResult:
    from ledger import complete, replay
    from ledger.replay import read_snapshot

    full = site is None and start is None and end is None  # then the completeness pass checks every frame
    # both passes read one snapshot of the store, and the replay reuses the readings and frames the completeness
    # pass loaded (a whole-store verify)
    with read_snapshot(dsn) as (conn, snap):
        keys, _ = complete.device_keys(conn, trust, site)
        progress(1, VERIFY_STEPS)
        shared: dict[str, Any] = {}
        started: list[Any] = []

        def replay_meanwhile() -> None:  # the replay's loading and comparing, while the frames' signatures are checked
            steps = replay.replay_steps(dsn, backend, site, start, end, None, keys, True, snap, shared)
            next(steps)
            started.append(steps)

        comp = complete.check(dsn, backend, trust, site, start, end, snapshot=snap, shared=shared,
                              between=replay_meanwhile if full else None)
        progress(2, VERIFY_STEPS)
        # a reading the replay finds in a sealed window but in no batch is a problem only if no valid signed frame
        # holds it: signed late readings are pending (the next `anchor` seals them as an amendment)
        if started:
            reports = replay.finish(started[0], set(comp.pending), comp.frame_bad)
        else:
            reports = verify(dsn, backend, site, start, end, keys=keys, pending=set(comp.pending),
                             frame_bad=comp.frame_bad if full else None, snapshot=snap, shared=shared)
        shared.clear()  # the loaded columns are not needed any more
    progress(3, VERIFY_STEPS)
    pinned = trust is not None
    if backend.name == "fabric":
        # the peers' answers are claims too: each batch's block, endorsements and orderer signature are checked
        # against the organisation roots the verifier pinned (ledger/fabric/evidence.py)
        pinned = pinned and trust.fabric is not None
        if pinned:
            comp.problems += complete.fabric_receipts(dsn, backend, trust.fabric, site, start, end)
    if site is None:  # claim verdict sets are evidence too (ledger/verdict_sets.py); they live on their own chains
        from ledger.verdict_sets import check_report_manifests, check_verdict_sets

        comp.problems += check_verdict_sets(dsn, backend) + check_report_manifests(dsn, backend)
    progress(VERIFY_STEPS, VERIFY_STEPS)
    return VerifyResult(reports, comp.problems, comp.pending, pinned, comp.readings, comp.frames)


def summary_json(reports: list[BatchReport] | VerifyResult) -> bytes:
    if isinstance(reports, VerifyResult):
        res = reports
        return msgspec.json.encode({
            "verdict": res.verdict, "pinned": res.pinned, "batches": len(res.reports),
            "intact": sum(r.status == "intact" for r in res.reports), "readings": res.readings, "frames": res.frames,
            "problems": [r.to_json() for r in res.reports if r.status != "intact"],
            "store_problems": [p.to_json() for p in res.store_problems],
            "pending": [list(k) for k in res.pending]})
    return msgspec.json.encode({"batches": len(reports), "intact": sum(r.status == "intact" for r in reports),
                                "problems": [r.to_json() for r in reports if r.status != "intact"]})
