"""Regenerate the Fabric evidence vectors from a running local network (run from the repository root):

    .venv/bin/python -m tests.vectors.fabric.generate <network dir>     # e.g. after `wattproof fabric up`

Each file in ``vectors/`` is ``{"desc", "error", "evidence", "header_b64", "receipt", "trust"}``:
``verify_evidence(evidence, b64decode(header_b64), receipt, FabricTrust(**trust))`` must return ``[]``
when ``error`` is null, else a problem containing ``error``. Everything a check needs is in the file
(the block, the pinned roots; certificates are checked at the transaction's time), so the vectors
need no network. Also captures what tests/test_fabric_evidence.py anchors on the session network.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from fabric_protos.common import common_pb2
from fabric_protos.peer import transaction_pb2

from ledger.backend import GENESIS_HASH, BatchHeader, Receipt, header_bytes, header_hash
from ledger.fabric.backend import FabricLedger, wait_ready
from ledger.fabric.collect import collect_evidence, trust_from_network
from ledger.fabric.gateway import result_of
from ledger.fabric.network import fabric_bin_dir
from ledger.trust import FabricTrust
from tests.ledger_conformance import make_header, site
from tests.vectors.fabric.forge import edit_action, edit_signatures, flip_last, set_flag

HERE = Path(__file__).parent / "vectors"


@dataclass(frozen=True)
class Anchored:
    header: bytes
    receipt: dict[str, Any]
    evidence: dict[str, str]


def capture(ledger: FabricLedger, h: BatchHeader) -> Anchored:
    r = ledger.anchor(h)
    return Anchored(header_bytes(h), msgspec.to_builtins(r), collect_evidence(ledger, r))


def capture_chain(ledger: FabricLedger) -> tuple[Anchored, Anchored]:
    """Two consecutive headers of a new site, anchored (in two blocks), with their evidence."""
    s = site()
    h0 = make_header(s, 0, GENESIS_HASH)
    return capture(ledger, h0), capture(ledger, make_header(s, 1, header_hash(h0)))


def capture_conflict(ledger: FabricLedger, attempts: int = 5) -> tuple[Anchored, Anchored, int]:
    """(valid, MVCC-conflicted, block): two headers for one chain position, both endorsed against the
    same head and submitted together, ordered into one block."""
    gw = ledger.gw
    for _ in range(attempts):
        s = site()
        heads = [make_header(s, 0, GENESIS_HASH), make_header(s, 0, GENESIS_HASH, batch_id=f"{s}:rival")]
        props = [gw.proposal(ledger.chaincode, "AnchorBatch", [header_bytes(h)]) for h in heads]
        envs = [gw.endorse(p) for p in props]
        for p, e in zip(props, envs, strict=True):
            gw.submit(p.tx_id, e)
        status = [gw.commit_status(p.tx_id) for p in props]
        if status[0][1] != status[1][1]:
            continue  # ordered into two blocks: the second then fails against committed state; try again
        got: dict[str, Anchored] = {}
        for h, p, e, (code, block) in zip(heads, props, envs, status, strict=True):
            rec = json.loads(result_of(e))
            r = Receipt(backend="fabric", batch_id=rec["batch_id"], header_hash=rec["header_hash"],
                        anchored_ms=rec["tx_time_ms"], tx_id=p.tx_id, block=block, channel=gw.channel)
            got[code] = Anchored(header_bytes(h), msgspec.to_builtins(r), collect_evidence(ledger, r))
        assert set(got) == {"VALID", "MVCC_READ_CONFLICT"}, set(got)
        return got["VALID"], got["MVCC_READ_CONFLICT"], status[0][1]
    raise AssertionError(f"no two conflicting transactions landed in one block in {attempts} attempts")


def other_roots(crypto_config: Path, into: Path) -> FabricTrust:
    """Roots of another network made by cryptogen from the same spec: same names, other keys."""
    shutil.copy(crypto_config, into / "crypto-config.yaml")
    subprocess.run([str(fabric_bin_dir() / "cryptogen"), "generate", "--config", str(into / "crypto-config.yaml"),
                    "--output", str(into / "crypto")], check=True, capture_output=True)
    return trust_from_network(into)


def vector(desc: str, error: str | None, a: Anchored, trust: FabricTrust, *, evidence: dict[str, str] | None = None,
           header: bytes | None = None, receipt: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"desc": desc, "error": error, "evidence": evidence or a.evidence,
            "header_b64": base64.b64encode(header if header is not None else a.header).decode(),
            "receipt": receipt or a.receipt, "trust": msgspec.to_builtins(trust)}


def _flip_orderer_signature(md: common_pb2.Metadata) -> None:
    md.signatures[0].signature = flip_last(md.signatures[0].signature)


def main(network_dir: Path) -> None:
    ledger = FabricLedger.from_profile(network_dir / "profile.json")
    wait_ready(ledger)
    trust = trust_from_network(network_dir)
    a, b = capture_chain(ledger)
    winner, loser, _ = capture_conflict(ledger)
    with tempfile.TemporaryDirectory() as d:
        other = other_roots(network_dir / "crypto-config.yaml", Path(d))
    tx = a.receipt["tx_id"]
    out = {
        "valid-anchoring": vector("evidence of an anchored header, the network's roots pinned", None, a, trust),
        "valid-winner-of-a-conflict": vector("the VALID one of two conflicting anchorings in one block",
                                             None, winner, trust),
        "other-network-roots": vector("roots of another cryptogen network with the same names pinned",
                                      "does not chain to a pinned root", a, other),
        "header-of-another-batch": vector("the next batch's header with this receipt and evidence",
                                          "header bytes it anchored are not the bundle's header bytes", a, trust,
                                          header=b.header),
        "endorsement-removed": vector("one of the two endorsements removed (data hash recomputed)",
                                      "endorsement policy not satisfied", a, trust,
                                      evidence=edit_action(a.evidence, tx, lambda c: c.action.endorsements.pop())),
        "orderer-signature-flipped": vector("the orderer's block signature with its last byte flipped",
                                            "orderer signature 0", a, trust,
                                            evidence=edit_signatures(a.evidence, _flip_orderer_signature)),
        "block-number-differs": vector("the receipt names the next block", "is not the receipt's block", a, trust,
                                       receipt={**a.receipt, "block": a.receipt["block"] + 1}),
        "mvcc-conflicted-flagged-valid": vector(
            "an MVCC-conflicted anchoring with its (unsigned) filter flag set to VALID", "they conflict (MVCC)",
            loser, trust, evidence=set_flag(loser.evidence, loser.receipt["tx_id"], transaction_pb2.VALID)),
    }
    HERE.mkdir(exist_ok=True)
    for name, v in out.items():
        (HERE / f"{name}.json").write_text(json.dumps(v, indent=1) + "\n")
    ledger.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
