"""The ledger interface: what every anchoring backend (embedded local ledger, Fabric) provides.

Owns: the batch header type and its canonical bytes/hash (RFC 8785), the receipt a backend
returns, the anchored-event type, the ``LedgerBackend`` protocol and the ledger error hierarchy.
Must not: know how a backend stores things, or read the store. One conformance suite
(``tests/ledger_conformance.py``) runs against every backend.

A site's headers form a hash chain: ``prev_hash`` is the ``header_hash`` of the site's previous
anchored header (``GENESIS_HASH`` for the first). A backend must refuse a header whose
``prev_hash`` is not its site's current head, and a ``batch_id`` it already holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Annotated, Final, Literal, Protocol, runtime_checkable

import msgspec

from device.errors import WattproofError

HEADER_VERSION: Final = 1
GENESIS_HASH: Final = "0" * 64

Hex32 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
SafeUInt = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]
Ident = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")]


class BatchHeader(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What is anchored for one sealed batch. Documented field by field in docs/proofs.md."""

    v: Literal[1] = 1
    batch_id: Ident
    site: Ident
    kind: Literal["seal", "amendment", "verdicts", "restatement", "report"]  # verdict sets (audit/claims); report manifests
    window_start_ms: SafeUInt  # inclusive, UTC ms
    window_end_ms: SafeUInt  # exclusive, UTC ms
    leaf_count: SafeUInt
    root: Hex32  # RFC 6962 Merkle tree head of the batch's leaves (hex)
    prev_hash: Hex32  # header_hash of the site's previous header, or GENESIS_HASH
    findings_digest: Hex32  # SHA-256 of the window's audit findings (canonical), see docs
    sealed_ms: SafeUInt
    amends: Ident | None = None  # batch id this amendment adds late readings to / verdict set a restatement supersedes


_encoder = msgspec.json.Encoder(order="sorted")
_header_decoder = msgspec.json.Decoder(BatchHeader)


def header_bytes(header: BatchHeader) -> bytes:
    """RFC 8785 canonical bytes (all fields are safe ints and ASCII strings; see wire.py).

    msgspec checks constraints on decode, not on construction: a header built in code with a value
    the schema does not admit (NaN, a bool, an integer beyond 2^53−1, an id needing escapes) would be
    written as bytes no verifier reads back, so the bytes are decoded again and must give the same
    header, or ``HeaderNotCanonical`` is raised."""
    try:
        data = _encoder.encode(header)
        back = _header_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, msgspec.EncodeError, OverflowError, TypeError) as exc:
        raise HeaderNotCanonical(f"batch header cannot be encoded exactly (RFC 8785): {exc}") from None
    if back != header:
        raise HeaderNotCanonical("batch header does not survive its own encoding (a value of the wrong type?)")
    return data


def decode_header(data: bytes) -> BatchHeader:
    """The header whose canonical bytes are exactly ``data``. Schema errors raise msgspec's
    ``ValidationError``/``DecodeError``; any other spelling of a valid header (duplicate members,
    key order, whitespace, escapes, ``1.0``) raises ``HeaderNotCanonical``: one reading of anchored bytes."""
    header = _header_decoder.decode(data)
    if _encoder.encode(header) != bytes(data):
        raise HeaderNotCanonical("batch header bytes are not the RFC 8785 encoding of the header they decode to "
                                 "(duplicate member, key order, whitespace, escapes or number spelling)")
    return header


#: Header kinds by family: readings batches, claim verdict sets (audit/claims) and report manifests (a report's
#: signed file list, anchored once). An amendment adds to a readings batch; a restatement supersedes a verdict
#: set. ``amends`` is set exactly for these two.
FAMILY: Final = {"seal": "readings", "amendment": "readings", "verdicts": "verdicts", "restatement": "verdicts",
                 "report": "reports"}


def amends_problem(header: BatchHeader, amended: BatchHeader | None) -> str | None:
    """Why ``header``'s ``amends`` is refused (None: fine), as the chaincode decides it."""
    amending = header.kind in ("amendment", "restatement")
    if amending != (header.amends is not None):
        return (f"field \"amends\" must name the amended batch when kind is {header.kind!r}" if amending
                else f"field \"amends\" must be null when kind is {header.kind!r}")
    if header.amends is None:
        return None
    if header.amends == header.batch_id:
        return "field \"amends\" must not name the batch itself"
    if amended is None:
        return f"amended batch {header.amends} is not on the ledger"
    if amended.site != header.site:
        return f"field \"amends\": batch {header.amends} belongs to site {amended.site}, not {header.site}"
    if FAMILY[amended.kind] != FAMILY[header.kind]:
        return f"field \"amends\": a {header.kind} cannot amend {header.amends}, a {amended.kind}"
    return None


def header_hash(header: BatchHeader) -> str:
    return hashlib.sha256(header_bytes(header)).hexdigest()


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    """Where a header was anchored. ``backend`` is ``"local"`` or ``"fabric"``.

    local: ``ref`` = record index (position), ``prev_record`` = the previous record's hash,
    ``record_hash`` = SHA-256 of RFC 8785 ``{header_hash, position, prev_record}`` (recomputable from
    the header and these two fields), ``signature`` = operator's Ed25519 signature of ``record_hash``.
    fabric: ``tx_id``, ``block``, ``channel``.
    """

    backend: str
    batch_id: str
    header_hash: Hex32
    anchored_ms: int
    tx_id: str | None = None
    block: int | None = None
    channel: str | None = None
    ref: int | None = None
    record_hash: str | None = None
    signature: str | None = None
    prev_record: str | None = None  # local: the previous record's hash, so record_hash can be recomputed


class AnchoredEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One anchoring, as streamed by ``LedgerBackend.events``; ``position`` orders them."""

    position: int
    header: BatchHeader
    receipt: Receipt


class LedgerError(WattproofError):
    """Base of ledger errors."""


class LedgerUnavailable(LedgerError):
    """The backend cannot be reached or refused to endorse/commit (retry may help)."""


class AlreadyAnchored(LedgerError):
    """A header with this batch id is already on the ledger (never overwritten)."""


class ChainBroken(LedgerError):
    """The header's prev_hash is not the site's current head."""


class InvalidHeader(LedgerError):
    """The header is malformed."""


class HeaderNotCanonical(InvalidHeader, ValueError):
    """A header, or header bytes, that are not exactly one RFC 8785 encoding (see ``header_bytes``)."""


class LedgerMismatch(LedgerError):
    """The ledger's content does not match what was expected (tampering or corruption)."""


@runtime_checkable
class LedgerBackend(Protocol):
    name: str

    def anchor(self, header: BatchHeader) -> Receipt:
        """Anchor ``header``; raise AlreadyAnchored / ChainBroken / InvalidHeader / LedgerUnavailable."""
        ...

    def get(self, batch_id: str) -> tuple[BatchHeader, Receipt] | None: ...

    def head(self, site: str) -> str:
        """header_hash of the site's latest anchored header, or GENESIS_HASH."""
        ...

    def events(self, start: int = 0) -> Iterator[AnchoredEvent]:
        """Anchored events from ``position >= start``, in order (finite: what exists now)."""
        ...

    def close(self) -> None: ...
