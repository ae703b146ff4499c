"""Anchoring on a real local Fabric network (orderer + two peers + the chaincode as a service, started
here): batches/s and commit latency (p50/p95 of ``FabricLedger.anchor``: endorse on both orgs →
submit → commit status) with many site chains in flight, for two orderer BatchTimeouts; readings
anchored/s with 100,000-reading batches sealed here (RFC 6962 roots) and anchored as they come; side
by side with the naive design — one transaction per reading — on a small sample.

    .venv/bin/python -m benchmarks.bench_fabric [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from benchmarks._common import table, write_section
from benchmarks.bench_ledger import seal_window
from ledger.backend import GENESIS_HASH, BatchHeader, header_hash
from ledger.fabric.backend import FabricLedger, wait_ready
from ledger.fabric.network import FabricNetwork, Ports


def header(site: str, n: int, prev: str, leaves: int, root: str = "ab" * 32) -> BatchHeader:
    return BatchHeader(batch_id=f"{site}:{n}", site=site, kind="seal", window_start_ms=n * 3600_000,
                       window_end_ms=(n + 1) * 3600_000, leaf_count=leaves, root=root, prev_hash=prev,
                       findings_digest="00" * 32, sealed_ms=int(time.time() * 1000))


def run_chains(ledger: FabricLedger, tag: str, chains: int, per_chain: int, leaves: int = 100_000
               ) -> tuple[float, list[float]]:
    """``chains`` site chains anchored concurrently, ``per_chain`` batches each (sequential per site,
    as the chain requires). Returns (wall seconds, per-anchor latencies)."""
    lat: list[float] = []

    def chain(c: int) -> None:
        prev = GENESIS_HASH
        for n in range(per_chain):
            h = header(f"{tag}-{c:03d}", n, prev, leaves)
            t0 = time.perf_counter()
            ledger.anchor(h)
            lat.append(time.perf_counter() - t0)
            prev = header_hash(h)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(chains) as pool:
        list(pool.map(chain, range(chains)))
    return time.perf_counter() - t0, lat


def pct(xs: list[float], p: float) -> float:
    return statistics.quantiles(xs, n=100)[int(p) - 1] if len(xs) > 2 else max(xs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    chains, per_chain = (16, 4) if args.quick else (48, 8)
    rows = []
    e2e = naive = None
    for timeout in ("2s", "100ms"):  # Fabric's default BatchTimeout, and ours
        with tempfile.TemporaryDirectory(prefix="bench-fabric-") as d:
            net = FabricNetwork(Path(d), Ports.free(), batch_timeout=timeout)
            net.up()
            ledger = FabricLedger.from_profile(net.profile().to_json())
            try:
                wait_ready(ledger)
                run_chains(ledger, f"warm{timeout}", 4, 1)
                wall, lat = run_chains(ledger, f"b{timeout}", chains, per_chain)
                n = chains * per_chain
                rows.append([timeout, f"{chains}×{per_chain}", n, f"{n / wall:,.1f}", f"{pct(lat, 50):.2f}",
                             f"{pct(lat, 95):.2f}"])
                print(rows[-1], flush=True)
                if timeout == "100ms":
                    e2e = end_to_end(ledger, 8 if args.quick else 24)
                    naive = one_tx_per_reading(ledger, 192 if args.quick else 960)
            finally:
                ledger.close()
                net.down()
    assert e2e is not None and naive is not None
    body = (
        "Local network on this machine: 1 etcdraft orderer, 2 peers (Org1, Org2; goleveldb), chaincode as a "
        "service, endorsement AND(Org1, Org2), TLS on; client = `FabricLedger` over the Gateway (one gRPC "
        "connection, threads). Latency = one `anchor()` call: proposal → endorse on both peers → sign → "
        "submit → commit status.\n\n"
        + table(["orderer BatchTimeout", "chains × batches", "batches", "batches/s", "p50 latency s",
                 "p95 latency s"], rows)
        + "\n\n"
        + table(["design", "readings", "transactions", "readings anchored/s"], [
            ["batches of 100,000 readings, sealed here (RFC 6962) and anchored as they come",
             f"{e2e[0]:,}", e2e[1], f"{e2e[0] / e2e[2]:,.0f}"],
            ["naive: one transaction per reading (48 in flight)", f"{naive[0]:,}", naive[0], f"{naive[0] / naive[1]:,.1f}"],
        ])
        + "\n\nThe orderer cuts a block when BatchTimeout expires or MaxMessageCount (500) is reached; with "
        "Fabric's default 2 s every commit waits for the timer when traffic is light, so `wattproof fabric up` "
        "and the tests use 100 ms (`--batch-timeout`). Targets: ≥ 20 batches/s, p50 ≤ 2.5 s."
    )
    write_section("bench_fabric", "Fabric anchoring (bench_fabric)", body)
    print(body)


def end_to_end(ledger: FabricLedger, batches: int, chains: int = 4) -> tuple[int, int, float]:
    """Seal ``batches`` windows of 100,000 readings in a process pool and anchor each root as soon as it
    is ready (``chains`` site chains, one anchoring thread each)."""
    import queue
    import threading

    per = 100_000
    queues: list[queue.Queue[bytes | None]] = [queue.Queue() for _ in range(chains)]

    def anchor_chain(c: int) -> None:
        prev, n = GENESIS_HASH, 0
        while (root := queues[c].get()) is not None:
            h = header(f"e2e-{c}", n, prev, per, root.hex())
            ledger.anchor(h)
            prev, n = header_hash(h), n + 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=anchor_chain, args=(c,)) for c in range(chains)]
    for t in threads:
        t.start()
    with ProcessPoolExecutor(2) as seal_pool:
        for k, root in enumerate(seal_pool.map(seal_window, [(per, k) for k in range(batches)])):
            queues[k % chains].put(root)
    for q in queues:
        q.put(None)
    for t in threads:
        t.join()
    return batches * per, batches, time.perf_counter() - t0


def one_tx_per_reading(ledger: FabricLedger, n: int, chains: int = 48) -> tuple[int, float]:
    """The naive design: every reading is its own anchored transaction (as many in flight as above)."""
    wall, _ = run_chains(ledger, "naive", chains, n // chains, leaves=1)
    return (n // chains) * chains, wall


if __name__ == "__main__":
    main()
