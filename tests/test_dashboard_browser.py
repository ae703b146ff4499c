"""The dashboard in a real browser: Debian's Chromium (tests/setup/system-deps.sh installs it), driven by
Playwright pointed at that binary, against the dashboard started as a user starts it (`wattproof dashboard
--config … --db … --port …` in a subprocess). Each role logs in and visits every page it may see; the key
elements are found (a verdict, a chart, a verified proof), no exception is shown; a regulator is refused the
officer pages; a wrong password is refused. Screenshots go to the test's tmp dir."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from dashboard.server import free_port
from tests.test_dashboard_seed import PASSWORDS, Seeded, seeded

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TIMEOUT_MS = 60_000
ALL = ("Overview", "Site", "Findings", "Claims", "Ledger", "Reports")
KEY = {"Overview": "Readings stored", "Site": "PV against its clear-sky envelope", "Findings": "Drill down",
       "Claims": "OVERSTATED", "Ledger": "Verified:", "Reports": "Generate"}


@pytest.fixture(scope="module")
def server(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Seeded]]:
    store = seeded(pg_server, tmp_path_factory)
    port = free_port()
    log = tmp_path_factory.mktemp("dashboard-log") / "dashboard.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "wattproof", "dashboard", "--config", str(store.config),
                                 "--db", store.dsn, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    url = f"http://localhost:{port}"
    deadline = time.monotonic() + 90
    while True:  # the command prints its URL once Streamlit's health endpoint answers
        assert proc.poll() is None, log.read_text()[-3000:]
        if url in log.read_text():
            break
        assert time.monotonic() < deadline, "dashboard did not start: " + log.read_text()[-3000:]
        time.sleep(0.2)
    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=10) as r:
        assert r.status == 200
    yield url, store
    proc.terminate()  # SIGTERM to `wattproof dashboard`: it stops its Streamlit server before exiting
    assert proc.wait(timeout=30) != 0
    deadline = time.monotonic() + 30
    while True:  # nothing is left listening on the port
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).close()
        except OSError:
            break
        assert time.monotonic() < deadline, "the Streamlit server outlived `wattproof dashboard`"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run tests/setup/system-deps.sh as root"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


def _idle(page: Page) -> None:
    """Wait until Streamlit has finished running the script (its status widget says nothing)."""
    page.wait_for_load_state("networkidle", timeout=TIMEOUT_MS)
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=TIMEOUT_MS)


def _no_exception(page: Page, where: str) -> None:
    assert page.get_by_test_id("stException").count() == 0, where
    body = page.inner_text("body")
    assert "Traceback" not in body and "StreamlitAPIException" not in body, (where, body[:2000])


def _login(browser: Browser, url: str, user: str, password: str) -> Page:
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.get_by_role("textbox", name="Username").fill(user)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    return page


def test_before_login_no_page_is_listed_and_a_typed_page_url_shows_nothing_of_it(server: tuple[str, Seeded],
                                                                                browser: Browser) -> None:
    url, _ = server
    page = browser.new_context().new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    _idle(page)
    assert page.get_by_role("link", name="Claims").count() == 0
    page.goto(f"{url}/claims")
    expect(page.get_by_role("button", name="Log in").or_(page.get_by_text("Not logged in"))).to_be_visible()
    _idle(page)
    assert "OVERSTATED" not in page.inner_text("body")
    page.context.close()


def _shown(page: Page, text: str) -> Any:
    return page.get_by_text(text).filter(visible=True).first  # not a hidden cell of a data grid's canvas


def _open(page: Page, title: str) -> None:
    page.get_by_test_id("stSidebar").get_by_role("link", name=title).click()
    expect(page.get_by_role("heading", name=title, exact=True).first).to_be_visible()
    expect(_shown(page, KEY[title])).to_be_visible()
    _idle(page)


@pytest.mark.parametrize("user", ["olivia", "aaron", "adam"])
def test_each_role_logs_in_and_sees_every_page_with_its_key_elements(server: tuple[str, Seeded], browser: Browser,
                                                                    user: str, tmp_path: Path) -> None:
    url, _ = server
    page = _login(browser, url, user, PASSWORDS[user][1])
    expect(page.get_by_test_id("stSidebar").get_by_text(f"({PASSWORDS[user][0]})")).to_be_visible()
    for title in ALL:
        _open(page, title)
        _no_exception(page, title)
        page.screenshot(path=str(tmp_path / f"{user}-{title.lower()}.png"), full_page=True)
        if title in ("Overview", "Site", "Claims"):
            assert page.locator(".js-plotly-plot").count() >= 1, f"{title}: no chart"
    _open(page, "Claims")
    expect(_shown(page, "OVERSTATED")).to_be_visible()
    page.get_by_role("button", name="Open its proof on the Ledger page").click()
    expect(_shown(page, "Verified:")).to_be_visible()  # from a verdict to a reading's verified proof
    page.screenshot(path=str(tmp_path / f"{user}-verdict-to-proof.png"), full_page=True)
    page.context.close()


def test_regulator_sees_claims_and_reports_only_and_is_refused_the_officer_pages(server: tuple[str, Seeded],
                                                                                browser: Browser,
                                                                                tmp_path: Path) -> None:
    url, _ = server
    page = _login(browser, url, "rita", PASSWORDS["rita"][1])
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_text("(regulator)")).to_be_visible()
    for title in ("Claims", "Reports"):
        _open(page, title)
        _no_exception(page, title)
        page.screenshot(path=str(tmp_path / f"rita-{title.lower()}.png"), full_page=True)
    assert [sidebar.get_by_role("link", name=t).count() for t in ("Overview", "Site", "Findings", "Ledger")] == \
        [0, 0, 0, 0]
    for path, title in (("overview", "Overview"), ("site", "Site"), ("findings", "Findings"), ("ledger", "Ledger")):
        page.goto(f"{url}/{path}")  # typed by hand: a new session, re-authenticated by the login cookie
        refusal = page.get_by_text(f"Refused: the {title} page is not available to the role regulator")
        expect(refusal.or_(page.get_by_role("textbox", name="Username"))).to_be_visible()
        _idle(page)
        assert KEY[title] not in page.inner_text("body"), title
        assert page.locator(".js-plotly-plot").count() == 0, title
        page.screenshot(path=str(tmp_path / f"rita-refused-{path}.png"), full_page=True)
    page.context.close()


def test_wrong_password_is_refused(server: tuple[str, Seeded], browser: Browser, tmp_path: Path) -> None:
    url, _ = server
    page = _login(browser, url, "olivia", "wrong-password")
    expect(page.get_by_text("Username or password is incorrect.")).to_be_visible()
    _idle(page)
    assert page.get_by_test_id("stSidebar").get_by_role("link").count() == 0
    page.screenshot(path=str(tmp_path / "wrong-password.png"), full_page=True)
    page.context.close()


def test_demo_finale_serves_the_dashboard_with_the_printed_logins_until_ctrl_c(
        server: tuple[str, Seeded], browser: Browser, tmp_path: Path) -> None:
    """``dashboard.demo.serve_demo`` (what ``wattproof demo`` ends with) on the seeded store: URL and one login per
    role printed, the officer's printed password works in the browser, Ctrl-C (SIGINT) stops it cleanly."""
    import signal

    _, store = server
    script = ("import sys; from pathlib import Path; from rich.console import Console; "
              "from ledger.local import LocalLedger; from ledger.trust import load_trust; "
              "from dashboard.demo import serve_demo; "
              "led = LocalLedger.open(Path(sys.argv[2]), create=False); "
              "serve_demo(sys.argv[1], led, load_trust(Path(sys.argv[3])), Path(sys.argv[4]), Console(width=200)); "
              "print('finale returned')")
    (tmp_path / "run").mkdir()
    out = tmp_path / "finale.out"
    with open(out, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-c", script, store.dsn, str(store.ledger_dir), str(store.trust),
                                 str(tmp_path / "run")], stdout=fh, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        _finale_serves(proc, out, browser, tmp_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)


def _finale_serves(proc: subprocess.Popen[bytes], out: Path, browser: Browser, tmp_path: Path) -> None:
    import re
    import signal

    deadline = time.monotonic() + 90
    while "Serving until Ctrl-C" not in out.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
        time.sleep(0.2)
    text = out.read_text()
    url = re.search(r"open (http://\S+)", text).group(1)  # type: ignore[union-attr]
    logins = dict(re.findall(r"user (\w+)\s+password (\S+)", text))
    assert set(logins) == {"officer", "auditor", "regulator", "admin"}, text
    assert "password" not in (tmp_path / "run" / "dashboard.toml").read_text().split("[users.officer]")[1].split(
        "password = ")[0] and logins["officer"] not in (tmp_path / "run" / "dashboard.toml").read_text()
    page = _login(browser, url, "officer", logins["officer"])
    expect(page.get_by_test_id("stSidebar").get_by_text("(officer)")).to_be_visible()
    _open(page, "Claims")
    page.screenshot(path=str(tmp_path / "demo-finale-claims.png"), full_page=True)
    page.context.close()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    assert "dashboard stopped" in out.read_text() and "finale returned" in out.read_text()
