"""docker/compose.yaml, run for real: images built here from Debian packages, the whole deployment brought
up on a project of its own, simulated devices driven through the TLS broker into two ingest replicas (one
killed mid-stream), batches anchored on the containerised Fabric network, `wattproof verify` counting
every reading; everything torn down afterwards, also on failure.

Needs a Docker engine: docker/start-dockerd.sh starts Debian's dockerd (vfs, --iptables=false) as root
when none answers. The test fails, never skips, where docker cannot run. Images are cached between runs
(tagged by a hash of their inputs, docker/build-images.sh): the first run builds them (~10 min here), a
cached run costs the deployment itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
WATTPROOF = Path(os.environ.get("WATTPROOF_CLI", ROOT / ".venv" / "bin" / "wattproof"))
SITES, DAYS, SPEED = 2, 0.5, 2400.0   # 8 devices, 7,200 readings published over ~18 s
DEVICES = [f"s{i:02d}-{role}" for i in range(1, SITES + 1) for role in ("main", "sub1", "sub2", "pv")]

pytestmark = pytest.mark.slow


def run(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 600, check: bool = True,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout,
                         input=input)
    if check and res.returncode != 0:
        pytest.fail(f"{' '.join(args[:6])}… exited {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def until(what: str, check, timeout: float, every: float = 1.0):  # type: ignore[no-untyped-def]
    """Poll ``check()`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@pytest.fixture(scope="module")
def docker_engine() -> Iterator[None]:
    if shutil.which("docker") is None and os.geteuid() != 0:
        pytest.fail("docker is not installed and this is not root: install docker.io (see docker/README.md)")
    res = run(["bash", str(DOCKER / "start-dockerd.sh")], timeout=600, check=False)
    if res.returncode != 0:
        pytest.fail(f"no Docker engine: {res.stderr.strip()[-2000:]}")
    started = res.stdout.strip().removeprefix("started ").strip()
    yield
    if started.isdigit():   # we started it: stop it again (images stay cached on disk)
        os.kill(int(started), 15)
        until("dockerd to stop", lambda: not Path(f"/proc/{started}").exists(), 60, 0.5)


@pytest.fixture(scope="module")
def images(docker_engine: None) -> dict[str, str]:
    t0 = time.monotonic()
    res = run(["bash", str(DOCKER / "build-images.sh")], timeout=3600)
    print(f"\nimages ready in {time.monotonic() - t0:.0f} s")
    return dict(line.split("=", 1) for line in res.stdout.split() if "=" in line)


class Deployment:
    def __init__(self, project: str, env: dict[str, str], work: Path) -> None:
        self.project, self.env, self.work = project, env, work
        self.compose = [*compose_cli(), "-p", project, "-f", str(DOCKER / "compose.yaml")]

    def __call__(self, *args: str, timeout: float = 600, check: bool = True,
                 input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run([*self.compose, *args], env=self.env, timeout=timeout, check=check, input=input)

    def wattproof(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A wattproof command in the anchor service's container (store, Fabric volume); not a new
        container: with the vfs driver each costs a copy of the image (~1 min here)."""
        return self("exec", "-T", "anchor", "wattproof", *args, timeout=timeout, check=check)

    def sql(self, query: str) -> str:
        return self("exec", "-T", "timescaledb", "psql", "-U", "wattproof", "-d", "wattproof",
                    "-At", "-c", query).stdout.strip()

    def containers(self, service: str) -> list[str]:
        return self("ps", "-q", service).stdout.split()


def compose_cli() -> list[str]:
    plugin = ROOT / ".cache" / "compose" / "docker-compose"
    if not plugin.exists():
        run(["bash", str(DOCKER / "build-compose-cli.sh")], timeout=1200)
    return [str(plugin)]


def make_pki(work: Path) -> dict[str, str]:
    """The broker's PKI and config with `wattproof pki`: CA, server certificate for host "mosquitto", one
    client certificate per simulated device and one for ingest; the ACL from `pki broker-config`."""
    pki, conf = work / "pki", work / "mosquitto"
    conf.mkdir()
    wp = [str(WATTPROOF), "pki"]
    run([*wp, "init", str(pki)])
    run([*wp, "server", str(pki), "--host", "mosquitto", "--host", "localhost"])
    for name in ["ingest", *DEVICES]:
        run([*wp, "client", str(pki), name])
    run([*wp, "broker-config", str(pki), "--out", str(conf / "mosquitto.conf"), "--pki-path", "/mosquitto/pki",
         "--acl-path", "/mosquitto/config/mosquitto.acl", "--data-dir", "/mosquitto/data"])
    # the containers run as unprivileged users (wattproof: nobody; Mosquitto drops root after start):
    # this throw-away PKI's keys are made readable to them (a real one is chowned to those users)
    for key in [pki / "server.key", *(pki / "clients").glob("*.key")]:
        key.chmod(0o644)
    for d in (pki, pki / "clients"):
        d.chmod(0o755)
    return {"WATTPROOF_PKI_DIR": str(pki), "WATTPROOF_BROKER_CONFIG": str(conf)}


@pytest.fixture(scope="module")
def deployment(images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    work = tmp_path_factory.mktemp("compose")
    dashboard = work / "dashboard.toml"
    run([str(WATTPROOF), "dashboard", "init", "--config", str(dashboard), "--ledger", "fabric",
         "--db", "postgresql://wattproof:compose-test@timescaledb:5432/wattproof",
         "--ledger-dir", "/etc/wattproof/fabric/profile.json"])
    run([str(WATTPROOF), "dashboard", "users", "add", "officer", "--role", "officer", "--config", str(dashboard)],
        input="compose-test-password\n")
    dashboard.chmod(0o644)  # read by the container's user (nobody)
    env = {**images, **make_pki(work), "POSTGRES_PASSWORD": "compose-test",
           "WATTPROOF_MQTT_PUBLISH": "127.0.0.1:", "WATTPROOF_PG_PUBLISH": "127.0.0.1:",
           "WATTPROOF_DASHBOARD_PUBLISH": "127.0.0.1:", "WATTPROOF_ANCHOR_EVERY": "5",
           "WATTPROOF_DASHBOARD_CONFIG": str(dashboard), "INGEST_WORKERS": "2"}
    dep = Deployment(f"wattproof-test-{os.getpid()}", env, work)
    t0 = time.monotonic()
    try:
        up = dep("up", "-d", "--no-build", "--pull", "never", "--wait", "mosquitto", "timescaledb", "ingest",
                 "anchor", "audit", "dashboard", timeout=900, check=False)
        if up.returncode != 0:
            logs = dep("logs", "--no-color", "--tail", "30", timeout=120, check=False).stdout
            pytest.fail(f"compose up failed:\n{up.stderr[-3000:]}\n--- logs ---\n{logs[-12000:]}")
        print(f"deployment up in {time.monotonic() - t0:.0f} s")
        yield dep
    finally:
        t1 = time.monotonic()
        dep("down", "-v", "--remove-orphans", "--timeout", "5", timeout=600, check=False)
        print(f"deployment down in {time.monotonic() - t1:.0f} s")


def test_devices_through_the_tls_broker_are_stored_once_anchored_on_fabric_and_verified_with_an_ingest_killed(
        deployment: Deployment) -> None:
    dep = deployment
    ingest = dep.containers("ingest")
    assert len(ingest) == 2, "two ingest replicas run"
    sim = subprocess.Popen(
        [*dep.compose, "--profile", "demo", "run", "--rm", "--no-deps", "simulator", "--sites", str(SITES),
         "--days", str(DAYS), "--speed", str(SPEED), "--seed", "11"],
        env={**os.environ, **dep.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stored = lambda: int(dep.sql("SELECT count(*) FROM readings") or 0)  # noqa: E731
        until("the first readings to be stored", lambda: stored() > 200, 180)
        run(["docker", "kill", ingest[0]])   # mid-stream: its unacknowledged messages stay in its session
        at_kill = stored()
        run(["docker", "start", ingest[0]])  # as an orchestrator would: same container, same client id
        out, err = sim.communicate(timeout=600)
    finally:
        if sim.poll() is None:
            sim.kill()
    assert sim.returncode == 0, f"simulator failed:\n{out[-2000:]}\n{err[-3000:]}"
    published = int(out.split("published ", 1)[1].split()[0])
    assert at_kill < published, "the kill happened mid-stream"
    until(f"all {published} readings to be stored", lambda: stored() == published, 180)
    assert dep.sql("SELECT count(*) FROM (SELECT DISTINCT device_id, ts, channel FROM readings) d") == str(published)
    assert dep.sql("SELECT count(*) FROM quarantine") == "0"
    # every worker took part, through its own client id
    for cid in ingest:
        logs = run(["docker", "logs", cid], check=False)
        assert "ingesting from mqtts://" in logs.stderr + logs.stdout

    # the anchor service (every 5 s) seals every complete window on Fabric
    def anchored() -> int:
        return int(dep.sql("SELECT coalesce(sum(leaf_count), 0) FROM batches WHERE receipt->>'backend' = 'fabric'") or 0)
    until("the anchor service to seal the complete windows", lambda: anchored() > published // 2, 300, 2)
    dep.wattproof("trust", "export", "--out", "/var/lib/wattproof/trust.json", "--ledger", "fabric",
                  "--ledger-dir", "/etc/wattproof/fabric")
    res = dep.wattproof("verify", "--ledger", "fabric", "--ledger-dir", "/etc/wattproof/fabric",
                        "--trust", "/var/lib/wattproof/trust.json", "--json", check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["verdict"] and report["pinned"] and not report["problems"] and not report["store_problems"]
    sealed = int(dep.sql("SELECT coalesce(sum(leaf_count), 0) FROM batches"))
    assert report["batches"] == report["intact"] == int(dep.sql("SELECT count(*) FROM batches"))
    assert sealed == anchored() and report["readings"] == published


def test_dashboard_service_answers(deployment: Deployment) -> None:
    probe = ("import urllib.request as u; "
             "print(u.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=5).read().decode())")
    got = until("the dashboard to answer", lambda: deployment("exec", "-T", "dashboard", "python3", "-c", probe,
                                                             check=False).stdout.strip(), 120, 2)
    assert got == "ok"
