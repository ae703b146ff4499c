"""The local ledger and sealing/replay against a real PostgreSQL: tampering is named exactly."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_sim.sim import simulate
from ingest.pipeline import ingest_payloads
from ingest.registry import register_device
from ledger.backend import (
    GENESIS_HASH,
    AlreadyAnchored,
    BatchHeader,
    ChainBroken,
    LedgerMismatch,
    header_hash,
)
from ledger.local import LocalLedger
from ledger.seal import load_leaves, seal_windows
from ledger.verify import verify

START = 1_780_272_000_000  # 2026-06-01T00:00Z


def header(site: str, n: int, prev: str) -> BatchHeader:
    return BatchHeader(batch_id=f"{site}:{n}", site=site, kind="seal", window_start_ms=n * 3600_000,
                       window_end_ms=(n + 1) * 3600_000, leaf_count=1, root="ab" * 32, prev_hash=prev,
                       findings_digest="00" * 32, sealed_ms=1)


def test_local_ledger_chains_per_site_and_refuses_overwrites_and_broken_chains(tmp_path: Path) -> None:
    led = LocalLedger.open(tmp_path)
    h1 = header("a", 1, GENESIS_HASH)
    r1 = led.anchor(h1)
    assert r1.header_hash == header_hash(h1) and led.head("a") == r1.header_hash
    led.anchor(header("b", 1, GENESIS_HASH))  # another site's chain is independent
    with pytest.raises(AlreadyAnchored):
        led.anchor(h1)
    with pytest.raises(ChainBroken):
        led.anchor(header("a", 2, GENESIS_HASH))
    r2 = led.anchor(header("a", 2, r1.header_hash))
    reopened = LocalLedger.open(tmp_path)  # survives a restart, re-verified on open
    assert reopened.get("a:2") == (header("a", 2, r1.header_hash), r2)
    assert [e.position for e in reopened.events()] == [0, 1, 2]


def test_an_edited_or_truncated_ledger_file_is_detected(tmp_path: Path) -> None:
    led = LocalLedger.open(tmp_path)
    prev = GENESIS_HASH
    for n in range(3):
        prev = led.anchor(header("a", n, prev)).header_hash
    path = tmp_path / "ledger.jsonl"
    good = path.read_bytes()
    lines = good.splitlines(keepends=True)
    rec = json.loads(lines[1])
    rec["header"] = rec["header"].replace('"leaf_count":1', '"leaf_count":2')
    path.write_bytes(lines[0] + (json.dumps(rec) + "\n").encode() + lines[2])
    with pytest.raises(LedgerMismatch, match=":2:"):
        LocalLedger.open(tmp_path)
    path.write_bytes(good[:-10])
    with pytest.raises(LedgerMismatch, match="truncated"):
        LocalLedger.open(tmp_path)
    path.write_bytes(lines[0] + lines[2])  # a record removed from the middle
    with pytest.raises(LedgerMismatch, match="does not chain"):
        LocalLedger.open(tmp_path)


def test_a_ledger_line_is_read_one_way_whatever_its_spelling(tmp_path: Path) -> None:
    """Lines as the ledger writes them take the fast typed decode; any other spelling of the same record (key
    order, spaces) is read by the strict parser and gives the same ledger; a duplicate member is refused, so no
    line can mean one thing to one reader and another thing to the next."""
    led = LocalLedger.open(tmp_path)
    prev = GENESIS_HASH
    for n in range(3):
        prev = led.anchor(header("a", n, prev)).header_hash
    path = tmp_path / "ledger.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    rec = json.loads(lines[1])
    respelled = (json.dumps(dict(reversed(list(rec.items()))), indent=None) + "\n").encode()  # same record, other order
    assert respelled != lines[1]
    path.write_bytes(lines[0] + respelled + lines[2])
    again = LocalLedger.open(tmp_path)
    assert [r.record_hash for _, r in again._records] == [r.record_hash for _, r in led._records]
    forged = json.loads(lines[1])
    other = forged["header"].replace('"leaf_count":1', '"leaf_count":2')
    dup = lines[1].rstrip(b"\n")[:-1] + b',"header":' + json.dumps(other).encode() + b"}\n"  # header given twice
    path.write_bytes(lines[0] + dup + lines[2])
    with pytest.raises(LedgerMismatch, match=":2: unreadable record.*duplicate member"):
        LocalLedger.open(tmp_path)


@pytest.fixture
def sealed(store_db: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    run = simulate(sites=1, days=0.25, seed=21, start_ms=START)
    for d in run.devices:
        register_device(store_db, d.record)
    ingest_payloads(store_db, [(m.topic, m.payload) for m in run.messages()])
    led = LocalLedger.open(tmp_path / "ledger")
    made = seal_windows(store_db, led)
    return store_db, led, made


def test_sealing_covers_every_reading_once_and_verifies_intact(sealed) -> None:  # type: ignore[no-untyped-def]
    dsn, led, made = sealed
    assert len(made) == 6  # 6 hours, one site
    with psycopg.connect(dsn) as conn:
        total = conn.execute("SELECT count(*) FROM readings").fetchone()[0]  # type: ignore[index]
        queued = conn.execute("SELECT count(*) FROM unsealed_frames").fetchone()[0]  # type: ignore[index]
    assert queued == 0 and sum(b.header.leaf_count for b in made) == total
    assert seal_windows(dsn, led) == []  # nothing left: idempotent
    assert all(r.status == "intact" for r in verify(dsn, led))


def test_resealing_a_window_from_the_store_gives_identical_leaves_and_root(sealed) -> None:  # type: ignore[no-untyped-def]
    dsn, led, made = sealed
    b = made[2]
    from datetime import UTC, datetime

    with psycopg.connect(dsn) as conn:
        again = load_leaves(conn, b.header.site, datetime.fromtimestamp(b.header.window_start_ms / 1000, UTC),
                            datetime.fromtimestamp(b.header.window_end_ms / 1000, UTC), b.header.batch_id)
    assert [k for k, _ in again] == b.leaf_keys and [h for _, h in again] == b.leaf_hashes


def one_key(dsn: str, batch_id: str, offset: int = 3) -> tuple[str, int, int]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT k.d, k.s, k.i FROM batches b, unnest(b.leaf_devices, b.leaf_seqs, b.leaf_idxs) "
                           "AS k(d, s, i) WHERE b.batch_id = %s ORDER BY 1, 2, 3 OFFSET %s LIMIT 1",
                           (batch_id, offset)).fetchone()
    assert row is not None
    return (row[0], row[1], row[2])


def only_problem(dsn: str, led: LocalLedger):  # type: ignore[no-untyped-def]
    bad = [r for r in verify(dsn, led) if r.status != "intact"]
    assert len(bad) == 1, [r.to_json() for r in bad]
    return bad[0]


def test_an_updated_register_is_named_and_nothing_else(sealed) -> None:  # type: ignore[no-untyped-def]
    dsn, led, made = sealed
    key = one_key(dsn, made[1].header.batch_id)
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE readings SET energy_wh = energy_wh + 1 WHERE (device_id, seq, idx) = (%s, %s, %s)", key)
    rep = only_problem(dsn, led)
    assert rep.batch_id == made[1].header.batch_id
    assert rep.changed == [key] and rep.deleted == [] and rep.inserted == [] and rep.bad_frames == []


def test_a_deleted_reading_is_named_and_nothing_else(sealed) -> None:  # type: ignore[no-untyped-def]
    dsn, led, made = sealed
    key = one_key(dsn, made[4].header.batch_id, offset=10)
    with psycopg.connect(dsn) as conn:
        conn.execute("DELETE FROM readings WHERE (device_id, seq, idx) = (%s, %s, %s)", key)
    rep = only_problem(dsn, led)
    assert rep.deleted == [key] and rep.changed == [] and rep.inserted == []


def test_a_forged_inserted_reading_is_named_and_nothing_else(sealed) -> None:  # type: ignore[no-untyped-def]
    dsn, led, made = sealed
    b = made[0].header
    dev, seq, _ = one_key(dsn, b.batch_id)
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO readings (device_id, seq, idx, ts, channel, energy_wh, power_w) "
                     "SELECT device_id, seq, 999, ts, channel, energy_wh, power_w FROM readings "
                     "WHERE device_id = %s AND seq = %s ORDER BY idx LIMIT 1", (dev, seq))
    rep = only_problem(dsn, led)
    assert rep.inserted == [(dev, seq, 999)] and rep.changed == [] and rep.deleted == []


def test_changed_frame_bytes_are_named_by_their_frame(sealed) -> None:  # type: ignore[no-untyped-def]
    dsn, led, made = sealed
    dev, seq, _ = one_key(dsn, made[3].header.batch_id)
    with psycopg.connect(dsn) as conn:
        raw = zstandard.ZstdDecompressor().decompress(bytes(conn.execute(
            "SELECT raw_zstd FROM frames WHERE device_id = %s AND seq = %s", (dev, seq)).fetchone()[0]))  # type: ignore[index]
        forged = raw.replace(b'"energy_wh":', b'"energy_wh":1', 1)
        conn.execute("UPDATE frames SET raw_zstd = %s WHERE device_id = %s AND seq = %s",
                     (zstandard.ZstdCompressor().compress(forged), dev, seq))
    rep = only_problem(dsn, led)
    assert [(d, s) for d, s, _ in rep.bad_frames] == [(dev, seq)]
    assert rep.changed == rep.deleted == rep.inserted == []


def test_a_batch_missing_from_the_ledger_is_reported(sealed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dsn, _, made = sealed
    other = LocalLedger.open(tmp_path / "other-ledger")  # an empty ledger: nothing was anchored there
    reports = verify(dsn, other)
    assert {r.status for r in reports} == {"missing_on_ledger"} and len(reports) == len(made)


def test_proof_bundle_verifies_offline_against_pinned_keys_and_one_altered_byte_fails(sealed) -> None:  # type: ignore[no-untyped-def]
    import base64
    import copy
    from datetime import UTC, datetime

    from device.identity import public_key_b64
    from device.wire import b64url
    from ledger.proofs import NOT_VERIFIED, export_bundle, verify_bundle
    from ledger.trust import FORMAT, Trust

    dsn, led, made = sealed
    device = made[0].leaf_keys[0][0]
    t1 = datetime.fromtimestamp(START / 1000, UTC)
    t2 = datetime.fromtimestamp((START + 3 * 3600_000) / 1000, UTC)
    bundle = export_bundle(dsn, led, device, t1, t2)
    assert bundle["format"] == "wattproof-proof-bundle/2"
    assert len(bundle["batches"]) == 3 and all(b["readings"] for b in bundle["batches"])
    with psycopg.connect(dsn) as conn:
        devices = {d: [b64url(bytes(k))] for d, k in conn.execute("SELECT device_id, public_key FROM devices")}
    trust = Trust(format=FORMAT, operator_keys=[public_key_b64(led.pub)], devices=devices)
    assert verify_bundle(bundle, trust) == []
    assert verify_bundle(bundle, None) == [NOT_VERIFIED]
    path = bundle["batches"][1]["readings"][5]["audit_path"]
    assert len(path) * 32 <= 1024

    def flipped(mutate) -> list[str]:  # type: ignore[no-untyped-def]
        b = copy.deepcopy(bundle)
        mutate(b)
        return verify_bundle(b, trust)

    def flip_leaf(b) -> None:  # type: ignore[no-untyped-def]
        raw = bytearray(base64.b64decode(b["batches"][0]["readings"][2]["leaf_b64"]))
        raw[-5] ^= 0x01
        b["batches"][0]["readings"][2]["leaf_b64"] = base64.b64encode(bytes(raw)).decode()

    def flip_path(b) -> None:  # type: ignore[no-untyped-def]
        h = b["batches"][1]["readings"][0]["audit_path"][0]
        b["batches"][1]["readings"][0]["audit_path"][0] = ("0" if h[0] != "0" else "1") + h[1:]

    def flip_header(b) -> None:  # type: ignore[no-untyped-def]
        b["batches"][2]["header"] = b["batches"][2]["header"].replace('"leaf_count":', '"leaf_count":1', 1)

    def flip_frame(b) -> None:  # type: ignore[no-untyped-def]
        raw = bytearray(base64.b64decode(b["frames"][0]["raw_b64"]))
        raw[raw.index(b'"energy_wh":') + 13] ^= 0x01
        b["frames"][0]["raw_b64"] = base64.b64encode(bytes(raw)).decode()

    for mutate in (flip_leaf, flip_path, flip_header, flip_frame):
        assert flipped(mutate), mutate.__name__


from tests.ledger_conformance import LedgerConformance  # noqa: E402


class TestLocalLedgerConformance(LedgerConformance):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> LocalLedger:
        return LocalLedger.open(tmp_path / "conformance")


def test_late_readings_for_a_sealed_window_go_into_an_amendment_batch(store_db: str, tmp_path: Path) -> None:
    run = simulate(sites=1, days=0.25, seed=22, start_ms=START)
    for d in run.devices:
        register_device(store_db, d.record)
    msgs = list(run.messages())
    late = [m for m in msgs if m.device.endswith("-pv")][2]  # one frame of the first hours arrives late
    ingest_payloads(store_db, [(m.topic, m.payload) for m in msgs if m is not late])
    led = LocalLedger.open(tmp_path / "ledger")
    first = seal_windows(store_db, led)
    sealed_before = {b.header.batch_id: b.header for b in first}
    ingest_payloads(store_db, [(late.topic, late.payload)])
    amendments = seal_windows(store_db, led)
    assert len(amendments) >= 1
    for a in amendments:
        h = a.header
        assert h.kind == "amendment" and h.amends in sealed_before and h.batch_id == f"{h.amends}:a1"
        assert {k[0] for k in a.leaf_keys} == {late.device} and {k[1] for k in a.leaf_keys} == {late.seq}
    assert sum(a.header.leaf_count for a in amendments) == late.n_readings
    # the original batches are untouched and everything still verifies
    for b in first:
        assert led.get(b.header.batch_id)[0] == b.header  # type: ignore[index]
    assert all(r.status == "intact" for r in verify(store_db, led))


def test_the_header_digests_the_windows_audit_findings(store_db: str, tmp_path: Path) -> None:
    import hashlib

    import rfc8785

    from audit.run import run_audit
    from firmware_sim.scenarios import parse_scenario

    sc = parse_scenario("name: t\nsites: 1\ndays: 0.25\nstart: '2026-06-01'\nfaults:\n"
                        "  - {kind: register_rollback, site: 0, device: sub1, start_h: 2.5, delta_wh: 500}\n")
    run = simulate(scenario=sc)
    for d in run.devices:
        register_device(store_db, d.record)
    ingest_payloads(store_db, [(m.topic, m.payload) for m in run.messages()])
    assert run_audit(store_db)["register_rollback"] == 1
    made = {b.header.window_start_ms: b.header for b in seal_windows(store_db, LocalLedger.open(tmp_path / "l"))}
    empty = hashlib.sha256(b"[]").hexdigest()
    with_finding = made[START + 2 * 3600_000]
    assert with_finding.findings_digest != empty
    assert [h.findings_digest for k, h in sorted(made.items()) if k != START + 2 * 3600_000] == [empty] * 5
    t = run.truth[0]
    expected = [{"device": "s01-sub1", "kind": "register_rollback", "severity": "high", "start_ms": t.start_ms - 60_000,
                 "end_ms": t.start_ms, "detector": "wattproof.audit", "detector_version": "1"}]
    assert with_finding.findings_digest == hashlib.sha256(rfc8785.dumps(expected)).hexdigest()


def test_bulk_verify_reports_exactly_what_the_row_by_row_replay_reports(sealed) -> None:  # type: ignore[no-untyped-def]
    from ledger.verify import verify_rows

    dsn, led, made = sealed
    b0, b1, b2, b3 = (m.header.batch_id for m in made[:4])
    changed, deleted = one_key(dsn, b1), one_key(dsn, b2, offset=7)
    dev, seq, _ = one_key(dsn, b0)
    fdev, fseq, _ = one_key(dsn, b3)
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE readings SET power_w = -power_w - 1 WHERE (device_id, seq, idx) = (%s, %s, %s)", changed)
        conn.execute("DELETE FROM readings WHERE (device_id, seq, idx) = (%s, %s, %s)", deleted)
        # a forged reading with a new key, and a second row repeating an existing key at a later ts
        conn.execute("INSERT INTO readings (device_id, seq, idx, ts, channel, energy_wh, power_w) "
                     "SELECT device_id, seq, 998, ts, channel, energy_wh, power_w FROM readings "
                     "WHERE device_id = %s AND seq = %s ORDER BY idx LIMIT 1", (dev, seq))
        conn.execute("INSERT INTO readings (device_id, seq, idx, ts, channel, energy_wh, power_w) "
                     "SELECT device_id, seq, idx, ts + interval '1 ms', channel, energy_wh + 5, power_w "
                     "FROM readings WHERE device_id = %s AND seq = %s ORDER BY idx OFFSET 1 LIMIT 1", (dev, seq))
        conn.execute("UPDATE frames SET frame_sha256 = %s WHERE device_id = %s AND seq = %s", (b"\x01" * 32, fdev, fseq))
        conn.execute("UPDATE batches SET header = header || ' '::bytea WHERE batch_id = %s", (made[5].header.batch_id,))
    want = [r.to_json() for r in verify_rows(dsn, led)]
    assert sum(r["status"] != "intact" for r in want) == 5
    from ledger import nativelib

    lib = nativelib.LIB
    assert lib is not None
    # with the native library (frames on threads), and without it (worker processes, libsodium, OpenSSL
    # hashing through ctypes): the path a machine without Rust takes
    for native in (True, False):
        nativelib.LIB = lib if native else None
        try:
            for workers in (1, 2):
                assert [r.to_json() for r in verify(dsn, led, workers=workers)] == want, (native, workers)
            for site, start in ((made[0].header.site, None), (None, made[2].header.window_start_ms)):
                from datetime import UTC, datetime

                t = None if start is None else datetime.fromtimestamp(start / 1000, UTC)
                assert ([r.to_json() for r in verify(dsn, led, site=site, start=t, workers=2)]
                        == [r.to_json() for r in verify_rows(dsn, led, site=site, start=t)]), native
        finally:
            nativelib.LIB = lib


def test_the_row_reference_loads_exactly_the_leaves_sealing_made_for_every_batch(sealed) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    dsn, _, made = sealed
    with psycopg.connect(dsn) as conn:
        for b in made:
            h = b.header
            w0, w1 = (datetime.fromtimestamp(t / 1000, UTC) for t in (h.window_start_ms, h.window_end_ms))
            rows = load_leaves(conn, h.site, w0, w1, h.batch_id)
            assert [k for k, _ in rows] == b.leaf_keys and [x for _, x in rows] == b.leaf_hashes


class _SlowLedger:
    """A LocalLedger whose anchor takes as long as a Fabric commit, counting anchors in flight (one header
    at a time, like Fabric: no ``anchor_many``)."""

    def __init__(self, inner: LocalLedger) -> None:
        import threading

        self.inner, self.name = inner, inner.name
        self.lock, self.now, self.most = threading.Lock(), 0, 0

    def anchor(self, header):  # type: ignore[no-untyped-def]
        import time

        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            time.sleep(0.03)
            return self.inner.anchor(header)
        finally:
            with self.lock:
                self.now -= 1

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        if name == "anchor_many":
            raise AttributeError(name)
        return getattr(self.inner, name)

def test_sites_are_sealed_concurrently_each_chain_in_order(store_db: str, tmp_path: Path) -> None:
    from ledger import merkle

    run = simulate(sites=3, days=0.25, seed=23, start_ms=START)
    for d in run.devices:
        register_device(store_db, d.record)
    ingest_payloads(store_db, [(m.topic, m.payload) for m in run.messages()])
    led = _SlowLedger(LocalLedger.open(tmp_path / "ledger"))
    calls: list[tuple[int, int]] = []
    made = seal_windows(store_db, led, progress=lambda i, n: calls.append((i, n)), max_workers=3)  # type: ignore[arg-type]
    assert len(made) == 18 and led.most >= 2  # 3 sites × 6 windows, anchored side by side
    assert calls == [(i, 18) for i in range(1, 19)]
    assert [(b.header.site, b.header.window_start_ms) for b in made] == sorted(
        (b.header.site, b.header.window_start_ms) for b in made)
    prev: dict[str, str] = {}
    for b in made:  # each site's chain is in window order
        assert b.header.prev_hash == prev.get(b.header.site, GENESIS_HASH)
        prev[b.header.site] = header_hash(b.header)
        assert merkle.root_from_leaf_hashes(b.leaf_hashes).hex() == b.header.root
    reopened = LocalLedger.open(tmp_path / "ledger")  # the file's record chain survived the threads
    assert len(list(reopened.events())) == 18
    assert all(r.status == "intact" for r in verify(store_db, reopened))


def test_a_batch_record_with_arrays_of_unequal_length_leaves_the_other_batches_exact(sealed) -> None:  # type: ignore[no-untyped-def]
    from ledger.verify import verify_rows

    dsn, led, made = sealed
    key = one_key(dsn, made[3].header.batch_id)
    with psycopg.connect(dsn) as conn:  # batch 1's record is ragged; batch 3 (after it) has a changed reading
        conn.execute("UPDATE batches SET leaf_seqs = leaf_seqs || 7::bigint, leaf_idxs = leaf_idxs || 1 "
                     "WHERE batch_id = %s", (made[1].header.batch_id,))
        conn.execute("UPDATE readings SET energy_wh = energy_wh + 1 WHERE (device_id, seq, idx) = (%s, %s, %s)", key)
    want = [r.to_json() for r in verify_rows(dsn, led)]
    assert [r["status"] != "intact" for r in want] == [False, True, False, True, False, False]
    assert [r.to_json() for r in verify(dsn, led)] == want


def test_two_processes_anchoring_on_one_local_ledger_chain_on_each_other_never_fork_the_file(tmp_path: Path) -> None:
    """Each writer reads what the other appended before it appends (a file lock between processes), so the
    file stays one chain; before, the second writer chained on its stale view and broke the ledger."""
    import subprocess
    import sys

    first = LocalLedger.open(tmp_path)  # stays open while another process anchors
    first.anchor(header("a", 1, GENESIS_HASH))
    code = ("import sys; from pathlib import Path; from ledger.local import LocalLedger; "
            "from ledger.backend import header_hash; from tests.test_ledger_local import header; "
            "led = LocalLedger.open(Path(sys.argv[1])); "
            "[led.anchor(header('b', n, led.head('b'))) for n in range(1, 4)]")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, cwd=Path(__file__).resolve().parents[1])
    r = first.anchor(header("a", 2, first.head("a")))  # chains on the other process's records
    assert r.ref == 4
    many = first.anchor_many([header("b", 4, first.head("b"))])
    assert many[0].ref == 5
    again = LocalLedger.open(tmp_path, create=False)  # the file is one chain: it loads, every record checked
    assert [e.header.batch_id for e in again.events()] == ["a:1", "b:1", "b:2", "b:3", "a:2", "b:4"]


def test_a_forged_signature_deep_in_a_long_ledger_is_named_by_its_line_on_open(tmp_path: Path) -> None:
    """Opening checks every record's operator signature (in one native batch past 64 records): one forged
    signature among 100 is named by its line, and a key that did not sign the ledger is refused."""
    led = LocalLedger.open(tmp_path)
    prev = GENESIS_HASH
    for n in range(100):
        prev = led.anchor(header("a", n, prev)).header_hash
    assert len(list(LocalLedger.open(tmp_path, create=False).events())) == 100
    path = tmp_path / "ledger.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    rec = json.loads(lines[79])
    rec["sig"] = ("B" if rec["sig"][0] != "B" else "C") + rec["sig"][1:]
    lines[79] = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    with pytest.raises(LedgerMismatch, match=r"ledger.jsonl:80: operator signature does not verify"):
        LocalLedger.open(tmp_path, create=False)


@settings(max_examples=300, deadline=None)
@given(st.integers(-5, 2**53 + 5), st.one_of(st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
                                         st.text(alphabet="0123456789abcdefABCDEF\"\\\u2028é", max_size=70)),
       st.text(alphabet="0123456789abcdef", min_size=64, max_size=64))
def test_the_record_hash_is_sha256_of_the_rfc8785_record_whatever_its_values(position: int, hh: str, prev: str) -> None:
    import hashlib

    import rfc8785

    from ledger.local import _record_hash

    def outcome(f, *args):  # type: ignore[no-untyped-def]
        try:
            return f(*args)
        except Exception as exc:  # noqa: BLE001 — the same refusal on both sides counts as agreement
            return type(exc)

    def reference(position: int, hh: str, prev: str) -> str:
        return hashlib.sha256(rfc8785.dumps({"position": position, "header_hash": hh, "prev_record": prev})).hexdigest()

    for a, b in ((hh, prev), (prev, hh)):
        assert outcome(_record_hash, position, a, b) == outcome(reference, position, a, b)


@pytest.mark.parametrize("span", [True, False], ids=["span-query", "join-query"])
def test_both_ways_of_loading_the_queue_seal_exactly_the_queued_readings(store_db: str, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          span: bool) -> None:
    """Sealing reads the queued frames' readings either with a join per reading or as every reading of the
    queue's span kept only where its frame is queued (``ledger.sealqueue``): forced each way, a run whose queue
    holds a late frame *and* newer ones (so sealed frames lie between queued seqs, inside the span) seals exactly
    the queued readings: the late one as an amendment, the new ones once, nothing sealed twice."""
    import ledger.sealqueue as sq

    monkeypatch.setattr(sq, "_span_is_mostly_queued", lambda *a, **k: span)
    run = simulate(sites=1, days=0.25, seed=23, start_ms=START)
    for d in run.devices:
        register_device(store_db, d.record)
    msgs = list(run.messages())
    pv = [m for m in msgs if m.device.endswith("-pv")]
    late, newer = pv[2], {id(m) for m in msgs[len(msgs) * 2 // 3:]}  # a frame of the first hours, the last third
    first_msgs = [m for m in msgs if m is not late and id(m) not in newer]
    ingest_payloads(store_db, [(m.topic, m.payload) for m in first_msgs])
    led = LocalLedger.open(tmp_path / "ledger")
    first = seal_windows(store_db, led)
    ingest_payloads(store_db, [(m.topic, m.payload) for m in msgs if m is late or id(m) in newer])
    refused: list[tuple[str, int, int]] = []
    second = seal_windows(store_db, led, refused_out=refused)
    assert refused == []  # no reading of a frame sealed before is taken for one of this run's
    keys_1 = {k for b in first for k in b.leaf_keys}
    keys_2 = [k for b in second for k in b.leaf_keys]
    assert len(keys_2) == len(set(keys_2)) and not keys_1 & set(keys_2)  # nothing sealed twice
    with psycopg.connect(store_db) as conn:
        stored = {(d, s, i) for d, s, i in conn.execute("SELECT device_id, seq, idx FROM readings")}
    assert keys_1 | set(keys_2) == stored  # everything sealed once
    amended = {(k[0], k[1]) for b in second if b.header.kind == "amendment" for k in b.leaf_keys}
    assert (late.device, late.seq) in amended and any(b.header.kind == "seal" for b in second)
    assert all(r.status == "intact" for r in verify(store_db, led))
