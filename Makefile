# wattproof — the two commands: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint sysdeps fabric-bins compose-cli native clean

# Python dependencies at the versions of requirements.lock (hash-checked), then wattproof itself as an
# editable install (no Rust build: ledger/native/build.sh below builds .cache/native). After a change to
# pyproject.toml's dependencies: .venv/bin/uv pip compile (the command heading requirements.lock).
$(STAMP): pyproject.toml requirements.lock setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

## demo: create .venv, install, run the whole path on embedded defaults
demo: $(STAMP) native
	$(VENV)/bin/wattproof demo

## test: install what the tests need (system packages, Fabric binaries, Python deps), run everything
test: $(STAMP) sysdeps fabric-bins compose-cli
	WATTPROOF_REQUIRE_NATIVE=1 bash ledger/native/build.sh
	$(PY) -m pytest -q

sysdeps:
	bash tests/setup/system-deps.sh

compose-cli:
	bash docker/build-compose-cli.sh

## native: the Rust frame checks (ledger/native) into .cache/native; a warning without cargo
native:
	bash ledger/native/build.sh

fabric-bins:
	@if [ -f ledger/fabric/build-binaries.sh ]; then bash ledger/fabric/build-binaries.sh; fi

## bench: run every benchmark and rewrite benchmarks/RESULTS.md
bench: $(STAMP) sysdeps fabric-bins
	WATTPROOF_REQUIRE_NATIVE=1 bash ledger/native/build.sh
	$(PY) -m benchmarks.run_all

## lint: ruff over everything, mypy over the pure packages
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy device/wire.py device/identity.py firmware_sim/scenarios.py device/spool.py ingest/validate.py ingest/reasons.py ledger/backend.py ledger/merkle.py ledger/canonical.py ledger/nativelib.py ingest/writer.py ingest/pipeline.py audit/kernels.py audit/detectors.py ledger/trust.py device/ed25519.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
