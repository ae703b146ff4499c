"""Build hook for the one thing pyproject.toml cannot say: the Rust library.

setuptools-rust builds ``ledger/native`` (a cdylib, no Python bindings: ``ledger/nativelib.py`` loads it
with ctypes) with the machine's cargo into the package as ``ledger/_native<ext suffix>``, at wheel-build
time (``pip install .``, ``pip wheel .``, ``uv build``). Everything else is in pyproject.toml.

- An editable install (``pip install -e .``) builds no copy into the source tree: a source checkout uses
  ``.cache/native`` from ``ledger/native/build.sh`` (run by ``make``), and a copy in the package would
  shadow a newer build there.
- Without Rust, the wheel is built without the library (a warning) and wattproof uses its pure-Python
  checks (same verdicts, slower), unless ``WATTPROOF_REQUIRE_NATIVE=1``, which makes it an error, as in
  build.sh. ``WATTPROOF_NATIVE=0`` leaves the library out on purpose.
- ``CARGO_TARGET_DIR`` picks cargo's build folder (default ``ledger/native/target``); pointing it at a
  kept folder makes rebuilds incremental.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools_rust import Binding, RustExtension


def _rustc_minor() -> int:
    rustc = shutil.which("rustc") or os.path.expanduser("~/.cargo/bin/rustc")
    try:
        out = subprocess.run([rustc, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0
    m = re.match(r"rustc 1\.(\d+)", out)
    return int(m.group(1)) if m else 0


def _rust_extensions() -> list[RustExtension]:
    if "editable_wheel" in sys.argv or os.environ.get("WATTPROOF_NATIVE") == "0":
        return []
    if not shutil.which("cargo") and os.path.exists(os.path.expanduser("~/.cargo/bin/cargo")):
        os.environ["PATH"] = os.path.expanduser("~/.cargo/bin") + os.pathsep + os.environ.get("PATH", "")
    # as build.sh: curve25519-dalek's AVX-512 IFMA backend (chosen at run time when the CPU has it), rustc >= 1.89
    avx512 = ' --cfg curve25519_dalek_backend="avx512"'
    if platform.machine() == "x86_64" and _rustc_minor() >= 89 and avx512 not in os.environ.get("RUSTFLAGS", ""):
        os.environ["RUSTFLAGS"] = os.environ.get("RUSTFLAGS", "") + avx512
    required = os.environ.get("WATTPROOF_REQUIRE_NATIVE") == "1"
    return [RustExtension("ledger._native", path="ledger/native/Cargo.toml", binding=Binding.NoBinding,
                          args=["--locked"], optional=not required)]


setup(rust_extensions=_rust_extensions())
