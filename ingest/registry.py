"""The device registry in the database: sites and devices with their public keys.

Owns: registering sites and devices (idempotent upsert of the same key; a different key for an
existing device is refused — re-keying is an explicit operation; a key the Ed25519 acceptance rule
refuses, e.g. of small order, is refused with the reason) and loading the registry.
"""

from __future__ import annotations

from typing import Any

import psycopg

from device.identity import DeviceRecord
from device.wire import b64url, b64url_decode


class RegistryError(Exception):
    """A registration that would silently change a device's identity, or whose key can verify nothing."""


def _conn(dsn_or_conn: str | psycopg.Connection[Any]) -> tuple[psycopg.Connection[Any], bool]:
    if isinstance(dsn_or_conn, str):
        return psycopg.connect(dsn_or_conn), True
    return dsn_or_conn, False


def register_site(dsn_or_conn: str | psycopg.Connection[Any], site_id: str, name: str | None = None,
                  lat: float | None = None, lon: float | None = None) -> None:
    conn, own = _conn(dsn_or_conn)
    try:
        conn.execute(
            "INSERT INTO sites (site_id, name, lat, lon) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (site_id) DO UPDATE SET lat = coalesce(excluded.lat, sites.lat), "
            "lon = coalesce(excluded.lon, sites.lon), name = coalesce(excluded.name, sites.name)",
            (site_id, name, lat, lon))
        if own:
            conn.commit()
    finally:
        if own:
            conn.close()


def register_device(dsn_or_conn: str | psycopg.Connection[Any], record: DeviceRecord) -> None:
    """Add a device (and its site). Re-registering the same key is a no-op; another key is refused, and so
    is a key that ``device.ed25519.key_problem`` refuses (before anything is written)."""
    problem = record.key_problem()
    if problem is not None:
        raise RegistryError(f"device {record.device!r}: public key {record.public_key!r} refused: {problem}")
    conn, own = _conn(dsn_or_conn)
    try:
        register_site(conn, record.site, lat=record.lat, lon=record.lon)
        key = b64url_decode(record.public_key)
        row = conn.execute("SELECT public_key, site_id FROM devices WHERE device_id = %s", (record.device,)).fetchone()
        if row is not None and (bytes(row[0]) != key or row[1] != record.site):
            raise RegistryError(f"device {record.device!r} is registered with another key or site; "
                                "refusing to change a device identity")
        conn.execute(
            "INSERT INTO devices (device_id, site_id, kind, public_key, rated_power_w, lat, lon, active) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (device_id) DO UPDATE SET "
            "kind = excluded.kind, rated_power_w = excluded.rated_power_w, lat = excluded.lat, "
            "lon = excluded.lon, active = excluded.active",
            (record.device, record.site, record.kind, key, record.rated_power_w, record.lat, record.lon, record.active))
        if own:
            conn.commit()
    finally:
        if own:
            conn.close()


def load_devices(conn: psycopg.Connection[Any]) -> dict[str, DeviceRecord]:
    rows = conn.execute(
        "SELECT device_id, site_id, kind, public_key, rated_power_w, lat, lon, active FROM devices").fetchall()
    return {r[0]: DeviceRecord(device=r[0], site=r[1], kind=r[2], public_key=b64url(bytes(r[3])),
                               rated_power_w=r[4], lat=r[5], lon=r[6], active=r[7]) for r in rows}
