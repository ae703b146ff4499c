"""``FabricLedger``: the ``LedgerBackend`` that anchors batch headers on a Fabric channel through the
Gateway (``ledger.fabric.gateway``), guarded by the wattproof chaincode (``ledger/chaincode``).

Owns: mapping the chaincode's error codes (``INVALID_HEADER``, ``ALREADY_ANCHORED``, ``CHAIN_BROKEN``)
to the ledger errors, idempotent anchoring (an unknown commit outcome is settled by reading the batch
back before anything is resubmitted; an MVCC conflict is re-endorsed; a batch is never anchored
twice), receipts (tx id, block, channel) and the ordered event stream (positions are
``block * 100_000 + tx index``, read from the peer's Deliver service, valid transactions only).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from ledger.backend import (
    AlreadyAnchored,
    AnchoredEvent,
    BatchHeader,
    ChainBroken,
    InvalidHeader,
    LedgerError,
    LedgerUnavailable,
    Receipt,
    decode_header,
    header_bytes,
    header_hash,
)
from ledger.fabric.gateway import CommitError, Gateway, GatewayError, Identity, result_of

log = logging.getLogger("wattproof.ledger.fabric")

POSITION_STRIDE = 100_000  # > the orderer's MaxMessageCount (500): block * stride + tx index is unique
_UNAVAILABLE = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "CANCELLED", "UNKNOWN", "INTERNAL"}


class _Retry(Exception):
    """Internal: this attempt can be retried (after the outcome is settled)."""

    def __init__(self, cause: Exception, outcome_unknown: bool) -> None:
        super().__init__(str(cause))
        self.cause, self.outcome_unknown = cause, outcome_unknown


class _Record(msgspec.Struct):
    batch_id: str
    site: str
    header: str
    header_hash: str
    seq: int
    tx_id: str
    tx_time_ms: int


_record = msgspec.json.Decoder(_Record)


def _chaincode_error(exc: GatewayError) -> LedgerError | None:
    text = exc.all_messages
    for code, cls in (("INVALID_HEADER", InvalidHeader), ("ALREADY_ANCHORED", AlreadyAnchored),
                      ("CHAIN_BROKEN", ChainBroken), ("NOT_FOUND", InvalidHeader), ("BAD_REQUEST", InvalidHeader)):
        i = text.find(code + ":")
        if i >= 0:
            return cls(text[i:].split(";")[0].strip())
    return None


class FabricLedger:
    name = "fabric"

    def __init__(self, gateway: Gateway, chaincode: str = "wattproof", retry_for: float = 60.0) -> None:
        self.gw = gateway
        self.chaincode = chaincode
        self.retry_for = retry_for  # how long anchor() keeps retrying an unavailable network

    @classmethod
    def from_profile(cls, profile: dict[str, Any] | Path, org: str = "org1", **kw: Any) -> FabricLedger:
        """Connect as ``org``'s client user using a profile (``<network dir>/profile.json``)."""
        p = json.loads(Path(profile).read_text()) if isinstance(profile, Path) else profile
        ident = Identity.from_files(p["msp_id"][org], p["user_cert"][org], p["user_key"][org])
        gw = Gateway(p["peers"][org], p["tls_ca"][org], ident, p["channel"])
        return cls(gw, p["chaincode"], **kw)

    # ---- LedgerBackend -------------------------------------------------------------------------
    def anchor(self, header: BatchHeader) -> Receipt:
        raw = header_bytes(header)
        want = header_hash(header)
        unknown = False
        try:
            for attempt in Retrying(stop=stop_after_delay(self.retry_for), reraise=False,
                                    wait=wait_exponential(multiplier=0.2, max=3),
                                    retry=retry_if_exception_type(_Retry),
                                    before_sleep=lambda rs: log.warning(  # what is retried, and why
                                        "anchoring %s on Fabric: attempt %d failed (%s); retrying for up to %.0f s",
                                        header.batch_id, rs.attempt_number,
                                        getattr(rs.outcome.exception() if rs.outcome else None, "cause", "?"),
                                        self.retry_for)):
                with attempt:
                    if unknown:  # a previous attempt may have committed: look before resubmitting
                        got = self._get_record(header.batch_id)
                        if got is not None and got.header_hash == want:
                            return self._receipt(got, block=self._block_of(got.tx_id))
                    try:
                        return self._anchor_once(raw, want)
                    except _Retry as r:
                        unknown = unknown or r.outcome_unknown
                        raise
                    except AlreadyAnchored:
                        if unknown:  # perhaps by our own earlier attempt: settle by reading it back
                            raise _Retry(LedgerUnavailable("outcome of an earlier attempt still unknown"),
                                         outcome_unknown=True) from None
                        raise
                    except ChainBroken as exc:
                        # Endorsement runs on both orgs' peers. One that has not yet committed the
                        # block with this site's previous header still sees the older head and refuses.
                        # Our own org's peer (which the Gateway confirmed the previous commit on) tells
                        # a lagging peer from a genuinely stale prev_hash.
                        if self.head(header.site) == header.prev_hash:
                            raise _Retry(exc, outcome_unknown=unknown) from None
                        raise
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            inner = cause.cause if isinstance(cause, _Retry) else cause
            hint = (" — the endorsement policy needs a peer of each organisation it names: is every one running?"
                    if "endorsement policy" in str(inner) or "enough transaction endorsements" in str(inner) else "")
            raise LedgerUnavailable(f"anchoring {header.batch_id} on Fabric failed for {self.retry_for:.0f} s: "
                                    f"{inner}{hint}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _anchor_once(self, raw: bytes, want: str) -> Receipt:
        p = self.gw.proposal(self.chaincode, "AnchorBatch", [raw])
        try:
            env = self.gw.endorse(p)
        except GatewayError as exc:
            mapped = _chaincode_error(exc)
            if mapped is not None:
                raise mapped from None
            raise _Retry(exc, outcome_unknown=False) from None  # nothing was submitted
        rec = _record.decode(result_of(env))
        try:
            self.gw.submit(p.tx_id, env)
        except GatewayError as exc:
            raise _Retry(exc, outcome_unknown=True) from None
        try:
            code, block = self.gw.commit_status(p.tx_id)
        except GatewayError as exc:
            raise _Retry(exc, outcome_unknown=True) from None
        if code == "MVCC_READ_CONFLICT" or code == "PHANTOM_READ_CONFLICT":
            raise _Retry(CommitError(p.tx_id, code, block), outcome_unknown=False)
        if code != "VALID":
            raise LedgerError(str(CommitError(p.tx_id, code, block)))
        if rec.header_hash != want:
            raise LedgerError(f"chaincode hashed the header as {rec.header_hash}, expected {want}")
        return self._receipt(rec, block)

    def _receipt(self, rec: _Record, block: int | None) -> Receipt:
        return Receipt(backend="fabric", batch_id=rec.batch_id, header_hash=rec.header_hash,
                       anchored_ms=rec.tx_time_ms, tx_id=rec.tx_id, block=block, channel=self.gw.channel)

    def _block_of(self, tx_id: str) -> int | None:
        try:
            return self.gw.block_of(tx_id)
        except GatewayError:
            return None

    def _evaluate(self, fn: str, *args: str) -> bytes:
        try:
            return self.gw.evaluate(self.chaincode, fn, [a.encode() for a in args])
        except GatewayError as exc:
            mapped = _chaincode_error(exc)
            if mapped is not None:
                raise mapped from None
            raise LedgerUnavailable(str(exc)) from None

    def _get_record(self, batch_id: str) -> _Record | None:
        out = self._evaluate("GetBatch", batch_id)
        return _record.decode(out) if out else None

    def get(self, batch_id: str) -> tuple[BatchHeader, Receipt] | None:
        rec = self._get_record(batch_id)
        if rec is None:
            return None
        return decode_header(rec.header.encode()), self._receipt(rec, block=None)

    def head(self, site: str) -> str:
        return str(json.loads(self._evaluate("GetHead", site))["header_hash"])

    def list_site(self, site: str, from_seq: int = 1, limit: int = 1000) -> list[tuple[BatchHeader, Receipt]]:
        recs = msgspec.json.decode(self._evaluate("ListBatches", site, str(from_seq), str(limit)), type=list[_Record])
        return [(decode_header(r.header.encode()), self._receipt(r, None)) for r in recs]

    def events(self, start: int = 0) -> Iterator[AnchoredEvent]:
        try:
            for ev in self.gw.events_in_blocks(self.chaincode, start // POSITION_STRIDE):
                pos = ev.block * POSITION_STRIDE + ev.tx_index
                if pos < start or ev.name != "BatchAnchored":
                    continue
                rec = _record.decode(ev.payload)
                yield AnchoredEvent(position=pos, header=decode_header(rec.header.encode()),
                                    receipt=self._receipt(rec, ev.block))
        except GatewayError as exc:
            raise LedgerUnavailable(str(exc)) from None

    def close(self) -> None:
        self.gw.close()


def wait_ready(ledger: FabricLedger, timeout: float = 60.0) -> None:
    """Wait until an anchoring could be endorsed: peers up, chaincode connected, and discovery
    converged so that the Gateway finds every organisation the policy needs. Probes with a
    read-only proposal that is endorsed but never submitted (nothing is written)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            ledger.gw.endorse(ledger.gw.proposal(ledger.chaincode, "GetHead", [b"wattproof-readiness-probe"]))
            return
        except GatewayError as exc:
            last = exc
            time.sleep(0.3)
    raise LedgerUnavailable(f"Fabric network not ready after {timeout:.0f} s: {last}")
