"""The multi-host deployment files are valid compose files (checked with `docker compose config`); the
deployment itself is run by tests/test_compose_deploy.py."""

from __future__ import annotations

import json
import os
import re
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


def config_env() -> dict[str, str]:
    return {**os.environ, "POSTGRES_PASSWORD": "x", "WATTPROOF_PKI_DIR": "/nonexistent/pki"}


def test_compose_file_is_valid() -> None:
    res = subprocess.run([*compose_command(), "-f", str(ROOT / "docker" / "compose.yaml"), "config", "--quiet"],
                         capture_output=True, text=True, env=config_env(), timeout=120)
    assert res.returncode == 0, res.stderr


def test_every_image_of_the_compose_file_is_a_variable_with_the_public_image_as_default() -> None:
    text = (ROOT / "docker" / "compose.yaml").read_text()
    images = re.findall(r"^\s+image: (.+)$", text, flags=re.M)
    assert len(images) >= 8
    for ref in images:
        assert re.fullmatch(r"\$\{WATTPROOF_(?:[A-Z_]+_)?IMAGE:-[a-z0-9./_-]+:[A-Za-z0-9._-]+\}", ref), ref


def test_compose_file_takes_the_images_built_here_from_the_environment() -> None:
    env = {**config_env(), "WATTPROOF_POSTGRES_IMAGE": "wattproof-local/postgres:abc",
           "WATTPROOF_FABRIC_PEER_IMAGE": "wattproof-local/fabric:abc"}
    res = subprocess.run([*compose_command(), "-f", str(ROOT / "docker" / "compose.yaml"), "config", "--format", "json"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    services = json.loads(res.stdout)["services"]
    assert services["timescaledb"]["image"] == "wattproof-local/postgres:abc"
    assert services["peer0-org1"]["image"] == services["peer0-org2"]["image"] == "wattproof-local/fabric:abc"
    assert services["orderer"]["image"] == "hyperledger/fabric-orderer:2.5"
    assert "--shared" in services["ingest"]["entrypoint"][2], "ingest replicas share one subscription"
