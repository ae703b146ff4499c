"""`wattproof simulate`: run a simulated meter fleet against an MQTT broker.

A run continues where the previous one left off (per device, from its spool): it never reuses a
seq and never sends a reading twice; see ``device.spool`` and ``firmware_sim.fleet``."""

from __future__ import annotations

import itertools
from pathlib import Path

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from device.identity import (
    FileRegistry,
    generate_key,
    key_path,
    read_private_key,
    write_private_key,
)
from firmware_sim.scenarios import Scenario, load_scenario
from wattproof import config
from wattproof.commands.pki_cmd import MQTT_CA, MQTT_CERT, MQTT_KEY, MQTT_PASSWORD, MQTT_USERNAME


def device_keys(sites: list[str], devices: list[str], keys_dir: Path | None) -> dict[str, Ed25519PrivateKey]:
    """Each simulated device's key from its key file; a new key (0600) where there is none."""
    base = keys_dir or config.keys_dir()
    keys = {}
    for site, device in zip(sites, devices, strict=True):
        path = key_path(base, site, device)
        if path.exists():
            keys[device] = read_private_key(path)  # unreadable or not Ed25519: one clear error
        else:
            keys[device] = generate_key()
            write_private_key(path, keys[device])
    return keys


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate_cmd(
        broker: str = typer.Option(..., "--broker", envvar="WATTPROOF_BROKER", help="mqtt://host:port, mqtt://user:password@host:port or mqtts://host:port"),
        sites: int = typer.Option(3, "--sites", min=1, help="Number of sites (overridden by the scenario)."),
        days: float = typer.Option(7.0, "--days", min=0.01, help="Simulated period in days."),
        scenario: Path | None = typer.Option(None, "--scenario", help="Scenario YAML (faults to inject)."),
        seed: int | None = typer.Option(None, "--seed", help="Random seed (same seed, same readings)."),
        speed: float | None = typer.Option(None, "--speed", min=0.001, help="Real time × speed (60 = a minute per second)."),
        backfill: bool = typer.Option(False, "--backfill", help="Publish as fast as the broker acknowledges (default)."),
        out: Path | None = typer.Option(None, "--out", help="Directory for truth.jsonl, weather.csv, sites.json."),
        db: str | None = typer.Option(None, "--db", envvar="WATTPROOF_DB", help="Register the devices in this database."),
        keys_dir: Path | None = typer.Option(None, "--keys-dir", help="Device keys (default: data dir); "
                                             "missing keys are generated (0600)."),
        mqtt_ca: Path | None = MQTT_CA, mqtt_cert: Path | None = MQTT_CERT, mqtt_key: Path | None = MQTT_KEY,
        mqtt_username: str | None = MQTT_USERNAME, mqtt_password: str | None = MQTT_PASSWORD,
    ) -> None:
        """Simulate sites (main meter, sub-meters, PV) and publish signed frames over MQTT 5."""
        # imported here: the load and PV models pull in pvlib and pandas (~1 s, ~100 MB), which the
        # other commands — `wattproof ingest` above all — do not need
        from device.publisher import broker_address
        from firmware_sim.fleet import (
            FleetPublisher,
            frames_before,
            write_sites,
            write_truth,
            write_weather,
        )
        from firmware_sim.sim import simulate

        if speed is not None and backfill:
            raise typer.BadParameter("--speed and --backfill exclude each other")
        # a malformed URL or a missing certificate file fails here, in one line, before any work
        addr = broker_address(broker, ca=mqtt_ca, cert=mqtt_cert, key=mqtt_key, username=mqtt_username,
                              password=mqtt_password)
        sc: Scenario | None = load_scenario(scenario) if scenario else None
        if sc is not None and (seed is not None or sites != 3 or days != 7.0):
            import msgspec

            sc = msgspec.structs.replace(sc, seed=seed if seed is not None else sc.seed,
                                         sites=sites if sites != 3 else sc.sites, days=days if days != 7.0 else sc.days)
        out_dir = out or (config.data_dir() / "runs" / (sc.name if sc else "default"))
        out_dir.mkdir(parents=True, exist_ok=True)
        spool_dir = config.data_dir() / "spool"
        run0 = simulate(sites=sites, days=days, seed=seed if seed is not None else 42, scenario=sc)
        keys = device_keys([d.record.site for d in run0.devices], [d.device for d in run0.devices], keys_dir)
        fleet = FleetPublisher(addr, spool_dir, run0.devices)
        # Continue where each device's spool left off (DESIGN invariant 8): frames whose readings an
        # earlier run already spooled are skipped, and the first frame sent carries the persisted
        # next_seq (after a kill: the reserved mark, so a gap, never a reuse). What the earlier run
        # left unacknowledged in the spool is sent first, unchanged.
        marks = fleet.resume_marks()
        skip = frames_before(run0, marks)
        next_seqs = fleet.next_seqs()
        run = simulate(sites=sites, days=days, seed=seed if seed is not None else 42, scenario=sc,
                       start_ms=run0.start_ms, keys=keys,
                       seq_start={d: next_seqs[d] - skip.get(d, (0, 0))[0] for d in next_seqs})
        fleet.devices = run.devices
        registry = FileRegistry(config.registry_path())
        known = registry.load()
        for dev in run.devices:
            known[dev.device] = dev.record
        registry.save(known)
        if db:
            from ingest.registry import register_device

            for dev in run.devices:
                register_device(db, dev.record)
        write_truth(run, out_dir / "truth.jsonl")
        write_weather(run, out_dir / "weather.csv")
        write_sites(run, out_dir / "sites.json")
        skipped = sum(r for _, r in skip.values())
        messages = (m for m in run.messages() if m.ts_ms > marks.get(m.device, -1))
        first = next(messages, None)
        fleet.start()
        try:
            with Progress(TextColumn("[bold]publishing"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("readings"), TimeRemainingColumn()) as bar:
                task = bar.add_task("publish", total=run.n_readings - skipped)
                n = fleet.run(itertools.chain([first] if first else [], messages), speed=speed,
                              start_ms=first.ts_ms if first else run.start_ms,
                              progress=lambda k: bar.update(task, completed=k))
                fleet.flush()
        finally:
            fleet.close()
        resumed = (f"; continued after an earlier run (skipped {skipped} readings it already sent)"
                   if skipped else "")
        typer.echo(f"published {n} readings from {len(run.devices)} devices at {len(run.sites)} sites; "
                   f"truth: {out_dir / 'truth.jsonl'}, weather: {out_dir / 'weather.csv'}{resumed}")
