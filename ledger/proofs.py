"""Making proof bundles: a device's sealed readings with everything needed to check them offline.

Owns: ``assemble_bundle`` (sealed batches + signed frames → the ``wattproof-proof-bundle/2``
document; pure) and ``export_bundle`` (store + ledger → the document; reads only: the connection is
read-only and the ledger is opened by the caller without creating anything). Checking lives in
``ledger/bundle_check.py`` (re-exported here). Spec: docs/proofs.md "Proof bundle".
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
import zstandard

from device.wire import b64url, decode_frame
from ledger import merkle
from ledger.backend import (
    BatchHeader,
    LedgerBackend,
    LedgerError,
    Receipt,
    header_bytes,
)
from ledger.bundle_check import (  # noqa: F401  (the public API of proof bundles, in one place)
    FORMAT,
    NOT_VERIFIED,
    REFUSED_FORMATS,
    BundleCheck,
    check_bundle,
    record_hash,
    verify_bundle,
)
from ledger.canonical import Leaf, leaf_bytes


class ProofBundleError(LedgerError):
    """The bundle cannot be made (nothing sealed in range, store disagrees with the ledger)."""


@dataclass(frozen=True)
class SealedProof:
    """One anchored batch as exported: its header and receipt, the tree, the readings to prove."""

    header: BatchHeader
    receipt: Receipt
    levels: list[list[bytes]]  # merkle.tree_levels of every leaf hash of the batch
    readings: list[tuple[int, bytes]]  # (leaf index, canonical leaf bytes) of the device's readings
    fabric_evidence: dict[str, Any] | None = None


def bundle_receipt(receipt: Receipt) -> dict[str, Any]:
    """A receipt as a bundle shows it: only what the verifier can recompute or check."""
    if receipt.backend == "local":
        if None in (receipt.ref, receipt.prev_record, receipt.record_hash, receipt.signature):
            raise ProofBundleError(f"batch {receipt.batch_id}: the local receipt lacks position, prev_record, "
                                   "record_hash or signature")
        return {"backend": "local", "batch_id": receipt.batch_id, "header_hash": receipt.header_hash,
                "position": receipt.ref, "prev_record": receipt.prev_record, "record_hash": receipt.record_hash,
                "signature": receipt.signature}
    if receipt.backend == "fabric":
        return {"backend": "fabric", "batch_id": receipt.batch_id, "header_hash": receipt.header_hash,
                "anchored_ms": receipt.anchored_ms, "tx_id": receipt.tx_id, "block": receipt.block,
                "channel": receipt.channel}
    raise ProofBundleError(f"batch {receipt.batch_id}: unknown ledger backend {receipt.backend!r}")


def assemble_bundle(device: str, site: str, device_public_key: str, ledger: dict[str, Any],
                    batches: list[SealedProof], frames: list[bytes]) -> dict[str, Any]:
    """The bundle document (format /2) from sealed batches and the signed frames their readings came in."""
    out = []
    for b in batches:
        readings = [{"leaf_b64": base64.b64encode(leaf).decode(), "leaf_index": i, "tree_size": len(b.levels[0]),
                     "audit_path": [h.hex() for h in merkle.inclusion_proof(b.levels, i)], "root": b.header.root}
                    for i, leaf in b.readings]
        entry: dict[str, Any] = {"header": header_bytes(b.header).decode(), "receipt": bundle_receipt(b.receipt),
                                 "readings": readings}
        if b.fabric_evidence is not None:
            entry["fabric_evidence"] = b.fabric_evidence
        out.append(entry)
    frame_list = sorted((decode_frame(raw).seq, raw) for raw in frames)
    return {"format": FORMAT, "device": device, "site": site, "device_public_key": device_public_key,
            "ledger": ledger, "batches": out,
            "frames": [{"seq": s, "raw_b64": base64.b64encode(raw).decode()} for s, raw in frame_list]}


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def export_bundle(dsn: str, backend: LedgerBackend, device: str, start: datetime, end: datetime) -> dict[str, Any]:
    """The bundle of ``device``'s sealed readings in [start, end). Reads the store and the ledger only."""
    unz = zstandard.ZstdDecompressor()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = on")
        dev = conn.execute("SELECT site_id, public_key FROM devices WHERE device_id = %s", (device,)).fetchone()
        if dev is None:
            raise ProofBundleError(f"unknown device {device!r}")
        rows = conn.execute(
            "SELECT batch_id, leaf_devices, leaf_seqs, leaf_idxs, leaf_hashes FROM batches "
            "WHERE site_id = %s AND window_end > %s AND window_start < %s AND %s = ANY(leaf_devices) "
            "ORDER BY window_start, batch_id", (dev[0], start, end, device)).fetchall()
        sealed: list[SealedProof] = []
        frame_shas: dict[int, set[str]] = {}
        for batch_id, devs, bseqs, idxs, hashes_raw in rows:
            got = backend.get(batch_id)
            if got is None:
                raise ProofBundleError(f"batch {batch_id} is not on the {backend.name} ledger")
            header, receipt = got
            hashes = [bytes(hashes_raw[i:i + 32]) for i in range(0, len(hashes_raw), 32)]
            levels = merkle.tree_levels(hashes)
            if not hashes or levels[-1][0].hex() != header.root or len(hashes) != header.leaf_count:
                raise ProofBundleError(f"batch {batch_id}: stored leaves do not rebuild the anchored root (run verify)")
            position = {k: i for i, k in enumerate(zip(devs, bseqs, idxs, strict=True))}
            readings = []
            for dv, ts_ms, ch, e, p, seq, idx, fsha in conn.execute(
                    "SELECT r.device_id, (extract(epoch FROM r.ts) * 1000)::bigint, r.channel, r.energy_wh, r.power_w, "
                    "r.seq, r.idx, f.frame_sha256 FROM readings r JOIN frames f USING (device_id, seq) "
                    "WHERE r.device_id = %s AND r.ts >= %s AND r.ts < %s AND r.ts >= %s AND r.ts < %s "
                    "ORDER BY r.ts, r.channel, r.seq, r.idx",
                    (device, start, end, _dt(header.window_start_ms), _dt(header.window_end_ms))):
                i = position.get((dv, seq, idx))
                if i is None:
                    continue  # not one of this batch's leaves (another batch of the window, or not sealed)
                leaf = leaf_bytes(Leaf(device=dv, ts_ms=ts_ms, channel=ch, energy_wh=e, power_w=p, seq=seq, idx=idx,
                                       frame_sha256=bytes(fsha).hex()))
                if merkle.leaf_hash(leaf) != hashes[i]:
                    raise ProofBundleError(f"reading {(dv, seq, idx)} differs from what batch {batch_id} sealed (run verify)")
                readings.append((i, leaf))
                frame_shas.setdefault(seq, set()).add(bytes(fsha).hex())
            if readings:
                receipt, evidence = _with_evidence(backend, receipt)
                sealed.append(SealedProof(header, receipt, levels, readings, evidence))
        if not sealed:
            raise ProofBundleError(f"no sealed readings of {device} between {start.isoformat()} and {end.isoformat()}")
        frames = []
        for seq, shas in sorted(frame_shas.items()):
            row = conn.execute("SELECT raw_zstd FROM frames WHERE device_id = %s AND seq = %s", (device, seq)).fetchone()
            raw = unz.decompress(bytes(row[0])) if row is not None else b""
            if {hashlib.sha256(raw).hexdigest()} != shas:
                raise ProofBundleError(f"frame ({device}, {seq}) differs from the one its sealed readings name (run verify)")
            frames.append(raw)
    if backend.name == "local":
        from device.identity import public_key_b64

        ledger: dict[str, Any] = {"backend": "local", "operator_public_key": public_key_b64(backend.pub)}  # type: ignore[attr-defined]
    else:
        ledger = {"backend": backend.name}
    return assemble_bundle(device, dev[0], b64url(bytes(dev[1])), ledger, sealed, frames)


def _with_evidence(backend: LedgerBackend, receipt: Receipt) -> tuple[Receipt, dict[str, Any] | None]:
    """A Fabric receipt completed with its block number (the ledger's ``get`` does not know it) and
    the evidence that proves it offline; any other receipt as it is."""
    if receipt.backend != "fabric":
        return receipt, None
    from ledger.fabric.backend import FabricLedger
    from ledger.fabric.collect import collect_evidence
    from ledger.fabric.gateway import GatewayError

    if not isinstance(backend, FabricLedger):
        raise ProofBundleError(f"batch {receipt.batch_id}: a Fabric receipt from the {backend.name} ledger")
    if receipt.block is None and receipt.tx_id:
        try:
            receipt = msgspec.structs.replace(receipt, block=backend.gw.block_of(receipt.tx_id))
        except GatewayError as exc:
            raise ProofBundleError(f"batch {receipt.batch_id}: cannot find the block of its transaction ({exc})") from None
    return receipt, collect_evidence(backend, receipt)
