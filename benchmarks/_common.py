"""Shared by the benchmarks: the machine description and writing a section of RESULTS.md.

Each benchmark owns one section of ``benchmarks/RESULTS.md`` between
``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` and rewrites only that section.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}")


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Best wall time in seconds of ``repeat`` calls."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def table(headers: list[str], rows: list[list[object]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def write_section(name: str, title: str, body: str) -> None:
    """Replace (or append) this benchmark's section of RESULTS.md, under a file lock."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = (f"<!-- {name}:start -->\n## {title}\n\n_{stamp} on {machine()}_\n\n"
             f"{body.strip()}\n<!-- {name}:end -->")
    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = RESULTS.read_text() if RESULTS.exists() else (
            "# Benchmark results\n\nWritten by the scripts in this folder (`make bench`); each section "
            "is rewritten by its own benchmark.\n")
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        if start in text and end in text:
            before, rest = text.split(start, 1)
            after = rest.split(end, 1)[1]
            text = before + block + after
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
        RESULTS.write_text(text)
