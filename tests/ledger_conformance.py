"""The one conformance suite every ledger backend passes (local now; Fabric subclasses it too).

Subclass ``LedgerConformance`` and provide a ``backend`` fixture yielding a fresh backend (or one
where the site ids used here are new: tests call ``site()`` for ids of their own).
"""

from __future__ import annotations

import itertools
import uuid

import pytest

from ledger.backend import (
    GENESIS_HASH,
    AlreadyAnchored,
    BatchHeader,
    ChainBroken,
    InvalidHeader,
    LedgerBackend,
    header_bytes,
    header_hash,
)

_n = itertools.count()


def site() -> str:
    return f"conf-{uuid.uuid4().hex[:10]}"


def make_header(site_id: str, n: int, prev: str, **over: object) -> BatchHeader:
    fields: dict[str, object] = dict(batch_id=f"{site_id}:{n}", site=site_id, kind="seal", window_start_ms=n * 3600_000,
                                     window_end_ms=(n + 1) * 3600_000, leaf_count=10 + n, root=f"{n:064x}",
                                     prev_hash=prev, findings_digest="0" * 64, sealed_ms=1_780_000_000_000)
    fields.update(over)
    return BatchHeader(**fields)  # type: ignore[arg-type]


class LedgerConformance:
    @pytest.fixture
    def backend(self) -> LedgerBackend:  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    def test_anchor_returns_a_receipt_for_exactly_that_header(self, backend: LedgerBackend) -> None:
        h = make_header(site(), 0, GENESIS_HASH)
        receipt = backend.anchor(h)
        assert receipt.batch_id == h.batch_id and receipt.header_hash == header_hash(h)
        assert receipt.backend == backend.name

    def test_get_returns_the_same_header_bytes(self, backend: LedgerBackend) -> None:
        h = make_header(site(), 0, GENESIS_HASH)
        backend.anchor(h)
        got = backend.get(h.batch_id)
        assert got is not None and header_bytes(got[0]) == header_bytes(h)
        assert backend.get("no-such-batch") is None

    def test_head_follows_the_chain_from_genesis(self, backend: LedgerBackend) -> None:
        s = site()
        assert backend.head(s) == GENESIS_HASH
        h0 = make_header(s, 0, GENESIS_HASH)
        backend.anchor(h0)
        assert backend.head(s) == header_hash(h0)
        h1 = make_header(s, 1, header_hash(h0))
        backend.anchor(h1)
        assert backend.head(s) == header_hash(h1)

    def test_a_batch_id_is_never_anchored_twice(self, backend: LedgerBackend) -> None:
        s = site()
        h0 = make_header(s, 0, GENESIS_HASH)
        backend.anchor(h0)
        with pytest.raises(AlreadyAnchored):
            backend.anchor(make_header(s, 0, header_hash(h0), root="f" * 64))
        assert backend.get(h0.batch_id)[0].root == h0.root  # type: ignore[index]

    def test_a_broken_chain_is_refused(self, backend: LedgerBackend) -> None:
        s = site()
        backend.anchor(make_header(s, 0, GENESIS_HASH))
        with pytest.raises(ChainBroken):
            backend.anchor(make_header(s, 1, GENESIS_HASH))
        with pytest.raises(ChainBroken):
            backend.anchor(make_header(site(), 0, "a" * 64))

    def test_a_malformed_header_is_refused(self, backend: LedgerBackend) -> None:
        s = site()
        with pytest.raises(InvalidHeader):
            backend.anchor(make_header(s, 0, GENESIS_HASH, root="not-hex"))
        assert backend.head(s) == GENESIS_HASH

    def test_sites_have_independent_chains(self, backend: LedgerBackend) -> None:
        a, b = site(), site()
        ha = make_header(a, 0, GENESIS_HASH)
        backend.anchor(ha)
        backend.anchor(make_header(b, 0, GENESIS_HASH))
        backend.anchor(make_header(a, 1, header_hash(ha)))
        assert backend.head(a) != backend.head(b)

    def test_events_stream_every_anchoring_in_order(self, backend: LedgerBackend) -> None:
        s = site()
        before = list(backend.events())
        h0 = make_header(s, 0, GENESIS_HASH)
        backend.anchor(h0)
        backend.anchor(make_header(s, 1, header_hash(h0)))
        new = list(backend.events(start=before[-1].position + 1 if before else 0))
        assert [e.header.batch_id for e in new] == [f"{s}:0", f"{s}:1"]
        assert [e.position for e in new] == sorted(e.position for e in new)
