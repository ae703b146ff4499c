"""The Go chaincode's own unit tests and vet, run by `make test` (ledger/chaincode)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CC = Path(__file__).resolve().parents[1] / "ledger" / "chaincode"
ENV = {**os.environ, "GONOSUMDB": "github.com/hyperledger", "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}


@pytest.mark.parametrize("cmd", [["go", "vet", "./..."], ["go", "test", "-count=1", "./..."]], ids=["vet", "test"])
def test_chaincode_go(cmd: list[str]) -> None:
    if shutil.which("go") is None:
        pytest.fail("go is not installed (needed to build Fabric and the chaincode)")
    proc = subprocess.run(cmd, cwd=CC, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
