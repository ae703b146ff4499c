"""The report manifest: every file's SHA-256, signed by the operator, anchored through the ledger interface.

Owns: hashing a report directory, the manifest's canonical core (``wattproof-report-manifest/1``), the
operator's Ed25519 signature over it, the ``report`` header it implies, anchoring that header on the
organisation's report chain ``reports:<org>`` and storing it (``report_manifests``, migration 0701).
The offline check is ``verify.py``'s; both use ``leaves``, ``files_root`` and ``implied_header`` from here.

``manifest.json`` = the **core** plus ``signature`` and ``anchor``:

    core      format, report_id, org, sites, period [from_ms, to_ms), created_ms, chain, prev_hash,
              files [{name, sha256, bytes}] (sorted by name), root, signer (b64url public key), verdict_set
    signature {alg: "Ed25519", sig}: the signer's signature of the RFC 8785 bytes of the core
    anchor    {header: the anchored header's canonical text, receipt, fabric_evidence?}

The header is implied by the core alone: batch_id = report_id, site = chain, kind ``report``, the period
as its window, leaf_count = number of files, root = RFC 6962 root over the leaves RFC 8785
``{"name", "sha256"}`` in name order, prev_hash, findings_digest = SHA-256 of the canonical core,
sealed_ms = created_ms. So a verifier rebuilds it byte for byte and compares it with what was anchored.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import msgspec
import psycopg
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit.reports.model import MANIFEST_NAME, ReportError
from ledger import merkle
from ledger.backend import BatchHeader, LedgerBackend, header_bytes

FORMAT: Final = "wattproof-report-manifest/1"
CHUNK: Final = 1 << 20


def chain_of(org: str) -> str:
    return f"reports:{org}"


def sha256_file(path: Path) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def directory_files(out_dir: Path) -> list[str]:
    """Every regular file under ``out_dir`` (relative POSIX names), the manifest excepted, sorted."""
    return sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*")
                  if (p.is_file() or p.is_symlink()) and p.relative_to(out_dir).as_posix() != MANIFEST_NAME)


def hash_files(out_dir: Path) -> list[dict[str, Any]]:
    out = []
    for name in directory_files(out_dir):
        sha, n = sha256_file(out_dir / name)
        out.append({"name": name, "sha256": sha, "bytes": n})
    return out


def leaves(files: list[dict[str, Any]]) -> list[bytes]:
    """The Merkle leaves: RFC 8785 ``{"name", "sha256"}`` of each file, in name order."""
    return [rfc8785.dumps({"name": f["name"], "sha256": f["sha256"]}) for f in sorted(files, key=lambda f: f["name"])]


def files_root(files: list[dict[str, Any]]) -> str:
    return merkle.mth(leaves(files)).hex()


def core_bytes(core: dict[str, Any]) -> bytes:
    return rfc8785.dumps(core)


def implied_header(core: dict[str, Any]) -> BatchHeader:
    """The ``report`` header the core implies (see the module docstring)."""
    p0, p1 = core["period"]
    return BatchHeader(batch_id=core["report_id"], site=core["chain"], kind="report", window_start_ms=p0,
                       window_end_ms=p1, leaf_count=len(core["files"]), root=core["root"],
                       prev_hash=core["prev_hash"], findings_digest=hashlib.sha256(core_bytes(core)).hexdigest(),
                       sealed_ms=core["created_ms"])


def public_b64(key: Ed25519PrivateKey) -> str:
    from device.wire import b64url

    return b64url(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def seal_report(out_dir: Path, backend: LedgerBackend, signing_key: Ed25519PrivateKey, org: str, sites: list[str],
                period: tuple[int, int], verdict_set: str | None, now_ms: int | None = None) -> dict[str, Any]:
    """Hash every file of ``out_dir``, sign the core, anchor its header, write ``manifest.json``; returns it."""
    from device.wire import b64url

    files = hash_files(out_dir)
    if not files:
        raise ReportError(f"{out_dir}: no report files to seal")
    root = files_root(files)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    stamp = datetime.fromtimestamp(now_ms / 1000, UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3]
    chain = chain_of(org)
    core = {"format": FORMAT, "report_id": f"report:{org}:{stamp}:{root[:8]}", "org": org, "sites": list(sites),
            "period": [int(period[0]), int(period[1])], "created_ms": now_ms, "chain": chain,
            "prev_hash": backend.head(chain), "files": files, "root": root, "signer": public_b64(signing_key),
            "verdict_set": verdict_set}
    raw = core_bytes(core)
    header = implied_header(core)
    receipt = backend.anchor(header)
    anchor: dict[str, Any] = {"header": header_bytes(header).decode(), "receipt": msgspec.to_builtins(receipt)}
    if receipt.backend == "fabric":  # the block holding the transaction: proven offline against pinned roots
        from ledger.fabric.collect import collect_evidence

        anchor["fabric_evidence"] = collect_evidence(backend, receipt)  # type: ignore[arg-type]
    manifest = {**core, "signature": {"alg": "Ed25519", "sig": b64url(signing_key.sign(raw))}, "anchor": anchor}
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def store_manifest(dsn: str, manifest: dict[str, Any]) -> None:
    """Record the anchored manifest (migration 0701) so the dashboard and later checks can list reports."""
    core = {k: v for k, v in manifest.items() if k not in ("signature", "anchor")}
    p0, p1 = core["period"]
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO report_manifests (report_id, org_id, period_start, period_end, manifest, manifest_sha256, "
            "signature, header, receipt, verdict_set) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (core["report_id"], core["org"], datetime.fromtimestamp(p0 / 1000, UTC),
             datetime.fromtimestamp(p1 / 1000, UTC), core_bytes(core), hashlib.sha256(core_bytes(core)).hexdigest(),
             manifest["signature"]["sig"], manifest["anchor"]["header"].encode(),
             psycopg.types.json.Jsonb(manifest["anchor"]["receipt"]), core["verdict_set"]))
