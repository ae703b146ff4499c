"""`make bench`: run every benchmark in turn (each rewrites its own section of RESULTS.md)."""

from __future__ import annotations

import importlib
import sys

BENCHES = ["benchmarks.bench_publish", "benchmarks.bench_ingest", "benchmarks.bench_ledger", "benchmarks.bench_audit",
           "benchmarks.bench_fabric", "benchmarks.bench_verify", "benchmarks.bench_claims", "benchmarks.bench_evidence",
           "benchmarks.bench_caltrack"]


def main() -> None:
    quick = "--quick" in sys.argv
    for name in BENCHES:
        print(f"== {name}", flush=True)
        sys.argv = [name, *(["--quick"] if quick else [])]
        importlib.import_module(name).main()


if __name__ == "__main__":
    main()
