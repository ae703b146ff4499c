"""``build_report``: one organisation's report for a period — files written, manifest signed and anchored.

Owns: the orchestration (gather → figures → files → manifest) and the report document (``report.json``,
format ``wattproof-report/1``, docs/reports.md "report.json"). With a claim file, its claims are checked
first (``audit.claims.verdict.check_claims``, which anchors a verdict set or finds it unchanged) and the
report shows that set. Reads the store; writes only the report directory, one ledger header of kind
``report`` and its row in ``report_manifests``.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.claims.load import load_site_hours
from audit.reports import figures, gather, tables
from audit.reports.esrs import esrs_rows
from audit.reports.manifest import seal_report, store_manifest
from audit.reports.model import (
    BATCHES_NAME,
    CSV_NAME,
    FORMATS,
    HOUR_MS,
    HOURLY_COLUMNS,
    JSON_NAME,
    PARQUET_NAME,
    PDF_NAME,
    REPORT_FORMAT,
    ReportError,
    ReportSummary,
)
from ledger.backend import LedgerBackend, decode_header, header_hash


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_args(org: str, p0: int, p1: int, formats: Iterable[str], out_dir: Path) -> list[str]:
    fmts = [f.strip().lower() for f in formats if f.strip()]
    bad = [f for f in fmts if f not in FORMATS]
    if bad or not fmts:
        raise ReportError(f"unknown format(s) {', '.join(bad) or '(none)'}: choose from {', '.join(FORMATS)}")
    if p0 % HOUR_MS or p1 % HOUR_MS or p1 <= p0:
        raise ReportError(f"period [{iso(p0) if p0 >= 0 else p0}, {iso(p1) if p1 >= 0 else p1}) must be whole UTC "
                          f"hours, from before to")
    if not org:
        raise ReportError("an organisation id is required")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ReportError(f"{out_dir} exists and is not an empty directory")
    return fmts


def _claims_first(dsn: str, backend: LedgerBackend, org: str, claim_file: Path, inputs: Any,
                  now_ms: int | None) -> tuple[str, str | None, list[str]]:
    """Run the claim file (anchoring its verdict set); (set id, organisation name, sites)."""
    from audit.claims.schema import load_claim_file
    from audit.claims.verdict import Inputs, check_claims

    cf = load_claim_file(claim_file)
    if cf.organisation.id != org:
        raise ReportError(f"{claim_file} is about organisation {cf.organisation.id!r}, not {org!r}")
    if inputs is None:
        if cf.inputs is None:
            raise ReportError(f"{claim_file}: no `inputs` (intensity, factors, certificates): name them in the claim "
                              f"file or pass them")
        i = cf.inputs
        inputs = Inputs(Path(i.intensity), Path(i.factors), Path(i.certificates),
                        Path(i.weather) if i.weather else None)
    run = check_claims(dsn, Path(claim_file), inputs, backend, now_ms=now_ms)
    return run.sealed.set_id, cf.organisation.name, list(cf.sites)


def _anchoring(rows: Sequence[tuple[Any, ...]], on_ledger: set[str], sites: list[str]) -> dict[str, Any]:
    per: dict[str, dict[str, Any]] = {s: {"site": s, "batches": 0, "leaves": 0, "on_ledger": 0, "first_window_ms": None,
                                          "last_window_ms": None} for s in sites}
    ids = []
    for bid, site, _k, _a, w0, _w1, leaf_count, *_ in rows:
        p = per[site]
        w = gather.ms(w0)
        p["batches"] += 1
        p["leaves"] += int(leaf_count)
        p["on_ledger"] += bid in on_ledger
        p["first_window_ms"] = w if p["first_window_ms"] is None else min(p["first_window_ms"], w)
        p["last_window_ms"] = w if p["last_window_ms"] is None else max(p["last_window_ms"], w)
        ids.append(bid)
    return {"batches": len(ids), "on_ledger": len(on_ledger), "file": BATCHES_NAME,
            "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(), "per_site": list(per.values())}


def _verdict_set_doc(vs: dict[str, Any] | None, backend: LedgerBackend) -> dict[str, Any] | None:
    if vs is None:
        return None
    h = decode_header(vs["header"].encode())
    got = backend.get(vs["set_id"])
    return {"set_id": vs["set_id"], "kind": h.kind, "period": vs["period"], "period_iso": [iso(x) for x in vs["period"]],
            "claim_file_sha256": vs["claim_file_sha256"], "context_sha256": vs["context_sha256"],
            "header": vs["header"], "receipt": vs["receipt"], "supersedes": vs["supersedes"],
            "on_ledger": got is not None and got[1].header_hash == header_hash(h),
            "batches": len(vs["context"].get("batches", []))}


def build_report(dsn: str, backend: LedgerBackend, org: str, period_from_ms: int, period_to_ms: int,
                 formats: Iterable[str], out_dir: Path, claim_file: Path | None = None, *, inputs: Any = None,
                 sites: Sequence[str] | None = None, signing_key: Ed25519PrivateKey | None = None,
                 now_ms: int | None = None) -> ReportSummary:
    """Write the report of ``org`` for [period_from_ms, period_to_ms) into ``out_dir`` (created; must be empty)
    in ``formats`` (any of pdf, csv, parquet, json), then sign and anchor its manifest.

    ``claim_file``: check its claims first (``inputs``: an ``audit.claims.verdict.Inputs``, default the claim
    file's ``inputs``). ``sites``: default the claim file's, else those of the organisation's latest verdict set.
    ``signing_key``: the operator's Ed25519 key; default the local ledger's (``LocalLedger.key``) — a Fabric
    backend needs it passed (the CLI reads the operator key file). Raises ``ReportError``."""
    t0 = time.perf_counter()
    p0, p1 = int(period_from_ms), int(period_to_ms)
    out_dir = Path(out_dir)
    fmts = _check_args(org, p0, p1, formats, out_dir)
    key = signing_key if signing_key is not None else getattr(backend, "key", None)
    if key is None:
        raise ReportError("no operator key to sign the manifest with: a local ledger opened with its key, or pass "
                          "signing_key (the Fabric backend has none of its own)")
    set_id = name = None
    if claim_file is not None:
        set_id, name, claim_sites = _claims_first(dsn, backend, org, Path(claim_file), inputs, now_ms)
        sites = sites or claim_sites
    with psycopg.connect(dsn) as conn:
        vs = gather.verdict_set(conn, org, p0, p1, set_id)
        site_list = list(sites) if sites else (list(vs["context"]["sites"]) if vs else gather.org_sites(conn, org))
        info = gather.site_names(conn, site_list)
        site_hours = load_site_hours(conn, site_list, p0, p1)
        found = gather.findings(conn, site_list, p0, p1)
        brows = gather.batches(conn, site_list, p0, p1)
        on_ledger = gather.on_ledger(backend, {r[0]: r[8] for r in brows})
        cov = gather.coverage(conn, site_list, {s: info[s]["devices"] for s in site_list}, p0, p1, brows, on_ledger)
    energy = figures.energy(site_hours)
    verdicts = vs["verdicts"] if vs else []
    stored = sum(c["readings_stored"] for c in cov)
    anchored = sum(c["readings_anchored"] for c in cov)
    doc: dict[str, Any] = {
        "format": REPORT_FORMAT, "generated": iso(int(time.time() * 1000) if now_ms is None else now_ms),
        "organisation": {"id": org, "name": name}, "sites": site_list,
        "site_names": {s: info[s]["name"] for s in site_list},
        "period": {"from_ms": p0, "to_ms": p1, "from": iso(p0), "to": iso(p1), "hours": (p1 - p0) // HOUR_MS},
        "summary": {"readings_expected": sum(c["readings_expected"] for c in cov), "readings_stored": stored,
                    "readings_sealed": sum(c["readings_sealed"] for c in cov), "readings_anchored": anchored,
                    "anchored_share": anchored / stored if stored else None, "findings": len(found),
                    "findings_high": sum(f["severity"] == "high" for f in found),
                    "verdicts": dict(Counter(v["verdict"] for v in verdicts))},
        "energy": energy, "energy_daily": figures.daily(site_hours) if len(energy["months"]) < 2 else [],
        "verdict_set": _verdict_set_doc(vs, backend), "verdicts": verdicts,
        "findings": found, "coverage": cov, "anchoring": _anchoring(brows, on_ledger, site_list),
        "esrs": esrs_rows(energy["org"], verdicts, [p0, p1]),
        "hourly": {"columns": list(HOURLY_COLUMNS), "rows": sum(s.hours for s in site_hours),
                   "files": [n for f, n in (("csv", CSV_NAME), ("parquet", PARQUET_NAME)) if f in fmts]},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    if "csv" in fmts or "parquet" in fmts:
        cols = figures.hourly_columns(site_hours)
        if "csv" in fmts:
            tables.write_csv(out_dir / CSV_NAME, cols)
        if "parquet" in fmts:
            tables.write_parquet(out_dir / PARQUET_NAME, cols)
    if "json" in fmts:
        tables.write_json(out_dir / JSON_NAME, doc)
        tables.write_batches(out_dir / BATCHES_NAME, brows, on_ledger)
    if "pdf" in fmts:
        from audit.reports.pdf import write_pdf

        write_pdf(out_dir / PDF_NAME, doc)
    manifest = seal_report(out_dir, backend, key, org, site_list, (p0, p1), vs["set_id"] if vs else None, now_ms)
    store_manifest(dsn, manifest)
    core_sha = decode_header(manifest["anchor"]["header"].encode()).findings_digest
    return ReportSummary(out_dir=out_dir, report_id=manifest["report_id"], org=org, period=(p0, p1),
                         files={f["name"]: f["sha256"] for f in manifest["files"]}, root=manifest["root"],
                         manifest_sha256=core_sha, receipt=manifest["anchor"]["receipt"],
                         verdict_set=manifest["verdict_set"], verdicts=dict(doc["summary"]["verdicts"]),
                         seconds=time.perf_counter() - t0)
