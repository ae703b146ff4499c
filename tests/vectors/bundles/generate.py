"""Regenerate the proof-bundle vectors (run from the repository root):

    .venv/bin/python -m tests.vectors.bundles.generate

One honest bundle (``honest.bundle.json``, format ``wattproof-proof-bundle/2``) and the trust that
verifies it (``trust.json``), made the way ``wattproof proof export`` makes them: signed frames from two
devices of one site, sealed hour by hour into RFC 6962 batches anchored on a real ``LocalLedger``, and
assembled by ``ledger.proofs.assemble_bundle``. Every byte is fixed: the Ed25519 keys come from
published seeds (TEST keys: ``sha256("wattproof bundle vector <name>")``), timestamps are constants,
and the ledger's own clock (``anchored_ms``) is not part of a bundle. Then one ``forged-*.json`` per
attack: ``{"desc", "expect", "bundle"}`` (or ``"bundle_text"`` when the attack is in the JSON text
itself), where ``expect`` is a substring of the problem ``verify-proof`` must name.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device.identity import public_key_b64
from device.wire import Frame, Reading, encode_frame, sign_frame
from ledger import merkle
from ledger.backend import GENESIS_HASH, BatchHeader, header_bytes
from ledger.canonical import Leaf, leaf_bytes
from ledger.local import LocalLedger
from ledger.proofs import SealedProof, assemble_bundle, record_hash
from ledger.seal import EMPTY_FINDINGS_DIGEST
from ledger.trust import FORMAT as TRUST_FORMAT
from ledger.trust import Trust

HERE = Path(__file__).parent
SITE, DEVICE, OTHER = "v01", "v01-main", "v01-sub"
T0 = 1_780_272_000_000  # 2026-06-01T00:00Z
HOUR, STEP = 3_600_000, 900_000
CHANNELS = {DEVICE: ["import"], OTHER: ["export", "import"]}


def test_key(name: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"wattproof bundle vector {name}".encode()).digest())


def device_frames(device: str, key: Ed25519PrivateKey, hour: int, seq0: int) -> list[bytes]:
    """Two signed frames per hour, each with two 15-minute steps of every channel of the device."""
    out = []
    for k in range(2):
        ts = [T0 + hour * HOUR + (2 * k + j) * STEP for j in range(2)]
        readings = [Reading(ts_ms=t, channel=ch, energy_wh=1_000_000 + (t - T0) // 1000, power_w=250 + j)  # type: ignore[arg-type]
                    for j, t in enumerate(ts) for ch in CHANNELS[device]]
        frame = Frame(v=1, site=SITE, device=device, seq=seq0 + k, sent_ms=ts[-1] + 60_000, readings=readings)
        out.append(encode_frame(sign_frame(frame, key)))
    return out


def leaves_of(raw: bytes) -> list[Leaf]:
    f = json.loads(raw)
    sha = hashlib.sha256(raw).hexdigest()
    return [Leaf(device=f["device"], ts_ms=r["ts_ms"], channel=r["channel"], energy_wh=r["energy_wh"],
                 power_w=r["power_w"], seq=f["seq"], idx=i, frame_sha256=sha) for i, r in enumerate(f["readings"])]


def world(device_key: Ed25519PrivateKey, operator_key: Ed25519PrivateKey,
          alter: Callable[[Leaf], Leaf] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(bundle of DEVICE for hours 0-1, extras for forgeries). ``alter`` changes DEVICE's first sealed
    leaf (an operator sealing something the device did not sign)."""
    other_key = test_key(OTHER)
    with tempfile.TemporaryDirectory() as tmp:
        led = LocalLedger(Path(tmp) / "ledger.jsonl", operator_key)
        prev, sealed, frames, extras = GENESIS_HASH, [], [], {}
        for hour in range(3):
            mine = device_frames(DEVICE, device_key, hour, 10 + 2 * hour)
            theirs = device_frames(OTHER, other_key, hour, 500 + 2 * hour)
            leaves = sorted((x for raw in mine + theirs for x in leaves_of(raw)),
                            key=lambda x: (x.device, x.ts_ms, x.channel, x.seq, x.idx))
            if alter is not None and hour == 0:
                i = next(i for i, x in enumerate(leaves) if x.device == DEVICE)
                leaves[i] = alter(leaves[i])
            raw_leaves = [leaf_bytes(x) for x in leaves]
            levels = merkle.tree_levels([merkle.leaf_hash(x) for x in raw_leaves])
            header = BatchHeader(batch_id=f"{SITE}:20260601T0{hour}0000Z", site=SITE, kind="seal",
                                 window_start_ms=T0 + hour * HOUR, window_end_ms=T0 + (hour + 1) * HOUR,
                                 leaf_count=len(leaves), root=levels[-1][0].hex(), prev_hash=prev,
                                 findings_digest=EMPTY_FINDINGS_DIGEST, sealed_ms=T0 + (hour + 1) * HOUR + 900_000)
            receipt = led.anchor(header)
            prev = receipt.header_hash
            if hour == 2:
                extras["unreferenced_frame"] = base64.b64encode(mine[0]).decode()
                continue
            readings = [(i, raw) for i, (x, raw) in enumerate(zip(leaves, raw_leaves, strict=True)) if x.device == DEVICE]
            sealed.append(SealedProof(header, receipt, levels, readings))
            frames += mine
            if hour == 0:
                j = next(i for i, x in enumerate(leaves) if x.device == OTHER)
                extras["other_device_reading"] = {
                    "leaf_b64": base64.b64encode(raw_leaves[j]).decode(), "leaf_index": j, "tree_size": len(leaves),
                    "audit_path": [h.hex() for h in merkle.inclusion_proof(levels, j)], "root": header.root}
    ledger = {"backend": "local", "operator_public_key": public_key_b64(operator_key)}
    return assemble_bundle(DEVICE, SITE, public_key_b64(device_key), ledger, sealed, frames), extras


def _edit_header(b: dict[str, Any], also_record: bool) -> None:
    batch = b["batches"][0]
    header = json.loads(batch["header"])
    header["sealed_ms"] += 1
    text = header_bytes(BatchHeader(**header)).decode()
    batch["header"] = text
    rc = batch["receipt"]
    rc["header_hash"] = hashlib.sha256(text.encode()).hexdigest()
    if also_record:
        rc["record_hash"] = record_hash(rc["header_hash"], rc["position"], rc["prev_record"])


def _leaf(b: dict[str, Any], batch: int, reading: int, edit: Callable[[dict[str, Any]], None]) -> None:
    r = b["batches"][batch]["readings"][reading]
    leaf = json.loads(base64.b64decode(r["leaf_b64"]))
    edit(leaf)
    r["leaf_b64"] = base64.b64encode(json.dumps(leaf, sort_keys=True, separators=(",", ":")).encode()).decode()


def forgeries(honest: dict[str, Any], extras: dict[str, Any]) -> dict[str, tuple[str, str, Callable[[dict[str, Any]], Any]]]:
    """name -> (desc, expected problem substring, mutation of a deep copy of the honest bundle)."""
    fabricated, _ = world(test_key("fabricated device"), test_key("fabricated operator"))

    def fabric(b: dict[str, Any]) -> None:
        b["ledger"] = {"backend": "fabric"}
        for batch in b["batches"]:
            rc = batch["receipt"]
            batch["receipt"] = {"backend": "fabric", "batch_id": rc["batch_id"], "header_hash": rc["header_hash"],
                                "anchored_ms": T0 + HOUR, "tx_id": "ab" * 32, "block": 7,
                                "channel": "wattproof"}

    def header_dup(b: dict[str, Any]) -> None:
        b["batches"][0]["header"] = b["batches"][0]["header"].replace('"kind":"seal",', '"kind":"seal","kind":"seal",')

    def swap_frame_seq(b: dict[str, Any]) -> None:
        b["frames"][0]["raw_b64"], b["frames"][1]["raw_b64"] = b["frames"][1]["raw_b64"], b["frames"][0]["raw_b64"]

    def set_(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
        def go(b: dict[str, Any]) -> None:
            *keys, last = path.split(".")
            node: Any = b
            for k in keys:
                node = node[int(k)] if k.isdigit() else node[k]
            key: Any = int(last) if last.isdigit() else last
            node[key] = value(node[key] if isinstance(node, list) or key in node else None)
        return go

    def pop(path: str) -> Callable[[dict[str, Any]], None]:
        def go(b: dict[str, Any]) -> None:
            *keys, last = path.split(".")
            node: Any = b
            for k in keys:
                node = node[int(k)] if k.isdigit() else node[k]
            node.pop(int(last) if last.isdigit() else last)
        return go

    flip = lambda h: ("1" if h[0] == "0" else "0") + h[1:]  # noqa: E731
    return {
        "header-edited-header-hash-recomputed": (
            "a header field (sealed_ms) edited and receipt.header_hash recomputed: the operator signed another record",
            "record_hash", lambda b: _edit_header(b, also_record=False)),
        "header-edited-record-hash-recomputed": (
            "a header field edited, header_hash and record_hash recomputed: the operator signature does not cover it",
            "operator signature", lambda b: _edit_header(b, also_record=True)),
        "fabricated-with-own-keys": (
            "a bundle fabricated end to end with its own device and operator keys (self-consistent, not pinned)",
            "is not pinned", lambda b: fabricated),
        "fabric-receipt-without-evidence": (
            "receipts claimed to be on Fabric, with no evidence to check offline", "fabric_evidence", fabric),
        "operator-key-null": ("ledger.operator_public_key is null", "operator_public_key",
                              set_("ledger.operator_public_key", lambda _: None)),
        "no-batches": ("batches: [] (an empty bundle)", "no batches", set_("batches", lambda _: [])),
        "batch-without-readings": ("a batch with readings: []", "has no readings",
                                   set_("batches.1.readings", lambda _: [])),
        "frame-missing": ("a reading's signed frame removed", "not in the bundle", pop("frames.0")),
        "frame-unreferenced": ("an extra frame of the device that no reading uses", "not referenced by any reading",
                               lambda b: b["frames"].append({"seq": 14, "raw_b64": extras["unreferenced_frame"]})),
        "leaf-of-another-device": (
            "a reading replaced by another device's reading of the same batch (with its valid audit path)",
            "another device", set_("batches.0.readings.0", lambda _: extras["other_device_reading"])),
        "leaf-index-changed": ("leaf_index changed", "not included under the header's root",
                               set_("batches.0.readings.1.leaf_index", lambda i: i + 1)),
        "tree-size-changed": ("tree_size changed", "tree_size", set_("batches.0.readings.1.tree_size", lambda n: n + 1)),
        "audit-path-shortened": ("the last hash of an audit path removed", "not included under the header's root",
                                 set_("batches.0.readings.2.audit_path", lambda p: p[:-1])),
        "audit-path-empty-hash": ("a hash of 0 bytes in an audit path", "not a 32-byte hash",
                                  set_("batches.0.readings.2.audit_path", lambda p: [*p[:-1], ""])),
        "root-edited-in-reading": ("the reading's root edited, the header's left alone", "is not the header's root",
                                   set_("batches.1.readings.0.root", flip)),
        "header-duplicate-member": ("a duplicate member in the header text", "duplicate member", header_dup),
        "format-v1": ("format wattproof-proof-bundle/1", "wattproof-proof-bundle/1 is refused",
                      set_("format", lambda _: "wattproof-proof-bundle/1")),
        "unknown-top-level-field": ("an unknown top-level field (a bundle binds every field it shows)",
                                    "unknown field", set_("note", lambda _: "trust me")),
        "unknown-receipt-field": ("anchored_ms shown in a local receipt: nothing signed binds it", "unknown field",
                                  set_("batches.0.receipt.anchored_ms", lambda _: 1)),
        "leaf-index-bool": ("leaf_index of unexpected type (true)", "Expected `int`",
                            set_("batches.0.readings.1.leaf_index", lambda _: True)),
        "reading-value-changed-in-leaf": ("energy_wh changed in a leaf", "not included under the header's root",
                                          lambda b: _leaf(b, 0, 1, lambda x: x.update(energy_wh=x["energy_wh"] + 1))),
        "frame-from-another-seq": ("two frames' bytes swapped between their seq entries", "holds the frame with seq",
                                   swap_frame_seq),
        "prev-record-changed": ("receipt.prev_record changed", "record_hash",
                                set_("batches.1.receipt.prev_record", flip)),
        "position-changed": ("receipt.position changed", "record_hash", set_("batches.1.receipt.position", lambda p: p + 1)),
    }


def build() -> dict[str, str]:
    """Every vector file: name -> text."""
    device_key, operator_key = test_key(DEVICE), test_key("operator")
    honest, extras = world(device_key, operator_key)
    trust = Trust(format=TRUST_FORMAT, operator_keys=[public_key_b64(operator_key)],
                  devices={DEVICE: [public_key_b64(device_key)], OTHER: [public_key_b64(test_key(OTHER))]})
    files = {"honest.bundle.json": json.dumps(honest, indent=1) + "\n",
             "trust.json": trust.to_json().decode() + "\n"}
    for name, (desc, expect, mutate) in forgeries(honest, extras).items():
        b = copy.deepcopy(honest)
        out = mutate(b)
        doc = {"desc": desc, "expect": expect, "bundle": b if out is None else out}
        files[f"forged-{name}.json"] = json.dumps(doc, indent=1) + "\n"
    # attacks in the JSON text itself
    dishonest, _ = world(device_key, operator_key, alter=lambda x: Leaf(**{**_fields(x), "energy_wh": x.energy_wh + 1}))
    files["forged-sealed-leaf-differs-from-frame.json"] = json.dumps(
        {"desc": "the operator sealed (and signed) a reading that differs from the one the device signed",
         "expect": "differs from the reading the device signed", "bundle": dishonest}, indent=1) + "\n"
    text = json.dumps(honest, indent=1)
    files["forged-bundle-duplicate-member.json"] = json.dumps(
        {"desc": "a duplicate member name in the bundle text (a first-wins parser would read another device)",
         "expect": "duplicate member", "bundle_text": text.replace('{\n "format"', '{\n "device": "v01-sub",\n "format"', 1)},
        indent=1) + "\n"
    return files


def _fields(leaf: Leaf) -> dict[str, Any]:
    return {f: getattr(leaf, f) for f in leaf.__struct_fields__}


def main() -> None:
    for old in HERE.glob("*.json"):
        old.unlink()
    for name, text in build().items():
        (HERE / name).write_text(text)


if __name__ == "__main__":
    main()
