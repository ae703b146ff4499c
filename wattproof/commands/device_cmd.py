"""`wattproof device ...`: provision device identities (key pair + registry record)."""

from __future__ import annotations

from pathlib import Path

import typer

from device.identity import (
    DEVICE_KINDS,
    DeviceRecord,
    FileRegistry,
    IdentityError,
    generate_key,
    key_path,
    public_key_b64,
    require_usable_key,
    validate_ids,
    write_private_key,
)
from wattproof import config

app = typer.Typer(no_args_is_help=True)


@app.command("provision")
def provision(
    site: str = typer.Option(..., "--site", help="Site id (A-Z a-z 0-9 _ . -)."),
    device: str = typer.Option(..., "--device", help="Device id, unique across the fleet."),
    kind: str = typer.Option("main_meter", "--kind", help="main_meter | sub_meter | pv_inverter."),
    rated_power_w: int = typer.Option(..., "--rated-power-w", min=1, help="Rated power in W."),
    lat: float | None = typer.Option(None, "--lat", min=-90, max=90),
    lon: float | None = typer.Option(None, "--lon", min=-180, max=180),
    db: str | None = typer.Option(None, "--db", envvar="WATTPROOF_DB", help="Also register in this database (DSN)."),
    keys_dir: Path | None = typer.Option(None, "--keys-dir", help="Where private keys go (default: data dir)."),
    public_key: str | None = typer.Option(
        None, "--public-key", help="Register this base64url Ed25519 public key (the device made its key pair) "
        "instead of making a key pair here."),
) -> None:
    """Make an Ed25519 key pair for a device (private key 0600) and register its public key."""
    validate_ids(site, device)
    if kind not in DEVICE_KINDS:
        raise IdentityError(f"--kind {kind!r} is not one of {', '.join(DEVICE_KINDS)}")
    key = generate_key() if public_key is None else None
    path = key_path(keys_dir or config.keys_dir(), site, device)
    record = DeviceRecord(site=site, device=device, kind=kind,  # type: ignore[arg-type]
                          public_key=public_key_b64(key) if key is not None else str(public_key),
                          rated_power_w=rated_power_w, lat=lat, lon=lon)
    require_usable_key(record)  # before anything is written
    registry = FileRegistry(config.registry_path())
    if registry.get(device) is not None:
        raise IdentityError(f"device {device!r} is already registered in {registry.path}")
    if key is not None:
        write_private_key(path, key)
    registry.add(record)
    where = str(registry.path)
    if db:
        from ingest.registry import register_device

        register_device(db, record)
        where += " and the database"
    held = f"key {path}" if key is not None else "key held by the device"
    typer.echo(f"provisioned {device} ({kind}, site {site}): {held}, public key {record.public_key}, registered in {where}")


@app.command("list")
def list_devices() -> None:
    """List the devices in the file registry."""
    for rec in FileRegistry(config.registry_path()).load().values():
        typer.echo(f"{rec.site}\t{rec.device}\t{rec.kind}\t{rec.rated_power_w} W\t{rec.public_key}")
