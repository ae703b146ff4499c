"""The ingest validator's live copy of the device registry (docs/store.md, "Registry changes").

Owns: ``RegistryView`` — re-reading the ``devices`` and ``device_keys`` tables when they changed, checked by a
one-row fingerprint query every few seconds and on demand; so a deactivated, revoked, re-keyed (rotated) or
added device takes effect within seconds, without a restart (docs/device-identity.md). Must not: write the registry (ingest/registry.py does).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg

from ingest.registry import RegisteredDevice, load_devices

log = logging.getLogger("wattproof.ingest")


class RegistryView:
    """The validator's copy of the device registry, kept current: ``refresh`` compares a fingerprint of the
    ``devices`` table (one small query) every ``every_s`` seconds, or when forced (a batch names an unknown
    device), and re-reads the table only when it changed. A deactivated, re-keyed or added device takes effect
    within ``every_s``. Its own connection; a database error keeps the copy it has (the writers wait out outages)."""

    #: the ``devices`` rows (key, active, revoked_at_ms…) and the key history (``device_keys``: rotations)
    _FINGERPRINT = ("SELECT md5(coalesce((SELECT string_agg(d::text, ',' ORDER BY d.device_id) FROM devices d), '') "
                    "|| '|' || coalesce((SELECT string_agg(k::text, ',' ORDER BY k.device_id, k.public_key) "
                    "FROM device_keys k), ''))")

    def __init__(self, dsn: str, every_s: float) -> None:
        self.dsn, self.every_s = dsn, every_s
        self.devices: dict[str, RegisteredDevice] = {}
        self._conn: psycopg.Connection[Any] | None = None
        self._fingerprint: str | None = None
        self._checked = float("-inf")

    def refresh(self, force: bool = False, strict: bool = False) -> bool:
        """True when the registry changed (and was re-read). ``strict``: raise database errors."""
        now = time.monotonic()
        if not force and now - self._checked < self.every_s:
            return False
        self._checked = now
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
            row = self._conn.execute(self._FINGERPRINT).fetchone()
            fingerprint = str(row[0]) if row else ""
            if fingerprint == self._fingerprint:
                return False
            self.devices, self._fingerprint = load_devices(self._conn), fingerprint
            return True
        except psycopg.Error as err:
            if strict:
                raise
            log.warning("device registry not refreshed (%s); validating with the copy from before", err)
            self.close()
            return False

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
            self._conn = None
