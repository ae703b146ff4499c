"""The multi-host deployment files are valid compose files (checked with `docker compose config`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def compose_command() -> list[str]:
    plugin = ROOT / ".cache" / "compose" / "docker-compose"
    if plugin.exists():
        return [str(plugin)]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    pytest.fail("docker compose is not available: run `make test` (it builds the compose CLI into .cache/)")


def test_compose_file_is_valid() -> None:
    env = {**os.environ, "WATTPROOF_CHAINCODE_ID": "wattproof_1.0:0123abcd", "POSTGRES_PASSWORD": "x"}
    res = subprocess.run([*compose_command(), "-f", str(ROOT / "docker" / "compose.yaml"), "config", "--quiet"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr


def test_compose_file_refuses_to_start_without_the_chaincode_package_id() -> None:
    env = {k: v for k, v in os.environ.items() if k != "WATTPROOF_CHAINCODE_ID"}
    res = subprocess.run([*compose_command(), "-f", str(ROOT / "docker" / "compose.yaml"), "config", "--quiet"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode != 0
    assert "WATTPROOF_CHAINCODE_ID" in res.stderr or "package id" in res.stderr
