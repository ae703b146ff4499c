"""One error contract (issue 15): every failure is one line on stderr, exit status non-zero, no traceback;
an unreachable database, a bad DSN, a bad password or an unreachable broker is named with where it is
(never the password) and is never "unexpected"; read-only commands write nothing; `--json` parses."""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from device.errors import WattproofError, dsn_location, redact
from wattproof.embedded import Postgres, free_port
from wattproof.errors import one_line

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cret-pw"


def cli(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "WATTPROOF_DB"}
    env["WATTPROOF_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "wattproof", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=home.parent)


def one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    """The single ``error: …`` line of a failed command (asserting the contract on the way)."""
    assert res.returncode != 0, res.stdout
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "unexpected" not in lines[0], lines[0]
    assert SECRET not in res.stderr + res.stdout
    return lines[0]


def closed_port() -> int:
    return free_port()  # bound, then closed: nothing listens there


def snapshot(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): p.stat().st_mtime_ns for p in directory.rglob("*")} if directory.exists() else {}


# --- the root ---------------------------------------------------------------------------------------------
PACKAGES = ["device", "firmware_sim", "ingest", "audit", "ledger", "dashboard", "wattproof"]


def _public_exception_classes() -> list[tuple[str, str]]:
    found = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if "chaincode" in path.parts or "native" in path.parts:
                continue
            tree = ast.parse(path.read_text())
            for node in tree.body:
                if isinstance(node, ast.ClassDef) and not node.name.startswith("_") and any(
                        re.search(r"(Error|Exception|Unavailable|Refused|Mismatch|Broken|Anchored|Header|NoNewData)$",
                                  ast.unparse(b)) for b in node.bases):
                    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
                    found.append((module, node.name))
    return found


@pytest.mark.parametrize(("module", "name"), _public_exception_classes())
def test_every_exception_of_ours_derives_from_wattproof_error(module: str, name: str) -> None:
    cls = getattr(importlib.import_module(module), name)
    if issubclass(cls, BaseException):
        assert issubclass(cls, WattproofError), f"{module}.{name} does not derive from WattproofError"


def test_an_error_that_was_a_value_error_still_is_one() -> None:
    from device.wire import WireError
    from ledger.canonical import CanonicalError

    assert issubclass(WireError, ValueError) and issubclass(CanonicalError, ValueError)


def test_a_bug_is_called_unexpected_and_an_error_of_ours_is_not() -> None:
    assert one_line(KeyError("x"), argv=[])[1] is False
    assert one_line(WattproofError("no ledger at /x"), argv=[]) == ("no ledger at /x", True)


def test_a_dsn_is_named_by_host_port_and_database_never_by_its_password() -> None:
    for dsn in (f"postgresql://u:{SECRET}@db.example:5433/store", f"host=db.example port=5433 dbname=store password={SECRET}"):
        assert dsn_location(dsn) == "db.example:5433/store"
        assert SECRET not in redact(f"failed for {dsn}", dsn)


# --- database -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["db", "status"], ["audit", "run"], ["anchor", "--ledger-dir", "L"]])
def test_unreachable_database_is_one_line_naming_host_port_and_database(command: list[str], tmp_path: Path) -> None:
    port = closed_port()
    args = [a.replace("L", str(tmp_path / "ledger")) if a == "L" else a for a in command]
    line = one_line_error(cli(tmp_path / "home", *args, "--db", f"postgresql://u:{SECRET}@127.0.0.1:{port}/store"))
    assert line.startswith(f"error: database at 127.0.0.1:{port}/store unreachable: ") and "refused" in line, line


@pytest.mark.parametrize("dsn", ["notadsn", f"postgresql://u:{SECRET}@127.0.0.1:badport/x",
                                 f"pasword={SECRET} host=127.0.0.1"])
def test_bad_dsn_is_one_line_saying_the_dsn_is_not_valid(dsn: str, tmp_path: Path) -> None:
    line = one_line_error(cli(tmp_path / "home", "db", "status", "--db", dsn))
    assert line.startswith("error: database DSN ") and "is not valid" in line, line


def test_bad_password_is_one_line_naming_the_database_and_the_refusal(pg_server: Postgres, tmp_path: Path) -> None:
    role = f"pw_{os.getpid()}"
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'the-right-one'")
    hba = pg_server.datadir / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + original)  # this role only: others keep trust
    try:
        with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 10
        dsn = f"postgresql://{role}:{SECRET}@127.0.0.1:{pg_server.port}/{pg_server.dbname}"
        while True:  # the reload is asynchronous: poll until the server asks this role for a password
            try:
                psycopg.connect(dsn).close()
            except psycopg.OperationalError:
                break
            assert time.monotonic() < deadline, "pg_hba.conf reload not in effect"
        line = one_line_error(cli(tmp_path / "home", "db", "status", "--db", dsn))
        assert line.startswith(f"error: database at 127.0.0.1:{pg_server.port}/{pg_server.dbname} unreachable: ")
        assert "password authentication failed" in line, line
    finally:
        hba.write_text(original)
        with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_ingest_with_an_unreachable_database_says_so_within_seconds_while_it_keeps_retrying(tmp_path: Path) -> None:
    port = closed_port()
    env = {**os.environ, "WATTPROOF_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "wattproof", "ingest", "--broker", f"mqtt://127.0.0.1:{closed_port()}",
                             "--db", f"postgresql://u:{SECRET}@127.0.0.1:{port}/store"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        t0 = time.monotonic()
        lines = []
        while len(lines) < 2:  # two retries logged: it says so, and it goes on
            line = proc.stderr.readline()  # type: ignore[union-attr]
            assert line, f"ingest exited ({proc.poll()}) without saying why: {lines}"
            if f"the database at 127.0.0.1:{port}/store failed" in line:
                lines.append(line)
        assert time.monotonic() - t0 < 15
        assert "connecting to" in lines[0] and "retry" in lines[0] and SECRET not in "".join(lines)
        assert proc.poll() is None  # still retrying
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --- broker -------------------------------------------------------------------------------------------------
def test_unreachable_broker_is_one_line_naming_the_broker(tmp_path: Path) -> None:
    port = closed_port()
    res = cli(tmp_path / "home", "simulate", "--broker", f"mqtt://127.0.0.1:{port}", "--sites", "1", "--days", "0.01",
              "--out", str(tmp_path / "sim"))
    line = one_line_error(res)
    assert line.startswith(f"error: broker at mqtt://127.0.0.1:{port} unreachable: connection refused"), line


# --- ledger: read-only commands write nothing --------------------------------------------------------------
def test_verify_on_an_empty_directory_is_an_error_and_creates_no_key(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    home = tmp_path / "home"
    line = one_line_error(cli(home, "verify", "--db", f"postgresql://u:{SECRET}@127.0.0.1:{closed_port()}/x",
                              "--ledger-dir", str(empty)))
    assert line.startswith(f"error: no ledger at {empty}"), line
    assert list(empty.iterdir()) == [] and not home.exists()


def test_verify_of_the_default_ledger_creates_no_data_directory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    line = one_line_error(cli(home, "verify", "--db", "postgresql://127.0.0.1:1/x"))
    assert line.startswith(f"error: no ledger at {home / 'ledger'}"), line
    assert not home.exists()


@pytest.mark.parametrize("command", [["verify"], ["proof", "export", "--device", "d", "--from", "2026-01-01",
                                                    "--to", "2026-01-02", "--out", "B"]])
def test_a_missing_ledger_directory_is_an_error_and_is_not_created(command: list[str], tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ledger"
    args = [str(tmp_path / "bundle.json") if a == "B" else a for a in command]
    line = one_line_error(cli(tmp_path / "home", *args, "--db", "postgresql://127.0.0.1:1/x", "--ledger-dir", str(missing)))
    assert f"no ledger at {missing}" in line
    assert not missing.exists() and not (tmp_path / "bundle.json").exists()


def test_verify_of_an_existing_ledger_writes_nothing_beside_it(store_db: str, tmp_path: Path) -> None:
    home, ledger = tmp_path / "home", tmp_path / "ledger"
    res = cli(home, "anchor", "--db", store_db, "--ledger-dir", str(ledger), "--json")  # nothing to seal: makes the key
    assert res.returncode == 0, res.stderr
    (ledger / "ledger.jsonl").touch()  # an empty ledger: no anchoring yet
    for lock in ledger.glob("*.lock"):
        lock.unlink()
    before = snapshot(ledger)
    res = cli(home, "verify", "--db", store_db, "--ledger-dir", str(ledger), "--json")
    assert res.returncode == 3 and json.loads(res.stdout)["batches"] == 0, res.stderr  # nothing pinned: exit 3
    assert snapshot(ledger) == before


# --- --json ---------------------------------------------------------------------------------------------------
def test_json_output_of_the_commands_a_script_reads_parses(store_db: str, tmp_path: Path) -> None:
    home, ledger = tmp_path / "home", tmp_path / "ledger"
    runs = {
        "db status": (["db", "status"], {"migrations", "pending"}),
        "db upgrade": (["db", "upgrade"], {"applied"}),
        "audit run": (["audit", "run"], {"new_findings", "by_kind"}),
        "anchor": (["anchor", "--ledger-dir", str(ledger)], {"ledger", "batches", "readings", "batch_ids", "refused"}),
        "verify": (["verify", "--ledger-dir", str(ledger)], {"verdict", "pinned", "batches", "intact"}),
    }
    for name, (args, keys) in runs.items():
        if name == "verify":  # an empty store anchors nothing, so no ledger file yet: start an empty one
            (ledger / "ledger.jsonl").touch()
        res = cli(home, *args, "--db", store_db, "--json")
        assert res.returncode in (0, 3), f"{name}: {res.stderr}"
        out = json.loads(res.stdout)
        assert keys <= set(out), f"{name}: {sorted(out)}"
        assert res.stderr.strip() == "" or name == "verify", f"{name}: {res.stderr}"


def test_audit_run_takes_from_and_still_the_old_since(store_db: str, tmp_path: Path) -> None:
    for option in ("--from", "--since"):
        res = cli(tmp_path / "home", "audit", "run", "--db", store_db, option, "2026-06-01", "--json")
        assert res.returncode == 0 and json.loads(res.stdout)["new_findings"] == 0, res.stderr
    help_text = cli(tmp_path / "home", "audit", "run", "--help").stdout
    assert "--from" in help_text and "--since" not in help_text


def test_verify_reports_each_of_its_steps_in_order(store_db: str, tmp_path: Path) -> None:
    """The progress of `wattproof verify` counts real steps: each reported once, in order, the last one at the end."""
    from ledger.local import LocalLedger
    from ledger.verify import VERIFY_STEPS, verify_all

    led = LocalLedger.open(tmp_path / "ledger")
    seen: list[tuple[int, int]] = []
    res = verify_all(store_db, led, None, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(k, VERIFY_STEPS) for k in range(1, VERIFY_STEPS + 1)]
    assert res.reports == []
