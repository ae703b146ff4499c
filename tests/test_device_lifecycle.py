"""Device identity over its life (docs/device-identity.md), against a real Mosquitto and a real PostgreSQL:
`wattproof device rotate-key` and `revoke`; ingest picks both up within seconds; sealing and `verify` check each
frame against the key valid at its signed sent_ms, taken from the pinned trust file, never from the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device import wire
from device.identity import DeviceRecord, public_key_b64
from device.wire import Frame, Reading, decode_frame
from ingest import reasons
from ingest.quarantine import QuarantineGate
from ingest.registry import register_device
from ingest.service import IngestConfig, IngestService
from ingest.validate import Accepted
from ingest.writer import BatchWrite, StoreWriter
from ledger import complete
from ledger.local import LocalLedger
from ledger.seal import seal_windows
from ledger.trust import FORMAT, KeyPeriod, Trust, parse_trust
from ledger.verify import VerifyResult, verify_all
from tests.fixtures_ingest import publish_raw, wait_until
from wattproof.embedded import Broker
from wattproof.trustfile import device_keys_of

OLD = Ed25519PrivateKey.from_private_bytes(b"\x11" * 32)
NEW = Ed25519PrivateKey.from_private_bytes(b"\x22" * 32)
SITE, DEVICE = "k1", "k1-main"
TOPIC = wire.readings_topic(SITE, DEVICE)
HOUR = 3_600_000


def now_ms() -> int:
    return int(time.time() * 1000)


# readings three hours back, in windows that sealing closes now (frames are sent now: ingest's clock window)
T0 = (now_ms() - 3 * HOUR) // HOUR * HOUR


def frame(seq: int, key: Ed25519PrivateKey, sent_ms: int | None = None) -> tuple[str, bytes]:
    sent = sent_ms if sent_ms is not None else now_ms()
    f = Frame(v=1, site=SITE, device=DEVICE, seq=seq, sent_ms=sent,
              readings=[Reading(ts_ms=T0 + seq * 60_000 + i * 10_000, channel="import", energy_wh=1000 * seq + i,
                                power_w=400) for i in range(3)])
    return TOPIC, wire.encode_frame(wire.sign_frame(f, key))


def q(dsn: str, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, args).fetchall()  # type: ignore[arg-type]


def stored_seqs(dsn: str) -> list[int]:
    return [s for (s,) in q(dsn, "SELECT seq FROM frames ORDER BY seq")]


def quarantined(dsn: str, reason: str) -> list[int]:
    """The seqs quarantined with ``reason`` (a frame the broker delivered twice, under load, is quarantined twice:
    the same frame)."""
    return [s for (s,) in q(dsn, "SELECT DISTINCT seq FROM quarantine WHERE reason = %s ORDER BY seq", reason)]


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WATTPROOF_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "wattproof", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def register(dsn: str) -> None:
    register_device(dsn, DeviceRecord(site=SITE, device=DEVICE, kind="main_meter", public_key=public_key_b64(OLD),
                                      rated_power_w=10_000))


@contextmanager
def service(broker: Broker, dsn: str) -> Iterator[IngestService]:
    svc = IngestService(IngestConfig(broker.url, dsn, client_id="ingest-identity", batch_ms=50)).start()
    try:
        yield svc
    finally:
        svc.stop()
    assert svc.error is None, svc.error


def verify(dsn: str, ledger_dir: Path, trust: Trust) -> VerifyResult:
    backend = LocalLedger.open_pinned(ledger_dir, trust.operator_keys)
    res = verify_all(dsn, backend, trust)
    # the column path of the completeness checks says exactly what the row-by-row reference says
    bulk, rows = complete.check(dsn, backend, trust), complete.check_rows(dsn, backend, trust)
    assert sorted(map(repr, bulk.problems)) == sorted(map(repr, rows.problems))
    return res


def kinds(res: VerifyResult) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    for p in res.store_problems:
        out.setdefault(p.kind, []).append(p.ref)
    return out


def exported_trust(dsn: str, ledger_dir: Path) -> Trust:
    """What `wattproof trust export` writes (the operator's claim; here the auditor checked it), through its bytes."""
    led = LocalLedger.open(ledger_dir, create=False)
    trust = Trust(format=FORMAT, operator_keys=[public_key_b64(led.pub)], devices=device_keys_of(dsn))
    return parse_trust(trust.to_json())


def rotated(dsn: str, broker: Broker, home: Path) -> int:
    """A device rotated mid-stream through the real CLI while ingest runs: frames 1-3 signed with the old key
    before, then new-key frames once ingest has picked the rotation up. Returns the rotation instant."""
    register(dsn)
    publish_raw(broker.url, [frame(s, OLD) for s in (1, 2, 3)])
    wait_until(lambda: stored_seqs(dsn) == [1, 2, 3], "the old key's frames stored")
    res = cli(home, "device", "rotate-key", "--device", DEVICE, "--public-key", public_key_b64(NEW), "--db", dsn)
    assert res.returncode == 0, res.stderr
    assert "rotated k1-main" in res.stdout
    ((at,),) = q(dsn, "SELECT valid_from_ms FROM device_keys WHERE device_id = %s AND valid_until_ms IS NULL", DEVICE)
    t0, seq = time.monotonic(), 100  # probes numbered apart from the frames the tests name (30, 31, 40, 41)

    def new_key_accepted() -> bool:  # a new-key frame is bad_signature until ingest re-reads the registry
        nonlocal seq
        publish_raw(broker.url, [frame(seq, NEW)])
        seq += 1
        return bool(q(dsn, "SELECT 1 FROM frames WHERE seq >= 100"))

    wait_until(new_key_accepted, "a frame signed with the new key stored", timeout_s=15)
    assert time.monotonic() - t0 <= 2.0 + 2.5  # registry_refresh_s + a batch: no restart, no unknown device needed
    publish_raw(broker.url, [frame(s, NEW) for s in (30, 31)])
    wait_until(lambda: {30, 31} <= set(stored_seqs(dsn)), "the new key's frames stored")
    return int(at)


# --- rotation --------------------------------------------------------------------------------------------

def test_frames_before_and_after_a_rotation_are_stored_sealed_and_verified(
        fresh_broker: Broker, store_db: str, tmp_path: Path) -> None:
    with service(fresh_broker, store_db):
        at = rotated(store_db, fresh_broker, tmp_path / "home")
    history = q(store_db, "SELECT public_key, valid_from_ms, valid_until_ms FROM device_keys ORDER BY valid_from_ms "
                          "NULLS FIRST")
    assert [(wire.b64url(bytes(k)), lo, hi) for k, lo, hi in history] == [
        (public_key_b64(OLD), None, at), (public_key_b64(NEW), at, None)]
    assert seal_windows(store_db, LocalLedger.open(tmp_path / "ledger"), now_ms=now_ms())
    assert not q(store_db, "SELECT 1 FROM unsealed_frames")  # every frame backed and sealed, old key and new
    trust = exported_trust(store_db, tmp_path / "ledger")
    assert trust.devices[DEVICE] == [KeyPeriod(key=public_key_b64(OLD), until_ms=at),
                                     KeyPeriod(key=public_key_b64(NEW), from_ms=at)]
    res = verify(store_db, tmp_path / "ledger", trust)
    assert res.verdict == "verified" and res.intact, (res.store_problems, res.reports)
    assert res.frames == len(stored_seqs(store_db)) >= 6
    # a proof bundle across the rotation: each frame checked with the pinned key valid at its sent_ms
    import json
    from datetime import UTC, datetime

    from ledger.proofs import export_bundle, verify_bundle

    backend = LocalLedger.open_pinned(tmp_path / "ledger", trust.operator_keys)
    bundle = export_bundle(store_db, backend, DEVICE, datetime.fromtimestamp(T0 / 1000, UTC),
                           datetime.fromtimestamp((T0 + 3 * HOUR) / 1000, UTC))
    assert {f["seq"] for f in bundle["frames"]} >= {1, 2, 3, 30, 31}
    assert verify_bundle(json.dumps(bundle).encode(), trust) == []
    old_only = Trust(format=FORMAT, operator_keys=trust.operator_keys,
                     devices={DEVICE: [KeyPeriod(key=public_key_b64(OLD), until_ms=at)]})
    assert any("frame seq 30" in p for p in verify_bundle(json.dumps(bundle).encode(), old_only))


def test_a_frame_signed_with_the_old_key_dated_after_the_rotation_is_refused_with_reason_retired_key(
        fresh_broker: Broker, store_db: str, tmp_path: Path) -> None:
    with service(fresh_broker, store_db):
        at = rotated(store_db, fresh_broker, tmp_path / "home")
        stolen = frame(40, OLD)  # a holder of the old key signs a frame dated now
        assert decode_frame(stolen[1]).sent_ms >= at
        publish_raw(fresh_broker.url, [stolen])
        wait_until(lambda: quarantined(store_db, reasons.RETIRED_KEY) == [40], "the frame quarantined retired_key")
        ((detail,),) = q(store_db, "SELECT DISTINCT detail FROM quarantine WHERE seq = 40 AND reason = %s", reasons.RETIRED_KEY)
        assert public_key_b64(OLD) in detail and "not at sent_ms" in detail
        forged = frame(41, NEW, sent_ms=at - 1)  # and the new key cannot sign for the time before it either
        publish_raw(fresh_broker.url, [forged])
        wait_until(lambda: quarantined(store_db, reasons.RETIRED_KEY) == [40, 41], "a new-key frame dated before it")
    assert 40 not in stored_seqs(store_db) and 41 not in stored_seqs(store_db)


def force_into_store(dsn: str, item: tuple[str, bytes]) -> None:
    """What an attacker with the database does: write a frame past every ingest check."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        writer = StoreWriter(conn)
        prepared = writer.prepare([Accepted(item[0], item[1], decode_frame(item[1]))], [], QuarantineGate(), now_ms())
        BatchWrite(prepared, 3).run(writer)


@pytest.mark.parametrize("stored_sent_ms", ["as_signed", "backdated_in_the_store"])
def test_a_frame_of_the_old_key_dated_after_the_rotation_forced_into_the_store_is_named_by_verify(
        fresh_broker: Broker, store_db: str, tmp_path: Path, stored_sent_ms: str) -> None:
    with service(fresh_broker, store_db):
        at = rotated(store_db, fresh_broker, tmp_path / "home")
    force_into_store(store_db, frame(50, OLD))
    if stored_sent_ms == "backdated_in_the_store":  # so that a lookup by the stored column would pick the old key
        q_exec = "UPDATE frames SET sent_ms = %s WHERE device_id = %s AND seq = 50"
        with psycopg.connect(store_db) as conn:
            conn.execute(q_exec, (at - 1, DEVICE))
    refused: list[tuple[str, int, int]] = []
    seal_windows(store_db, LocalLedger.open(tmp_path / "ledger"), now_ms=now_ms(), refused_out=refused)
    assert {(d, s) for d, s, _ in refused} == {(DEVICE, 50)}  # sealing backs it with nothing
    res = verify(store_db, tmp_path / "ledger", exported_trust(store_db, tmp_path / "ledger"))
    found = kinds(res)
    assert not res.intact and found[complete.FRAME_INVALID] == [(DEVICE, 50)]
    assert sorted(found[complete.READING_UNBACKED]) == [(DEVICE, 50, i) for i in range(3)]
    (problem,) = [p for p in res.store_problems if p.kind == complete.FRAME_INVALID]
    assert "not valid at the frame's sent_ms" in problem.detail


def test_a_trust_file_without_the_new_key_makes_verify_name_the_new_keys_frames(
        fresh_broker: Broker, store_db: str, tmp_path: Path) -> None:
    with service(fresh_broker, store_db):
        rotated(store_db, fresh_broker, tmp_path / "home")
    assert seal_windows(store_db, LocalLedger.open(tmp_path / "ledger"), now_ms=now_ms())
    full = exported_trust(store_db, tmp_path / "ledger")
    old_only = Trust(format=FORMAT, operator_keys=full.operator_keys, devices={DEVICE: [public_key_b64(OLD)]})
    res = verify(store_db, tmp_path / "ledger", parse_trust(old_only.to_json()))  # a trust file of the old format
    found = kinds(res)
    new_seqs = [s for s in stored_seqs(store_db) if s >= 10]
    assert not res.intact and found[complete.DEVICE_KEY_NOT_PINNED] == [(DEVICE,)]
    assert sorted(found[complete.FRAME_INVALID]) == [(DEVICE, s) for s in new_seqs]
    assert not [r for r in found[complete.READING_UNBACKED] if r[1] < 10]  # the old key's frames still verify


# --- revocation ------------------------------------------------------------------------------------------

def test_a_revoked_device_has_its_new_frames_quarantined_with_reason_revoked_device_and_old_readings_verify(
        fresh_broker: Broker, store_db: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    register(store_db)
    with service(fresh_broker, store_db) as svc:
        publish_raw(fresh_broker.url, [frame(s, OLD) for s in (1, 2, 3)])
        wait_until(lambda: stored_seqs(store_db) == [1, 2, 3], "the frames stored")
        res = cli(home, "device", "revoke", "--device", DEVICE, "--db", store_db)
        assert res.returncode == 0 and "revoked k1-main" in res.stdout, res.stderr
        t0, seq = time.monotonic(), 4
        stranger = Ed25519PrivateKey.from_private_bytes(b"\x33" * 32)

        def refused() -> bool:  # a probe no registry state lets in: bad_signature until the revocation is seen
            nonlocal seq
            publish_raw(fresh_broker.url, [frame(seq, stranger)])
            seq += 1
            return bool(quarantined(store_db, reasons.REVOKED_DEVICE))

        wait_until(refused, "a frame of the revoked device quarantined revoked_device", timeout_s=15)
        assert time.monotonic() - t0 <= svc.cfg.registry_refresh_s + 2.5
        publish_raw(fresh_broker.url, [frame(seq, OLD)])
        wait_until(lambda: seq in quarantined(store_db, reasons.REVOKED_DEVICE), "every later frame refused too")
    ((revoked_at,),) = q(store_db, "SELECT revoked_at_ms FROM devices")
    assert seal_windows(store_db, LocalLedger.open(tmp_path / "ledger"), now_ms=now_ms())
    trust = exported_trust(store_db, tmp_path / "ledger")
    assert trust.devices[DEVICE] == [KeyPeriod(key=public_key_b64(OLD), until_ms=revoked_at)]
    res = verify(store_db, tmp_path / "ledger", trust)
    assert res.verdict == "verified", res.store_problems
    # a frame dated after the revocation, forced into the store, is named
    force_into_store(store_db, frame(90, OLD))
    assert kinds(verify(store_db, tmp_path / "ledger", trust))[complete.FRAME_INVALID] == [(DEVICE, 90)]


# --- CLI errors: one clear line ---------------------------------------------------------------------------

def test_rotate_and_revoke_errors_are_one_clear_line(store_db: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    new = public_key_b64(NEW)

    def fails(*args: str) -> str:
        res = cli(home, *args)
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
        return lines[0]

    assert "'nope' is not registered" in fails("device", "rotate-key", "--device", "nope", "--public-key", new,
                                               "--db", store_db)
    assert "'nope' is not registered" in fails("device", "revoke", "--device", "nope", "--db", store_db)
    register(store_db)
    assert "small order" in fails("device", "rotate-key", "--device", DEVICE, "--public-key", "AQ" + "A" * 41,
                                  "--db", store_db)
    assert "already used" in fails("device", "rotate-key", "--device", DEVICE, "--public-key", public_key_b64(OLD),
                                   "--db", store_db)
    assert cli(home, "device", "revoke", "--device", DEVICE, "--db", store_db).returncode == 0
    assert "already revoked" in fails("device", "revoke", "--device", DEVICE, "--db", store_db)
    assert "revoked" in fails("device", "rotate-key", "--device", DEVICE, "--public-key", new, "--db", store_db)
    assert q(store_db, "SELECT count(*) FROM device_keys") == [(1,)]  # nothing changed by a refused command
    listed = cli(home, "device", "list", "--db", store_db, "--json")  # what a script reads: the registry's state
    assert listed.returncode == 0, listed.stderr
    (dev,) = json.loads(listed.stdout)
    ((revoked_at,),) = q(store_db, "SELECT revoked_at_ms FROM devices")
    assert dev["device"] == DEVICE and dev["revoked_at_ms"] == revoked_at
    assert dev["keys"] == [{"key": public_key_b64(OLD), "from_ms": None, "until_ms": revoked_at}]  # closed by the revocation


def test_a_store_from_before_the_key_history_is_upgraded_with_each_devices_key_valid_at_every_time(
        empty_db: str) -> None:
    from yoyo import get_backend, read_migrations

    from ingest.schema import _yoyo_url, migrations_dir, upgrade

    backend = get_backend(_yoyo_url(empty_db))
    before = read_migrations(migrations_dir()).filter(lambda m: not m.id.startswith("0801"))
    with backend.lock():
        backend.apply_migrations(backend.to_apply(before))
    with psycopg.connect(empty_db) as conn:
        conn.execute("INSERT INTO sites (site_id) VALUES (%s)", (SITE,))
        conn.execute("INSERT INTO devices (device_id, site_id, kind, public_key, rated_power_w) VALUES "
                     "(%s, %s, 'main_meter', %s, 1000)", (DEVICE, SITE, wire.b64url_decode(public_key_b64(OLD))))
    assert [m.startswith("0801") for m in upgrade(empty_db)] == [True]
    assert device_keys_of(empty_db) == {DEVICE: [public_key_b64(OLD)]}  # as trust files always had it


def test_a_device_named_like_a_service_identity_is_refused(store_db: str) -> None:
    """The broker's ACL names a device by its MQTT user name: a device called ``ingest`` would share the ingest
    service's permissions, so the registry refuses the service identities as device ids."""
    from device.identity import generate_key
    from ingest.registry import RegistryError

    for name in ("ingest", "devices"):
        rec = DeviceRecord(device=name, site="s99", kind="main_meter", public_key=public_key_b64(generate_key()),
                           rated_power_w=10_000)
        with pytest.raises(RegistryError, match="reserved"):
            register_device(store_db, rec)
    assert q(store_db, "SELECT count(*) FROM devices WHERE device_id IN ('ingest', 'devices')") == [(0,)]
