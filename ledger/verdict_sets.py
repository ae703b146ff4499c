"""Verdict sets as evidence: sealed, anchored through the ledger interface, restated, never edited.

Owns: turning one ``claims check`` run into an anchored verdict set (``claim_verdict_sets``, migration
0601) and checking stored sets against the ledger (``check_verdict_sets``, run by ``wattproof verify``).
The verdicts themselves are audit/claims' (this module takes them as JSON-able dicts).
A set's leaves are its verdicts, each RFC 8785 canonical JSON, in claim order; its header
(``ledger.backend.BatchHeader``) is of kind ``verdicts`` — or ``restatement``, naming with ``amends``
the set it supersedes — on the organisation's own chain ``claims:<org>``:

    window_start_ms/window_end_ms = the claim period     leaf_count = number of verdicts
    root = RFC 6962 root of the verdict leaves           findings_digest = SHA-256 of the context:
    the claim file's SHA-256, the inputs' SHA-256s and every anchored batch (id, header hash) the figures rest on

A run whose verdicts and context equal the latest set of the same organisation, period and claim
file anchors nothing (``SealedSet.unchanged``). Must not: compute figures or verdicts (audit/claims).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import rfc8785

from ledger import merkle
from ledger.backend import BatchHeader, LedgerBackend, decode_header, header_bytes, header_hash
from ledger.complete import Problem

CONTEXT_FORMAT = "wattproof-claims-context/1"

# verify's problem kinds for verdict sets (docs/proofs.md, "Verify")
VERDICT_SET_DIFFERS = "verdict_set_differs"  # stored verdicts/context/header do not match what was anchored
VERDICT_SET_MISSING_IN_STORE = "verdict_set_missing_in_store"  # the ledger holds a set the store lost
VERDICT_BATCH_NOT_ANCHORED = "verdict_batch_not_anchored"  # a figure rests on a batch the ledger does not hold


def chain_of(org: str) -> str:
    return f"claims:{org}"


def canonical(obj: Any) -> bytes:
    """RFC 8785 bytes (the ``rfc8785`` library: ES6 number form, NaN refused)."""
    return rfc8785.dumps(obj)


def verdict_root(leaves: list[bytes]) -> str:
    return merkle.mth(leaves).hex()


@dataclass(frozen=True)
class SealedSet:
    set_id: str
    kind: str  # verdicts | restatement
    supersedes: str | None
    header: BatchHeader
    receipt: dict[str, Any]
    unchanged: bool  # equal to the latest anchored set: nothing new was anchored


def latest_set(conn: psycopg.Connection[Any], org: str, start_ms: int, end_ms: int,
               claim_file_sha256: str) -> tuple[str, bytes, list[bytes], str] | None:
    """(set_id, header bytes, verdict leaves, context sha) of the newest set for this org, period and file."""
    row = conn.execute(
        "SELECT set_id, header, verdicts, context_sha256 FROM claim_verdict_sets WHERE org_id = %s AND "
        "period_start = %s AND period_end = %s AND claim_file_sha256 = %s AND NOT EXISTS "
        "(SELECT 1 FROM claim_verdict_sets n WHERE n.supersedes = claim_verdict_sets.set_id) "
        "ORDER BY created_at DESC LIMIT 1",
        (org, datetime.fromtimestamp(start_ms / 1000, UTC), datetime.fromtimestamp(end_ms / 1000, UTC),
         claim_file_sha256)).fetchone()
    if row is None:
        return None
    return row[0], bytes(row[1]), [bytes(v) for v in row[2]], row[3]


def seal_verdicts(conn: psycopg.Connection[Any], backend: LedgerBackend, org: str, start_ms: int, end_ms: int,
                  claim_file_sha256: str, context: dict[str, Any], verdicts: list[dict[str, Any]],
                  now_ms: int | None = None) -> SealedSet:
    """Anchor the run's verdicts as a new set (or a restatement of the latest one), unless unchanged."""
    import msgspec

    leaves = [canonical(v) for v in verdicts]
    ctx = canonical({"format": CONTEXT_FORMAT, **context})
    ctx_sha = hashlib.sha256(ctx).hexdigest()
    root = verdict_root(leaves)
    prior = latest_set(conn, org, start_ms, end_ms, claim_file_sha256)
    if prior is not None:
        prior_header = decode_header(prior[1])
        if prior_header.root == root and prior[3] == ctx_sha:
            rec = conn.execute("SELECT receipt FROM claim_verdict_sets WHERE set_id = %s", (prior[0],)).fetchone()
            return SealedSet(prior[0], prior_header.kind, prior_header.amends, prior_header, rec[0], unchanged=True)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    stamp = datetime.fromtimestamp(now_ms / 1000, UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3]
    header = BatchHeader(batch_id=f"claims:{org}:{stamp}:{root[:8]}", site=chain_of(org),
                         kind="restatement" if prior else "verdicts", window_start_ms=start_ms, window_end_ms=end_ms,
                         leaf_count=len(leaves), root=root, prev_hash=backend.head(chain_of(org)),
                         findings_digest=ctx_sha, sealed_ms=now_ms, amends=prior[0] if prior else None)
    receipt = backend.anchor(header)
    rec = msgspec.to_builtins(receipt)
    conn.execute(
        "INSERT INTO claim_verdict_sets (set_id, org_id, period_start, period_end, claim_file_sha256, context_sha256, "
        "context, verdicts, header, receipt, supersedes) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (header.batch_id, org, datetime.fromtimestamp(start_ms / 1000, UTC), datetime.fromtimestamp(end_ms / 1000, UTC),
         claim_file_sha256, ctx_sha, ctx, leaves, header_bytes(header), psycopg.types.json.Jsonb(rec),
         header.amends))
    conn.commit()
    return SealedSet(header.batch_id, header.kind, header.amends, header, rec, unchanged=False)


def _set_problems(backend: LedgerBackend, set_id: str, header_raw: bytes, leaves: list[bytes], ctx: bytes,
                  ctx_sha: str, supersedes: str | None) -> list[Problem]:
    import json

    out: list[Problem] = []

    def differs(detail: str) -> None:
        out.append(Problem(VERDICT_SET_DIFFERS, "verdict_set", (set_id,), f"verdict set {set_id}: {detail}"))

    anchored = backend.get(set_id)
    if anchored is None:
        differs("the ledger holds no such set")
        return out
    h = anchored[0]
    if header_raw != header_bytes(h):
        differs("its stored header is not the anchored one")
    if verdict_root(leaves) != h.root or len(leaves) != h.leaf_count:
        differs(f"its {len(leaves)} stored verdicts do not rebuild the anchored root (tree of {h.leaf_count})")
    if hashlib.sha256(ctx).hexdigest() != h.findings_digest or ctx_sha != h.findings_digest:
        differs("its stored context is not the one whose digest was anchored")
    if supersedes != h.amends:
        differs(f"it says it supersedes {supersedes}, the ledger says {h.amends}")
    try:
        context = json.loads(ctx)
    except ValueError:
        return out
    for batch_id, hh in context.get("batches", []):
        got = backend.get(batch_id)
        if got is None or header_hash(got[0]) != hh:
            out.append(Problem(VERDICT_BATCH_NOT_ANCHORED, "batch", (batch_id,),
                               f"verdict set {set_id} rests on batch {batch_id}, which the ledger "
                               + ("does not hold" if got is None else "holds with another header")))
    return out


def _rows(dsn: str, query: str, params: dict[str, Any]) -> list[Any]:
    """The stored rows; none on a store whose schema predates the table (anything the ledger holds is then
    named as missing from the store: `wattproof db upgrade` adds the table)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]
        except psycopg.errors.UndefinedTable:
            return []


def check_verdict_sets(dsn: str, backend: LedgerBackend, org: str | None = None) -> list[Problem]:
    """Every stored verdict set equals what was anchored (leaves → root, context → digest, supersedes →
    amends) and rests on anchored batches; every anchored set is in the store."""
    out: list[Problem] = []
    rows = _rows(dsn, "SELECT set_id, header, verdicts, context, context_sha256, supersedes FROM claim_verdict_sets "
                      "WHERE %(org)s::text IS NULL OR org_id = %(org)s ORDER BY created_at, set_id", {"org": org})
    stored = set()
    for set_id, header_raw, leaves, ctx, ctx_sha, supersedes in rows:
        stored.add(set_id)
        out += _set_problems(backend, set_id, bytes(header_raw), [bytes(v) for v in leaves], bytes(ctx), ctx_sha,
                             supersedes)
    for ev in backend.events():
        h = ev.header
        if h.kind not in ("verdicts", "restatement") or h.batch_id in stored:
            continue
        if org is not None and h.site != chain_of(org):
            continue
        out.append(Problem(VERDICT_SET_MISSING_IN_STORE, "verdict_set", (h.batch_id,),
                           f"the ledger holds verdict set {h.batch_id} of {h.site.removeprefix('claims:')} "
                           f"({h.leaf_count} verdicts), the store does not"))
    return out


# --- report manifests (audit/reports; migration 0701): the same check for the `report` headers ------------

REPORT_DIFFERS = "report_manifest_differs"  # a stored report manifest is not what was anchored
REPORT_MISSING_IN_STORE = "report_missing_in_store"  # the ledger holds a report the store lost


def check_report_manifests(dsn: str, backend: LedgerBackend) -> list[Problem]:
    """Every stored report manifest equals what was anchored: its header is the anchored one, its manifest
    bytes hash to the anchored digest and their files rebuild the anchored root (RFC 8785 ``{name, sha256}``
    leaves in name order, docs/reports.md); every report header on the ledger is in the store."""
    import json

    out: list[Problem] = []
    rows = _rows(dsn, "SELECT report_id, manifest, header FROM report_manifests ORDER BY report_id", {})
    stored = set()
    for report_id, manifest, header_raw in rows:
        stored.add(report_id)
        manifest, header_raw = bytes(manifest), bytes(header_raw)

        def differs(detail: str, rid: str = report_id) -> None:
            out.append(Problem(REPORT_DIFFERS, "report", (rid,), f"report {rid}: {detail}"))

        anchored = backend.get(report_id)
        if anchored is None:
            differs("the ledger holds no such report")
            continue
        h = anchored[0]
        if header_raw != header_bytes(h):
            differs("its stored header is not the anchored one")
        if hashlib.sha256(manifest).hexdigest() != h.findings_digest:
            differs("its stored manifest is not the one whose digest was anchored")
            continue
        try:
            files = json.loads(manifest)["files"]
            leaves = [canonical({"name": f["name"], "sha256": f["sha256"]}) for f in sorted(files, key=lambda f: f["name"])]
        except (ValueError, KeyError, TypeError):
            differs("its manifest lists no files")
            continue
        if verdict_root(leaves) != h.root or len(leaves) != h.leaf_count:
            differs("its manifest's files do not rebuild the anchored root")
    for ev in backend.events():
        if ev.header.kind == "report" and ev.header.batch_id not in stored:
            out.append(Problem(REPORT_MISSING_IN_STORE, "report", (ev.header.batch_id,),
                               f"the ledger holds report {ev.header.batch_id}, the store does not"))
    return out
