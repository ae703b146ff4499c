"""`wattproof device ...`: device identities over their life — provision (key pair + registry record),
rotate-key (a new key from now on, the old one still valid for frames sent before) and revoke
(docs/device-identity.md)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec
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
def list_devices(
        db: str | None = typer.Option(None, "--db", help="List the database registry (key history, revocations) "
                                      "instead of the local file registry."),
        json_out: bool = typer.Option(False, "--json", help="One JSON document: a list of devices."),
) -> None:
    """List the devices in the file registry, or with --db in the database's registry."""
    rows: list[dict[str, object]] = []
    if db:
        import psycopg

        from ingest.registry import load_devices

        with psycopg.connect(db) as conn:
            devices = load_devices(conn)
        for d in sorted(devices.values(), key=lambda d: (d.site, d.device)):
            rows.append({"site": d.site, "device": d.device, "kind": d.kind, "rated_power_w": d.rated_power_w,
                         "public_key": d.public_key, "active": d.active, "revoked_at_ms": d.revoked_at_ms,
                         "keys": [{"key": k, "from_ms": lo, "until_ms": hi} for k, lo, hi in d.keys]})
    else:
        for rec in FileRegistry(config.registry_path()).load().values():
            rows.append({"site": rec.site, "device": rec.device, "kind": rec.kind, "rated_power_w": rec.rated_power_w,
                         "public_key": rec.public_key, "active": rec.active})
    if json_out:
        import json

        typer.echo(json.dumps(rows))
        return
    for r in rows:
        state = "" if r.get("revoked_at_ms") is None else f"\trevoked {_when(int(r['revoked_at_ms']))}"  # type: ignore[call-overload]
        keys = f"\t{len(r['keys'])} keys" if len(r.get("keys") or []) > 1 else ""  # type: ignore[arg-type]
        typer.echo(f"{r['site']}\t{r['device']}\t{r['kind']}\t{r['rated_power_w']} W\t{r['public_key']}{keys}{state}")


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@app.command("rotate-key")
def rotate_key(
    device: str = typer.Option(..., "--device", help="Device id."),
    db: str = typer.Option(..., "--db", envvar="WATTPROOF_DB", help="The registry's database (DSN)."),
    keys_dir: Path | None = typer.Option(None, "--keys-dir", help="Where private keys are (default: data dir)."),
    public_key: str | None = typer.Option(
        None, "--public-key", help="The device's new base64url Ed25519 public key (the device made its key pair) "
        "instead of making a key pair here."),
) -> None:
    """Give a device a new key from now on. Frames it signed before now still verify with its old key; frames
    dated from now on must carry the new key's signature. Re-export the trust file afterwards."""
    from ingest.registry import RegistryError
    from ingest.registry import rotate_key as rotate

    registry = FileRegistry(config.registry_path())
    filed = registry.get(device)
    key = generate_key() if public_key is None else None
    new_b64 = public_key_b64(key) if key is not None else str(public_key)
    path = key_path(keys_dir or config.keys_dir(), filed.site, device) if filed is not None else None
    if key is not None and path is None:
        raise IdentityError(f"device {device!r} is not in {registry.path}, so its key file is unknown: pass the key "
                            "the device made with --public-key")
    staged = path.with_name(path.name + ".new") if key is not None and path is not None else None
    if staged is not None and key is not None:
        write_private_key(staged, key, overwrite=True)  # in place only once the registry has it
    at_ms = int(time.time() * 1000)
    try:
        old_b64 = rotate(db, device, new_b64, at_ms)
    except (RegistryError, OSError):
        if staged is not None:
            staged.unlink(missing_ok=True)
        raise
    if staged is not None and path is not None:
        os.replace(staged, path)  # the old private key is gone: what it signed verifies with its public key
    if filed is not None:
        registry.add(msgspec.structs.replace(filed, public_key=new_b64), replace=True)
    held = f"new key {path} (the old private key is destroyed)" if key is not None else "new key held by the device"
    typer.echo(f"rotated {device} at {_when(at_ms)}: frames sent before verify with {old_b64}, from then on with "
               f"{new_b64}; {held}. Re-export the trust file (wattproof trust export) for your auditors.")


@app.command("revoke")
def revoke(
    device: str = typer.Option(..., "--device", help="Device id."),
    db: str = typer.Option(..., "--db", envvar="WATTPROOF_DB", help="The registry's database (DSN)."),
) -> None:
    """Revoke a device now: ingest quarantines its frames (reason revoked_device) within seconds; readings stored
    before stay verifiable. Irreversible: a device coming back gets a new device id. Re-export the trust file."""
    from ingest.registry import revoke_device

    at_ms = revoke_device(db, device, int(time.time() * 1000))
    typer.echo(f"revoked {device} at {_when(at_ms)}: its frames are quarantined (revoked_device); frames sent before "
               "stay verifiable. Re-export the trust file (wattproof trust export) for your auditors.")
