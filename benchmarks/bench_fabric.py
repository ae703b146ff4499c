"""Anchoring on a real local Fabric network (orderers + two peers + the chaincode as a service, started
here): batches/s and commit latency (p50/p95 of ``FabricLedger.anchor``: endorse on both orgs →
submit → commit status) with many site chains in flight, for two orderer BatchTimeouts, for one
orderer and for a three-node Raft set (steady, and with the Raft leader stopped a quarter of the way
through the run); readings anchored/s with 100,000-reading batches sealed here (RFC 6962 roots) and
anchored as they come; side by side with the naive design — one transaction per reading — on a small
sample.

    .venv/bin/python -m benchmarks.bench_fabric [--quick] [--orderers-only] [--no-write]

``--orderers-only``: only the one- vs three-orderer rows (BatchTimeout 100 ms); ``--no-write``: print
the table, leave RESULTS.md alone.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
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


def run_chains(ledger: FabricLedger, tag: str, chains: int, per_chain: int, leaves: int = 100_000,
               after: tuple[int, Callable[[], None]] | None = None) -> tuple[float, list[float]]:
    """``chains`` site chains anchored concurrently, ``per_chain`` batches each (sequential per site,
    as the chain requires). ``after=(n, action)`` runs ``action`` once, when n anchorings are done.
    Returns (wall seconds, per-anchor latencies)."""
    lat: list[float] = []
    lock = threading.Lock()

    def chain(c: int) -> None:
        prev = GENESIS_HASH
        for n in range(per_chain):
            h = header(f"{tag}-{c:03d}", n, prev, leaves)
            t0 = time.perf_counter()
            ledger.anchor(h)
            with lock:
                lat.append(time.perf_counter() - t0)
                fire = after is not None and len(lat) == after[0]
            if fire and after is not None:
                after[1]()
            prev = header_hash(h)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(chains) as pool:
        list(pool.map(chain, range(chains)))
    return time.perf_counter() - t0, lat


def pct(xs: list[float], p: float) -> float:
    return statistics.quantiles(xs, n=100)[int(p) - 1] if len(xs) > 2 else max(xs)


def start_network(d: str, timeout: str, orderers: int) -> tuple[FabricNetwork, FabricLedger, float]:
    """A fresh network in ``d``; returns it, a connected ledger and its start time (up → ready) in s."""
    t0 = time.perf_counter()
    net = FabricNetwork(Path(d), Ports.free(), batch_timeout=timeout, orderers=orderers)
    net.up()
    ledger = FabricLedger.from_profile(net.profile().to_json(), retry_for=120)
    wait_ready(ledger)
    return net, ledger, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--orderers-only", action="store_true", help="only one vs three orderers (100 ms)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write RESULTS.md")
    args = ap.parse_args()
    chains, per_chain = (16, 4) if args.quick else (48, 8)
    n = chains * per_chain
    rows: list[list[object]] = []
    e2e = naive = None
    # (orderer BatchTimeout, orderers): Fabric's default timeout and ours; one orderer and a Raft set of three
    configs = [("100ms", 1), ("100ms", 3)] if args.orderers_only else [("2s", 1), ("100ms", 1), ("100ms", 3)]
    for timeout, orderers in configs:
        with tempfile.TemporaryDirectory(prefix="bench-fabric-") as d:
            net, ledger, started = start_network(d, timeout, orderers)
            try:
                run_chains(ledger, f"warm{timeout}", 4, 1)
                wall, lat = run_chains(ledger, f"b{timeout}-{orderers}", chains, per_chain)
                rows.append([orderers, timeout, "—", f"{chains}×{per_chain}", n, f"{n / wall:,.1f}",
                             f"{pct(lat, 50):.2f}", f"{pct(lat, 95):.2f}", f"{max(lat):.2f}", f"{started:.1f}"])
                print(rows[-1], flush=True)
                if orderers == 3:  # again, stopping the Raft leader a quarter of the way through
                    rows.append(leader_stopped_run(net, ledger, timeout, chains, per_chain))
                    print(rows[-1], flush=True)
                if timeout == "100ms" and orderers == 1 and not args.orderers_only:
                    e2e = end_to_end(ledger, 8 if args.quick else 24)
                    naive = one_tx_per_reading(ledger, 192 if args.quick else 960)
            finally:
                ledger.close()
                net.down()
    body = (
        "Local network on this machine: 1 etcdraft orderer or a Raft set of 3 (each its own process and TLS "
        "identity, all on 127.0.0.1), 2 peers (Org1, Org2; goleveldb), chaincode as a service, endorsement "
        "AND(Org1, Org2), TLS on; client = `FabricLedger` over the Gateway (one gRPC connection, threads). "
        "Latency = one `anchor()` call: proposal → endorse on both peers → sign → submit → commit status. "
        "Network start = `FabricNetwork.up()` + `wait_ready` (crypto, channel, joins, chaincode lifecycle).\n\n"
        + table(["orderers", "orderer BatchTimeout", "fault", "chains × batches", "batches", "batches/s",
                 "p50 latency s", "p95 latency s", "max latency s", "network start s"], rows)
    )
    if e2e is not None and naive is not None:
        body += "\n\n" + table(["design", "readings", "transactions", "readings anchored/s"], [
            ["batches of 100,000 readings, sealed here (RFC 6962) and anchored as they come",
             f"{e2e[0]:,}", e2e[1], f"{e2e[0] / e2e[2]:,.0f}"],
            ["naive: one transaction per reading (48 in flight)", f"{naive[0]:,}", naive[0], f"{naive[0] / naive[1]:,.1f}"],
        ])
    body += (
        "\n\nThe orderer cuts a block when BatchTimeout expires or MaxMessageCount (500) is reached; with "
        "Fabric's default 2 s every commit waits for the timer when traffic is light, so `wattproof fabric up` "
        "and the tests use 100 ms (`--batch-timeout`). With three orderers the Raft leader cuts each block and "
        "it is committed once a majority (2 of 3) holds it. Targets: ≥ 20 batches/s, p50 ≤ 2.5 s."
    )
    if not args.no_write:
        write_section("bench_fabric", "Fabric anchoring (bench_fabric)", body)
    print(body)


def leader_stopped_run(net: FabricNetwork, ledger: FabricLedger, timeout: str, chains: int, per_chain: int
                       ) -> list[object]:
    """The same load on a three-orderer network whose Raft leader is stopped (SIGTERM) once a quarter
    of the anchorings are done; every batch must still be anchored, once."""
    n = chains * per_chain
    stopped: list[str] = []

    def stop_leader() -> None:
        leader = net.wait_raft_leader()
        net.stop(leader)
        stopped.append(leader)

    wall, lat = run_chains(ledger, f"f{timeout}", chains, per_chain, after=(n // 4, stop_leader))
    assert stopped and net.wait_raft_leader(other_than=stopped[0])
    listed = sum(len(ledger.list_site(f"f{timeout}-{c:03d}")) for c in range(chains))
    assert listed == n, f"{listed} of {n} batches on the channel"
    return [3, timeout, "leader stopped after 1/4", f"{chains}×{per_chain}", n, f"{n / wall:,.1f}",
            f"{pct(lat, 50):.2f}", f"{pct(lat, 95):.2f}", f"{max(lat):.2f}", "—"]


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
