"""The device registry in the database: sites and devices with their public keys and key history.

Owns: registering sites and devices (idempotent upsert of the same key; a different key for an
existing device is refused — re-keying is an explicit operation; a key the Ed25519 acceptance rule
refuses, e.g. of small order, is refused with the reason), the device's life after that — ``rotate_key``
(the current key stays valid for frames signed before the rotation instant, the new one from it on) and
``revoke_device`` (docs/device-identity.md) — and loading the registry with each device's key history.
"""

from __future__ import annotations

from typing import Any

import psycopg

from device.errors import WattproofError
from device.identity import DeviceRecord
from device.wire import b64url, b64url_decode

#: (base64url key, valid_from_ms, valid_until_ms): valid for frames whose signed sent_ms is in [from, until)
KeyPeriod = tuple[str, int | None, int | None]


class RegistryError(WattproofError):
    """A registration that would silently change a device's identity, or whose key can verify nothing; a
    rotation or revocation the device's state does not allow."""


class RegisteredDevice(DeviceRecord, frozen=True, kw_only=True):
    """A device as the database registry holds it: its record (``public_key`` is the current key), every key
    it has had with its validity interval (``keys``, oldest first), and when it was revoked."""

    keys: tuple[KeyPeriod, ...] = ()
    revoked_at_ms: int | None = None

    def keys_at(self, sent_ms: int) -> list[str]:
        """The keys valid for a frame the device signed with this ``sent_ms``."""
        if not self.keys:
            return [self.public_key]
        return [k for k, lo, hi in self.keys if (lo is None or sent_ms >= lo) and (hi is None or sent_ms < hi)]


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


#: MQTT identities of wattproof's own services (wattproof.pki, wattproof.embedded): never device ids, since the
#: broker's per-device ACL names a device by its MQTT user name
RESERVED_IDS = frozenset({"ingest", "devices"})


def register_device(dsn_or_conn: str | psycopg.Connection[Any], record: DeviceRecord) -> None:
    """Add a device (and its site). Re-registering the same key is a no-op; another key is refused, and so
    is a key that ``device.ed25519.key_problem`` refuses (before anything is written)."""
    if record.device in RESERVED_IDS:
        raise RegistryError(f"device id {record.device!r} is reserved: it is the broker identity of a wattproof service "
                            "(a device of that name would share its broker permissions)")
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
        conn.execute("INSERT INTO device_keys (device_id, public_key) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                     (record.device, key))  # its first key, valid at every time until a rotation
        if own:
            conn.commit()
    finally:
        if own:
            conn.close()


def load_devices(conn: psycopg.Connection[Any]) -> dict[str, RegisteredDevice]:
    history: dict[str, list[KeyPeriod]] = {}
    for dev, key, lo, hi in conn.execute("SELECT device_id, public_key, valid_from_ms, valid_until_ms FROM device_keys "
                                         "ORDER BY device_id, valid_from_ms NULLS FIRST"):
        history.setdefault(dev, []).append((b64url(bytes(key)), lo, hi))
    rows = conn.execute("SELECT device_id, site_id, kind, public_key, rated_power_w, lat, lon, active, revoked_at_ms "
                        "FROM devices").fetchall()
    return {r[0]: RegisteredDevice(device=r[0], site=r[1], kind=r[2], public_key=b64url(bytes(r[3])),
                                   rated_power_w=r[4], lat=r[5], lon=r[6], active=r[7], revoked_at_ms=r[8],
                                   keys=tuple(history.get(r[0], ()))) for r in rows}


def _locked(conn: psycopg.Connection[Any], device: str) -> tuple[bytes, int | None]:
    """The device's current key and revocation time, its row locked until the transaction ends."""
    row = conn.execute("SELECT public_key, revoked_at_ms FROM devices WHERE device_id = %s FOR UPDATE",
                       (device,)).fetchone()
    if row is None:
        raise RegistryError(f"device {device!r} is not registered in the database")
    return bytes(row[0]), row[1]


def _when(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rotate_key(dsn: str, device: str, new_key_b64: str, at_ms: int) -> str:
    """Give ``device`` a new key from ``at_ms`` on: its current key stays valid for frames whose signed sent_ms is
    before ``at_ms``, the new one for those at or after it. Returns the retired key (base64url). Refused for an
    unknown or revoked device, a key the acceptance rule refuses, a key any device has had, and an instant not
    after the current key's start. One transaction, the device's row locked."""
    record_problem = DeviceRecord(site="-", device=device, kind="main_meter", public_key=new_key_b64,
                                  rated_power_w=1).key_problem()
    if record_problem is not None:
        raise RegistryError(f"device {device!r}: new public key {new_key_b64!r} refused: {record_problem}")
    new = b64url_decode(new_key_b64)
    with psycopg.connect(dsn) as conn:
        old, revoked = _locked(conn, device)
        if revoked is not None:
            raise RegistryError(f"device {device!r} was revoked at {_when(revoked)}; a revoked device cannot get a new "
                                "key (provision a new device id)")
        used = conn.execute("SELECT device_id FROM device_keys WHERE public_key = %s", (new,)).fetchone()
        if used is not None:
            raise RegistryError(f"public key {new_key_b64} was already used by device {used[0]!r}; a key is never reused")
        cur = conn.execute("SELECT valid_from_ms FROM device_keys WHERE device_id = %s AND valid_until_ms IS NULL",
                           (device,)).fetchone()
        if cur is not None and cur[0] is not None and cur[0] >= at_ms:
            raise RegistryError(f"device {device!r}: its current key is valid from {_when(cur[0])}; a rotation at "
                                f"{_when(at_ms)} would end it before it began")
        conn.execute("UPDATE device_keys SET valid_until_ms = %s WHERE device_id = %s AND valid_until_ms IS NULL",
                     (at_ms, device))
        conn.execute("INSERT INTO device_keys (device_id, public_key, valid_from_ms) VALUES (%s, %s, %s)",
                     (device, new, at_ms))
        conn.execute("UPDATE devices SET public_key = %s WHERE device_id = %s", (new, device))
    return b64url(old)


def revoke_device(dsn: str, device: str, at_ms: int) -> int:
    """Revoke ``device`` at ``at_ms``: ingest quarantines every frame of it from then on (``revoked_device``), and
    its current key is valid only for frames whose signed sent_ms is before ``at_ms`` (so readings stored before
    stay verifiable; a frame dated later is named by ``verify``). Refused for an unknown or already revoked device.
    Returns the revocation instant."""
    with psycopg.connect(dsn) as conn:
        _, revoked = _locked(conn, device)
        if revoked is not None:
            raise RegistryError(f"device {device!r} was already revoked at {_when(revoked)}")
        cur = conn.execute("SELECT valid_from_ms FROM device_keys WHERE device_id = %s AND valid_until_ms IS NULL",
                           (device,)).fetchone()
        if cur is not None and cur[0] is not None and cur[0] >= at_ms:
            at_ms = cur[0] + 1  # a key rotated in at this very millisecond: it ends one millisecond later
        conn.execute("UPDATE device_keys SET valid_until_ms = %s WHERE device_id = %s AND valid_until_ms IS NULL",
                     (at_ms, device))
        conn.execute("UPDATE devices SET revoked_at_ms = %s WHERE device_id = %s", (at_ms, device))
    return at_ms
