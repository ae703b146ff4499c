"""Serving the dashboard: ``streamlit run dashboard/app.py`` as a child process, as a user starts it.

Owns: ``Server`` (start on an address and port, wait until Streamlit's health endpoint answers, stop)
used by ``wattproof dashboard`` and ``wattproof demo``'s finale. The DSN and the config path reach the
app through the environment (``WATTPROOF_DB``, ``WATTPROOF_DASHBOARD_CONFIG``), not the command line,
so a password in the DSN does not show in ``ps``. Must not: read the store.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from dashboard.auth import load_config
from dashboard.common import ENV_CONFIG, ENV_DB
from device.errors import WattproofError

APP = Path(__file__).resolve().parent / "app.py"


class DashboardServerError(WattproofError, RuntimeError):
    """The dashboard did not come up (the message carries the end of its output)."""


def _die_with_parent() -> None:
    """In the child, before exec: Linux sends it SIGTERM when the process that started it exits, however
    that exits (so a killed ``wattproof dashboard`` or demo leaves no server behind)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: stop() still ends it on a clean exit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, config: Path, dsn: str | None, port: int = 8501, address: str = "127.0.0.1",
                 log: Path | None = None) -> None:
        self.config = Path(config).resolve()
        cfg = load_config(self.config)  # one clear error before anything starts
        self.dsn = dsn or cfg.db
        if not self.dsn:
            raise DashboardServerError("no database: pass --db DSN or set `db` in the dashboard config")
        if not cfg.users:
            raise DashboardServerError(f"{self.config}: no users: add one with `wattproof dashboard users add NAME "
                                       f"--role officer --config {self.config}`")
        self.port, self.address, self.log = port, address, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        host = "localhost" if self.address in ("127.0.0.1", "0.0.0.0") else self.address
        return f"http://{host}:{self.port}"

    def start(self, timeout_s: float = 60.0) -> Server:
        env = {**os.environ, ENV_CONFIG: str(self.config), ENV_DB: self.dsn or ""}
        cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(self.port),
               "--server.address", self.address, "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer", "--client.showSidebarNavigation", "false",
               "--global.developmentMode", "false"]  # the sidebar lists only what the role may see (app.py)
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 — owned by the child
        self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                     cwd=str(APP.parent.parent), start_new_session=True,
                                     preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DashboardServerError(f"streamlit exited with status {self.proc.returncode}"
                                           + (f" (log: {self.log})" if self.log else ""))
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise DashboardServerError(f"the dashboard did not answer on port {self.port} within {timeout_s:.0f} s")

    def wait(self) -> int:
        assert self.proc is not None
        return self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
