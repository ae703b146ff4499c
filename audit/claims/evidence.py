"""Offline evidence bundles of a verdict set: ``wattproof claims evidence`` and ``claims verify-evidence``.

Owns: writing the bundle a stranger re-checks without a database (``export_evidence``), and the checker
with pinned trust (``verify_evidence``: the stdlib checks of ``recheck.py`` plus every local-ledger
record signature against the operator keys the verifier pins). Layout (docs/claims.md, "Evidence"):

    manifest.json      format, the verdict set: its anchored header, receipt, verdict leaves, context
    headers.jsonl      every header of the claim's sites' chains, genesis to the head the context names,
                       each with its receipt, in chain order
    leaves.jsonl.xz    per batch the figures rest on: its leaves in leaf order, as frames
                       [device, seq, frame_sha256] and readings [frame, idx, ts_ms, channel, energy_wh, power_w]
    recheck.py         the stdlib checker (a copy of audit/claims/recheck.py)

The leaves are read through the batches' anchored leaf keys, so a reading changed in the store after
sealing makes its batch's root fail to rebuild in the bundle. Reads only.
"""

from __future__ import annotations

import json
import lzma
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from audit.claims import recheck
from ledger.backend import LedgerBackend, header_bytes

#: The anchored leaves of the given batches, in leaf order (their stored keys, joined to today's rows).
LEAVES = """
SELECT b.batch_id, k.d, k.s, k.i, (extract(epoch FROM r.ts) * 1000)::bigint, r.channel, r.energy_wh, r.power_w,
       encode(f.frame_sha256, 'hex')
FROM batches b CROSS JOIN LATERAL unnest(b.leaf_devices, b.leaf_seqs, b.leaf_idxs) WITH ORDINALITY AS k(d, s, i, o)
JOIN readings r ON r.device_id = k.d AND r.seq = k.s AND r.idx = k.i
     AND r.ts >= b.window_start AND r.ts < b.window_end
JOIN frames f ON f.device_id = k.d AND f.seq = k.s
WHERE b.batch_id = ANY(%s)
ORDER BY b.batch_id, k.o"""


class EvidenceError(ValueError):
    """A bundle that cannot be written (no such verdict set, a chain the ledger cannot give)."""


@dataclass(frozen=True)
class BundleSummary:
    path: Path
    verdicts: int
    batches: int
    readings: int
    headers: int
    bytes: int


def export_evidence(dsn: str, backend: LedgerBackend, set_id: str, out: Path) -> BundleSummary:
    """Write the bundle of verdict set ``set_id`` into directory ``out`` (created; must be empty)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT header, receipt, verdicts, context FROM claim_verdict_sets WHERE set_id = %s",
                           (set_id,)).fetchone()
        if row is None:
            raise EvidenceError(f"no verdict set {set_id!r} in the store")
        header_raw, receipt, leaves, ctx_raw = bytes(row[0]), row[1], [bytes(v) for v in row[2]], bytes(row[3])
        ctx = json.loads(ctx_raw)
        batch_ids = [b for b, _ in ctx["batches"]]
        rows = conn.execute(LEAVES, (batch_ids,)).fetchall()
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise EvidenceError(f"{out} is not empty")
    heads: dict[str, str] = ctx["heads"]
    ended: set[str] = set()
    lines = []
    for ev in backend.events():
        h = ev.header
        if h.site not in heads or h.site in ended or h.kind not in ("seal", "amendment"):
            continue
        rec = msgspec.to_builtins(ev.receipt)
        lines.append(json.dumps({"header": header_bytes(h).decode(), "receipt": rec}, sort_keys=True,
                                separators=(",", ":")))
        if rec["header_hash"] == heads[h.site]:
            ended.add(h.site)
    missing = sorted(s for s, hh in heads.items() if s not in ended and hh != recheck.GENESIS)
    if missing:
        raise EvidenceError(f"the ledger does not reach the heads the verdict set names for {', '.join(missing)}")
    (out / "headers.jsonl").write_text("".join(line + "\n" for line in lines))
    per_batch: dict[str, dict[str, Any]] = {}
    for bid, dev, seq, idx, ts, ch, e, p, fsha in rows:
        b = per_batch.setdefault(bid, {"batch_id": bid, "frames": [], "r": [], "_f": {}})
        fi = b["_f"].get((dev, seq))
        if fi is None:
            fi = b["_f"][(dev, seq)] = len(b["frames"])
            b["frames"].append([dev, seq, fsha])
        b["r"].append([fi, idx, ts, ch, e, p])
    with lzma.open(out / "leaves.jsonl.xz", "wb", preset=6) as fh:
        for bid in sorted(per_batch):
            b = per_batch[bid]
            del b["_f"]
            fh.write(json.dumps(b, separators=(",", ":")).encode() + b"\n")
    manifest = {"format": recheck.FORMAT, "set_id": set_id,
                "verdict_set": {"header": header_raw.decode(), "receipt": receipt,
                                "verdicts": [v.decode() for v in leaves], "context": ctx_raw.decode()}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    shutil.copyfile(Path(recheck.__file__), out / "recheck.py")
    size = sum(f.stat().st_size for f in out.iterdir())
    return BundleSummary(out, len(leaves), len(per_batch), len(rows), len(lines), size)


@dataclass(frozen=True)
class EvidenceResult:
    ok: bool
    failures: list[str]
    pinned: bool


def verify_evidence(bundle: Path, operator_keys: list[str] | None) -> EvidenceResult:
    """The stdlib re-check, and each local record's operator signature against the pinned keys.

    Without pinned keys the result is self-consistent only (``pinned`` False)."""
    import contextlib
    import io

    from firmware_sim.ed25519 import verify as ed_verify
    from firmware_sim.wire import b64url_decode

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = recheck.main([str(bundle)])
    failures = [ln[5:] for ln in buf.getvalue().splitlines() if ln.startswith("FAIL ")]
    if rc == 2:
        failures.append(buf.getvalue().strip())
    if rc != 0 or not operator_keys:
        return EvidenceResult(rc == 0, failures, False)
    keys = [b64url_decode(k) for k in operator_keys]
    manifest = json.loads((bundle / "manifest.json").read_text())
    receipts = [json.loads(ln)["receipt"] for ln in (bundle / "headers.jsonl").read_text().splitlines()]
    receipts.append(manifest["verdict_set"]["receipt"])
    for r in receipts:
        if r.get("backend") != "local":
            failures.append(f"{r.get('batch_id')}: a {r.get('backend')} receipt: check it with `wattproof verify`")
            continue
        sig = b64url_decode(r["signature"])
        if not any(ed_verify(k, sig, bytes.fromhex(r["record_hash"])) for k in keys):
            failures.append(f"{r['batch_id']}: the record signature does not verify with the pinned operator keys")
    return EvidenceResult(not failures, failures, True)
