"""The tamper matrix: every kind of store and ledger tampering the review found, each named by `verify`.

A real PostgreSQL and the local ledger; trust pinned by the verifier (operator and device keys). Each
case changes the store the way an attacker with database access would, then asserts the problem kind
and the exact reading, frame or batch `verify` names — and that it is never "intact".
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from device.identity import generate_key, public_key_b64
from firmware_sim.sim import simulate
from ingest.pipeline import ingest_payloads
from ingest.registry import register_device
from ledger import complete
from ledger.backend import LedgerMismatch
from ledger.local import LocalLedger
from ledger.seal import seal_windows
from ledger.trust import FORMAT, Trust
from ledger.verify import VerifyResult, verify_all

START = 1_780_272_000_000  # 2026-06-01T00:00Z
HOUR = 3_600_000


def _run() -> Any:
    # frames "sent" just after the simulated period (the wire format bounds readings to a window before sent_ms)
    return simulate(sites=1, days=0.25, seed=5, start_ms=START, clock=lambda: START + 6 * HOUR + 300_000)


def _make_template(pg_server: Any, name: str, backend: Any) -> tuple[str, Any]:
    from ingest.schema import upgrade

    admin = pg_server.dsn
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = admin.rsplit("/", 1)[0] + "/" + name
    upgrade(dsn)
    run = _run()
    for d in run.devices:
        register_device(dsn, d.record)
    ingest_payloads(dsn, [(m.topic, m.payload) for m in run.messages()], now_ms=START + 7 * HOUR)
    made = seal_windows(dsn, backend, now_ms=START + 7 * HOUR)
    assert len(made) == 6
    return dsn, run


def _drop(pg_server: Any, name: str) -> None:
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _copy(pg_server: Any, template_name: str, tmp_path: Path) -> str:
    name = f"{template_name}_{tmp_path.name[-20:]}".replace("-", "_").lower()
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
    return pg_server.dsn.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="module")
def template(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Trust, Any]]:
    """One sealed store (6 hourly batches of one site) on the local ledger, copied for each test."""
    ledger_dir = tmp_path_factory.mktemp("ledger")
    led = LocalLedger.open(ledger_dir)
    dsn, run = _make_template(pg_server, "tamper_template", led)
    trust = Trust(format=FORMAT, operator_keys=[public_key_b64(led.pub)],
                  devices={d.device: [d.record.public_key] for d in run.devices})
    yield dsn, ledger_dir, trust, run
    _drop(pg_server, "tamper_template")


@pytest.fixture(scope="module")
def fabric_template(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, Trust]]:
    """The same sealed store anchored on a Fabric network of its own (its channel holds only these batches)."""
    from ledger.fabric.backend import FabricLedger, wait_ready
    from ledger.fabric.network import FabricNetwork, Ports

    net = FabricNetwork(tmp_path_factory.mktemp("fabric-tamper"), Ports.free())
    net.up()
    ledger = FabricLedger.from_profile(net.profile().to_json(), retry_for=30)
    try:
        wait_ready(ledger)
        dsn, run = _make_template(pg_server, "tamper_fabric", ledger)
        from ledger.fabric.collect import trust_from_network

        trust = Trust(format=FORMAT, devices={d.device: [d.record.public_key] for d in run.devices},
                      fabric=trust_from_network(net.dir))
        yield dsn, ledger, trust
    finally:
        ledger.close()
        net.down()
        _drop(pg_server, "tamper_fabric")


@pytest.fixture
def local_store(template: Any, pg_server: Any, tmp_path: Path) -> Iterator[tuple[str, Path, Trust]]:
    _, ledger_dir, trust, _ = template
    dsn = _copy(pg_server, "tamper_template", tmp_path)
    led_copy = tmp_path / "ledger"
    shutil.copytree(ledger_dir, led_copy)
    yield dsn, led_copy, trust
    _drop(pg_server, dsn.rsplit("/", 1)[1])


@pytest.fixture(params=["local", "fabric"])
def store(request: pytest.FixtureRequest, pg_server: Any, tmp_path: Path) -> Iterator[tuple[str, Any, Trust]]:
    """A copy of the sealed store with its ledger, on each backend (read-only cases run on both)."""
    if request.param == "local":
        yield request.getfixturevalue("local_store")
        return
    _, ledger, trust = request.getfixturevalue("fabric_template")
    dsn = _copy(pg_server, "tamper_fabric", tmp_path)
    yield dsn, ledger, trust
    _drop(pg_server, dsn.rsplit("/", 1)[1])


def check(dsn: str, ledger: Any, trust: Trust | None) -> VerifyResult:
    if not isinstance(ledger, Path):
        backend = ledger  # Fabric
    else:
        backend = LocalLedger.open_pinned(ledger, trust.operator_keys) if trust else LocalLedger.open(ledger, create=False)
    res = verify_all(dsn, backend, trust)
    # the column path of the completeness checks says exactly what the row-by-row reference says
    bulk, rows = complete.check(dsn, backend, trust), complete.check_rows(dsn, backend, trust)
    assert sorted(map(repr, bulk.problems)) == sorted(map(repr, rows.problems))
    assert sorted(bulk.pending) == sorted(rows.pending) and (bulk.readings, bulk.frames) == (rows.readings, rows.frames)
    return res


def kinds(res: VerifyResult) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    for p in res.store_problems:
        out.setdefault(p.kind, []).append(p.ref)
    return out


def one_sealed_reading(dsn: str) -> tuple[str, int, int, datetime, str]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT r.device_id, r.seq, r.idx, r.ts, b.batch_id FROM batches b, "
                           "unnest(b.leaf_devices, b.leaf_seqs, b.leaf_idxs) AS k(d, s, i) JOIN readings r "
                           "ON (r.device_id, r.seq, r.idx) = (k.d, k.s, k.i) "
                           "ORDER BY b.batch_id, 1, 2, 3 LIMIT 1 OFFSET 7").fetchone()
    assert row is not None
    return row  # type: ignore[return-value]


def sql(dsn: str, q: str, params: Any = None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(q, params)


# --- the untouched store ---------------------------------------------------------------------------

def test_untouched_store_is_verified_against_pinned_trust(store: Any) -> None:
    dsn, ledger_dir, trust = store
    res = check(dsn, ledger_dir, trust)
    assert res.intact, (res.store_problems[:3], [r for r in res.reports if r.status != "intact"][:2])
    # a Fabric receipt counts as verified only with the organisations' roots pinned
    assert res.pinned == (isinstance(ledger_dir, Path) or trust.fabric is not None)
    assert res.verdict == ("verified" if res.pinned else "self-consistent only (no trust pinned): not verified")
    assert res.readings > 0 and res.frames > 0


def test_without_pinned_trust_the_result_is_self_consistent_only(local_store: Any) -> None:
    dsn, ledger_dir, _ = local_store
    res = check(dsn, ledger_dir, None)
    assert res.intact and not res.pinned and "not verified" in res.verdict


# --- store tampering -------------------------------------------------------------------------------

def test_forged_reading_in_a_sealed_window_with_null_batch_is_named_and_never_sealed(local_store: Any) -> None:
    dsn, ledger_dir, trust = local_store
    dev, seq, _, ts, _ = one_sealed_reading(dsn)
    sql(dsn, "INSERT INTO readings (device_id, seq, idx, ts, channel, energy_wh, power_w) "
             "VALUES (%s, %s, 999, %s, 'import', 1, 1)", (dev, seq, ts))
    res = check(dsn, ledger_dir, trust)
    assert (dev, seq, 999) in kinds(res)[complete.READING_UNBACKED] and not res.intact
    refused: list[tuple[str, int, int]] = []
    led = LocalLedger.open(ledger_dir)
    # sealing only ever takes readings of queued frames (the ingest writer queues each frame it stores), and
    # checks them against their signed bytes: a row written into the store directly is never sealed
    assert seal_windows(dsn, led, now_ms=START + 30 * HOUR, refused_out=refused) == []  # no "amendment" of it
    sql(dsn, "INSERT INTO unsealed_frames (device_id, seq, min_ts_ms, max_ts_ms) SELECT device_id, seq, "
             "(extract(epoch FROM min(ts)) * 1000)::bigint, (extract(epoch FROM max(ts)) * 1000)::bigint FROM readings "
             "WHERE device_id = %s AND seq = %s GROUP BY 1, 2", (dev, seq))
    assert seal_windows(dsn, led, now_ms=START + 30 * HOUR, refused_out=refused) == []  # even if queued by hand
    assert refused == [(dev, seq, 999)]
    assert (dev, seq, 999) in kinds(check(dsn, ledger_dir, trust))[complete.READING_UNBACKED]


def test_second_row_with_an_existing_key_is_named_duplicate(store: Any) -> None:
    dsn, ledger_dir, trust = store
    dev, seq, idx, ts, _ = one_sealed_reading(dsn)
    sql(dsn, "INSERT INTO readings (device_id, seq, idx, ts, channel, energy_wh, power_w) "
             "SELECT device_id, seq, idx, ts + interval '1 second', channel, energy_wh, power_w FROM readings "
             "WHERE device_id = %s AND seq = %s AND idx = %s", (dev, seq, idx))
    res = check(dsn, ledger_dir, trust)
    assert (dev, seq, idx) in kinds(res)[complete.DUPLICATE_KEY] and not res.intact


def test_a_sealed_reading_moved_to_another_window_is_named(store: Any) -> None:
    dsn, ledger_dir, trust = store
    dev, seq, idx, _, batch = one_sealed_reading(dsn)
    sql(dsn, "UPDATE readings SET ts = ts + interval '3 hours' WHERE device_id = %s AND seq = %s AND idx = %s",
        (dev, seq, idx))
    res = check(dsn, ledger_dir, trust)
    assert (dev, seq, idx) in kinds(res)[complete.READING_DIFFERS]
    assert any((dev, seq, idx) in r.deleted for r in res.reports if r.batch_id == batch)  # gone from its batch
    assert any((dev, seq, idx) in r.inserted for r in res.reports if r.batch_id != batch)  # and not pending elsewhere


def test_a_whole_batch_deleted_from_the_store_is_named_from_the_ledger(store: Any) -> None:
    dsn, ledger_dir, trust = store
    _, _, _, _, batch = one_sealed_reading(dsn)
    sql(dsn, "DELETE FROM readings r USING batches b, unnest(b.leaf_devices, b.leaf_seqs, b.leaf_idxs) AS k(d, s, i) "
             "WHERE b.batch_id = %s AND (r.device_id, r.seq, r.idx) = (k.d, k.s, k.i)", (batch,))
    sql(dsn, "DELETE FROM batches WHERE batch_id = %s", (batch,))
    res = check(dsn, ledger_dir, trust)
    k = kinds(res)
    assert (batch,) in k[complete.BATCH_MISSING_IN_STORE] and k[complete.SIGNED_READING_MISSING]
    assert all(r.status == "intact" for r in res.reports)  # the other batches are fine: only this one is named


def test_sealed_reading_value_changed_is_named_against_batch_and_frame(store: Any) -> None:
    dsn, ledger_dir, trust = store
    dev, seq, idx, _, batch = one_sealed_reading(dsn)
    sql(dsn, "UPDATE readings SET energy_wh = energy_wh + 5 WHERE device_id = %s AND seq = %s AND idx = %s",
        (dev, seq, idx))
    res = check(dsn, ledger_dir, trust)
    assert (dev, seq, idx) in kinds(res)[complete.READING_DIFFERS]
    assert [r.changed for r in res.reports if r.batch_id == batch] == [[(dev, seq, idx)]]


def test_late_reading_edited_before_sealing_is_refused_by_sealing_and_named(local_store: Any, template: Any) -> None:
    dsn, ledger_dir, trust = local_store
    run = template[3]
    late = simulate(sites=1, days=0.25, seed=5, start_ms=START + 6 * HOUR, clock=lambda: START + 12 * HOUR + 300_000,
                    seq_start={d.device: 10_000 for d in run.devices}, keys={d.device: d.key for d in run.devices})
    ingest_payloads(dsn, [(m.topic, m.payload) for m in late.messages()], now_ms=START + 13 * HOUR)
    with psycopg.connect(dsn, autocommit=True) as conn:
        dev, seq, idx = conn.execute("SELECT device_id, seq, idx FROM readings JOIN unsealed_frames USING (device_id, seq) "
                                     "ORDER BY device_id, seq, idx LIMIT 1").fetchone()  # type: ignore[misc]
        conn.execute("UPDATE readings SET power_w = power_w + 1 WHERE device_id = %s AND seq = %s AND idx = %s",
                     (dev, seq, idx))
    refused: list[tuple[str, int, int]] = []
    made = seal_windows(dsn, LocalLedger.open(ledger_dir), now_ms=START + 14 * HOUR, refused_out=refused)
    assert refused == [(dev, seq, idx)] and made
    res = check(dsn, ledger_dir, trust)
    assert (dev, seq, idx) in kinds(res)[complete.READING_DIFFERS] and not res.intact


def test_stored_frame_bytes_changed_is_named(store: Any) -> None:
    dsn, ledger_dir, trust = store
    dev, seq, _, _, _ = one_sealed_reading(dsn)
    sql(dsn, "UPDATE frames SET frame_sha256 = sha256(raw_zstd) WHERE device_id = %s AND seq = %s", (dev, seq))
    res = check(dsn, ledger_dir, trust)
    assert (dev, seq) in kinds(res)[complete.FRAME_INVALID] and not res.intact


def test_device_key_swapped_in_the_store_is_not_trusted(store: Any) -> None:
    dsn, ledger_dir, trust = store
    dev = next(iter(trust.devices))
    attacker = generate_key()
    from device.wire import b64url_decode

    sql(dsn, "UPDATE devices SET public_key = %s WHERE device_id = %s",
        (b64url_decode(public_key_b64(attacker)), dev))
    res = check(dsn, ledger_dir, trust)
    assert (dev,) in kinds(res)[complete.DEVICE_KEY_NOT_PINNED] and not res.intact


def test_everything_resealed_onto_a_fresh_ledger_with_a_new_operator_key_is_refused(local_store: Any) -> None:
    dsn, ledger_dir, trust = local_store
    (ledger_dir / "ledger.jsonl").unlink()
    (ledger_dir / "operator.key").unlink()
    sql(dsn, "DELETE FROM batches")
    sql(dsn, "INSERT INTO unsealed_frames (device_id, seq, min_ts_ms, max_ts_ms) SELECT device_id, seq, "
             "(extract(epoch FROM min(ts)) * 1000)::bigint, (extract(epoch FROM max(ts)) * 1000)::bigint FROM readings "
             "GROUP BY 1, 2")
    assert seal_windows(dsn, LocalLedger.open(ledger_dir), now_ms=START + 7 * HOUR)
    assert check(dsn, ledger_dir, None).intact  # self-consistent: exactly why trust must be pinned
    with pytest.raises(LedgerMismatch, match="operator signature"):
        check(dsn, ledger_dir, trust)


def test_fabric_receipts_under_roots_not_pinned_are_named(request: pytest.FixtureRequest, fabric_template: Any,
                                                          pg_server: Any, tmp_path: Path) -> None:
    import msgspec

    _, ledger, trust = fabric_template
    dsn = _copy(pg_server, "tamper_fabric", tmp_path)
    try:
        assert check(dsn, ledger, trust).verdict == "verified"
        orgs = dict(trust.fabric.orgs)
        orgs["Org1MSP"], orgs["Org2MSP"] = orgs["Org2MSP"], orgs["Org1MSP"]  # each org's roots under the other's name
        wrong = msgspec.structs.replace(trust, fabric=msgspec.structs.replace(trust.fabric, orgs=orgs))
        res = check(dsn, ledger, wrong)
        named = {p.ref for p in res.store_problems if p.kind == complete.FABRIC_RECEIPT_INVALID}
        assert not res.intact and len(named) == 6
    finally:
        _drop(pg_server, dsn.rsplit("/", 1)[1])


def test_read_only_open_never_creates_a_ledger_or_key(tmp_path: Path) -> None:
    with pytest.raises(LedgerMismatch):
        LocalLedger.open(tmp_path / "none", create=False)
    with pytest.raises(LedgerMismatch):
        LocalLedger.open_pinned(tmp_path / "none", [public_key_b64(generate_key())])
    assert not (tmp_path / "none").exists()


# --- property: intact if and only if no sealed evidence was touched --------------------------------

HARMLESS = [
    "ANALYZE readings",
    "UPDATE frames SET received_at = received_at + interval '1 minute'",
    "INSERT INTO findings (run_id, site_id, kind, severity, start_ts, end_ts, evidence, detector, detector_version) "
    "VALUES ('x', 's01', 'k', 'low', now(), now(), '{}', 'd', '1')",
    "DELETE FROM quarantine",
]
HARMFUL = [
    "UPDATE readings SET energy_wh = energy_wh + 1 WHERE (device_id, seq, idx) IN "
    "(SELECT device_id, seq, idx FROM readings ORDER BY device_id, seq, idx LIMIT 1 OFFSET {k})",
    "DELETE FROM readings WHERE (device_id, seq, idx) IN "
    "(SELECT device_id, seq, idx FROM readings ORDER BY device_id, seq, idx LIMIT 1 OFFSET {k})",
    "UPDATE readings SET ts = ts + interval '1 hour' WHERE (device_id, seq, idx) IN "
    "(SELECT device_id, seq, idx FROM readings ORDER BY device_id, seq, idx LIMIT 1 OFFSET {k})",
    "UPDATE readings SET power_w = power_w + 1 WHERE (device_id, seq, idx) IN "
    "(SELECT device_id, seq, idx FROM readings ORDER BY device_id, seq, idx LIMIT 1 OFFSET {k})",
    "UPDATE batches SET leaf_hashes = set_byte(leaf_hashes, {k} % 32, (get_byte(leaf_hashes, {k} % 32) + 1) % 256) "
    "WHERE batch_id = (SELECT min(batch_id) FROM batches)",
    "INSERT INTO readings (device_id, seq, idx, ts, channel, energy_wh, power_w) SELECT device_id, seq, "
    "idx + 500 + (SELECT count(*) FROM readings WHERE idx >= 500)::int, ts, channel, energy_wh, power_w FROM readings "
    "ORDER BY device_id, seq, idx LIMIT 1 OFFSET {k}",
    "DELETE FROM frames WHERE (device_id, seq) IN (SELECT device_id, seq FROM frames ORDER BY 1, 2 LIMIT 1 OFFSET {k})",
    "UPDATE batches SET leaf_seqs = leaf_seqs[2:] WHERE batch_id = (SELECT min(batch_id) FROM batches)",
]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(ops=[(True, 3, 0), (True, 3, 0)])  # found by CI: a mutation applied twice must not undo itself
@example(ops=[(True, 5, 0), (True, 5, 0)])  # found by CI: two forged rows must not collide on the key
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(0, 7), st.integers(0, 90)), min_size=1, max_size=4))
def test_verify_is_intact_iff_no_sealed_evidence_was_touched(template: Any, pg_server: Any, tmp_path_factory: Any,
                                                             ops: list[tuple[bool, int, int]]) -> None:
    _, ledger_dir, trust, _ = template
    name = f"tamper_prop_{abs(hash(tuple(ops))) % 10**9}"
    admin = pg_server.dsn
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "tamper_template"')
    dsn = admin.rsplit("/", 1)[0] + "/" + name
    try:
        touched = False
        for harmful, which, k in ops:
            if harmful:
                sql(dsn, HARMFUL[which % len(HARMFUL)].format(k=k))
                touched = True
            else:
                sql(dsn, HARMLESS[which % len(HARMLESS)])
        res = check(dsn, ledger_dir, trust)
        assert res.intact == (not touched), (ops, res.store_problems[:3], [r for r in res.reports if r.status != "intact"][:2])
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_window_bounds_are_utc(template: Any) -> None:
    # the fixture's windows are hourly UTC from START: a sanity check that the cases above use sealed hours
    assert datetime.fromtimestamp(START / 1000, UTC).hour == 0


def test_cli_trust_export_then_verify_exit_codes(local_store: Any, tmp_path: Path) -> None:
    """Through the real CLI: 0 verified with the trust pinned, 3 without it, 1 with a reading changed."""
    import json

    from typer.testing import CliRunner

    from wattproof.cli import app

    dsn, ledger_dir, _ = local_store
    runner = CliRunner()
    trust_file = tmp_path / "trust.json"
    r = runner.invoke(app, ["trust", "export", "--db", dsn, "--ledger-dir", str(ledger_dir), "--out", str(trust_file)])
    assert r.exit_code == 0, r.output
    assert len(json.loads(trust_file.read_text())["devices"]) == 4
    base = ["verify", "--db", dsn, "--ledger-dir", str(ledger_dir)]
    r = runner.invoke(app, [*base, "--trust", str(trust_file)])
    assert r.exit_code == 0 and "verdict: verified" in r.output, r.output
    r = runner.invoke(app, base)
    assert r.exit_code == 3 and "self-consistent only" in r.output, r.output
    dev, seq, idx, _, _ = one_sealed_reading(dsn)
    sql(dsn, "UPDATE readings SET power_w = power_w + 7 WHERE device_id = %s AND seq = %s AND idx = %s", (dev, seq, idx))
    r = runner.invoke(app, [*base, "--trust", str(trust_file), "--json"])
    assert r.exit_code == 1, r.output
    doc = json.loads(r.output)
    assert doc["verdict"] == "tampered"
    assert [dev, seq, idx] in [p["ref"] for p in doc["store_problems"] if p["kind"] == complete.READING_DIFFERS]
    (ledger_dir / "operator.key").unlink()
    r = runner.invoke(app, ["trust", "export", "--db", dsn, "--ledger-dir", str(ledger_dir), "--out", str(tmp_path / "t2.json")])
    assert r.exit_code != 0 and not (ledger_dir / "operator.key").exists()  # a read-only command never makes a key


def test_a_trust_file_pinning_a_small_order_key_or_with_duplicate_members_is_refused() -> None:
    from ledger.trust import TrustError, parse_trust

    small_order = "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"  # the identity point: any signature "verifies"
    with pytest.raises(TrustError, match="cannot be pinned"):
        parse_trust(b'{"format": "wattproof-trust/1", "operator_keys": ["%s"]}' % small_order.encode())
    with pytest.raises(TrustError, match="duplicate member"):
        parse_trust(b'{"format": "wattproof-trust/1", "operator_keys": [], "operator_keys": []}')
    with pytest.raises(TrustError, match="not a wattproof-trust/1"):
        parse_trust(b'{"format": "wattproof-trust/1", "operators": []}')


def test_a_genuine_frame_stored_under_another_seq_backs_nothing_there(local_store: Any) -> None:
    """Copy a validly signed frame's bytes (and its SHA-256) over another frame's row: the signature verifies,
    but it is the signature of another (device, seq): that row's readings are not backed."""
    dsn, ledger_dir, trust = local_store
    with psycopg.connect(dsn, autocommit=True) as conn:
        (dev, a), (_, b) = conn.execute("SELECT device_id, seq FROM frames ORDER BY device_id, seq LIMIT 2").fetchall()
        conn.execute("UPDATE frames t SET raw_zstd = s.raw_zstd, frame_sha256 = s.frame_sha256 FROM frames s "
                     "WHERE s.device_id = %s AND s.seq = %s AND t.device_id = %s AND t.seq = %s", (dev, a, dev, b))
    res = check(dsn, ledger_dir, trust)
    k = kinds(res)
    assert (dev, b) in k[complete.FRAME_INVALID] and not res.intact
    assert any(ref[:2] == (dev, b) for ref in k[complete.READING_UNBACKED])


def test_a_batch_record_with_leaf_arrays_of_different_lengths_is_named_not_a_crash(store: Any) -> None:
    dsn, ledger_dir, trust = store
    _, _, _, _, batch = one_sealed_reading(dsn)
    sql(dsn, "UPDATE batches SET leaf_seqs = leaf_seqs[2:] WHERE batch_id = %s", (batch,))
    res = check(dsn, ledger_dir, trust)
    assert [r.status for r in res.reports if r.batch_id == batch] == ["tampered"] and not res.intact


def test_a_frame_stored_as_two_concatenated_zstd_frames_is_read_one_way_only(local_store: Any) -> None:
    """The same signed bytes, compressed as two zstd frames: one decompressor reads all of them, another only the
    first. Stored frame bytes must be one zstd frame whose content hashes to the recorded SHA-256: refused."""
    import zstandard

    dsn, ledger_dir, trust = local_store
    dev, seq, _, _, _ = one_sealed_reading(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        raw = zstandard.ZstdDecompressor().decompress(bytes(conn.execute(
            "SELECT raw_zstd FROM frames WHERE device_id = %s AND seq = %s", (dev, seq)).fetchone()[0]))  # type: ignore[index]
        z = zstandard.ZstdCompressor()
        conn.execute("UPDATE frames SET raw_zstd = %s WHERE device_id = %s AND seq = %s",
                     (z.compress(raw[:100]) + z.compress(raw[100:]), dev, seq))
    res = check(dsn, ledger_dir, trust)
    assert (dev, seq) in kinds(res)[complete.FRAME_INVALID] and not res.intact


def test_a_signed_frame_the_wire_format_refuses_backs_nothing_even_with_a_valid_signature(local_store: Any,
                                                                                          template: Any) -> None:
    """A key holder signs a frame whose reading lies an hour after its sent_ms (outside the reading window) and
    writes it straight into the store and the sealing queue: the signature verifies, the frame does not parse as a
    wire frame, so nothing in it is sealed and verify names it."""
    import hashlib

    import msgspec
    import zstandard

    from device.wire import Frame, Reading, b64url, canonical_bytes

    dsn, ledger_dir, trust = local_store
    dev = template[3].devices[0]
    sent = START + 5 * HOUR
    frame = Frame(v=1, site=dev.record.site, device=dev.device, seq=90_000, sent_ms=sent,
                  readings=[Reading(ts_ms=sent + HOUR, channel="import", energy_wh=1, power_w=1)])
    frame = msgspec.structs.replace(frame, sig=b64url(dev.key.sign(canonical_bytes(frame))))
    raw = msgspec.json.Encoder(order="sorted").encode(frame)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO frames (device_id, seq, sent_ms, frame_sha256, raw_zstd, n_readings) "
                     "VALUES (%s, 90000, %s, %s, %s, 1)", (dev.device, sent, hashlib.sha256(raw).digest(),
                                                         zstandard.ZstdCompressor().compress(raw)))
        conn.execute("INSERT INTO readings (device_id, seq, idx, ts, channel, energy_wh, power_w) "
                     "VALUES (%s, 90000, 0, to_timestamp(%s / 1000.0), 'import', 1, 1)", (dev.device, sent + HOUR))
        conn.execute("INSERT INTO unsealed_frames (device_id, seq, min_ts_ms, max_ts_ms) VALUES (%s, 90000, %s, %s)",
                     (dev.device, sent + HOUR, sent + HOUR))
    refused: list[tuple[str, int, int]] = []
    assert seal_windows(dsn, LocalLedger.open(ledger_dir), now_ms=START + 30 * HOUR, refused_out=refused) == []
    assert refused == [(dev.device, 90_000, 0)]
    res = check(dsn, ledger_dir, trust)
    assert (dev.device, 90_000) in kinds(res)[complete.FRAME_INVALID] and not res.intact
