"""The dashboard's local ledger (``dashboard.cache.ledger``): opened and checked once per process, then only
what is appended to its file is read and checked — and a forged appended record, or an edit inside records
already checked, is refused as a fresh open refuses it (never served from what was checked before).

Pure file tests (a local ledger in a temporary directory, no store): Streamlit's cache runs in bare mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dashboard import cache
from dashboard import queries as q
from device.identity import public_key_b64
from ledger.backend import BatchHeader, LedgerMismatch
from ledger.local import LocalLedger
from ledger.seal import EMPTY_FINDINGS_DIGEST
from ledger.trust import FORMAT, Trust, write_trust

HOUR_MS = 3_600_000


def _anchor(led: LocalLedger, first: int, n: int, site: str = "s01") -> list[str]:
    ids = []
    for i in range(first, first + n):
        h = BatchHeader(batch_id=f"{site}:{i}", site=site, kind="seal", window_start_ms=i * HOUR_MS,
                        window_end_ms=(i + 1) * HOUR_MS, leaf_count=300, root=f"{i % 256:02x}" * 32,
                        prev_hash=led.head(site), findings_digest=EMPTY_FINDINGS_DIGEST, sealed_ms=(i + 1) * HOUR_MS)
        led.anchor(h)
        ids.append(h.batch_id)
    return ids


def _swap_sig(file: Path, line: int, with_line: int) -> None:
    """Give record ``line`` (0-based) the signature of record ``with_line``: same bytes count, wrong signature."""
    lines = file.read_bytes().splitlines()
    a, b = json.loads(lines[line]), json.loads(lines[with_line])
    a["sig"] = b["sig"]
    lines[line] = json.dumps(a, sort_keys=True, separators=(",", ":")).encode()
    file.write_bytes(b"\n".join(lines) + b"\n")


@pytest.fixture
def ledger_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[LocalLedger, Path, list[int]]:
    """The operator's writable ledger with 3 anchors, a trust pinning its key, and a count of full opens."""
    led = LocalLedger.open(tmp_path / "ledger")
    _anchor(led, 0, 3)
    trust = tmp_path / "trust.json"
    write_trust(trust, Trust(format=FORMAT, operator_keys=[public_key_b64(led.pub)]))
    opens = [0]
    real = q.open_ledger

    def counting(*args: Any) -> Any:
        opens[0] += 1
        return real(*args)

    monkeypatch.setattr(q, "open_ledger", counting)
    cache._local_ledger.clear()
    return led, trust, opens


def test_ledger_is_opened_once_and_then_sees_appended_anchors_without_reopening(ledger_env: Any) -> None:
    led, trust, opens = ledger_env
    first = cache.ledger("local", led.path.parent, trust)
    assert opens == [1] and first.get("s01:2") is not None and first.key is None  # a verifier: pinned keys only
    assert cache.ledger("local", led.path.parent, trust) is first and opens == [1]  # unchanged file: not reread
    new = _anchor(led, 3, 2)
    again = cache.ledger("local", led.path.parent, trust)
    assert again is first and opens == [1]
    assert all(again.get(b) is not None for b in new) and again.head("s01") == led.head("s01")


def test_appended_record_with_a_forged_signature_is_refused_and_stays_refused(ledger_env: Any) -> None:
    led, trust, opens = ledger_env
    cache.ledger("local", led.path.parent, trust)
    _anchor(led, 3, 1)
    _swap_sig(led.path, 3, 0)
    with pytest.raises(LedgerMismatch, match=r"ledger.jsonl:4: operator signature does not verify"):
        cache.ledger("local", led.path.parent, trust)
    with pytest.raises(LedgerMismatch, match=r":4: operator signature does not verify"):
        cache.ledger("local", led.path.parent, trust)  # a fresh open now, refusing the same record
    assert opens[0] >= 2


def test_edit_inside_records_already_checked_forces_a_full_check_that_refuses_it(ledger_env: Any) -> None:
    led, trust, opens = ledger_env
    cache.ledger("local", led.path.parent, trust)
    _swap_sig(led.path, 0, 1)  # same size, an old record edited in place…
    _anchor(led, 3, 1)  # …and a genuine append after it: growth alone must not hide the edit
    with pytest.raises(LedgerMismatch, match=r"ledger.jsonl:1: operator signature does not verify"):
        cache.ledger("local", led.path.parent, trust)
    assert opens == [2]


def test_truncated_ledger_is_opened_again_in_full(ledger_env: Any) -> None:
    led, trust, opens = ledger_env
    cache.ledger("local", led.path.parent, trust)
    lines = led.path.read_bytes().splitlines(keepends=True)
    led.path.write_bytes(b"".join(lines[:2]))
    shorter = cache.ledger("local", led.path.parent, trust)
    assert opens == [2] and shorter.get("s01:2") is None and shorter.get("s01:1") is not None
