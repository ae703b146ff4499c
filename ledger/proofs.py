"""Proof bundles: a device's readings with everything needed to check them offline.

Owns: ``export_bundle`` (store + ledger → a JSON document, format ``wattproof-proof-bundle/1``,
specified in docs/proofs.md) and ``verify_bundle`` (the document alone → a list of problems; empty
means every reading is proven). Verification needs no database and no wattproof-specific crypto:
SHA-256, RFC 6962 inclusion (RFC 9162 §2.1.3.2), RFC 8785 and Ed25519.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from typing import Any

import msgspec
import psycopg
import zstandard
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from firmware_sim.wire import WireError, b64url, b64url_decode, decode_frame, verify_signature
from ledger import merkle
from ledger.backend import LedgerBackend, decode_header, header_bytes, header_hash
from ledger.canonical import Leaf, leaf_bytes

FORMAT = "wattproof-proof-bundle/1"


class ProofBundleError(Exception):
    """The bundle cannot be made (nothing sealed in range, store disagrees with the ledger)."""


def export_bundle(dsn: str, backend: LedgerBackend, device: str, start: datetime, end: datetime,
                  operator_public_key: str | None = None) -> dict[str, Any]:
    unz = zstandard.ZstdDecompressor()
    with psycopg.connect(dsn, autocommit=True) as conn:
        dev = conn.execute("SELECT site_id, public_key FROM devices WHERE device_id = %s", (device,)).fetchone()
        if dev is None:
            raise ProofBundleError(f"unknown device {device!r}")
        batches = conn.execute(
            "SELECT batch_id, leaf_devices, leaf_seqs, leaf_idxs, leaf_hashes, receipt FROM batches "
            "WHERE site_id = %s AND window_end > %s AND window_start < %s AND %s = ANY(leaf_devices) "
            "ORDER BY window_start, batch_id", (dev[0], start, end, device)).fetchall()
        out_batches = []
        seqs: set[int] = set()
        for batch_id, devs, bseqs, idxs, hashes_raw, receipt in batches:
            got = backend.get(batch_id)
            if got is None:
                raise ProofBundleError(f"batch {batch_id} is not on the {backend.name} ledger")
            header = got[0]
            hashes = [bytes(hashes_raw[i:i + 32]) for i in range(0, len(hashes_raw), 32)]
            levels = merkle.tree_levels(hashes)
            if levels[-1][0].hex() != header.root:
                raise ProofBundleError(f"batch {batch_id}: stored leaves do not rebuild the anchored root (run verify)")
            position = {k: i for i, k in enumerate(zip(devs, bseqs, idxs, strict=True))}
            readings = []
            for dv, ts_ms, ch, e, p, seq, idx, fsha in conn.execute(
                    "SELECT r.device_id, (extract(epoch FROM r.ts) * 1000)::bigint, r.channel, r.energy_wh, r.power_w, "
                    "r.seq, r.idx, f.frame_sha256 FROM readings r JOIN frames f USING (device_id, seq) "
                    "WHERE r.batch_id = %s AND r.device_id = %s AND r.ts >= %s AND r.ts < %s "
                    "ORDER BY r.ts, r.channel, r.seq, r.idx", (batch_id, device, start, end)):
                leaf = leaf_bytes(Leaf(device=dv, ts_ms=ts_ms, channel=ch, energy_wh=e, power_w=p, seq=seq, idx=idx,
                                       frame_sha256=bytes(fsha).hex()))
                i = position.get((dv, seq, idx))
                if i is None or merkle.leaf_hash(leaf) != hashes[i]:
                    raise ProofBundleError(f"reading {(dv, seq, idx)} differs from what batch {batch_id} sealed (run verify)")
                readings.append({"leaf_b64": base64.b64encode(leaf).decode(), "leaf_index": i, "tree_size": len(hashes),
                                 "audit_path": [h.hex() for h in merkle.inclusion_proof(levels, i)], "root": header.root})
                seqs.add(seq)
            if readings:
                out_batches.append({"header": header_bytes(header).decode(), "receipt": receipt, "readings": readings})
        if not out_batches:
            raise ProofBundleError(f"no sealed readings of {device} between {start.isoformat()} and {end.isoformat()}")
        frames = [{"seq": s, "raw_b64": base64.b64encode(unz.decompress(bytes(r[0]))).decode()}
                  for s in sorted(seqs)
                  for r in [conn.execute("SELECT raw_zstd FROM frames WHERE device_id = %s AND seq = %s",
                                         (device, s)).fetchone()] if r is not None]
    return {"format": FORMAT, "device": device, "site": dev[0], "device_public_key": b64url(bytes(dev[1])),
            "ledger": {"backend": backend.name, "operator_public_key": operator_public_key},
            "batches": out_batches, "frames": frames}


def verify_bundle(bundle: dict[str, Any]) -> list[str]:
    """Every problem found (empty list: each reading is in its anchored batch and signed by the device)."""
    problems: list[str] = []
    if bundle.get("format") != FORMAT:
        return [f"not a {FORMAT} document"]
    try:
        device_key = Ed25519PublicKey.from_public_bytes(b64url_decode(bundle["device_public_key"]))
        frames = {}
        for f in bundle["frames"]:
            raw = base64.b64decode(f["raw_b64"], validate=True)
            frames[hashlib.sha256(raw).hexdigest()] = raw
        op_key = bundle["ledger"].get("operator_public_key")
        for b in bundle["batches"]:
            hb = b["header"].encode()
            header = decode_header(hb)
            receipt = b["receipt"]
            if header_bytes(header) != hb or receipt.get("header_hash") != header_hash(header):
                problems.append(f"batch {header.batch_id}: header is not canonical or does not match its receipt")
                continue
            if op_key and receipt.get("backend") == "local":
                try:
                    Ed25519PublicKey.from_public_bytes(b64url_decode(op_key)).verify(
                        b64url_decode(receipt["signature"]), bytes.fromhex(receipt["record_hash"]))
                except (InvalidSignature, KeyError, ValueError):
                    problems.append(f"batch {header.batch_id}: ledger receipt signature does not verify")
            for r in b["readings"]:
                leaf = base64.b64decode(r["leaf_b64"], validate=True)
                ok = (r["root"] == header.root and r["tree_size"] == header.leaf_count and merkle.verify_inclusion(
                    merkle.leaf_hash(leaf), r["leaf_index"], r["tree_size"], [bytes.fromhex(h) for h in r["audit_path"]],
                    bytes.fromhex(header.root)))
                if not ok:
                    problems.append(f"batch {header.batch_id}: leaf {r['leaf_index']} is not included under the root")
                    continue
                problems += _check_leaf_against_frame(leaf, frames, device_key, bundle["device"])
    except (KeyError, TypeError, ValueError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        problems.append(f"malformed bundle: {exc}")
    return problems


def _check_leaf_against_frame(leaf_raw: bytes, frames: dict[str, bytes], key: Ed25519PublicKey, device: str) -> list[str]:
    leaf = msgspec.json.decode(leaf_raw, type=Leaf)
    where = f"reading {(leaf.device, leaf.seq, leaf.idx)}"
    if leaf.device != device:
        return [f"{where}: belongs to another device"]
    raw = frames.get(leaf.frame_sha256)
    if raw is None:
        return [f"{where}: its signed frame is not in the bundle"]
    try:
        frame = decode_frame(raw)
        verify_signature(frame, key)
    except WireError as exc:
        return [f"{where}: frame signature does not verify ({exc.reason})"]
    if leaf.idx >= len(frame.readings) or frame.seq != leaf.seq:
        return [f"{where}: not in its frame"]
    fr = frame.readings[leaf.idx]
    if (fr.ts_ms, fr.channel, fr.energy_wh, fr.power_w) != (leaf.ts_ms, leaf.channel, leaf.energy_wh, leaf.power_w):
        return [f"{where}: differs from the reading the device signed"]
    return []
