"""Proof bundles (wattproof-proof-bundle/2, docs/proofs.md "Proof bundle"): a bundle binds every field it
shows, trust is pinned by the verifier, and every forged vector in tests/vectors/bundles/ is refused
with its stated reason — through ``verify_bundle`` and through the real ``wattproof verify-proof``."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from device.identity import public_key_b64
from ledger.proofs import NOT_VERIFIED, check_bundle, record_hash, verify_bundle
from ledger.trust import FORMAT as TRUST_FORMAT
from ledger.trust import FabricTrust, Trust, load_trust
from tests.vectors.bundles import generate
from wattproof.cli import app

VECTORS = Path(__file__).parent / "vectors" / "bundles"
FORGED = sorted(VECTORS.glob("forged-*.json"))
HONEST_PATH = VECTORS / "honest.bundle.json"
HONEST = HONEST_PATH.read_bytes()
TRUST = load_trust(VECTORS / "trust.json")


def forged(path: Path) -> tuple[Any, str]:
    v = json.loads(path.read_text())
    return (v["bundle_text"] if "bundle_text" in v else v["bundle"]), v["expect"]


def honest() -> dict[str, Any]:
    return json.loads(HONEST)


# --- the vectors ---------------------------------------------------------------------------------
def test_the_vector_files_are_exactly_what_the_generator_makes() -> None:
    files = generate.build()
    assert sorted(files) == sorted(p.name for p in VECTORS.glob("*.json"))
    for name, text in files.items():
        assert (VECTORS / name).read_text() == text, f"{name} differs: rerun python -m tests.vectors.bundles.generate"


def test_the_vectors_cover_every_attack_of_the_review() -> None:
    names = {p.stem.removeprefix("forged-") for p in FORGED}
    assert {"header-edited-header-hash-recomputed", "fabricated-with-own-keys", "fabric-receipt-without-evidence",
            "operator-key-null", "no-batches", "batch-without-readings", "frame-missing", "frame-unreferenced",
            "leaf-of-another-device", "leaf-index-changed", "tree-size-changed", "audit-path-shortened",
            "audit-path-empty-hash", "root-edited-in-reading", "header-duplicate-member", "format-v1",
            "unknown-top-level-field", "reading-value-changed-in-leaf", "frame-from-another-seq",
            "prev-record-changed", "position-changed"} <= names
    for path in FORGED:
        v = json.loads(path.read_text())
        assert v["desc"] and v["expect"] and ("bundle" in v) != ("bundle_text" in v), path.name


def test_the_honest_bundle_is_verified_against_the_pinned_trust() -> None:
    assert verify_bundle(HONEST, TRUST) == []
    check = check_bundle(HONEST, TRUST)
    assert check.verified and (check.readings, check.batches, check.device) == (8, 2, "v01-main")


@pytest.mark.parametrize("path", FORGED, ids=lambda p: p.stem)
def test_forged_bundle_is_refused_with_its_reason(path: Path) -> None:
    bundle, expect = forged(path)
    problems = verify_bundle(bundle, TRUST)
    assert any(expect in p for p in problems), problems
    assert not check_bundle(bundle, TRUST).verified


@pytest.mark.parametrize("path", [p for p in FORGED if "fabricated" not in p.name], ids=lambda p: p.stem)
def test_without_trust_a_forged_bundle_still_says_what_is_broken(path: Path) -> None:
    bundle, expect = forged(path)
    check = check_bundle(bundle, None)
    assert not check.pinned and any(expect in p for p in check.problems), check.problems


# --- trust is pinned by the verifier -----------------------------------------------------------------
def test_without_trust_the_honest_bundle_is_self_consistent_only_never_verified() -> None:
    check = check_bundle(HONEST, None)
    assert check.problems == [] and not check.pinned and not check.verified
    assert verify_bundle(HONEST, None) == [NOT_VERIFIED]


def test_a_fabricated_bundle_is_self_consistent_and_only_pinned_trust_tells_it_apart() -> None:
    bundle, _ = forged(VECTORS / "forged-fabricated-with-own-keys.json")
    assert check_bundle(bundle, None).problems == []
    problems = verify_bundle(bundle, TRUST)
    assert len(problems) == 2
    assert problems[0].startswith("device key of v01-main") and "is not pinned" in problems[0]
    assert problems[1].startswith("operator key") and "is not pinned" in problems[1]


def test_a_device_key_pinned_for_another_device_is_not_pinned_for_this_one() -> None:
    shown = honest()["device_public_key"]
    trust = Trust(format=TRUST_FORMAT, operator_keys=TRUST.operator_keys, devices={"v01-sub": [shown]})
    assert any("device key of v01-main" in p and "is not pinned" in p for p in verify_bundle(HONEST, trust))


def test_an_empty_trust_pins_nothing_and_fails_naming_both_keys() -> None:
    problems = verify_bundle(HONEST, Trust(format=TRUST_FORMAT))
    assert [p.split(" ")[0] for p in problems] == ["device", "operator"]


def test_a_small_order_key_shown_and_pinned_is_still_refused() -> None:
    identity = "AQ" + "A" * 41  # the encoding of the identity point: it "verifies" forged signatures
    b = honest()
    b["device_public_key"] = identity
    trust = Trust(format=TRUST_FORMAT, operator_keys=TRUST.operator_keys, devices={"v01-main": [identity]})
    assert any("small order" in p for p in verify_bundle(b, trust))


# --- a bundle binds every field it shows --------------------------------------------------------------
def test_record_hash_is_the_local_ledgers_own(tmp_path: Path) -> None:
    from ledger.backend import GENESIS_HASH, BatchHeader
    from ledger.local import LocalLedger

    led = LocalLedger.open(tmp_path)
    r = led.anchor(BatchHeader(batch_id="a:1", site="a", kind="seal", window_start_ms=0, window_end_ms=1,
                               leaf_count=1, root="ab" * 32, prev_hash=GENESIS_HASH, findings_digest="00" * 32,
                               sealed_ms=1))
    assert r.ref is not None and r.prev_record is not None
    assert record_hash(r.header_hash, r.ref, r.prev_record) == r.record_hash


def test_fabric_evidence_shown_with_a_local_receipt_is_refused() -> None:
    b = honest()
    b["batches"][0]["fabric_evidence"] = {"block": "…"}
    assert any("fabric_evidence shown with a local receipt" in p for p in verify_bundle(b, TRUST))


def test_a_fabric_receipt_with_evidence_but_no_pinned_fabric_trust_is_not_verified() -> None:
    bundle, _ = forged(VECTORS / "forged-fabric-receipt-without-evidence.json")
    for batch in bundle["batches"]:
        batch["fabric_evidence"] = {}
    assert any("no Fabric trust pinned" in p for p in verify_bundle(bundle, TRUST))
    fabric = FabricTrust(channel="wattproof", chaincode="wattproof", endorsing_orgs=["Org1MSP"],
                         orgs={"Org1MSP": []}, orderer_orgs={"OrdererMSP": []})
    pinned = Trust(format=TRUST_FORMAT, devices=TRUST.devices, fabric=fabric)
    assert verify_bundle(bundle, pinned) != []  # empty evidence never checks out


def test_fabric_evidence_null_is_a_field_of_unexpected_type() -> None:
    b = honest()
    b["batches"][0]["fabric_evidence"] = None
    assert any("fabric_evidence" in p for p in verify_bundle(b, TRUST))


def test_base64_in_a_non_canonical_spelling_is_refused() -> None:
    b = honest()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    spots = [(r, "leaf_b64") for batch in b["batches"] for r in batch["readings"]] + [(f, "raw_b64") for f in b["frames"]]
    node, key = next((n, k) for n, k in spots if n[k].endswith("="))
    orig = node[key]
    text = orig.rstrip("=")
    node[key] = text[:-1] + alphabet[alphabet.index(text[-1]) + 1] + orig[len(text):]  # unused low bits set
    assert node[key] != orig and base64.b64decode(node[key]) == base64.b64decode(orig)
    assert any("canonical spelling" in p for p in verify_bundle(b, TRUST))


def test_a_leaf_with_an_unknown_member_is_not_canonical() -> None:
    b = honest()
    r = b["batches"][0]["readings"][0]
    leaf = json.loads(base64.b64decode(r["leaf_b64"]))
    r["leaf_b64"] = base64.b64encode(json.dumps({**leaf, "zz": 1}, sort_keys=True, separators=(",", ":")).encode()).decode()
    problems = verify_bundle(b, TRUST)
    assert any("not included" in p for p in problems)  # its hash is not in the tree either


def test_frame_bytes_that_are_not_canonical_are_refused_by_the_wire_decoder() -> None:
    b = honest()
    raw = base64.b64decode(b["frames"][0]["raw_b64"])
    b["frames"][0]["raw_b64"] = base64.b64encode(json.dumps(json.loads(raw)).encode()).decode()  # spaces
    problems = verify_bundle(b, TRUST)
    assert any("frame seq 10: refused by the wire decoder" in p for p in problems)
    assert any("is not in the bundle" in p for p in problems)  # its readings name the signed bytes' hash


def test_a_frame_with_a_broken_signature_is_named() -> None:
    b = honest()
    frame = json.loads(base64.b64decode(b["frames"][1]["raw_b64"]))
    frame["sig"] = ("B" if frame["sig"][0] == "A" else "A") + frame["sig"][1:]
    b["frames"][1]["raw_b64"] = base64.b64encode(json.dumps(frame, sort_keys=True, separators=(",", ":")).encode()).decode()
    assert any("frame seq 11" in p and ("signature" in p or "refused" in p) for p in verify_bundle(b, TRUST))


def test_a_dict_and_its_bytes_give_the_same_verdict_and_only_bytes_can_show_duplicates() -> None:
    assert verify_bundle(honest(), TRUST) == verify_bundle(HONEST, TRUST) == []
    text = HONEST.decode().replace('"site": "v01",', '"site": "v01",\n "site": "v02",', 1)
    assert any("duplicate member" in p and "'site'" in p for p in verify_bundle(text, TRUST))


def test_a_batch_listed_twice_is_named() -> None:
    b = honest()
    b["batches"].append(copy.deepcopy(b["batches"][0]))
    assert any("listed twice" in p for p in verify_bundle(b, TRUST))


def _scalar_paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [path] + [p for k, v in node.items() for p in _scalar_paths(v, (*path, k))]
    if isinstance(node, list):
        return [path] + [p for i, v in enumerate(node) for p in _scalar_paths(v, (*path, i))]
    return [path]


PATHS = [p for p in _scalar_paths(honest()) if p]
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**64, 2**64) | st.text(max_size=8)
                           | st.sampled_from(["", "00" * 32, "A" * 43, "A" * 86, "AA==", "wattproof-proof-bundle/2"]),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                           max_leaves=4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), value=JSON_VALUES)
def test_any_field_replaced_by_any_value_is_never_verified_and_never_crashes(path: tuple[Any, ...], value: Any) -> None:
    b = honest()
    node: Any = b
    for k in path[:-1]:
        node = node[k]
    if node[path[-1]] == value and type(node[path[-1]]) is type(value):
        return
    node[path[-1]] = value
    assert verify_bundle(json.dumps(b).encode(), TRUST) != []


@settings(max_examples=300, deadline=None)
@given(at=st.integers(0, len(HONEST) - 1), byte=st.integers(0, 255))
def test_any_byte_changed_is_never_verified_unless_it_is_the_same_json(at: int, byte: int) -> None:
    data = bytearray(HONEST)
    data[at] = byte
    if verify_bundle(bytes(data), TRUST) == []:
        assert json.loads(bytes(data)) == json.loads(HONEST)  # e.g. whitespace between members


# --- the real command line -------------------------------------------------------------------------
runner = CliRunner()


def test_cli_exit_0_when_verified_against_a_trust_file() -> None:
    res = runner.invoke(app, ["verify-proof", str(HONEST_PATH), "--trust", str(VECTORS / "trust.json")])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("OK: 8 readings of v01-main in 2 batches verified against the pinned trust")


def test_cli_exit_3_and_says_self_consistent_only_without_trust() -> None:
    res = runner.invoke(app, ["verify-proof", str(HONEST_PATH)])
    assert res.exit_code == 3, res.output
    assert res.stdout.startswith("SELF-CONSISTENT ONLY, NOT VERIFIED: 8 readings of v01-main")


def test_cli_key_flags_pin_trust_without_a_file() -> None:
    b = honest()
    args = ["verify-proof", str(HONEST_PATH), "--operator-key", b["ledger"]["operator_public_key"],
            "--device-key", f"v01-main={b['device_public_key']}"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, args[:-1] + [f"v01-sub={b['device_public_key']}"])
    assert res.exit_code == 1 and "device key of v01-main" in res.stdout and "is not pinned" in res.stdout


def test_cli_key_flags_add_to_the_trust_file(tmp_path: Path) -> None:
    trust = tmp_path / "trust.json"
    trust.write_bytes(Trust(format=TRUST_FORMAT, operator_keys=TRUST.operator_keys).to_json())
    res = runner.invoke(app, ["verify-proof", str(HONEST_PATH), "--trust", str(trust)])
    assert res.exit_code == 1 and "device key of v01-main" in res.stdout
    res = runner.invoke(app, ["verify-proof", str(HONEST_PATH), "--trust", str(trust),
                              "--device-key", f"v01-main={honest()['device_public_key']}"])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("flag", ["v01-main", "v01-main=not-a-key", "=AAAA"])
def test_cli_a_malformed_device_key_flag_is_a_usage_error(flag: str) -> None:
    res = runner.invoke(app, ["verify-proof", str(HONEST_PATH), "--device-key", flag])
    assert res.exit_code == 2


@pytest.mark.parametrize("name", ["forged-format-v1", "forged-header-edited-header-hash-recomputed",
                                  "forged-fabricated-with-own-keys", "forged-no-batches", "forged-bundle-duplicate-member"])
def test_cli_exit_1_names_the_forgery(name: str, tmp_path: Path) -> None:
    bundle, expect = forged(VECTORS / f"{name}.json")
    path = tmp_path / "bundle.json"
    path.write_text(bundle if isinstance(bundle, str) else json.dumps(bundle))
    res = runner.invoke(app, ["verify-proof", str(path), "--trust", str(VECTORS / "trust.json")])
    assert res.exit_code == 1 and expect in res.stdout, res.output
    assert all(line.startswith("FAIL ") for line in res.stdout.splitlines())


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WATTPROOF_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "wattproof", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_the_installed_command_exits_0_verified_3_unpinned_1_forged(tmp_path: Path) -> None:
    trust = str(VECTORS / "trust.json")
    assert cli(tmp_path, "verify-proof", str(HONEST_PATH), "--trust", trust).returncode == 0
    assert cli(tmp_path, "verify-proof", str(HONEST_PATH)).returncode == 3
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(forged(VECTORS / "forged-operator-key-null.json")[0]))
    res = cli(tmp_path, "verify-proof", str(path), "--trust", trust)
    assert res.returncode == 1 and "operator_public_key" in res.stdout and "Traceback" not in res.stderr


def test_proof_export_is_read_only_it_creates_no_ledger_and_no_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    res = cli(home, "proof", "export", "--db", "postgresql://nowhere.invalid/x", "--device", "d", "--from",
              "2026-06-01T00:00:00", "--to", "2026-06-01T01:00:00", "--out", str(tmp_path / "b.json"))
    assert res.returncode == 1 and "never create" in res.stderr and "Traceback" not in res.stderr
    assert not (home / "ledger").exists() and not (tmp_path / "b.json").exists()
    res = cli(home, "proof", "export", "--db", "postgresql://nowhere.invalid/x", "--device", "d", "--from",
              "2026-06-01T00:00:00", "--to", "2026-06-01T01:00:00", "--out", str(tmp_path / "b.json"),
              "--ledger-dir", str(tmp_path / "led"))
    assert res.returncode == 1 and not (tmp_path / "led").exists()


def test_the_pinned_keys_in_the_trust_vector_are_the_generators_test_keys() -> None:
    assert TRUST.operator_keys == [public_key_b64(generate.test_key("operator"))]
    assert TRUST.devices["v01-main"] == [public_key_b64(generate.test_key("v01-main"))]


def test_the_stdlib_only_check_in_docs_runs_on_the_honest_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = (Path(__file__).parents[1] / "docs" / "proofs.md").read_text()
    section = doc[doc.index("## Proof bundle (`wattproof-proof-bundle/2`)"):]
    snippet = section[section.index("nothing but Python's standard library"):]
    code = snippet[snippet.index("```python\n") + len("```python\n"):snippet.index("\n```", snippet.index("```python"))]
    (tmp_path / "bundle.json").write_bytes(HONEST)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/proofs.md", "exec"), {})  # noqa: S102  (our own documentation's snippet)
    tampered = honest()
    tampered["batches"][0]["receipt"]["position"] += 1
    (tmp_path / "bundle.json").write_text(json.dumps(tampered))
    with pytest.raises(AssertionError):
        exec(compile(code, "docs/proofs.md", "exec"), {})  # noqa: S102


@pytest.mark.fabric
def test_a_fabric_bundle_is_verified_offline_against_the_pinned_roots_only(store_db, fabric_ledger, fabric_trust) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from firmware_sim.sim import simulate
    from ingest.pipeline import ingest_payloads
    from ingest.registry import register_device
    from ledger.proofs import export_bundle
    from ledger.seal import seal_windows

    start = 1_782_000_000_000 - 1_782_000_000_000 % 3_600_000  # windows no other Fabric test anchors
    run = simulate(sites=1, days=0.125, seed=78, start_ms=start)
    for d in run.devices:
        register_device(store_db, d.record)
    ingest_payloads(store_db, [(m.topic, m.payload) for m in run.messages()])
    made = seal_windows(store_db, fabric_ledger)
    device = made[0].leaf_keys[0][0]
    bundle = export_bundle(store_db, fabric_ledger, device, datetime.fromtimestamp(start / 1000, UTC),
                           datetime.fromtimestamp((start + 2 * 3_600_000) / 1000, UTC))
    assert bundle["ledger"] == {"backend": "fabric"} and all("fabric_evidence" in b for b in bundle["batches"])
    devices = {d.record.device: [d.record.public_key] for d in run.devices}
    assert verify_bundle(json.dumps(bundle), Trust(format=TRUST_FORMAT, devices=devices, fabric=fabric_trust)) == []
    assert any("no Fabric trust pinned" in p for p in verify_bundle(bundle, Trust(format=TRUST_FORMAT, devices=devices)))
    assert verify_bundle(bundle, None) == [NOT_VERIFIED]
    pinned = Trust(format=TRUST_FORMAT, devices=devices, fabric=fabric_trust)
    b = copy.deepcopy(bundle)
    b["batches"][0]["receipt"]["anchored_ms"] += 1  # shown, so bound: by the record the chaincode wrote
    assert verify_bundle(b, pinned) != []
    b = copy.deepcopy(bundle)  # a header field edited, header_hash recomputed: not what was endorsed
    batch = b["batches"][0]
    batch["header"] = batch["header"].replace('"sealed_ms":', '"sealed_ms":1', 1)
    batch["receipt"]["header_hash"] = hashlib.sha256(batch["header"].encode()).hexdigest()
    assert verify_bundle(b, pinned) != []
