"""The dashboard through Streamlit's AppTest on the seeded greenwash store (tests/test_dashboard_seed.py):
every page for every role that may see it, with its key elements and no exception; a regulator refused the
officer pages; a wrong password refused; passwords kept only as bcrypt hashes; a read-only session refusing
writes; the Ledger page's proof verified against the configured trust, "self-consistent only" without one,
and refused for a reading tampered with after sealing; reports generated and listed as verified."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import queries
from dashboard.auth import DashboardConfigError, add_user, load_config, new_config
from dashboard.common import ENV_CONFIG, ENV_DB
from tests.test_dashboard_seed import PASSWORDS, Seeded, seeded

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
PAGES = ("overview", "site", "findings", "claims", "ledger", "reports")
OFFICER_PAGES = ("overview", "site", "findings", "ledger")


@pytest.fixture(scope="module")
def store(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    return seeded(pg_server, tmp_path_factory)


@pytest.fixture
def env(store: Seeded, monkeypatch: pytest.MonkeyPatch) -> Iterator[Seeded]:
    monkeypatch.setenv(ENV_CONFIG, str(store.config))
    monkeypatch.setenv(ENV_DB, store.dsn)
    yield store


def _login(user: str, password: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.text_input[0].input(user)
    at.text_input[1].input(password if password is not None else PASSWORDS[user][1])
    at.button[0].click()
    at.run()
    return at


def _visit(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"pages/{page}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [e.value for e in at.error] + [e.value for e in at.success] + \
            [e.value for e in at.warning] + [e.value for e in at.info] + [e.value for e in at.caption] + \
            [m.label for m in at.metric] + [h.value for h in at.subheader] + [h.value for h in at.title]
    return "\n".join(str(p) for p in parts)


def _charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


@pytest.mark.parametrize("user", ["olivia", "aaron", "adam"])
def test_officer_auditor_and_admin_see_every_page_with_its_key_elements(env: Seeded, user: str) -> None:
    at = _login(user)
    assert not at.exception and not at.error, _texts(at)
    _visit(at, "overview")
    assert "Readings stored" in _texts(at) and "OVERSTATED" in _texts(at) and _charts(at) >= 2
    _visit(at, "site")
    assert "PV against its clear-sky envelope" in _texts(at) and _charts(at) >= 3
    _visit(at, "findings")
    text = _texts(at)
    assert "Drill down" in text and "Readings of" in text and _charts(at) >= 2
    assert at.code and '"sig"' in at.code[0].value  # the signed frame the readings came in
    _visit(at, "claims")
    text = _texts(at)
    assert "OVERSTATED" in text and "UNVERIFIABLE" in text and _charts(at) >= 1
    assert "hourly matched, the share is 57.3 %" in text  # the 100 % annual claim's hourly gap, stated
    _visit(at, "ledger")
    assert any(s.value.startswith("Verified:") for s in at.success), _texts(at)
    _visit(at, "reports")
    assert "Reports" in _texts(at)


def test_regulator_sees_claims_and_reports_and_is_refused_the_officer_pages(env: Seeded) -> None:
    at = _login("rita")
    assert not at.exception
    links = [p.label for p in at.get("page_link")]
    assert links == ["Claims", "Reports"], links
    _visit(at, "claims")
    assert "OVERSTATED" in _texts(at) and not at.error
    _visit(at, "reports")
    assert not at.error
    for page in OFFICER_PAGES:
        _visit(at, page)
        refused = [e.value for e in at.error]
        assert refused and refused[0].startswith(f"Refused: the {page.capitalize()} page is not available to the role "
                                                 "regulator"), (page, refused)
        assert not at.get("plotly_chart") and not at.dataframe, page  # nothing of the page was drawn


def test_regulator_follows_a_verdict_to_its_batches_but_not_into_the_ledger(env: Seeded) -> None:
    at = _visit(_login("rita"), "claims")
    assert not [b for b in at.button if b.label == "Open its proof on the Ledger page"]


def test_officer_goes_from_a_verdict_to_a_readings_verified_proof(env: Seeded) -> None:
    at = _visit(_login("olivia"), "claims")
    batch = at.selectbox(key="c_batch").value
    next(b for b in at.button if b.label == "Open its proof on the Ledger page").click()
    at.run()
    assert at.selectbox(key="l_batch").value == batch
    assert any(s.value.startswith("Verified:") for s in at.success), _texts(at)


def test_wrong_password_is_refused(env: Seeded) -> None:
    at = _login("olivia", "not-the-password")
    assert [e.value for e in at.error] == ["Username or password is incorrect."]
    assert not at.get("page_link")
    at = _login("mallory", "whatever-pw")
    assert [e.value for e in at.error] == ["Username or password is incorrect."]


def test_config_keeps_only_bcrypt_hashes_and_refuses_a_plain_text_password(tmp_path: Path) -> None:
    cfg = tmp_path / "dashboard.toml"
    add_user(cfg, "olivia", "officer", "secret-pass-1")
    text = cfg.read_text()
    assert "secret-pass-1" not in text and "$2b$" in text
    assert oct(cfg.stat().st_mode & 0o777) == "0o600"
    cfg.write_text(text.replace(load_config(cfg).users["olivia"].password_hash, "secret-pass-1"))
    with pytest.raises(DashboardConfigError, match="not a bcrypt hash"):
        load_config(cfg)
    with pytest.raises(DashboardConfigError, match="role"):
        add_user(tmp_path / "other.toml", "x", "superuser", "long-enough-pw")
    with pytest.raises(DashboardConfigError, match="at least 8"):
        add_user(tmp_path / "other.toml", "x", "auditor", "short")


def test_users_add_reads_the_password_from_stdin_through_the_cli(tmp_path: Path) -> None:
    cfg = tmp_path / "d.toml"
    run = [sys.executable, "-m", "wattproof", "dashboard", "users"]
    res = subprocess.run([*run, "add", "rita", "--role", "regulator", "--config", str(cfg)], input="pw-from-stdin\n",
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "pw-from-stdin" not in cfg.read_text()
    res = subprocess.run([*run, "list", "--config", str(cfg)], capture_output=True, text=True, timeout=120)
    assert res.stdout.split("\t")[:2] == ["rita", "regulator"]
    res = subprocess.run([*run, "add", "bob", "--role", "root", "--config", str(cfg)], input="pw-from-stdin\n",
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and res.stderr.strip().startswith("error: role 'root'"), res.stderr


def test_the_dashboards_sessions_refuse_to_write(store: Seeded) -> None:
    with queries.connect(store.dsn) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("DELETE FROM findings")


def test_without_a_configured_trust_a_proof_is_self_consistent_only(store: Seeded, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "untrusted.toml"
    new_config(cfg, ledger_path=store.ledger_dir)
    add_user(cfg, "aaron", "auditor", PASSWORDS["aaron"][1])
    monkeypatch.setenv(ENV_CONFIG, str(cfg))
    monkeypatch.setenv(ENV_DB, store.dsn)
    at = _visit(_login("aaron"), "ledger")
    assert any(w.value.startswith("Self-consistent only") for w in at.warning), _texts(at)
    assert not any(s.value.startswith("Verified:") for s in at.success)


def test_a_reading_tampered_with_after_sealing_gets_no_verified_proof(env: Seeded) -> None:
    with psycopg.connect(env.dsn, autocommit=True) as conn:
        batch_id, dev, seq, idx = conn.execute(
            "SELECT batch_id, leaf_devices[1], leaf_seqs[1], leaf_idxs[1] FROM batches ORDER BY window_start DESC, "
            "batch_id LIMIT 1").fetchone()
        conn.execute("UPDATE readings SET energy_wh = energy_wh + 1 WHERE (device_id, seq, idx) = (%s, %s, %s)",
                     (dev, seq, idx))
    try:
        at = _login("aaron")
        at.session_state["ledger_batch"] = batch_id
        at = _visit(at, "ledger")
        errors = [e.value for e in at.error]
        assert errors and "differs from what batch" in errors[0], _texts(at)
        assert not any(s.value.startswith("Verified:") for s in at.success)
    finally:
        with psycopg.connect(env.dsn, autocommit=True) as conn:
            conn.execute("UPDATE readings SET energy_wh = energy_wh - 1 WHERE (device_id, seq, idx) = (%s, %s, %s)",
                         (dev, seq, idx))


def test_officer_generates_a_report_that_is_listed_verified_and_an_auditor_cannot_generate(env: Seeded) -> None:
    at = _visit(_login("olivia"), "reports")
    at.multiselect[0].set_value(["json", "csv"])
    next(b for b in at.button if b.label == "Generate report").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(s.value.startswith("Report report:") for s in at.success), _texts(at)
    assert any("— verified" in e.label for e in at.expander), [e.label for e in at.expander]
    at = _visit(_login("aaron"), "reports")
    assert not [b for b in at.button if b.label == "Generate report"]
    assert any("— verified" in e.label for e in at.expander)


def test_a_missing_config_is_one_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_CONFIG, raising=False)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception and at.error[0].value.startswith("no dashboard config")
    assert os.environ.get(ENV_CONFIG) is None


def test_dashboard_command_refuses_a_missing_config_and_a_config_without_users_in_one_line(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "wattproof", "dashboard"]
    res = subprocess.run([*run, "--config", str(tmp_path / "none.toml"), "--db", "postgresql://x@127.0.0.1:1/x"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
    assert "cannot read the dashboard config" in res.stderr
    new_config(tmp_path / "empty.toml")
    res = subprocess.run([*run, "--config", str(tmp_path / "empty.toml"), "--db", "postgresql://x@127.0.0.1:1/x"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "no users" in res.stderr and len(res.stderr.strip().splitlines()) == 1
