"""``wattproof verify-report DIR``: a report directory checked offline against the trust the verifier pins.

Owns: the offline check of a report manifest (manifest.py) and its reason codes. Reads only the directory
and the trust it is given (``ledger.trust.Trust``): no database, no ledger, no network.

Checks, each failure a ``ReportProblem`` with one of the codes below:
1. ``manifest.json`` is strict JSON (I-JSON: duplicate members refused) of the expected shape;
2. every file in the directory is listed and equals its listed SHA-256 and size; none listed is missing;
3. the listed (name, sha256) leaves rebuild the manifest's RFC 6962 root;
4. the operator's Ed25519 signature over the canonical core verifies with the key the core names, and that
   key is one the verifier pinned (``operator_keys``);
5. the anchored header is exactly the one the core implies (report id, chain, window, leaf count, root,
   previous header, findings_digest = SHA-256 of the core, sealed time), and the receipt is for it:
   local ledger — the record hash recomputes from (header hash, position, previous record) and its Ed25519
   signature verifies under a pinned operator key; Fabric — the block carried as ``fabric_evidence`` proves
   the transaction against the pinned ``fabric`` roots (ledger.fabric.evidence).
Without pinned keys the checks run against the keys the manifest names: at best "self-consistent only".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec
import rfc8785

from audit.reports.manifest import (
    FORMAT,
    core_bytes,
    directory_files,
    files_root,
    implied_header,
    sha256_file,
)
from audit.reports.model import MANIFEST_NAME
from ledger.backend import HeaderNotCanonical, decode_header, header_bytes

# reason codes (docs/reports.md, "verify-report")
UNREADABLE: Final = "report_unreadable"  # no manifest.json, not strict JSON, or not of the expected shape
FILE_CHANGED: Final = "report_file_changed"  # a listed file's bytes differ from its SHA-256 or size
FILE_REMOVED: Final = "report_file_removed"  # a listed file is missing
FILE_ADDED: Final = "report_file_added"  # a file in the directory the manifest does not list
ROOT_MISMATCH: Final = "report_root_mismatch"  # the listed files do not rebuild the manifest's root
SIGNATURE_INVALID: Final = "report_signature_invalid"  # the manifest's signature does not verify (edited, re-hashed)
SIGNER_NOT_PINNED: Final = "report_signer_not_pinned"  # signed by a key the verifier did not pin
HEADER_MISMATCH: Final = "report_header_mismatch"  # the anchored header is not the one the manifest implies
RECEIPT_INVALID: Final = "report_receipt_invalid"  # the receipt is for another header or does not recompute
ANCHOR_NOT_PINNED: Final = "report_anchor_not_pinned"  # the ledger record is not signed by a pinned operator key
ANCHOR_UNPROVEN: Final = "report_anchor_unproven"  # a Fabric receipt without evidence or not proven by pinned roots
CODES: Final = (UNREADABLE, FILE_CHANGED, FILE_REMOVED, FILE_ADDED, ROOT_MISMATCH, SIGNATURE_INVALID,
                SIGNER_NOT_PINNED, HEADER_MISMATCH, RECEIPT_INVALID, ANCHOR_NOT_PINNED, ANCHOR_UNPROVEN)


@dataclass(frozen=True)
class ReportProblem:
    code: str
    subject: str  # a file name, "manifest", "signature", "anchor"
    detail: str


@dataclass
class ReportCheck:
    problems: list[ReportProblem] = field(default_factory=list)
    pinned: bool = False  # checked against pinned trust (else: self-consistent only)
    report_id: str | None = None
    files: int = 0
    anchoring: str = ""  # what the anchoring check established, for a person

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, code: str, subject: str, detail: str) -> None:
        self.problems.append(ReportProblem(code, subject, detail))


class _Signature(msgspec.Struct, forbid_unknown_fields=True):
    alg: str
    sig: str


class _File(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    sha256: str
    bytes: int


class _Manifest(msgspec.Struct, forbid_unknown_fields=True):
    format: str
    report_id: str
    org: str
    sites: list[str]
    period: list[int]
    created_ms: int
    chain: str
    prev_hash: str
    files: list[_File]
    root: str
    signer: str
    verdict_set: str | None
    signature: _Signature
    anchor: dict[str, Any]


def _ed25519_ok(key_b64: str, sig_b64: str, message: bytes) -> bool:
    from device import ed25519
    from device.wire import b64url_decode

    try:
        return ed25519.verify(b64url_decode(key_b64), b64url_decode(sig_b64), message)
    except (ValueError, TypeError):
        return False


def _read(directory: Path, res: ReportCheck) -> tuple[dict[str, Any], _Manifest] | None:
    from ledger.canonical import loads_strict

    path = directory / MANIFEST_NAME
    try:
        doc = loads_strict(path.read_bytes())
        m = msgspec.convert(doc, _Manifest)
    except OSError as exc:
        res.add(UNREADABLE, MANIFEST_NAME, f"cannot read {path} ({exc.strerror})")
        return None
    except (ValueError, msgspec.ValidationError) as exc:
        res.add(UNREADABLE, MANIFEST_NAME, f"{path} is not a {FORMAT} manifest ({exc})")
        return None
    if m.format != FORMAT or len(m.period) != 2 or m.signature.alg != "Ed25519":
        res.add(UNREADABLE, MANIFEST_NAME, f"{path}: format {m.format!r}, expected {FORMAT!r} with an Ed25519 signature")
        return None
    return doc, m


def _check_files(directory: Path, m: _Manifest, res: ReportCheck) -> None:
    listed = {f.name: f for f in m.files}
    if len(listed) != len(m.files):
        res.add(UNREADABLE, MANIFEST_NAME, "a file is listed twice")
    present = set(directory_files(directory))
    for name in sorted(present - set(listed)):
        res.add(FILE_ADDED, name, f"{name} is in the directory but not in the manifest (added)")
    for name, f in sorted(listed.items()):
        p = directory / name
        if name not in present or ".." in Path(name).parts or Path(name).is_absolute():
            res.add(FILE_REMOVED, name, f"{name} is listed in the manifest but missing (removed)")
            continue
        sha, n = sha256_file(p)
        if sha != f.sha256 or n != f.bytes:
            res.add(FILE_CHANGED, name, f"{name} was changed: SHA-256 {sha[:16]}… ({n} bytes), the manifest lists "
                                        f"{f.sha256[:16]}… ({f.bytes} bytes)")
    res.files = len(listed)


def verify_report(directory: Path, trust: Any = None) -> ReportCheck:
    """Check the report in ``directory`` offline; ``trust`` is a ``ledger.trust.Trust`` (None: nothing pinned).

    ``ok`` and ``pinned`` both true: verified. ``ok`` without ``pinned``: self-consistent only."""
    res = ReportCheck()
    got = _read(Path(directory), res)
    if got is None:
        return res
    doc, m = got
    res.report_id = m.report_id
    pinned_keys = list(trust.operator_keys) if trust is not None else []
    res.pinned = bool(pinned_keys)
    _check_files(Path(directory), m, res)
    files = [{"name": f.name, "sha256": f.sha256} for f in m.files]
    if files_root(files) != m.root:
        res.add(ROOT_MISMATCH, MANIFEST_NAME, "the listed files do not rebuild the manifest's root")
    core = {k: v for k, v in doc.items() if k not in ("signature", "anchor")}
    raw = core_bytes(core)
    if not _ed25519_ok(m.signer, m.signature.sig, raw):
        res.add(SIGNATURE_INVALID, "signature", "the operator signature does not verify over the manifest "
                                                "(the manifest was edited or re-hashed after signing)")
    elif pinned_keys and m.signer not in pinned_keys:
        res.add(SIGNER_NOT_PINNED, "signature", f"the manifest is signed by {m.signer[:12]}…, not by a pinned "
                                                "operator key")
    _check_anchor(m, core, raw, pinned_keys or [m.signer], trust, res)
    return res


def _check_anchor(m: _Manifest, core: dict[str, Any], raw: bytes, keys: list[str], trust: Any,
                  res: ReportCheck) -> None:
    anchor = m.anchor
    try:
        want = header_bytes(implied_header(core))
    except (HeaderNotCanonical, KeyError, TypeError, ValueError) as exc:
        res.add(HEADER_MISMATCH, "anchor", f"the manifest implies no valid header ({exc})")
        return
    got = anchor.get("header")
    if not isinstance(got, str):
        res.add(HEADER_MISMATCH, "anchor", "the manifest carries no anchored header")
        return
    try:
        decode_header(got.encode())
    except (HeaderNotCanonical, msgspec.ValidationError, msgspec.DecodeError) as exc:
        res.add(HEADER_MISMATCH, "anchor", f"the anchored header is not canonical ({exc})")
        return
    if got.encode() != want:
        res.add(HEADER_MISMATCH, "anchor", "the anchored header is not the one this manifest implies (its digest, "
                                           "root, file count, window or chain differ)")
        return
    hh = hashlib.sha256(want).hexdigest()
    r = anchor.get("receipt")
    if not isinstance(r, dict) or r.get("header_hash") != hh or r.get("batch_id") != m.report_id:
        res.add(RECEIPT_INVALID, "anchor", "the receipt is for another header")
        return
    if r.get("backend") == "local":
        try:
            rh = hashlib.sha256(rfc8785.dumps({"header_hash": hh, "position": r["ref"],
                                               "prev_record": r["prev_record"]})).hexdigest()
        except (KeyError, TypeError, rfc8785.CanonicalizationError) as exc:
            res.add(RECEIPT_INVALID, "anchor", f"the local receipt lacks a field ({exc})")
            return
        if r.get("record_hash") != rh:
            res.add(RECEIPT_INVALID, "anchor", "the local record hash does not recompute from the header")
            return
        if not any(_ed25519_ok(k, str(r.get("signature", "")), bytes.fromhex(rh)) for k in keys):
            res.add(ANCHOR_NOT_PINNED, "anchor", "the ledger record's signature does not verify under "
                    + ("a pinned operator key" if res.pinned else "the manifest's signer key"))
            return
        res.anchoring = (f"local ledger record {r['ref']} on chain {m.chain}, signed by "
                         + ("a pinned operator key" if res.pinned else "the manifest's own signer (not pinned)"))
    elif r.get("backend") == "fabric":
        fab = getattr(trust, "fabric", None) if trust is not None else None
        ev = anchor.get("fabric_evidence")
        if not isinstance(ev, dict):
            res.add(ANCHOR_UNPROVEN, "anchor", "a Fabric receipt without its block evidence")
            return
        if fab is None:
            if res.pinned:
                res.add(ANCHOR_UNPROVEN, "anchor", "a Fabric receipt: pin the network's roots (trust file `fabric`) "
                                                   "to prove it")
            else:
                res.anchoring = "Fabric receipt not proven: no Fabric roots pinned"
            return
        from ledger.fabric.evidence import verify_evidence

        problems = verify_evidence(ev, want, r, fab)
        for p in problems:
            res.add(ANCHOR_UNPROVEN, "anchor", p)
        if not problems:
            res.anchoring = f"Fabric transaction {r.get('tx_id')} in block {r.get('block')} of channel {r.get('channel')}"
    else:
        res.add(RECEIPT_INVALID, "anchor", f"unknown ledger backend {r.get('backend')!r}")
