"""Invariant 6: one verdict per signature, whatever its neighbours (docs/proofs.md; docs/wire-format.md).

The published Ed25519 edge cases (Wycheproof, ed25519-speccheck) and our own (tests/vectors/ed25519/,
SOURCE.md says what each is and why the rule decides as it does) through every verifier path: the
reference (device.ed25519), the native library alone and inside batches of valid and invalid
signatures, ingest's validate/validate_many on frames signed with the same edge cases, the native
stored-frame check; and keys no device may register, refused by the file and database registries
and by the `wattproof device` command.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import msgspec
import psycopg
import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.bindings import (
    crypto_core_ed25519_scalar_reduce,
    crypto_core_ed25519_sub,
    crypto_scalarmult_ed25519_base_noclamp,
    crypto_scalarmult_ed25519_noclamp,
)

from device import ed25519
from device.identity import DeviceRecord, FileRegistry, IdentityError
from device.wire import (
    MAX_FRAME_BYTES,
    Frame,
    Reading,
    b64url,
    canonical_bytes,
    encode_frame,
    readings_topic,
)
from ingest.registry import RegistryError, register_device
from ingest.validate import Accepted, Rejected, validate, validate_many
from ledger import nativelib
from ledger.verify import frame_problem
from tests.vectors.ed25519 import generate as own

HERE = Path(__file__).parent / "vectors" / "ed25519"
ROOT = Path(__file__).resolve().parents[1]

# What our rule decides for each ed25519-speccheck case (README's condition table) and why.
SPECCHECK = {
    0: "A and R of small order, S = 0: A refused (small order)",
    1: "A of small order, R mixed: A refused (small order)",
    2: "A mixed, R of small order: A refused (torsion component)",
    3: "A and R mixed, both equations hold: A refused (torsion component)",
    4: "A and R mixed, only the cofactored equation holds: A refused, and the cofactorless equation fails",
    5: "A mixed, R of order L, cofactored only: A refused (torsion component)",
    6: "S > L: S not canonical",
    7: "S >> L (top bits set): S not canonical",
    8: "R non-canonical and of small order (hash over reduced R), A mixed: refused",
    9: "R non-canonical and of small order (hash over R as sent), A mixed: refused",
    10: "A a non-canonical encoding of a small-order point (hash over reduced A): refused",
    11: "A a non-canonical encoding of a small-order point (hash over A as sent): refused",
}


def _vectors() -> list[tuple[str, bytes, bytes, bytes, bool]]:
    """(id, public key, message, signature, accepted by the rule) of every published and own vector."""
    out = []
    wp = json.loads((HERE / "wycheproof_ed25519_test.json").read_text())
    for group in wp["testGroups"]:
        pk = bytes.fromhex(group["publicKey"]["pk"])
        for t in group["tests"]:
            assert t["result"] in ("valid", "invalid")
            out.append((f"wycheproof-tc{t['tcId']}", pk, bytes.fromhex(t["msg"]), bytes.fromhex(t["sig"]),
                        t["result"] == "valid"))
    for i, c in enumerate(json.loads((HERE / "speccheck_cases.json").read_text())):
        out.append((f"speccheck-{i}", bytes.fromhex(c["pub_key"]), bytes.fromhex(c["message"]),
                    bytes.fromhex(c["signature"]), False))
    doc = json.loads((HERE / "own_cases.json").read_text())
    pk, msg = bytes.fromhex(doc["public_key_hex"]), bytes.fromhex(doc["message_hex"])
    for c in doc["signatures"]:
        out.append((f"own-{c['name']}", pk, msg, bytes.fromhex(c["sig_hex"]), c["expected"] == "accept"))
    return out


VECTORS = _vectors()
IDS = [v[0] for v in VECTORS]
OWN = json.loads((HERE / "own_cases.json").read_text())
BAD_KEYS = {k["name"]: (k["desc"], bytes.fromhex(k["public_key_hex"]), k["refused_because"]) for k in OWN["keys"]}


def test_every_published_vector_is_here_and_speccheck_decisions_are_stated() -> None:
    assert sum(i.startswith("wycheproof-") for i in IDS) == 151
    assert sum(i.startswith("speccheck-") for i in IDS) == len(SPECCHECK) == 12
    assert len(set(IDS)) == len(IDS)


def test_own_vectors_are_reproduced_by_their_generator() -> None:
    cases = own.signature_cases(own.KEY, own.MESSAGE)
    assert [(c["name"], c["sig_hex"]) for c in OWN["signatures"]] == [(n, s.hex()) for n, (_, s, _) in cases.items()]
    assert [(k["name"], k["public_key_hex"]) for k in OWN["keys"]] == [
        (n, key.hex()) for n, (_, key, _) in own.key_cases(own.KEY).items()]


@pytest.mark.parametrize("name", [c["name"] for c in OWN["signatures"] if c["name"].startswith("torsion_nonce")])
def test_a_torsion_nonce_satisfies_the_cofactored_equation_so_only_the_rule_tells_it_apart(name: str) -> None:
    """[S]B - [k]A - R is a point of small order: a cofactored (or lenient batch) check accepts it."""
    case = next(c for c in OWN["signatures"] if c["name"] == name)
    sig, pk, msg = bytes.fromhex(case["sig_hex"]), bytes.fromhex(OWN["public_key_hex"]), own.MESSAGE
    k = crypto_core_ed25519_scalar_reduce(hashlib.sha512(sig[:32] + pk + msg).digest())
    d = crypto_core_ed25519_sub(crypto_core_ed25519_sub(crypto_scalarmult_ed25519_base_noclamp(sig[32:]),
                                                        crypto_scalarmult_ed25519_noclamp(k, pk)), sig[:32])
    assert "small order" in (ed25519.key_problem(d) or "")


@pytest.mark.parametrize(("vid", "pk", "msg", "sig", "accepted"), VECTORS, ids=IDS)
def test_the_reference_gives_the_rules_verdict(vid: str, pk: bytes, msg: bytes, sig: bytes, accepted: bool) -> None:
    assert ed25519.verify(pk, sig, msg) is accepted


@pytest.mark.parametrize(("vid", "pk", "msg", "sig", "accepted"), VECTORS, ids=IDS)
def test_the_native_check_alone_gives_the_rules_verdict(vid: str, pk: bytes, msg: bytes, sig: bytes,
                                                        accepted: bool) -> None:
    assert bool(nativelib.verify_batch([msg], [sig], [pk])[0]) is accepted


def _mixed_batch(target: int, at: int, length: int, seed: int) -> list[int]:
    """Indexes into VECTORS: ``length`` items, valid and invalid, with ``target`` at position ``at``."""
    rng = random.Random(seed)
    others = [i for i in range(len(VECTORS)) if i != target]
    batch = [rng.choice(others) for _ in range(length - 1)]
    batch.insert(at, target)
    return batch


def _native(batch: list[int]) -> list[bool]:
    got = nativelib.verify_batch([VECTORS[i][2] for i in batch], [VECTORS[i][3] for i in batch],
                                 [VECTORS[i][1] for i in batch])
    return [bool(x) for x in got]


@pytest.mark.parametrize("target", range(len(VECTORS)), ids=IDS)
def test_the_native_check_in_mixed_batches_gives_every_signature_its_own_verdict(target: int) -> None:
    for length, positions in ((2, (0, 1)), (260, (0, 129, 255, 256, 259))):  # 260: longer than 256
        for at in positions:
            batch = _mixed_batch(target, at, length, seed=target * 1000 + at)
            assert _native(batch) == [VECTORS[i][4] for i in batch], (length, at)


def test_a_batch_made_only_of_edge_cases_gives_each_its_own_verdict() -> None:
    edge = [i for i, v in enumerate(VECTORS) if not v[4] or v[0].startswith("own-")] * 3
    random.Random(12).shuffle(edge)
    assert len(edge) > 256
    assert _native(edge) == [VECTORS[i][4] for i in edge]


def test_a_torsion_nonce_is_refused_with_any_neighbours() -> None:
    """The review's finding: the batch equation accepted such a signature with some neighbours and not others."""
    target = IDS.index("own-torsion_nonce_4")
    valid = [i for i, v in enumerate(VECTORS) if v[4]]
    for seed in range(64):
        rng = random.Random(seed)
        batch = [rng.choice(valid) for _ in range(rng.randint(1, 40))]
        batch.insert(rng.randint(0, len(batch)), target)
        got = _native(batch)
        assert got == [i != target for i in batch], seed


# --- frames signed with the edge cases: validate / validate_many / the stored-frame check ---------

KEY_B64 = b64url(own.public_key(own.KEY))
SENT_MS = 1_780_000_000_000
SIG_CASES = list(own.signature_cases(own.KEY, b"").keys())


def _frame(seq: int, n: int = 3) -> Frame:
    return Frame(v=1, site="e1", device="e1-main", seq=seq, sent_ms=SENT_MS,
                 readings=[Reading(ts_ms=SENT_MS - 60_000 * i, channel="import", energy_wh=1000 - i, power_w=5)
                           for i in range(n)])


def _signed(frame: Frame, case: str = "valid") -> bytes:
    """The frame on the wire, signed by our test key with the edge case ``case`` over its canonical bytes."""
    _, sig, _ = own.signature_cases(own.KEY, canonical_bytes(frame))[case]
    return encode_frame(msgspec.structs.replace(frame, sig=b64url(sig)))


def _registry(public_key: str = KEY_B64) -> dict[str, DeviceRecord]:
    return {"e1-main": DeviceRecord(site="e1", device="e1-main", kind="main_meter", public_key=public_key,
                                    rated_power_w=10_000)}


def _expected(case: str) -> bool:
    return own.signature_cases(own.KEY, b"")[case][2]


@pytest.mark.parametrize("case", SIG_CASES)
def test_validate_and_validate_many_agree_on_a_frame_signed_with(case: str) -> None:
    topic = readings_topic("e1", "e1-main")
    target = (topic, _signed(_frame(500), case))
    honest = [(topic, _signed(_frame(s))) for s in range(300)]
    for at in (0, 150, 300):
        items = honest[:at] + [target] + honest[at:]
        many = validate_many(items, _registry(), SENT_MS)
        alone = [validate(t, p, _registry(), SENT_MS) for t, p in items]
        assert many == alone
        assert isinstance(many[at], Accepted) is _expected(case)
        assert sum(isinstance(v, Accepted) for v in many) == 300 + _expected(case)
    if not _expected(case):
        verdict = validate(*target, _registry(), SENT_MS)
        assert isinstance(verdict, Rejected) and verdict.reason == "bad_signature"


@pytest.mark.parametrize("name", list(BAD_KEYS))
def test_a_frame_of_a_device_registered_with_a_refused_key_is_rejected_with_the_reason(name: str) -> None:
    """A key that slipped into a registry before the check: no signature under it is accepted."""
    desc, key, why = BAD_KEYS[name]
    items = [(readings_topic("e1", "e1-main"), _signed(_frame(s))) for s in range(3)]
    for verdict in validate_many(items, _registry(b64url(key)), SENT_MS):
        assert isinstance(verdict, Rejected) and verdict.reason == "bad_signature"
        assert "unusable public key" in verdict.detail and why in verdict.detail


Z = zstandard.ZstdCompressor(level=3)


def _stored(raw: bytes) -> tuple[bytes, bytes]:
    return Z.compress(raw), hashlib.sha256(raw).digest()


def _check_frames(stored: list[tuple[bytes, bytes]], key: bytes) -> list[bool]:
    import numpy as np

    buf = b"".join(z + s for z, s in stored)
    offs, pos = [], 0
    for z, s in stored:
        offs.append((pos, len(z), pos + len(z), len(s)))
        pos += len(z) + len(s)
    cols = [np.array(c, np.int64) for c in zip(*offs, strict=True)]
    got = nativelib.check_frames(np.frombuffer(buf, np.uint8), *cols, [key], np.zeros(len(stored), np.int32),
                                 MAX_FRAME_BYTES, threads=2)
    return [bool(x) for x in got]


@pytest.mark.parametrize("case", SIG_CASES)
def test_the_stored_frame_check_agrees_with_the_reference_on_a_frame_signed_with(case: str) -> None:
    key = own.public_key(own.KEY)
    target = _stored(_signed(_frame(500), case))
    honest = [_stored(_signed(_frame(s))) for s in range(300)]
    unz = zstandard.ZstdDecompressor()
    reference = frame_problem(*target, Ed25519PublicKey.from_public_bytes(key), unz)
    assert (reference is None) is _expected(case), reference
    for at in (0, 255, 300):
        got = _check_frames(honest[:at] + [target] + honest[at:], key)
        assert got[at] is _expected(case)
        assert sum(got) == 300 + _expected(case)


# --- registration ------------------------------------------------------------------------------

def _record(key: bytes, device: str = "e9-meter") -> DeviceRecord:
    return DeviceRecord(site="e9", device=device, kind="main_meter", public_key=b64url(key), rated_power_w=100)


@pytest.mark.parametrize("name", list(BAD_KEYS))
def test_the_file_registry_refuses_a_key_naming_the_device_and_the_reason(name: str, tmp_path: Path) -> None:
    desc, key, why = BAD_KEYS[name]
    registry = FileRegistry(tmp_path / "registry.json")
    with pytest.raises(IdentityError, match=why) as err:
        registry.add(_record(key))
    assert "'e9-meter'" in str(err.value)
    assert not registry.path.exists()


@pytest.mark.parametrize("name", list(BAD_KEYS))
def test_the_database_registry_refuses_a_key_naming_the_device_and_the_reason(name: str, store_db: str) -> None:
    desc, key, why = BAD_KEYS[name]
    with pytest.raises(RegistryError, match=why) as err:
        register_device(store_db, _record(key))
    assert "'e9-meter'" in str(err.value)
    with psycopg.connect(store_db) as conn:
        assert conn.execute("SELECT count(*) FROM devices").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM sites").fetchone() == (0,)


def test_both_registries_take_a_key_of_prime_order(tmp_path: Path, store_db: str) -> None:
    record = _record(own.public_key(own.KEY))
    FileRegistry(tmp_path / "registry.json").add(record)
    register_device(store_db, record)
    assert FileRegistry(tmp_path / "registry.json").get("e9-meter") == record


def test_a_padded_or_non_canonical_base64_key_is_refused(tmp_path: Path) -> None:
    good = b64url(own.public_key(own.KEY))
    for spelled in (good + "=", good[:-1] + chr(ord(good[-1]) + 1)):  # padding; unused low bits set
        record = msgspec.structs.replace(_record(b""), public_key=spelled)
        if record.key_problem() is None:
            continue  # the last character changed a used bit: another key, fine
        with pytest.raises(IdentityError, match="base64url"):
            FileRegistry(tmp_path / "registry.json").add(record)


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WATTPROOF_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "wattproof", *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=ROOT)


@pytest.mark.parametrize("name", ["small_order_4", "mixed_order_first", "y_p_plus_1"])
def test_device_provision_with_a_refused_public_key_fails_in_one_line(name: str, tmp_path: Path) -> None:
    desc, key, why = BAD_KEYS[name]
    res = _cli(tmp_path, "device", "provision", "--site", "e9", "--device", "e9-meter", "--rated-power-w", "100",
               "--public-key", b64url(key))
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: device 'e9-meter'") and why in lines[0], res.stderr
    assert not (tmp_path / "registry.json").exists() and not (tmp_path / "keys").exists()


def test_device_provision_registers_a_public_key_made_on_the_device(tmp_path: Path) -> None:
    key = b64url(own.public_key(own.KEY))
    res = _cli(tmp_path, "device", "provision", "--site", "e9", "--device", "e9-meter", "--rated-power-w", "100",
               "--public-key", key)
    assert res.returncode == 0, res.stderr
    rec = FileRegistry(tmp_path / "registry.json").get("e9-meter")
    assert rec is not None and rec.public_key == key
    assert not (tmp_path / "keys").exists()  # no private key made here
