#!/usr/bin/env bash
# Build libwattproof_native (ledger/native: Ed25519 frame checks, hashing) into .cache/native/release.
# cargo rebuilds only when the sources changed (a no-op run takes well under a second).
# Without cargo: a warning, and wattproof uses its pure-Python checks (same verdicts, slower), unless
# WATTPROOF_REQUIRE_NATIVE=1 (set by `make test` and `make bench`), which makes it an error.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
  msg="cargo (Rust) not found: ledger/native is not built; verify and ingest use their slower pure-Python checks"
  if [ "${WATTPROOF_REQUIRE_NATIVE:-0}" = 1 ]; then echo "error: $msg" >&2; exit 1; fi
  echo "warning: $msg" >&2; exit 0
fi
# curve25519-dalek's AVX-512 IFMA backend (chosen at run time when the CPU has it, else AVX2, else serial;
# needs rustc >= 1.89): about a third off each signature check (docs/proofs.md, "Fast frame check")
minor=$(rustc --version | sed -n 's/^rustc 1\.\([0-9]*\).*/\1/p')
if [ "$(uname -m)" = x86_64 ] && [ "${minor:-0}" -ge 89 ]; then
  export RUSTFLAGS="${RUSTFLAGS:-} --cfg curve25519_dalek_backend=\"avx512\""
fi
CARGO_TARGET_DIR="$root/.cache/native" cargo build --release --locked --quiet \
  --manifest-path "$root/ledger/native/Cargo.toml"
