"""Claim verdict sets are evidence: anchored through the ledger interface, restated (never edited), and
checked by ``wattproof verify`` — every change to a stored set, a set lost from the store, a verdict
resting on a batch the ledger does not hold is named. Real PostgreSQL, the local ledger."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from firmware_sim.sim import simulate
from ingest.pipeline import ingest_payloads
from ingest.registry import register_device
from ledger.backend import GENESIS_HASH, BatchHeader, InvalidHeader, header_hash
from ledger.local import LocalLedger
from ledger.seal import seal_windows
from ledger.verdict_sets import (
    VERDICT_BATCH_NOT_ANCHORED,
    VERDICT_SET_DIFFERS,
    VERDICT_SET_MISSING_IN_STORE,
    check_verdict_sets,
    latest_set,
    seal_verdicts,
)
from ledger.verify import verify_all

START = 1_780_272_000_000  # 2026-06-01T00:00Z
HOUR = 3_600_000


def _sealed(dsn: str, led: LocalLedger) -> list[tuple[str, str]]:
    run = simulate(sites=1, days=0.125, seed=3, start_ms=START, clock=lambda: START + 3 * HOUR + 300_000)
    for d in run.devices:
        register_device(dsn, d.record)
    ingest_payloads(dsn, [(m.topic, m.payload) for m in run.messages()], now_ms=START + 4 * HOUR)
    made = seal_windows(dsn, led, now_ms=START + 4 * HOUR)
    assert made
    return sorted((b.header.batch_id, header_hash(b.header)) for b in made)


def _seal(dsn: str, led: LocalLedger, verdicts: list[dict], batches: list[tuple[str, str]], now_ms: int):  # type: ignore[no-untyped-def]
    with psycopg.connect(dsn) as conn:
        return seal_verdicts(conn, led, "acme", START, START + 3 * HOUR, "ab" * 32,
                             {"claim_file_sha256": "ab" * 32, "batches": [list(b) for b in batches]}, verdicts,
                             now_ms=now_ms)


@pytest.fixture
def sealed(store_db: str, tmp_path: Path) -> tuple[str, LocalLedger, list[tuple[str, str]]]:
    led = LocalLedger.open(tmp_path / "ledger")
    return store_db, led, _sealed(store_db, led)


def test_a_verdict_set_is_anchored_and_an_identical_rerun_anchors_nothing(sealed) -> None:  # type: ignore[no-untyped-def]
    dsn, led, batches = sealed
    first = _seal(dsn, led, [{"claim": {"id": "c1"}, "verdict": "SUBSTANTIATED", "figure": 0.42}], batches, START + 5 * HOUR)
    assert not first.unchanged and first.kind == "verdicts" and first.supersedes is None
    anchored = led.get(first.set_id)
    assert anchored is not None and anchored[0].site == "claims:acme" and anchored[0].leaf_count == 1
    again = _seal(dsn, led, [{"claim": {"id": "c1"}, "verdict": "SUBSTANTIATED", "figure": 0.42}], batches, START + 6 * HOUR)
    assert again.unchanged and again.set_id == first.set_id
    assert check_verdict_sets(dsn, led) == []
    assert verify_all(dsn, led).intact


def test_changed_verdicts_are_a_restatement_that_names_the_set_it_supersedes(sealed) -> None:  # type: ignore[no-untyped-def]
    dsn, led, batches = sealed
    first = _seal(dsn, led, [{"claim": {"id": "c1"}, "verdict": "SUBSTANTIATED"}], batches, START + 5 * HOUR)
    second = _seal(dsn, led, [{"claim": {"id": "c1"}, "verdict": "OVERSTATED"}], batches, START + 6 * HOUR)
    assert not second.unchanged and second.kind == "restatement" and second.supersedes == first.set_id
    h = led.get(second.set_id)[0]  # type: ignore[index]
    assert h.amends == first.set_id and h.prev_hash == header_hash(led.get(first.set_id)[0])  # type: ignore[index]
    with psycopg.connect(dsn) as conn:
        assert latest_set(conn, "acme", START, START + 3 * HOUR, "ab" * 32)[0] == second.set_id  # type: ignore[index]
        # nothing is edited in place: the first set is still stored as anchored
        assert conn.execute("SELECT count(*) FROM claim_verdict_sets").fetchone()[0] == 2
    assert check_verdict_sets(dsn, led) == []


def test_a_restatement_cannot_supersede_a_readings_batch_nor_a_verdict_set_carry_amends(tmp_path: Path) -> None:
    led = LocalLedger.open(tmp_path)
    seal = BatchHeader(batch_id="claims:x:b", site="claims:x", kind="seal", window_start_ms=0, window_end_ms=HOUR,
                       leaf_count=1, root="ab" * 32, prev_hash=GENESIS_HASH, findings_digest="00" * 32, sealed_ms=1)
    led.anchor(seal)
    restate = BatchHeader(batch_id="claims:x:r", site="claims:x", kind="restatement", window_start_ms=0,
                          window_end_ms=HOUR, leaf_count=1, root="ab" * 32, prev_hash=header_hash(seal),
                          findings_digest="00" * 32, sealed_ms=2, amends="claims:x:b")
    with pytest.raises(InvalidHeader, match="restatement cannot amend"):
        led.anchor(restate)
    verdicts = BatchHeader(batch_id="claims:x:v", site="claims:x", kind="verdicts", window_start_ms=0,
                           window_end_ms=HOUR, leaf_count=1, root="ab" * 32, prev_hash=header_hash(seal),
                           findings_digest="00" * 32, sealed_ms=2, amends="claims:x:b")
    with pytest.raises(InvalidHeader, match="must be null"):
        led.anchor(verdicts)


@pytest.mark.parametrize("tamper, kind", [
    ("UPDATE claim_verdict_sets SET verdicts[1] = convert_to('{\"verdict\":\"SUBSTANTIATED\",\"x\":1}', 'UTF8')",
     VERDICT_SET_DIFFERS),
    ("UPDATE claim_verdict_sets SET verdicts = verdicts[1:0]", VERDICT_SET_DIFFERS),
    ("UPDATE claim_verdict_sets SET context = convert_to('{\"batches\":[]}', 'UTF8')", VERDICT_SET_DIFFERS),
    ("DELETE FROM claim_verdict_sets", VERDICT_SET_MISSING_IN_STORE),
])
def test_verify_names_a_tampered_or_lost_verdict_set(sealed, tamper: str, kind: str) -> None:  # type: ignore[no-untyped-def]
    dsn, led, batches = sealed
    made = _seal(dsn, led, [{"claim": {"id": "c1"}, "verdict": "OVERSTATED", "gap": 12.5}], batches, START + 5 * HOUR)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(tamper)
    problems = check_verdict_sets(dsn, led)
    assert [p.kind for p in problems] == [kind] and problems[0].ref == (made.set_id,)
    res = verify_all(dsn, led)
    assert not res.intact and any(p.kind == kind for p in res.store_problems)


def test_verify_names_a_verdict_resting_on_a_batch_the_ledger_does_not_hold(sealed) -> None:  # type: ignore[no-untyped-def]
    dsn, led, batches = sealed
    forged = [*batches, ("s01:2026-06-01T09:00:00Z", "cd" * 32), (batches[0][0], "ef" * 32)]
    _seal(dsn, led, [{"claim": {"id": "c1"}, "verdict": "SUBSTANTIATED"}], forged, START + 5 * HOUR)
    problems = check_verdict_sets(dsn, led)
    assert sorted(p.ref[0] for p in problems if p.kind == VERDICT_BATCH_NOT_ANCHORED) == sorted(
        [forged[-2][0], batches[0][0]])
