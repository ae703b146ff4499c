"""The command line shell: it lists the whole product and fails in one clear line."""

from __future__ import annotations

import subprocess
import sys

PRODUCT_COMMANDS = ["demo", "device", "simulate", "ingest", "db", "audit", "anchor", "verify",
                    "proof", "verify-proof", "fabric", "claims", "report", "dashboard"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wattproof", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_the_commands_of_the_whole_product() -> None:
    res = run_cli("--help")
    assert res.returncode == 0
    for command in PRODUCT_COMMANDS:
        assert f" {command} " in res.stdout, f"`wattproof --help` does not list {command!r}"


def test_unknown_command_fails_with_a_short_message_and_no_traceback() -> None:
    res = run_cli("no-such-command")
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert "no-such-command" in res.stderr


def test_claims_check_of_a_missing_file_fails_in_one_line() -> None:
    res = run_cli("claims", "check", "no-such-claims.yaml", "--db", "postgresql:///nowhere")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "no-such-claims.yaml" in res.stderr
