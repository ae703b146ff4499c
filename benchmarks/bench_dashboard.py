"""Dashboard: render time of each page (p50/p95 over repeated loads) through Streamlit's AppTest, logged in
as an auditor (who sees every page), cold (``st.cache_data`` cleared before each load: every query runs)
and warm (cached), on a store holding the greenwash demo store (the real pipeline: ingest, audit, sealing,
claims) plus the rollup of a year of 1-minute data for 100 more devices (25 sites).

    .venv/bin/python -m benchmarks.bench_dashboard [--days 365] [--extra-sites 25] [--loads 10] [--no-results]

The extra year is written straight into ``readings_15min`` (what the rollup triggers make of a year of
1-minute readings: 35,040 buckets per register, 15 readings each), not into ``readings``: every page
reads the rollup for its series, and building 52.6M readings through ingest and sealing takes far
longer than this benchmark should (the rollup's size does not depend on the reading interval). The extra
sites also get a year of findings and of sealed batches (``benchmarks/_dashboard_year.py``: real headers
anchored on the store's own local ledger with operator signatures, synthetic leaf arrays): so Overview,
Site, Findings and Ledger see the full year; Claims reads the greenwash store's verdict sets, whose size
does not grow with the store. The Ledger page's first load in a process (the ledger opened and every
record's signature checked, once per process) is timed on its own.
Target (issue 14): p95 ≤ 2 s per page.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import table, write_section

KINDS = (("main", "main_meter", ("import", "export"), 11_000), ("sub1", "sub_meter", ("import",), 4_000),
         ("sub2", "sub_meter", ("import",), 4_000), ("pv", "pv_inverter", ("pv",), 6_000))
BUCKET_MS = 900_000


def add_rollup_year(dsn: str, sites: int, days: int, start_ms: int) -> int:
    """Register ``sites`` × 4 devices and write their rollup rows for ``days`` days; returns rows written."""
    import psycopg

    n = days * 96
    buckets = start_ms + np.arange(n, dtype=np.int64) * BUCKET_MS
    stamps = np.datetime_as_string(buckets.astype("datetime64[ms]"), unit="s")
    rng = np.random.default_rng(7)
    hour = (buckets // 3_600_000) % 24
    rows = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in range(sites):
            site = f"y{s + 1:02d}"
            conn.execute("INSERT INTO sites (site_id, name, lat, lon) VALUES (%s, %s, 52.1, 5.1)",
                         (site, f"Year site {s + 1}"))
            for role, kind, channels, rated in KINDS:
                dev = f"{site}-{role}"
                conn.execute("INSERT INTO devices (device_id, site_id, kind, public_key, rated_power_w) "
                             "VALUES (%s, %s, %s, %s, %s)", (dev, site, kind, os.urandom(32), rated))
                buf = io.StringIO()
                for ch in channels:
                    if ch == "pv":
                        step = np.clip(np.sin((hour - 6) / 12 * np.pi), 0, None) * rated / 4 * rng.uniform(0.3, 1, n)
                    elif ch == "export":
                        step = rng.uniform(0, 50, n)
                    else:
                        step = rng.uniform(0.2, 1, n) * rated / 8
                    last = np.cumsum(step.astype(np.int64)) + 1_000
                    buf.write("".join(f"{dev}\t{ch}\t{t}Z\t{v}\t15\n" for t, v in zip(stamps, last, strict=True)))
                    rows += n
                with conn.cursor().copy("COPY readings_15min (device_id, channel, bucket, last_wh, n_readings) "
                                        "FROM STDIN") as cp:
                    cp.write(buf.getvalue())
        conn.execute("ANALYZE readings_15min")
    return rows


Case = tuple[str, str, dict[str, Any]]  # (label, page, session state set before the page is opened)


def measure(config: Path, dsn: str, loads: int, cases: list[Case], first_load: str | None = None,
            append: Any = None) -> tuple[list[list[object]], dict[str, str]]:
    """Rows of the AppTest table, and what each page showed in its error/warning boxes (first line each).
    ``first_load``: the label of the case whose first load is timed on empty caches, ``st.cache_resource``
    included (the opened ledger): what the first visitor of a freshly started dashboard waits; after its
    loads, ``append()`` (an hourly seal's anchors; returns a description) and one load timed after it."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from dashboard.common import ENV_CONFIG, ENV_DB
    from tests.test_dashboard_seed import PASSWORDS

    os.environ[ENV_CONFIG], os.environ[ENV_DB] = str(config), dsn
    app = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")

    def login() -> AppTest:
        at = AppTest.from_file(app, default_timeout=600)
        at.run()
        at.text_input[0].input("aaron")
        at.text_input[1].input(PASSWORDS["aaron"][1])
        at.button[0].click()
        at.run()
        return at

    out: list[list[object]] = []
    shown: dict[str, str] = {}
    for label, page, state in cases:
        at = login()  # a fresh session per page (as a user opening it)
        for k, v in state.items():
            at.session_state[k] = v
        at.switch_page(f"pages/{page}.py")
        if label == first_load:
            st.cache_resource.clear()
            st.cache_data.clear()
            t0 = time.perf_counter()
            at.run()
            t_first = time.perf_counter() - t0
            assert not at.exception, (label, [e.value for e in at.exception])
            out.append([f"{label}: first load in a process", f"{t_first:.2f}", "", "", "", "(once per process)"])
        times: dict[str, list[float]] = {"cold": [], "warm": []}
        for _ in range(loads):
            for mode in ("cold", "warm"):
                if mode == "cold":
                    st.cache_data.clear()
                t0 = time.perf_counter()
                at.run()
                times[mode].append(time.perf_counter() - t0)
                assert not at.exception, (label, [e.value for e in at.exception])
        boxes = [str(e.value).splitlines()[0][:160] for e in [*at.error, *at.warning]]
        if boxes:
            shown[label] = "; ".join(boxes)
        c, w = np.array(times["cold"]), np.array(times["warm"])
        out.append([label, f"{np.percentile(c, 50):.2f}", f"{np.percentile(c, 95):.2f}",
                    f"{np.percentile(w, 50):.2f}", f"{np.percentile(w, 95):.2f}",
                    "yes" if np.percentile(c, 95) <= 2.0 else "**no**"])
        if label == first_load:  # the timed page did its work: a reading's proof verified against the trust
            assert any(str(x.value).startswith("Verified") for x in at.success), (label, [x.value for x in at.success])
        if label == first_load and append is not None:
            what = append()
            st.cache_data.clear()
            t0 = time.perf_counter()
            at.run()
            t_app = time.perf_counter() - t0
            assert not at.exception, (label, [e.value for e in at.exception])
            out.append([f"{label}: next load after {what}", f"{t_app:.2f}", "", "", "",
                        "yes" if t_app <= 2.0 else "**no**"])
    return out, shown


# --- through the browser ------------------------------------------------------------------------------

PAGES = (("Overview", "overview", "Readings stored", True), ("Site", "site", "PV against its clear-sky envelope", True),
         ("Findings", "findings", "Drill down", False), ("Claims", "claims", "OVERSTATED", True),
         ("Ledger", "ledger", "Verified:", False), ("Reports", "reports", "Generate", False))


def _pct(xs: list[float]) -> tuple[str, str]:
    a = np.array(xs)
    return f"{np.percentile(a, 50):.2f}", f"{np.percentile(a, 95):.2f}"


def browser_measure(config: Path, dsn: str, loads: int) -> tuple[list[list[object]], str]:
    """Each page through headless Chromium (Debian's, driven by Playwright) against `wattproof dashboard` started
    as a user starts it, logged in as an auditor; rows of the results table and a note."""
    import shutil as sh
    import subprocess
    import sys
    import urllib.request

    from playwright.sync_api import sync_playwright

    from dashboard.server import free_port
    from tests.test_dashboard_seed import PASSWORDS

    chromium = sh.which("chromium") or "/usr/bin/chromium"
    port = free_port()
    url = f"http://localhost:{port}"
    log = Path(tempfile.mkdtemp(prefix="bench-dashboard-log-")) / "dashboard.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "wattproof", "dashboard", "--config", str(config), "--db", dsn,
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                cwd=Path(__file__).resolve().parents[1],
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    rows: list[list[object]] = []
    try:
        deadline = time.monotonic() + 90
        while url not in log.read_text():  # the command prints its URL once Streamlit's health endpoint answers
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        urllib.request.urlopen(f"{url}/_stcore/health", timeout=10).close()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"])
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(120_000)
            page.goto(url)
            before = {c["name"] for c in page.context.cookies()}
            page.get_by_role("textbox", name="Username").fill("aaron")
            page.get_by_role("textbox", name="Password").fill(PASSWORDS["aaron"][1])
            page.get_by_role("button", name="Log in").click()
            page.get_by_test_id("stSidebar").get_by_text("(auditor)").wait_for()
            deadline = time.monotonic() + 60
            while not {c["name"] for c in page.context.cookies()} - before:  # the login cookie (set by the page's JS)
                assert time.monotonic() < deadline, "no login cookie: a typed URL would need a new login"
                time.sleep(0.1)

            def shown(text: str) -> None:
                page.get_by_text(text).filter(visible=True).first.wait_for()

            def done(chart: bool) -> None:  # the script finished (status widget gone); charts drawn
                page.get_by_test_id("stStatusWidget").wait_for(state="detached")
                if chart:
                    page.locator(".js-plotly-plot .main-svg").first.wait_for()

            def landed(title: str, key: str) -> None:
                page.get_by_role("heading", name=title, exact=True).first.wait_for()
                shown(key)

            def timed_load(go: Any, title: str, key: str, chart: bool) -> tuple[float, float]:
                t0 = time.perf_counter()
                go()
                landed(title, key)
                t_key = time.perf_counter() - t0
                done(chart)
                assert page.get_by_test_id("stException").count() == 0, title
                return t_key, time.perf_counter() - t0

            by_url: dict[str, dict[str, list[float]]] = {}
            for title, path, key, chart in PAGES:  # a new session each load: typed URL, login cookie, script run
                r = by_url[title] = {"first": [], "key": [], "done": []}
                for i in range(loads + 1):
                    k, d = timed_load(lambda p=path: page.goto(f"{url}/{p}", wait_until="commit"), title, key, chart)
                    r["first" if i == 0 else "key"].append(k)
                    if i == 0:
                        r["first"].append(d)
                    else:
                        r["done"].append(d)
            by_click: dict[str, dict[str, list[float]]] = {t: {"key": [], "done": []} for t, *_ in PAGES}
            sidebar = page.get_by_test_id("stSidebar")
            for _ in range(loads):  # the same session, page to page through the sidebar (each load a new page)
                for title, _path, key, chart in PAGES:
                    k, d = timed_load(lambda t=title: sidebar.get_by_role("link", name=t).click(), title, key, chart)
                    by_click[title]["key"].append(k)
                    by_click[title]["done"].append(d)
            try:
                site_rows = _browser_site(page, url, loads, done)
            except Exception as exc:  # noqa: BLE001 - the pages' figures above stand; say what failed here
                site_rows = [["site (pick y01 / the year)", f"not measured: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:120]}", *[""] * 9]]
            browser.close()
        for title, *_ in PAGES:
            u, c = by_url[title], by_click[title]
            p95 = max(float(np.percentile(u["done"], 95)), float(np.percentile(c["done"], 95)))
            rows.append([title.lower(), f"{u['first'][0]:.2f} / {u['first'][1]:.2f}", *_pct(u["key"]), *_pct(u["done"]),
                         *_pct(c["key"]), *_pct(c["done"]), "yes" if p95 <= 2.0 else "**no**"])
        rows += site_rows
    finally:
        proc.terminate()  # SIGTERM to `wattproof dashboard`: it stops its Streamlit server before exiting
        proc.wait(timeout=30)
        sh.rmtree(log.parent, ignore_errors=True)
    note = (f"Through the browser: `wattproof dashboard` started as a subprocess on the same store, Debian's Chromium "
            f"(headless, Playwright with `executable_path`), logged in as an auditor, {loads} loads per page after a "
            "first one. *By URL* = the page's URL typed (a new Streamlit session, re-authenticated by the login "
            "cookie: websocket, script run, render); *sidebar* = a click on the page's link in the same session, "
            "cycling through the pages so each load is a page change. *key* = until the page's heading and its key "
            "element are visible (Overview \"Readings stored\", Site \"PV against its clear-sky envelope\", Findings "
            "\"Drill down\", Claims \"OVERSTATED\", Ledger \"Verified:\" (a proof verified in the page), Reports "
            "\"Generate\"); *done* = until the script has finished (status widget gone) and, on chart pages, a Plotly "
            "chart is drawn. *first* = the first load by URL (key / done): its queries are not yet in the server's "
            "`st.cache_data` (60 s TTL); the later loads find them cached. The 2 s target is checked against the "
            "larger of the two *done* p95.")
    return rows, note


# the first metric's text differs from the argument (looked up anew each poll: a rerun may replace the element)
CHANGED = "t => { const el = document.querySelector('[data-testid=\"stMetricValue\"]'); return !!el && el.innerText !== t; }"


def _browser_site(page: Any, url: str, loads: int, done: Any) -> list[list[object]]:
    """Site page, a year site (y01): from picking it in the site box (the default is the first site) until its
    figures show and the script has finished; then from entering the whole year as the period until the same."""
    metric = page.get_by_test_id("stMetricValue").first
    pick, year = [], []
    for _ in range(loads):
        page.goto(f"{url}/site")
        page.get_by_text("PV against its clear-sky envelope").filter(visible=True).first.wait_for()
        done(True)
        before = metric.inner_text()
        box = page.get_by_role("combobox", name="Site")
        box.click()
        box.fill("y01")
        t0 = time.perf_counter()  # from the keypress that picks it
        box.press("Enter")
        page.wait_for_function(CHANGED, arg=before)
        done(True)
        pick.append(time.perf_counter() - t0)
        before = metric.inner_text()
        page.get_by_role("spinbutton", name="month, Period (UTC days) start date").click()
        page.keyboard.type("01")
        page.get_by_role("spinbutton", name="day, Period (UTC days) start date").click()
        page.keyboard.type("01")
        t0 = time.perf_counter()
        page.get_by_role("heading", name="Site", exact=True).first.click()  # the date field commits on blur
        page.wait_for_function(CHANGED, arg=before)
        done(True)
        year.append(time.perf_counter() - t0)
    return [["site (pick y01: last 30 days)", "", "", "", "", "", "", "", *_pct(pick),
             "yes" if np.percentile(pick, 95) <= 2.0 else "**no**"],
            ["site (y01, period set to the year)", "", "", "", "", "", "", "", *_pct(year),
             "yes" if np.percentile(year, 95) <= 2.0 else "**no**"]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--extra-sites", type=int, default=25)
    ap.add_argument("--loads", type=int, default=10)
    ap.add_argument("--no-results", action="store_true")
    ap.add_argument("--browser", action="store_true", help="also through Chromium (Playwright) against `wattproof "
                    "dashboard` started as a subprocess")
    ap.add_argument("--browser-loads", type=int, default=None, help="loads per page in the browser (default --loads)")
    a = ap.parse_args()
    from datetime import date

    from benchmarks._dashboard_year import (
        add_findings_year,
        add_sealed_year,
        anchor_next_hour,
        time_open_pinned,
    )
    from tests.test_dashboard_seed import seed_store
    from wattproof.embedded import Postgres

    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    pg = Postgres(root / "pg").start()
    try:
        t0 = time.perf_counter()
        store = seed_store(pg.dsn, root / "work")
        t_seed = time.perf_counter() - t0
        start_ms = 1_767_225_600_000  # 2026-01-01
        t0 = time.perf_counter()
        rows = add_rollup_year(store.dsn, a.extra_sites, a.days, start_ms)
        t_year = time.perf_counter() - t0
        year_sites = [f"y{s + 1:02d}" for s in range(a.extra_sites)]
        t0 = time.perf_counter()
        n_findings = add_findings_year(store.dsn, year_sites, a.days, start_ms)
        t_findings = time.perf_counter() - t0
        sealed = add_sealed_year(store.dsn, store.ledger_dir, year_sites, a.days, start_ms)
        n_records, t_open = time_open_pinned(store.ledger_dir, store.trust)
        last = date.fromordinal(date(2026, 1, 1).toordinal() + a.days - 1)
        month = (date(2026, 6, 1), date(2026, 6, 30)) if a.days >= 181 else (date(2026, 1, 1), last)
        newest = f"y01:{last:%Y%m%d}T230000Z"
        cases: list[Case] = [
            ("overview", "overview", {}),
            ("site (y01, 30 days)", "site", {"site_pick": "y01", "site_period": (date.fromordinal(last.toordinal() - 29),
                                                                                  last)}),
            (f"site (y01, {a.days} days)", "site", {"site_pick": "y01", "site_period": (date(2026, 1, 1), last)}),
            ("findings (all)", "findings", {}),
            (f"findings (y01, {month[0]:%b %d}–{month[1]:%b %d})", "findings",
             {"f_site": ["y01"], "f_period": month}),
            ("claims", "claims", {}),
            ("ledger (first site)", "ledger", {}),
            ("ledger (y01, newest batch)", "ledger", {"ledger_batch": newest}),
            ("reports", "reports", {})]
        next_hour = start_ms + a.days * 86_400_000

        def append() -> str:
            n = anchor_next_hour(store.ledger_dir, year_sites, next_hour)
            return f"an hourly seal appended {n} records to the ledger"

        rows_out, shown = measure(store.config, store.dsn, a.loads, cases, first_load="ledger (first site)",
                                  append=append)
        if a.browser:
            b_rows, b_note = browser_measure(store.config, store.dsn, a.browser_loads or a.loads)
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    load_after = os.getloadavg()
    body = (f"Store: the greenwash demo store (4 sites, 16 devices, 7 days of 1-minute readings through the real "
            f"pipeline; built in {t_seed:.0f} s) plus {a.extra_sites} sites × 4 devices with {a.days} days of "
            f"rollup ({rows:,} `readings_15min` rows = what {a.extra_sites * 4} devices' 1-minute readings make; "
            f"written in {t_year:.0f} s), {n_findings:,} findings for those sites (about 3 per site-day, the kinds and "
            f"severities the audit emits; {t_findings:.0f} s) and {sealed['batches']:,} sealed batches (one per site "
            f"and hour, {sealed['leaves']:,} leaves counted): real batch headers chained per site, with each window's "
            f"findings digest, anchored on the store's local ledger by `LocalLedger.anchor_many` with the operator's "
            f"signatures ({sealed['anchor_s']:.0f} s; the ledger file {sealed['ledger_mb']:.0f} MiB), and their "
            f"`batches` rows by binary COPY ({sealed['copy_s']:.0f} s). Their leaf arrays are small synthetic ones "
            "(one leaf per device, no readings behind them) while `leaf_count` is what an hour of 1-minute "
            "readings makes (≈ 300). Opening that ledger as the dashboard does (`LocalLedger.open_pinned` with "
            f"the trust's operator key, every record's signature checked): {n_records:,} records in {t_open:.1f} s. "
            f"AppTest, logged in as an auditor, {a.loads} loads per page; cold = `st.cache_data` cleared before the "
            "load (the opened ledger, an `st.cache_resource`, stays: it is opened and checked once per process), warm = the "
            "next load. *First load in a process* = both caches empty (what the first visitor of a freshly started "
            "dashboard waits on the Ledger page). *Next load after an hourly seal* = one more record per extra site "
            "anchored on the ledger file, then the page loaded: the dashboard reads and checks only the appended "
            "records, after confirming by SHA-256 that the bytes it had checked are unchanged (it used to open and "
            "check the whole file again on any change, as on a first load). Seconds. Load average (1 min) "
            f"{load_before[0]:.1f} before, {load_after[0]:.1f} after.\n\n"
            + table(["page", "cold p50", "cold p95", "warm p50", "warm p95", "cold p95 ≤ 2 s"], rows_out)
            + "\n\n")
    if shown:
        body += ("What the pages showed in error/warning boxes: " + "; ".join(f"{k}: “{v}”" for k, v in shown.items())
                 + ".\n\n")
    if a.browser:
        body += (table(["page (browser)", "first by URL: key / done", "by URL key p50", "key p95", "done p50", "done p95",
                        "sidebar key p50", "key p95", "done p50", "done p95", "done p95 ≤ 2 s"], b_rows)
                 + f"\n\n{b_note} The Site rows below the six pages: on a fresh Site page (first site, its last 30 "
                   "days), y01 picked in the site box (its last 30 days), then the period's start set to 1 January "
                   "(the whole year): from the keypress until the figures change and the script has finished.\n\n")
    body += ("The Claims page's data do not grow with the store: it reads the latest verdict sets (one per "
             "organisation, period and claim file) and the hourly rollup of the claim's sites over the claim's "
             "period only. The machine (2 cores) is shared with other work while this runs: figures vary between runs.")
    print(body)
    if not a.no_results:
        write_section("bench_dashboard", "Dashboard", body)


if __name__ == "__main__":
    main()
