"""The embedded local ledger: an append-only file of operator-signed, hash-chained records.

Owns: one JSON line per anchored header — ``{"position", "header", "header_hash", "prev_record",
"record_hash", "sig"}`` — where ``record_hash`` = SHA-256 of the RFC 8785 bytes of
``{position, header_hash, prev_record}`` and ``sig`` is the operator's Ed25519 signature of
``record_hash``. Appends are fsync'ed. Opening the file re-checks every record (chain, hashes,
signatures), so an edited or truncated file is refused with the line at fault. Implements
``LedgerBackend`` and enforces the per-site header chain like the Fabric chaincode does.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from device.identity import generate_key, read_private_key, write_private_key
from device.wire import b64url, b64url_decode
from ledger.backend import (
    GENESIS_HASH,
    AlreadyAnchored,
    AnchoredEvent,
    BatchHeader,
    ChainBroken,
    InvalidHeader,
    LedgerMismatch,
    Receipt,
    amends_problem,
    decode_header,
    header_bytes,
    header_hash,
)
from ledger.canonical import loads_strict

GENESIS_RECORD = "0" * 64


_HEX64 = frozenset("0123456789abcdef")
_sorted_json = msgspec.json.Encoder(order="sorted")


def _record_hash(position: int, hh: str, prev: str) -> str:
    """SHA-256 of the RFC 8785 bytes of ``{header_hash, position, prev_record}``. For the shape every record has
    (two lowercase hex digests, a position below 2^53) those bytes are msgspec's sorted compact JSON, which is
    several times faster than the general encoder; anything else goes through ``rfc8785``."""
    record = {"header_hash": hh, "position": position, "prev_record": prev}
    if (type(position) is int and 0 <= position < 2**53 and len(hh) == 64 and len(prev) == 64
            and _HEX64.issuperset(hh) and _HEX64.issuperset(prev)):
        return hashlib.sha256(_sorted_json.encode(record)).hexdigest()
    return hashlib.sha256(rfc8785.dumps(record)).hexdigest()


class _Record(msgspec.Struct, forbid_unknown_fields=True):
    """A ledger line as this module writes it (``json.dumps(rec, sort_keys=True, separators=(",", ":"))``)."""

    anchored_ms: int
    header: str
    header_hash: str
    position: int
    prev_record: str
    record_hash: str
    sig: str


_record_decoder = msgspec.json.Decoder(_Record)


def _parse_record(line: bytes) -> dict[str, Any]:
    """One ledger line, read one way: a line that is exactly the sorted compact encoding of what it decodes to
    (every line this module writes: ASCII members and values) is taken from the fast typed decode; any other
    spelling (older lines, escapes, duplicate members) goes through ``loads_strict``, as every line once did."""
    try:
        rec = _record_decoder.decode(line)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return loads_strict(line)
    if _sorted_json.encode(rec) != line:
        return loads_strict(line)
    return msgspec.structs.asdict(rec)


class LocalLedger:
    name = "local"

    def __init__(self, path: Path, operator_key: Ed25519PrivateKey | None,
                 pinned: list[Ed25519PublicKey] | None = None) -> None:
        """``operator_key``: the operator's private key (anchoring); ``None`` with ``pinned`` public keys for
        a verifier, which checks every record's signature against the keys it pinned and cannot anchor."""
        if operator_key is None and not pinned:
            raise ValueError("a local ledger needs the operator's key or pinned public keys")
        self.path = path
        self.key = operator_key
        self.pub = operator_key.public_key() if operator_key is not None else pinned[0]  # type: ignore[index]
        self._verifiers = pinned if pinned else [self.pub]
        self._records: list[tuple[BatchHeader, Receipt]] = []
        self._by_id: dict[str, int] = {}
        self._heads: dict[str, str] = {}
        self._last_record = GENESIS_RECORD
        self._offset = 0  # bytes of the file read and checked so far
        # anchor() appends to one file-wide record chain (position, prev_record): one at a time, so
        # seal_windows may anchor different sites from several threads.
        self._lock = threading.Lock()
        if operator_key is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self._load()

    @classmethod
    def open(cls, directory: Path, create: bool = True) -> LocalLedger:
        """The ledger in ``directory`` with its operator key (created on first use, 0600).

        ``create=False`` (every read-only command): a missing ledger or key is an error, never made."""
        key_file = directory / "operator.key"
        if not create and not (directory / "ledger.jsonl").exists():
            raise LedgerMismatch(f"no ledger at {directory} (no ledger.jsonl there; read-only commands never create one)")
        if key_file.exists():
            key = read_private_key(key_file)
        elif not create:
            raise LedgerMismatch(f"no operator key at {key_file} (read-only commands never create one)")
        else:
            key = generate_key()
            write_private_key(key_file, key)
        return cls(directory / "ledger.jsonl", key)

    @contextlib.contextmanager
    def _file_lock(self, exclusive: bool) -> Iterator[None]:
        """Between processes: one writer at a time, and no reader sees half a record (``ledger.lock`` beside
        the file, flock). Within a process ``self._lock`` orders the threads."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fh = open(lock_path, "a+b" if exclusive else "rb")  # a reader creates nothing
        except OSError:  # a read-only directory, or no writer ever: nobody can be writing there
            yield
            return
        with fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _load(self) -> None:
        with self._file_lock(exclusive=False):
            self._load_new()

    def refresh(self) -> None:
        """Read and check the records appended to the file since it was opened or last refreshed (their chain
        on the records already read, and their signatures): a long-lived reader keeps up without reopening."""
        with self._lock:
            self._load()

    @property
    def checked_bytes(self) -> int:
        """How many bytes of the file this object has read and checked (whole records)."""
        return self._offset

    def _load_new(self) -> None:
        """Read and check the records appended since this object last read the file (another process may
        have anchored meanwhile): a writer must chain on the file's last record, not on what it saw at open."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        if data and not data.endswith(b"\n"):
            raise LedgerMismatch(f"{self.path}: last record is incomplete (file truncated?)")
        entries = []
        pos, last = len(self._records), self._last_record
        for lineno, line in enumerate(data.splitlines(), len(self._records) + 1):
            try:
                rec = _parse_record(line)
                hb = rec["header"].encode()
                header = decode_header(hb)  # the header whose canonical bytes are exactly hb: its hash is theirs
                hh = hashlib.sha256(hb).hexdigest()
                ok = (rec["position"] == pos and rec["header_hash"] == hh and rec["prev_record"] == last
                      and rec["record_hash"] == _record_hash(rec["position"], hh, rec["prev_record"]))
                sig, rh = b64url_decode(rec["sig"]), bytes.fromhex(rec["record_hash"])
            except (ValueError, KeyError, TypeError, msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise LedgerMismatch(f"{self.path}:{lineno}: unreadable record ({exc})") from None
            if not ok:
                raise LedgerMismatch(f"{self.path}:{lineno}: record does not chain (edited, reordered or removed records)")
            entries.append((lineno, rec, header, sig, rh))
            pos, last = pos + 1, rec["record_hash"]
        self._check_signatures([(n, sig, rh) for n, _, _, sig, rh in entries])
        for _, rec, header, _, _ in entries:
            self._index(header, self._receipt(rec, header))
            self._last_record = rec["record_hash"]
        self._offset += len(data)

    def _check_signatures(self, items: list[tuple[int, bytes, bytes]]) -> None:
        """Every record's operator signature, against the keys this ledger trusts: in one native batch where
        the library is built (the one acceptance rule, ~14 µs a signature on two threads: opening a year's
        ledger of 219k records took ~20 s one by one), and one by one for what it does not prove."""
        unproven = items
        if len(items) > 64:
            from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

            from ledger import nativelib

            if nativelib.LIB is not None:
                for pub in self._verifiers:
                    if not unproven:
                        break
                    raw = pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
                    ok = nativelib.verify_batch([rh for _, _, rh in unproven], [sig for _, sig, _ in unproven],
                                                [raw] * len(unproven))
                    unproven = [it for it, good in zip(unproven, ok, strict=True) if not good]
        for lineno, sig, rh in unproven:
            try:
                self._check_signature(sig, rh)
            except InvalidSignature:
                raise LedgerMismatch(f"{self.path}:{lineno}: operator signature does not verify") from None

    def _check_signature(self, sig: bytes, record_hash: bytes) -> None:
        for pub in self._verifiers:
            try:
                pub.verify(sig, record_hash)
                return
            except InvalidSignature:
                continue
        raise InvalidSignature

    @classmethod
    def open_pinned(cls, directory: Path, operator_keys: list[str]) -> LocalLedger:
        """The ledger in ``directory`` for a verifier: read only, every record checked against the operator
        keys the verifier pinned (base64url Ed25519), whatever key file lies beside it."""
        path = directory / "ledger.jsonl"
        if not path.exists():
            raise LedgerMismatch(f"no ledger at {directory} (no ledger.jsonl there; read-only commands never create one)")
        try:
            pinned = [Ed25519PublicKey.from_public_bytes(b64url_decode(k)) for k in operator_keys]
        except ValueError as exc:
            raise LedgerMismatch(f"a pinned operator key is not an Ed25519 public key ({exc})") from None
        if not pinned:
            raise LedgerMismatch("no operator key pinned: a local ledger cannot be verified without one")
        return cls(path, None, pinned)

    def _receipt(self, rec: dict, header: BatchHeader) -> Receipt:  # type: ignore[type-arg]
        return Receipt(backend="local", batch_id=header.batch_id, header_hash=rec["header_hash"],
                       anchored_ms=rec.get("anchored_ms", 0), ref=rec["position"], record_hash=rec["record_hash"],
                       signature=rec["sig"], prev_record=rec["prev_record"])

    def _index(self, header: BatchHeader, receipt: Receipt) -> None:
        self._records.append((header, receipt))  # before the id points at it: a concurrent get never misses
        self._by_id[header.batch_id] = len(self._records) - 1
        self._heads[header.site] = receipt.header_hash

    # --- LedgerBackend --------------------------------------------------------------------
    def anchor(self, header: BatchHeader) -> Receipt:
        with self._lock:
            return self._anchor(header)

    def _anchor(self, header: BatchHeader) -> Receipt:
        with self._file_lock(exclusive=True):
            self._load_new()
            return self._anchor_locked(header)

    def _anchor_locked(self, header: BatchHeader) -> Receipt:
        if self.key is None:
            raise LedgerMismatch(f"{self.path} is open for verification only: it cannot anchor")
        if not isinstance(header, BatchHeader):
            raise InvalidHeader("not a BatchHeader")
        try:  # msgspec checks constraints on decode, not on construction: re-validate every field
            header = decode_header(header_bytes(header))
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise InvalidHeader(f"batch {header.batch_id!r}: {exc}") from None
        if header.batch_id in self._by_id:
            raise AlreadyAnchored(f"batch {header.batch_id} is already on the ledger")
        amended = self.get(header.amends) if header.amends is not None else None
        problem = amends_problem(header, amended[0] if amended else None)
        if problem is not None:
            raise InvalidHeader(f"batch {header.batch_id}: {problem}")
        head = self._heads.get(header.site, GENESIS_HASH)
        if header.prev_hash != head:
            raise ChainBroken(f"batch {header.batch_id}: prev_hash {header.prev_hash[:12]}… is not the head "
                              f"{head[:12]}… of site {header.site}")
        position = len(self._records)
        hh = header_hash(header)
        rh = _record_hash(position, hh, self._last_record)
        rec = {"position": position, "header": header_bytes(header).decode(), "header_hash": hh,
               "prev_record": self._last_record, "record_hash": rh,
               "sig": b64url(self.key.sign(bytes.fromhex(rh))), "anchored_ms": int(time.time() * 1000)}
        line = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        with open(self.path, "ab") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self._offset += len(line)
        receipt = self._receipt(rec, header)
        self._index(header, receipt)
        self._last_record = rh
        return receipt

    def anchor_many(self, headers: list[BatchHeader]) -> list[Receipt]:
        """Anchor a run of headers (each chaining on the one before it, or on its site's head) with one write
        and one fsync; all or nothing: the same refusals as ``anchor``, raised before anything is written."""
        with self._lock, self._file_lock(exclusive=True):
            self._load_new()
            heads = dict(self._heads)
            ids: set[str] = set()
            checked = []
            for header in headers:
                try:  # its canonical bytes once: checked, hashed and recorded as they are
                    hb = header_bytes(header)
                    header = decode_header(hb)
                except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
                    raise InvalidHeader(f"batch {header.batch_id!r}: {exc}") from None
                if header.batch_id in self._by_id or header.batch_id in ids:
                    raise AlreadyAnchored(f"batch {header.batch_id} is already on the ledger")
                head = heads.get(header.site, GENESIS_HASH)
                if header.prev_hash != head:
                    raise ChainBroken(f"batch {header.batch_id}: prev_hash {header.prev_hash[:12]}… is not the head "
                                      f"{head[:12]}… of site {header.site}")
                ids.add(header.batch_id)
                hh = hashlib.sha256(hb).hexdigest()
                heads[header.site] = hh
                checked.append((header, hb, hh))
            if self.key is None:
                raise LedgerMismatch(f"{self.path} is open for verification only: it cannot anchor")
            recs, last, now = [], self._last_record, int(time.time() * 1000)
            for i, (_, hb, hh) in enumerate(checked):
                rh = _record_hash(len(self._records) + i, hh, last)
                recs.append({"position": len(self._records) + i, "header": hb.decode(),
                             "header_hash": hh, "prev_record": last, "record_hash": rh,
                             "sig": b64url(self.key.sign(bytes.fromhex(rh))), "anchored_ms": now})
                last = rh
            blob = b"".join(json.dumps(r, sort_keys=True, separators=(",", ":")).encode() + b"\n" for r in recs)
            with open(self.path, "ab") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            self._offset += len(blob)
            out = []
            for rec, (header, _, _) in zip(recs, checked, strict=True):
                receipt = self._receipt(rec, header)
                self._index(header, receipt)
                out.append(receipt)
            self._last_record = last
            return out

    def get(self, batch_id: str) -> tuple[BatchHeader, Receipt] | None:
        i = self._by_id.get(batch_id)
        return None if i is None else self._records[i]

    def head(self, site: str) -> str:
        return self._heads.get(site, GENESIS_HASH)

    def events(self, start: int = 0) -> Iterator[AnchoredEvent]:
        for i in range(start, len(self._records)):
            header, receipt = self._records[i]
            yield AnchoredEvent(position=i, header=header, receipt=receipt)

    def close(self) -> None:
        pass
