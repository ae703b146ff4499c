"""The embedded local ledger: an append-only file of operator-signed, hash-chained records.

Owns: one JSON line per anchored header — ``{"position", "header", "header_hash", "prev_record",
"record_hash", "sig"}`` — where ``record_hash`` = SHA-256 of the RFC 8785 bytes of
``{position, header_hash, prev_record}`` and ``sig`` is the operator's Ed25519 signature of
``record_hash``. Appends are fsync'ed. Opening the file re-checks every record (chain, hashes,
signatures), so an edited or truncated file is refused with the line at fault. Implements
``LedgerBackend`` and enforces the per-site header chain like the Fabric chaincode does.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_sim.identity import generate_key, read_private_key, write_private_key
from firmware_sim.wire import b64url, b64url_decode
from ledger.backend import (
    GENESIS_HASH,
    AlreadyAnchored,
    AnchoredEvent,
    BatchHeader,
    ChainBroken,
    InvalidHeader,
    LedgerMismatch,
    Receipt,
    decode_header,
    header_bytes,
    header_hash,
)

GENESIS_RECORD = "0" * 64


def _record_hash(position: int, hh: str, prev: str) -> str:
    return hashlib.sha256(rfc8785.dumps({"position": position, "header_hash": hh, "prev_record": prev})).hexdigest()


class LocalLedger:
    name = "local"

    def __init__(self, path: Path, operator_key: Ed25519PrivateKey) -> None:
        self.path = path
        self.key = operator_key
        self.pub = operator_key.public_key()
        self._records: list[tuple[BatchHeader, Receipt]] = []
        self._by_id: dict[str, int] = {}
        self._heads: dict[str, str] = {}
        self._last_record = GENESIS_RECORD
        # anchor() appends to one file-wide record chain (position, prev_record): one at a time, so
        # seal_windows may anchor different sites from several threads.
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self._load()

    @classmethod
    def open(cls, directory: Path) -> LocalLedger:
        """The ledger in ``directory`` with its operator key (created on first use, 0600)."""
        key_file = directory / "operator.key"
        if key_file.exists():
            key = read_private_key(key_file)
        else:
            key = generate_key()
            write_private_key(key_file, key)
        return cls(directory / "ledger.jsonl", key)

    def _load(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            raise LedgerMismatch(f"{self.path}: last record is incomplete (file truncated?)")
        for lineno, line in enumerate(data.splitlines(), 1):
            try:
                rec = json.loads(line)
                header = decode_header(rec["header"].encode())
                hh = header_hash(header)
                ok = (rec["position"] == len(self._records) and rec["header_hash"] == hh
                      and rec["prev_record"] == self._last_record
                      and rec["record_hash"] == _record_hash(rec["position"], hh, rec["prev_record"]))
                self.pub.verify(b64url_decode(rec["sig"]), bytes.fromhex(rec["record_hash"]))
            except InvalidSignature:
                raise LedgerMismatch(f"{self.path}:{lineno}: operator signature does not verify") from None
            except (ValueError, KeyError, TypeError, msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise LedgerMismatch(f"{self.path}:{lineno}: unreadable record ({exc})") from None
            if not ok:
                raise LedgerMismatch(f"{self.path}:{lineno}: record does not chain (edited, reordered or removed records)")
            self._index(header, self._receipt(rec, header))
            self._last_record = rec["record_hash"]

    def _receipt(self, rec: dict, header: BatchHeader) -> Receipt:  # type: ignore[type-arg]
        return Receipt(backend="local", batch_id=header.batch_id, header_hash=rec["header_hash"],
                       anchored_ms=rec.get("anchored_ms", 0), ref=rec["position"], record_hash=rec["record_hash"],
                       signature=rec["sig"])

    def _index(self, header: BatchHeader, receipt: Receipt) -> None:
        self._by_id[header.batch_id] = len(self._records)
        self._records.append((header, receipt))
        self._heads[header.site] = receipt.header_hash

    # --- LedgerBackend --------------------------------------------------------------------
    def anchor(self, header: BatchHeader) -> Receipt:
        with self._lock:
            return self._anchor(header)

    def _anchor(self, header: BatchHeader) -> Receipt:
        if not isinstance(header, BatchHeader):
            raise InvalidHeader("not a BatchHeader")
        try:  # msgspec checks constraints on decode, not on construction: re-validate every field
            header = decode_header(header_bytes(header))
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise InvalidHeader(f"batch {header.batch_id!r}: {exc}") from None
        if header.batch_id in self._by_id:
            raise AlreadyAnchored(f"batch {header.batch_id} is already on the ledger")
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
        receipt = self._receipt(rec, header)
        self._index(header, receipt)
        self._last_record = rh
        return receipt

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
