-- wattproof store, schema v1: sites, device registry, frames, readings, quarantine.
-- Owned by ingest/. Column names are a contract with audit/ and ledger/ (see docs/store.md).
-- depends:

CREATE TABLE sites (
    site_id     text PRIMARY KEY,
    name        text,
    lat         double precision,
    lon         double precision,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE devices (
    device_id      text PRIMARY KEY,
    site_id        text NOT NULL REFERENCES sites (site_id),
    kind           text NOT NULL CHECK (kind IN ('main_meter', 'sub_meter', 'pv_inverter')),
    public_key     bytea NOT NULL CHECK (length(public_key) = 32),
    rated_power_w  integer NOT NULL CHECK (rated_power_w > 0),
    lat            double precision,
    lon            double precision,
    active         boolean NOT NULL DEFAULT true,
    registered_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_site_idx ON devices (site_id);

-- One row per accepted signed frame: the idempotency guard ((device_id, seq) is unique) and the
-- evidence an auditor re-checks (raw signed bytes, zstd-compressed, and their SHA-256).
CREATE TABLE frames (
    device_id     text   NOT NULL REFERENCES devices (device_id),
    seq           bigint NOT NULL,
    sent_ms       bigint NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    frame_sha256  bytea  NOT NULL,
    raw_zstd      bytea  NOT NULL,
    n_readings    integer NOT NULL,
    PRIMARY KEY (device_id, seq)
);

-- Readings keyed by (device_id, seq, idx); ts is part of the primary key only because a
-- partitioned table needs its partition key in every unique constraint. frames guards uniqueness.
CREATE TABLE readings (
    device_id  text   NOT NULL,
    seq        bigint NOT NULL,
    idx        integer NOT NULL,
    ts         timestamptz NOT NULL,
    channel    text   NOT NULL CHECK (channel IN ('import', 'export', 'pv')),
    energy_wh  bigint NOT NULL CHECK (energy_wh >= 0),
    power_w    bigint NOT NULL,
    batch_id   text,
    PRIMARY KEY (device_id, ts, seq, idx)
);

CREATE TABLE quarantine (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    topic        text NOT NULL,
    payload      bytea NOT NULL,
    reason       text NOT NULL,
    detail       text NOT NULL,
    device_id    text,
    seq          bigint
);
CREATE INDEX quarantine_reason_idx ON quarantine (reason);

-- Sequence gaps seen by ingest (a device skipped seq numbers): recorded for audit.
CREATE TABLE seq_gaps (
    device_id    text   NOT NULL,
    after_seq    bigint NOT NULL,
    next_seq     bigint NOT NULL,
    detected_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, after_seq)
);
