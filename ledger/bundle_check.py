"""Checking a proof bundle: the document and the verifier's pinned trust → every problem found.

Owns: the bundle document (``wattproof-proof-bundle/2``, docs/proofs.md "Proof bundle") as strict
types, and ``check_bundle`` / ``verify_bundle``. A bundle binds every field it shows: each one is
recomputed from bytes a pinned key signed, or compared with one that is; a field that cannot be is
refused (unknown fields, unexpected types, duplicate member names, non-canonical bytes). Pure: no
database, no files; SHA-256, RFC 8785, RFC 6962/9162 inclusion and Ed25519 under the one acceptance
rule (``device.ed25519``). Must not: take trust from the bundle — the keys it shows are hints,
checked against the ``Trust`` the verifier supplies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import rfc8785

from device import ed25519
from device.wire import (
    READING_WINDOW,
    WireError,
    b64url,
    decode_frame,
    reading_window_problem,
    verify_signed_frame,
)
from ledger import merkle
from ledger.backend import BatchHeader, decode_header, header_bytes
from ledger.canonical import LEAF_VERSION, Leaf, leaf_bytes, loads_strict
from ledger.trust import Trust

FORMAT: Final = "wattproof-proof-bundle/2"
REFUSED_FORMATS: Final = {
    "wattproof-proof-bundle/1": "its local receipts show a record hash that cannot be recomputed from the bundle "
                                "(no prev_record), so the operator's signature does not bind the header it shows; "
                                "export the bundle again with `wattproof proof export` (format /2)",
}
NOT_VERIFIED: Final = ("self-consistent only, not verified: no trust pinned (keys shown in a bundle are hints; "
                       "pass a trust file or the operator and device keys)")


# --- the document, field by field (docs/proofs.md) ----------------------------------------------
class _Strict(msgspec.Struct, forbid_unknown_fields=True):
    pass


class ReadingProof(_Strict):
    leaf_b64: str
    leaf_index: int
    tree_size: int
    audit_path: list[str]
    root: str


class LocalReceipt(_Strict, tag_field="backend", tag="local"):
    batch_id: str
    header_hash: str
    position: int
    prev_record: str
    record_hash: str
    signature: str


class FabricReceipt(_Strict, tag_field="backend", tag="fabric"):
    batch_id: str
    header_hash: str
    anchored_ms: int  # the transaction's time: bound by the evidence (the record the chaincode wrote)
    tx_id: str
    block: int
    channel: str


class BatchProof(_Strict):
    header: str
    receipt: LocalReceipt | FabricReceipt
    readings: list[ReadingProof]
    fabric_evidence: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET


class LocalLedgerInfo(_Strict, tag_field="backend", tag="local"):
    operator_public_key: str


class FabricLedgerInfo(_Strict, tag_field="backend", tag="fabric"):
    pass


class FrameEntry(_Strict):
    seq: int
    raw_b64: str


class Bundle(_Strict):
    format: str
    device: str
    site: str
    device_public_key: str
    ledger: LocalLedgerInfo | FabricLedgerInfo
    batches: list[BatchProof]
    frames: list[FrameEntry]


# --- checking a bundle -------------------------------------------------------------------------
@dataclass(frozen=True)
class BundleCheck:
    """What ``check_bundle`` found. ``pinned``: the keys were checked against a verifier's Trust."""

    problems: list[str]
    pinned: bool
    readings: int = 0
    device: str = ""
    batches: int = 0

    @property
    def verified(self) -> bool:
        return self.pinned and not self.problems


def verify_bundle(bundle: bytes | str | dict[str, Any], trust: Trust | None) -> list[str]:
    """Every problem; empty means verified against ``trust``. Without trust the list is never empty
    (``NOT_VERIFIED`` when the bundle is self-consistent). Pass the file's bytes when you have them:
    only then can duplicate member names be refused."""
    check = check_bundle(bundle, trust)
    return check.problems if check.problems or check.pinned else [NOT_VERIFIED]


def _loads_strict(data: bytes | str) -> Any:
    """Strict JSON (RFC 7493 I-JSON): duplicate member names, NaN/Infinity and bad UTF-8 refused."""
    return loads_strict(data)  # raises StrictJSONError, a ValueError


def check_bundle(bundle: bytes | str | dict[str, Any], trust: Trust | None) -> BundleCheck:
    pinned = trust is not None
    doc: Any = bundle
    if isinstance(bundle, bytes | str):
        try:
            doc = _loads_strict(bundle)
        except ValueError as exc:
            return BundleCheck([f"bundle is not strict JSON: {exc}"], pinned)
    fmt = doc.get("format") if isinstance(doc, dict) else None
    if isinstance(fmt, str) and fmt in REFUSED_FORMATS:
        return BundleCheck([f"{fmt} is refused: {REFUSED_FORMATS[fmt]}"], pinned)
    if fmt != FORMAT:
        return BundleCheck([f"not a {FORMAT} document (format {fmt!r})"], pinned)
    try:
        b = msgspec.convert(doc, Bundle, strict=True)
    except msgspec.ValidationError as exc:
        return BundleCheck([f"malformed bundle: {exc}"], pinned)
    c = _Checker(b, trust)
    c.run()
    return BundleCheck(c.problems, pinned, sum(len(x.readings) for x in b.batches), b.device, len(b.batches))


_HEX32 = re.compile(r"[0-9a-f]{64}")
_B64URL = re.compile(r"[A-Za-z0-9_\-]*")


def _hash32(text: str) -> bytes | None:
    return bytes.fromhex(text) if _HEX32.fullmatch(text) else None


def _b64url_exact(text: str, size: int) -> bytes | None:
    """Raw bytes of an unpadded base64url text of exactly ``size`` bytes in its one canonical spelling."""
    if not _B64URL.fullmatch(text):
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == size and b64url(raw) == text else None


def _b64_exact(text: str) -> bytes | None:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode() == text else None


def record_hash(header_hash: str, position: int, prev_record: str) -> str:
    """The local ledger's record hash (docs/proofs.md "Local ledger"): SHA-256 of RFC 8785
    ``{"header_hash", "position", "prev_record"}``."""
    return hashlib.sha256(rfc8785.dumps({"header_hash": header_hash, "position": position,
                                         "prev_record": prev_record})).hexdigest()


@dataclass
class _Frame:
    seq: int
    ok: bool  # decoded, signed by the device key, of this device and site
    readings: list[Any] = field(default_factory=list)
    used: bool = False


class _Checker:
    def __init__(self, bundle: Bundle, trust: Trust | None) -> None:
        self.b = bundle
        self.trust = trust
        self.problems: list[str] = []
        self.frames: dict[str, _Frame] = {}
        self.seen: set[tuple[int, int]] = set()
        self.skipped = False  # a batch whose header could not be read: its frames are not "unreferenced"

    def bad(self, text: str) -> None:
        self.problems.append(text)

    def skip(self, text: str) -> None:
        self.skipped = True
        self.problems.append(text)

    def key(self, what: str, shown: str, pinned: bool) -> bytes | None:
        raw = _b64url_exact(shown, 32)
        if raw is None:
            self.bad(f"{what} {shown!r} is not a base64url Ed25519 public key (32 bytes)")
            return None
        if self.trust is not None and not pinned:
            self.bad(f"{what} {shown} is not pinned by the trust (a key shown in a bundle is only a hint)")
        why = ed25519.key_problem(raw)
        if why:
            self.bad(f"{what} {shown} is not acceptable ({why})")
        return raw

    def run(self) -> None:
        b, t = self.b, self.trust
        dev_key = self.key(f"device key of {b.device}", b.device_public_key,
                           t is not None and t.device_pinned(b.device, b.device_public_key))
        op_key = None
        if isinstance(b.ledger, LocalLedgerInfo):
            op_key = self.key("operator key", b.ledger.operator_public_key,
                              t is not None and t.operator_pinned(b.ledger.operator_public_key))
        if not b.batches:
            self.bad("bundle has no batches (an empty bundle proves nothing)")
        if not b.frames:
            self.bad("bundle has no frames (no reading can be traced to a device signature)")
        for entry in b.frames:
            self.frame(entry, dev_key)
        batch_ids: set[str] = set()
        for batch in b.batches:
            self.batch(batch, op_key, batch_ids)
        for f in self.frames.values():
            if not f.used and not self.skipped:
                self.bad(f"frame seq {f.seq} is not referenced by any reading (a bundle shows only what it proves)")

    def frame(self, entry: FrameEntry, dev_key: bytes | None) -> None:
        where = f"frame seq {entry.seq}"
        raw = _b64_exact(entry.raw_b64)
        if raw is None:
            return self.bad(f"{where}: raw_b64 is not base64 in its canonical spelling")
        sha = hashlib.sha256(raw).hexdigest()
        if sha in self.frames:
            return self.bad(f"{where}: listed twice")
        try:
            frame = decode_frame(raw)
        except WireError as exc:
            self.frames[sha] = _Frame(entry.seq, False)
            return self.bad(f"{where}: refused by the wire decoder ({exc})")
        f = self.frames[sha] = _Frame(entry.seq, False, list(frame.readings))
        if frame.seq != entry.seq:
            return self.bad(f"{where}: the entry holds the frame with seq {frame.seq}")
        if any(g.seq == entry.seq and g is not f for g in self.frames.values()):
            return self.bad(f"{where}: two different frames carry this seq")
        if (frame.device, frame.site) != (self.b.device, self.b.site):
            return self.bad(f"{where}: a frame of {frame.device} at site {frame.site}, not of {self.b.device} "
                            f"at {self.b.site}")
        if dev_key is None:
            return None
        rotated = self.trust.device_periods(self.b.device) if self.trust is not None else None
        try:
            if rotated is not None and rotated.only is None:  # the pinned key valid at the frame's signed sent_ms
                rotated.verify_signature(frame)
                if (why := reading_window_problem(frame)) is not None:
                    raise WireError(READING_WINDOW, why)
            else:
                verify_signed_frame(frame, dev_key)
        except WireError as exc:
            return self.bad(f"{where}: device signature does not verify ({exc.reason})" if exc.reason != "reading_window"
                            else f"{where}: refused by the wire format ({exc})")
        f.ok = True
        return None

    def batch(self, batch: BatchProof, op_key: bytes | None, batch_ids: set[str]) -> None:
        try:
            hb = batch.header.encode()
            _loads_strict(hb)
            header = decode_header(hb)
        except (ValueError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            return self.skip(f"batch header {batch.header[:60]!r}…: refused ({exc})")
        bid = header.batch_id
        if header_bytes(header) != hb:
            return self.skip(f"batch {bid}: header is not canonical (RFC 8785)")
        if bid in batch_ids:
            return self.skip(f"batch {bid}: listed twice")
        batch_ids.add(bid)
        if header.site != self.b.site:
            self.bad(f"batch {bid}: header of site {header.site}, not {self.b.site}")
        self.receipt(batch, header, hb, op_key)
        if not batch.readings:
            self.bad(f"batch {bid}: has no readings (a partial bundle proves nothing)")
        root = bytes.fromhex(header.root)
        indexes: set[int] = set()
        for r in batch.readings:
            self.reading(r, header, root, indexes)
        return None

    def receipt(self, batch: BatchProof, header: BatchHeader, hb: bytes, op_key: bytes | None) -> None:
        rc, bid = batch.receipt, header.batch_id
        kind = "local" if isinstance(rc, LocalReceipt) else "fabric"
        if kind != ("local" if isinstance(self.b.ledger, LocalLedgerInfo) else "fabric"):
            return self.bad(f"batch {bid}: a {kind} receipt in a bundle whose ledger is not {kind}")
        hh = hashlib.sha256(hb).hexdigest()
        if rc.batch_id != bid or rc.header_hash != hh:
            return self.bad(f"batch {bid}: receipt names batch {rc.batch_id} with header_hash {rc.header_hash[:16]}…, "
                            f"the header hashes to {hh[:16]}…")
        if isinstance(rc, FabricReceipt):
            return self.fabric(batch, rc, hb, bid)
        if not isinstance(batch.fabric_evidence, msgspec.UnsetType):
            return self.bad(f"batch {bid}: fabric_evidence shown with a local receipt")
        if _hash32(rc.prev_record) is None or _hash32(rc.record_hash) is None:
            return self.bad(f"batch {bid}: receipt prev_record / record_hash is not a 32-byte hash (hex)")
        if not 0 <= rc.position <= 2**53 - 1:
            return self.bad(f"batch {bid}: receipt position {rc.position} is out of range")
        if rc.record_hash != record_hash(hh, rc.position, rc.prev_record):
            return self.bad(f"batch {bid}: receipt record_hash is not SHA-256 of (header_hash, position, prev_record)")
        sig = _b64url_exact(rc.signature, 64)
        if sig is None:
            return self.bad(f"batch {bid}: receipt signature is not a base64url Ed25519 signature (64 bytes)")
        if op_key is not None and not ed25519.verify(op_key, sig, bytes.fromhex(rc.record_hash)):
            return self.bad(f"batch {bid}: the operator signature over record_hash does not verify")
        return None

    def fabric(self, batch: BatchProof, rc: FabricReceipt, hb: bytes, bid: str) -> None:
        """Offline Fabric evidence (block, endorsements, orderer signature) against the pinned roots."""
        if isinstance(batch.fabric_evidence, msgspec.UnsetType):
            return self.bad(f"batch {bid}: fabric receipt without fabric_evidence (its anchoring cannot be checked)")
        if self.trust is None:
            return None  # nothing pinned: the whole bundle is reported as not verified
        if self.trust.fabric is None:
            return self.bad(f"batch {bid}: fabric receipt not verified: no Fabric trust pinned (trust file `fabric`)")
        try:
            from ledger.fabric.evidence import verify_evidence
        except ImportError:
            return self.bad(f"batch {bid}: fabric receipt not verified: this build cannot check Fabric evidence")
        receipt = {"backend": "fabric", **msgspec.to_builtins(rc)}
        self.problems += [f"batch {bid}: {p}" for p in verify_evidence(batch.fabric_evidence, hb, receipt,
                                                                         self.trust.fabric)]
        return None

    def reading(self, r: ReadingProof, header: BatchHeader, root: bytes, indexes: set[int]) -> None:
        where = f"batch {header.batch_id}: reading at leaf {r.leaf_index}"
        if r.leaf_index in indexes:
            return self.bad(f"{where}: listed twice")
        indexes.add(r.leaf_index)
        if r.root != header.root:
            return self.bad(f"{where}: root {r.root[:16]}… is not the header's root {header.root[:16]}…")
        if r.tree_size != header.leaf_count:
            return self.bad(f"{where}: tree_size {r.tree_size} is not the header's leaf_count {header.leaf_count}")
        path = [_hash32(h) for h in r.audit_path]
        if any(p is None for p in path):
            return self.bad(f"{where}: audit_path holds a value that is not a 32-byte hash (hex)")
        leaf = _b64_exact(r.leaf_b64)
        if leaf is None:
            return self.bad(f"{where}: leaf_b64 is not base64 in its canonical spelling")
        if not merkle.verify_inclusion(merkle.leaf_hash(leaf), r.leaf_index, r.tree_size,
                                       [p for p in path if p is not None], root):
            return self.bad(f"{where}: not included under the header's root (RFC 9162 §2.1.3.2)")
        return self.leaf(leaf, header, where)

    def leaf(self, raw: bytes, header: BatchHeader, where: str) -> None:
        try:
            leaf = msgspec.convert(_loads_strict(raw), Leaf, strict=True)
        except (ValueError, msgspec.ValidationError) as exc:
            return self.bad(f"{where}: leaf refused ({exc})")
        if leaf_bytes(leaf) != raw or leaf.v != LEAF_VERSION:
            return self.bad(f"{where}: leaf is not canonical (RFC 8785, version {LEAF_VERSION})")
        where = f"reading {(leaf.device, leaf.seq, leaf.idx)} of batch {header.batch_id}"
        if leaf.device != self.b.device:
            return self.bad(f"{where}: belongs to another device than {self.b.device}")
        if (leaf.seq, leaf.idx) in self.seen:
            return self.bad(f"{where}: listed twice")
        self.seen.add((leaf.seq, leaf.idx))
        if not header.window_start_ms <= leaf.ts_ms < header.window_end_ms:
            self.bad(f"{where}: ts_ms {leaf.ts_ms} is outside its batch's window")
        f = self.frames.get(leaf.frame_sha256)
        if f is None:
            return self.bad(f"{where}: its signed frame ({leaf.frame_sha256[:16]}…) is not in the bundle")
        f.used = True
        if not f.ok:
            return None  # the frame's problem is already named
        if leaf.seq != f.seq or leaf.idx >= len(f.readings):
            return self.bad(f"{where}: not in its frame (seq {f.seq}, {len(f.readings)} readings)")
        fr = f.readings[leaf.idx]
        if (fr.ts_ms, fr.channel, fr.energy_wh, fr.power_w) != (leaf.ts_ms, leaf.channel, leaf.energy_wh, leaf.power_w):
            return self.bad(f"{where}: differs from the reading the device signed")
        return None

