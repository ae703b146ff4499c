"""wattproof as an installed package, away from the checkout (issue 15, "An installable package").

The wheel is built as a user would build it (sdist, then the wheel from the sdist, with setup.py building
ledger/native through setuptools-rust), installed into fresh virtualenvs in a temp dir, and run from
there with the working directory outside the repository: the demo with the ``demo`` extra; the command
line and the device side with the base install alone; the meter agent with ``agent`` alone (no numpy).
Dependencies come at requirements.lock's versions (``uv pip install -c``, from uv's cache once warm).
Also: every third-party module the packages import is declared, and the lock pins every declared
dependency.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["wattproof", "device", "firmware_sim", "ingest", "audit", "ledger", "dashboard"]
UV = [sys.executable, "-m", "uv"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def run(cmd: list[str | Path], cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))}: exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that points back into the checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "WATTPROOF_NATIVE_LIB") and not k.startswith("PYTEST")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from the sdist of the checkout; the Rust library must be in it (not optional here)."""
    out = tmp_path_factory.mktemp("dist")
    env = clean_env(CARGO_TARGET_DIR=str(ROOT / ".cache" / "native-wheel"), CARGO_BUILD_JOBS="1",
                    WATTPROOF_REQUIRE_NATIVE="1")
    t0 = time.perf_counter()
    run([*UV, "build", "--out-dir", out, ROOT], cwd=out, env=env, timeout=1200)
    print(f"wheel built in {time.perf_counter() - t0:.0f} s")
    (whl,) = out.glob("wattproof-*.whl")
    return whl


def venv_with(tmp: Path, wheel: Path, extras: str) -> Path:
    """A fresh virtualenv in ``tmp`` with the wheel (and ``extras``) at the lock's versions; its python."""
    run([*UV, "venv", "-q", "--python", sys.executable, tmp / "venv"], cwd=tmp)
    python = tmp / "venv" / "bin" / "python"
    spec = f"{wheel}[{extras}]" if extras else str(wheel)
    t0 = time.perf_counter()
    run([*UV, "pip", "install", "-q", "--python", python, spec, "-c", ROOT / "requirements.lock"], cwd=tmp,
        env=clean_env())
    print(f"venv with [{extras}] installed in {time.perf_counter() - t0:.0f} s")
    return python


@pytest.fixture()
def away(tmp_path: Path) -> Iterator[Path]:
    """A working directory outside the checkout."""
    assert ROOT not in tmp_path.parents
    yield tmp_path


def test_the_wheel_carries_the_native_library_and_the_package_data(wheel: Path) -> None:
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    assert any(re.fullmatch(r"ledger/_native\..*\.so", n) for n in names), "no ledger/_native*.so in the wheel"
    for data in ["firmware_sim/scenarios_data/greenwash.yaml", "firmware_sim/scenarios_data/claims/greenwash.claims.yaml",
                 "firmware_sim/scenarios_data/claims/intensity.csv", "ingest/migrations/0001.initial.sql",
                 "ledger/fabric/builder/bin/build"]:
        assert data in names, f"{data} is not in the wheel"
    assert not [n for n in names if n.startswith(("ledger/native/", "ledger/chaincode/", "tests/"))]


def test_installed_wheel_runs_the_demo_away_from_the_checkout(wheel: Path, away: Path) -> None:
    python = venv_with(away, wheel, "demo")
    probe = run([python, "-c", "import sys, wattproof, ledger.nativelib as n, firmware_sim.scenarios as s; "
                 "print(wattproof.__file__); print(n.library_path()); print(n.LIB is not None); "
                 "print(s.bundled_path('greenwash.yaml')); print(*sys.path, sep='\\n')"], cwd=away, env=clean_env())
    lines = probe.stdout.splitlines()
    site = str(away / "venv")
    assert lines[0].startswith(site), f"wattproof imported from {lines[0]}, not the virtualenv"
    assert lines[1].startswith(site) and "/ledger/_native." in lines[1] and lines[2] == "True", lines[:3]
    assert lines[3].startswith(site), lines[3]
    assert not [p for p in lines[4:] if p.startswith(str(ROOT))], "the checkout is on sys.path"
    builder = run([python, "-c", "from importlib import resources; print(resources.files('ledger.fabric') / 'builder')"],
                  cwd=away, env=clean_env()).stdout.strip()
    assert builder.startswith(site) and all(os.access(Path(builder) / "bin" / b, os.X_OK)
                                            for b in ("detect", "build", "release")), "Fabric's external builder"
    t0 = time.perf_counter()
    res = run([away / "venv" / "bin" / "wattproof", "demo", "--no-dashboard"], cwd=away,
              env=clean_env(WATTPROOF_HOME=str(away / "home"), COLUMNS="200"))
    print(f"demo from the wheel: {time.perf_counter() - t0:.0f} s")
    out = res.stdout
    assert "matches the ground truth" in out
    assert "verify against the pinned trust: verified" in out and "tamper check" in out
    assert "as the scenario expects" in out and "stdlib recheck.py says OK" in out


def test_base_install_lists_every_command_and_runs_the_device_side_without_the_servers(wheel: Path,
                                                                                        away: Path) -> None:
    python = venv_with(away, wheel, "")
    wattproof = away / "venv" / "bin" / "wattproof"
    listing = run([wattproof, "--help"], cwd=away, env=clean_env(COLUMNS="200")).stdout
    for name in ["demo", "device", "agent", "simulate", "ingest", "verify", "claims", "dashboard"]:
        assert f" {name} " in listing, f"`wattproof --help` does not list {name}"
    assert "provision" in run([wattproof, "device", "--help"], cwd=away, env=clean_env(COLUMNS="200")).stdout
    run([python, "-c", "import device.wire, device.identity, device.ed25519, device.spool, device.publisher, "
         "wattproof.commands.device_cmd"], cwd=away, env=clean_env())
    for heavy in ["numpy", "pandas", "psycopg", "numba", "grpc"]:
        res = subprocess.run([python, "-c", f"import {heavy}"], cwd=away, capture_output=True, text=True)
        assert res.returncode != 0, f"{heavy} is importable in the base install"
    # a command whose extra is missing says which extra, in one line
    res = subprocess.run([wattproof, "ingest", "--help"], cwd=away, env=clean_env(), capture_output=True, text=True)
    assert res.returncode == 1 and "wattproof[server]" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_agent_install_runs_the_agent_without_numpy(wheel: Path, away: Path) -> None:
    python = venv_with(away, wheel, "agent")
    run([away / "venv" / "bin" / "wattproof", "agent", "--help"], cwd=away, env=clean_env(COLUMNS="200"))
    code = ("import importlib, pkgutil, sys, device.agent as a\n"
            "for m in pkgutil.walk_packages(a.__path__, 'device.agent.'): importlib.import_module(m.name)\n"
            "import wattproof.commands.agent_cmd\n"
            "heavy = sorted({'numpy', 'pandas', 'numba', 'statsmodels', 'psycopg', 'grpc'} & set(sys.modules))\n"
            "assert not heavy, heavy\n"
            "try:\n    import numpy\nexcept ImportError:\n    pass\nelse:\n    sys.exit('numpy is installed')\n")
    run([python, "-c", code], cwd=away, env=clean_env())


# --- declarations, without building anything ---------------------------------------------------------------

def _declared(extras: list[str]) -> list[Requirement]:
    """The base dependencies and those of ``extras``, following ``wattproof[...]`` self-references."""
    project = PYPROJECT["project"]
    reqs, seen, todo = [Requirement(r) for r in project["dependencies"]], set(), list(extras)
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for r in map(Requirement, project["optional-dependencies"][extra]):
            if r.name == "wattproof":
                todo += sorted(r.extras)
            else:
                reqs.append(r)
    return reqs


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_every_imported_third_party_module_is_declared() -> None:
    declared = {_norm(r.name) for r in _declared(sorted(set(PYPROJECT["project"]["optional-dependencies"])
                                                        - {"caltrack-peer", "test", "lint"}))}
    owners = importlib.metadata.packages_distributions()
    missing = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if "scenarios_data" in path.parts:
                continue  # make_inputs.py: a development script beside the data it writes
            for mod in _imports(path) - set(sys.stdlib_module_names) - set(PACKAGES) - {"__future__"}:
                dists = {_norm(d) for d in owners.get(mod, [])}
                if not dists & declared:
                    missing.append(f"{path.relative_to(ROOT)}: {mod} (from {sorted(dists) or 'nothing installed'})")
    assert not missing, "imported but not declared in pyproject.toml:\n" + "\n".join(missing)


def _pins(text: str) -> dict[str, str]:
    return {_norm(n): v for n, v in re.findall(r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)==([^\s;\\]+)", text, re.M)}


def _stale(text: str, extras: list[str]) -> list[str]:
    """The declared dependencies (base and ``extras``) a lock does not pin at a version they allow."""
    pins = _pins(text)
    return [f"{r} (lock: {pins.get(_norm(r.name), 'absent')})" for r in _declared(extras)
            if r.marker is None or r.marker.evaluate()
            if _norm(r.name) not in pins or not r.specifier.contains(pins[_norm(r.name)], prereleases=True)]


def test_the_lock_pins_every_declared_dependency_at_a_version_it_allows() -> None:
    text = (ROOT / "requirements.lock").read_text()
    assert "--generate-hashes" in text.splitlines()[1] and "--hash=sha256:" in text
    stale = _stale(text, ["test", "lint"])
    assert not stale, ("requirements.lock is not current; regenerate it with the command at its top:\n"
                       + "\n".join(stale))
    # and the check refuses a lock that is behind: one pin moved below what pyproject.toml asks, one removed
    first = next(r for r in _declared([]) if r.specifier and _norm(r.name) in _pins(text))
    behind = re.sub(rf"(?im)^{re.escape(first.name)}==\S+", f"{first.name}==0.0.1", text, count=1)
    gone = re.sub(r"(?im)^paho-mqtt==\S+", "", text, count=1)
    assert any(first.name in x for x in _stale(behind, ["test", "lint"]))
    assert any("paho-mqtt" in x for x in _stale(gone, ["test", "lint"]))


def test_the_images_lock_has_the_tested_versions_of_the_server_demo_and_dashboard_extras() -> None:
    """docker/requirements.image.lock (what the app image installs) pins what those extras need, each at exactly
    the version requirements.lock (what the tests ran with) pins."""
    image = (ROOT / "docker" / "requirements.image.lock").read_text()
    assert "--generate-hashes" in image.splitlines()[1] and "-c requirements.lock" in image.splitlines()[1]
    assert not _stale(image, ["server", "demo", "dashboard"])
    tested = _pins((ROOT / "requirements.lock").read_text())
    differ = {k: (v, tested.get(k)) for k, v in _pins(image).items() if tested.get(k) != v}
    assert not differ, f"the image would run other versions than the tests: {differ}"
