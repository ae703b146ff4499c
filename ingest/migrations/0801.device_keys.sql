-- Device identity over its life (docs/device-identity.md): every key a device has had, with the interval of
-- signed `sent_ms` it is valid for, and revocation.
--   device_keys:  (device, key, [valid_from_ms, valid_until_ms)); NULL bounds are open. Goes with its device
--                 (a device with frames cannot be deleted: they reference it). A frame is the device's
--                 when it verifies under a key whose interval holds the frame's signed sent_ms. At most one open
--                 (current) key per device; `wattproof device rotate-key` closes it and opens the next.
--   devices.public_key stays the current key (what ingest and proof export show); devices.revoked_at_ms: set by
--                 `wattproof device revoke` (its frames are then quarantined with reason `revoked_device`).
-- Stores from before this migration: each device's one key becomes its history, valid at every time.
-- depends: 0701.reports

CREATE TABLE device_keys (
    device_id       text   NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    public_key      bytea  NOT NULL CHECK (length(public_key) = 32),
    valid_from_ms   bigint,
    valid_until_ms  bigint,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, public_key),
    CHECK (valid_from_ms IS NULL OR valid_until_ms IS NULL OR valid_from_ms < valid_until_ms)
);
-- one current key per device (the one rotate-key closes)
CREATE UNIQUE INDEX device_keys_current_idx ON device_keys (device_id) WHERE valid_until_ms IS NULL;

INSERT INTO device_keys (device_id, public_key) SELECT device_id, public_key FROM devices;

ALTER TABLE devices ADD COLUMN revoked_at_ms bigint;
