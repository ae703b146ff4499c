"""agent.toml as a person writes it: every refusal names the file, the key and what was expected; the
example in docs/agent.md is valid; `wattproof agent --check` through the real CLI; the agent's import
path stays light enough for a Pi (no numpy, numba, statsmodels, pandas, psycopg or Fabric)."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from device.agent.clock import kernel_clock
from device.agent.config import ConfigError, load_config, parse_config
from device.identity import generate_key, write_private_key

ROOT = Path(__file__).parent.parent
BASE: dict[str, Any] = {"site": "s1", "device": "s1-p1", "key_file": "keys/s1-p1.key", "broker": "mqtt://127.0.0.1:1883",
                        "meter": {"driver": "dsmr", "port": "/dev/ttyUSB0"}}


def doc_examples() -> dict[str, str]:
    """The ```toml blocks of docs/agent.md that start with a `# <name>.toml` comment."""
    text = (ROOT / "docs" / "agent.md").read_text()
    return {m[1]: m[0] for m in re.findall(r"```toml\n(# (\S+)\.toml[^\n]*\n.*?)```", text, re.S)}


@pytest.mark.parametrize("name", sorted(doc_examples()))
def test_every_example_configuration_in_the_docs_is_valid(name: str) -> None:
    parse_config(tomllib.loads(doc_examples()[name]), f"docs/agent.md ({name})", check_files=False)


MUTATIONS = {
    "meter_baudrate_not_a_number": (lambda d: d["meter"].update(baudrate="fast"),
                                    "key meter.baudrate: expected an integer, got a string"),
    "meter_port_missing": (lambda d: d["meter"].pop("port"), "key meter.port: missing: this key is required"),
    "meter_unknown_key": (lambda d: d["meter"].update(prot="/dev/ttyUSB0"),
                          "key meter.prot: unknown key (expected one of: driver, port, version, baudrate, max_age_s)"),
    "meter_unknown_driver": (lambda d: d["meter"].update(driver="mbus"),
                             "key meter.driver: expected one of dsmr, modbus-tcp, modbus-rtu, s0, got 'mbus'"),
    "dsmr_version_unknown": (lambda d: d["meter"].update(version="2.2"),
                             "key meter.version: expected one of 4, 5, e-mucs, got '2.2'"),
    "device_id_bad": (lambda d: d.update(device="../etc"), "key device: expected an id of 1-64 characters"),
    "interval_too_short": (lambda d: d.update(interval_s=0.001), "key interval_s: expected a number >= 0.05"),
    "channel_to_unknown_register": (lambda d: d.update(channels={"pv": "gas"}),
                                    "key channels.pv: expected a register of the dsmr driver (import, export), got 'gas'"),
    "channel_unknown": (lambda d: d.update(channels={"heat": "import"}),
                        "key channels.heat: expected a wire channel (import, export, pv)"),
    "frame_too_large": (lambda d: d.update(frame_samples=4000), "key frame_samples: expected at most 2048"),
    "broker_not_mqtt": (lambda d: d.update(broker="http://h"), "key broker: broker URL 'http://h' must look like"),
    "tls_without_mqtts": (lambda d: d.update(tls={"ca": "ca.pem"}), "key tls: a CA or client certificate needs an mqtts://"),
    "clock_flag_not_bool": (lambda d: d.update(clock={"require_sync": "yes"}),
                            "key clock.require_sync: expected true or false, got a string"),
    "top_level_unknown": (lambda d: d.update(sampling=1), "key sampling: unknown key (expected one of: site, device"),
    "s0_without_impulse_constant": (lambda d: d.update(meter={"driver": "s0", "gpio_pin": 17, "state_file": "c.json"}),
                                    "key meter.impulses_per_kwh: missing"),
    "modbus_map_missing": (lambda d: d.update(meter={"driver": "modbus-tcp", "host": "h"}), "key meter.map: missing"),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_bad_configuration_is_refused_naming_file_key_and_expectation(case: str, tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    mutate, message = MUTATIONS[case]
    mutate(data)
    path = tmp_path / "agent.toml"
    path.write_text(_toml(data))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: "), err.value
    assert message in str(err.value), err.value


def _toml(data: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, dict):
            return "{" + ", ".join(f'"{k}" = {value(x)}' for k, x in v.items()) + "}"
        return repr(v)
    return "".join(f"{k} = {value(v)}\n" for k, v in data.items())


def test_relative_paths_are_taken_relative_to_the_configuration_file(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "agent.toml"
    path.parent.mkdir()
    path.write_text(_toml({**BASE, "spool": "spool.sqlite"}))
    cfg = load_config(path)
    assert cfg.key_file == str(path.parent / "keys" / "s1-p1.key") and cfg.spool == str(path.parent / "spool.sqlite")


def test_not_toml_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("site = \n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: not valid TOML"):
        load_config(path)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wattproof", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_agent_check_through_the_cli_accepts_a_valid_file_and_refuses_a_bad_one_in_one_line(tmp_path: Path) -> None:
    write_private_key(tmp_path / "keys" / "s1-p1.key", generate_key())
    good = tmp_path / "agent.toml"
    good.write_text(_toml(BASE))
    res = cli("agent", "--config", str(good), "--check")
    assert res.returncode == 0 and "ok (dsmr meter, device s1-p1 at site s1)" in res.stdout, res.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(_toml({**BASE, "interval_s": "often"}))
    res = cli("agent", "--config", str(bad))
    assert res.returncode == 1 and res.stderr.strip() == f"error: {bad}: key interval_s: expected a number, got a string"
    nokey = tmp_path / "nokey.toml"
    nokey.write_text(_toml({**BASE, "key_file": "missing.key"}))
    res = cli("agent", "--config", str(nokey), "--check")
    assert res.returncode == 1 and "missing.key: cannot read key file" in res.stderr and "Traceback" not in res.stderr


HEAVY = ("numpy", "numba", "statsmodels", "pandas", "psycopg", "grpc", "ledger.fabric", "hfc", "pvlib", "scipy",
         "firmware_sim", "ingest", "audit", "ledger")


def test_agent_import_path_pulls_in_none_of_numpy_numba_statsmodels_pandas_psycopg_or_fabric() -> None:
    code = ("import sys\n"
            "import wattproof.commands.agent_cmd, device.agent.runner, device.agent.config, device.agent.dsmr\n"
            "import device.agent.modbus, device.agent.s0, device.agent.clock, device.agent.metrics\n"
            "from device.agent.config import load_config\n"
            f"heavy = {HEAVY!r}\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_kernel_clock_state_comes_from_adjtimex() -> None:
    state = kernel_clock()
    assert state.source == "adjtimex" and state.max_error_us >= 0 and state.est_error_us >= 0
    if state.max_error_us >= 16_000_000:
        assert not state.synchronized  # timedatectl's NTPSynchronized rule


def test_no_sample_is_taken_while_the_clock_is_not_synchronized_and_the_withheld_samples_are_counted(
        tmp_path: Path) -> None:
    from gpiozero.pins.mock import MockFactory

    from device.agent.clock import ClockState
    from device.agent.runner import Agent
    from device.agent.s0 import S0Driver

    cfg = parse_config({**BASE, "spool": str(tmp_path / "spool.sqlite"), "metrics_port": 0,
                        "clock": {"require_sync": True, "check_every_s": 1},
                        "meter": {"driver": "s0", "gpio_pin": 4, "impulses_per_kwh": 1000,
                                  "state_file": str(tmp_path / "s0.json")}})
    states = iter([ClockState(False, 16_000_000, 16_000_000, "adjtimex"), ClockState(True, 20_000, 100, "adjtimex")])
    factory = MockFactory()
    agent = Agent(cfg, S0Driver(cfg.meter, pin_factory=factory), generate_key(), clock=lambda: next(states))  # type: ignore[arg-type]
    agent.driver.open()
    try:
        agent.tick()
        assert agent.metrics.withheld.labels("clock_unsynchronized")._value.get() == 1  # noqa: SLF001
        assert agent.pending == [] and agent.metrics.clock_synced._value.get() == 0  # noqa: SLF001
        agent._clock_due = 0  # noqa: SLF001 - the next check is due
        agent.tick()
        assert [r.energy_wh for r in agent.pending] == [0] and agent.metrics.clock_synced._value.get() == 1  # noqa: SLF001
    finally:
        agent.driver.close()
        agent.spool.close()
        factory.reset()
