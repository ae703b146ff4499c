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

-- Readings keyed by (device_id, seq, idx); frames guards that key's uniqueness (a frame's readings
-- are inserted only together with its frames row). ts is in the primary key because a
-- partitioned table needs its partition key in every unique constraint.
-- TimescaleDB when the server has it: a hypertable with compression. Plain PostgreSQL otherwise:
-- monthly range partitions created on demand by ensure_readings_partition() (called by the writer).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        CREATE TABLE readings (
            device_id text NOT NULL, seq bigint NOT NULL, idx integer NOT NULL,
            ts timestamptz NOT NULL,
            channel text NOT NULL CHECK (channel IN ('import', 'export', 'pv')),
            energy_wh bigint NOT NULL CHECK (energy_wh >= 0), power_w bigint NOT NULL,
            batch_id text,
            PRIMARY KEY (device_id, ts, seq, idx));
        PERFORM create_hypertable('readings', 'ts', chunk_time_interval => interval '7 days');
        EXECUTE 'ALTER TABLE readings SET (timescaledb.compress, timescaledb.compress_segmentby = ''device_id'', timescaledb.compress_orderby = ''ts'')';
        PERFORM add_compression_policy('readings', interval '30 days');
    ELSE
        CREATE TABLE readings (
            device_id text NOT NULL, seq bigint NOT NULL, idx integer NOT NULL,
            ts timestamptz NOT NULL,
            channel text NOT NULL CHECK (channel IN ('import', 'export', 'pv')),
            energy_wh bigint NOT NULL CHECK (energy_wh >= 0), power_w bigint NOT NULL,
            batch_id text,
            PRIMARY KEY (device_id, ts, seq, idx)) PARTITION BY RANGE (ts);
        CREATE INDEX readings_ts_brin ON readings USING brin (ts);
    END IF;
END $$;

-- Create the month partition holding ts (plain PostgreSQL); a no-op on TimescaleDB or when present.
CREATE FUNCTION ensure_readings_partition(at timestamptz) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    m_start timestamptz := date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    m_end   timestamptz := (date_trunc('month', at AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
    name    text := 'readings_' || to_char(at AT TIME ZONE 'UTC', 'YYYYMM');
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid
                   WHERE c.relname = 'readings') THEN
        RETURN;
    END IF;
    IF to_regclass(name) IS NOT NULL THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('wattproof.readings_partition'));
    BEGIN
        EXECUTE format('CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)', name, m_start, m_end);
    EXCEPTION WHEN duplicate_table THEN
        NULL;  -- another writer created it first (our statement's catalog snapshot predates its commit)
    END;
END $$;

-- Energy per 15 minutes and per hour from the cumulative registers: the register's last value in
-- the bucket minus its last value in the previous bucket. The same view names serve TimescaleDB
-- deployments (docs/store.md) so callers never know which store they read.
CREATE VIEW energy_15min AS
SELECT device_id, channel, bucket,
       last_wh - lag(last_wh) OVER (PARTITION BY device_id, channel ORDER BY bucket) AS energy_wh,
       n_readings
FROM (SELECT device_id, channel, date_bin('15 minutes', ts, timestamptz '2000-01-01') AS bucket,
             max(energy_wh) AS last_wh, count(*) AS n_readings
      FROM readings GROUP BY 1, 2, 3) b;

CREATE VIEW energy_hourly AS
SELECT device_id, channel, bucket,
       last_wh - lag(last_wh) OVER (PARTITION BY device_id, channel ORDER BY bucket) AS energy_wh,
       n_readings
FROM (SELECT device_id, channel, date_trunc('hour', ts) AS bucket,
             max(energy_wh) AS last_wh, count(*) AS n_readings
      FROM readings GROUP BY 1, 2, 3) b;

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

-- Sequence gaps (a device skipped seq numbers), derived from frames so that concurrent ingest
-- workers never disagree: each row is a run of missing seqs between two accepted frames.
CREATE VIEW seq_gaps AS
SELECT device_id, prev_seq AS after_seq, seq AS next_seq, seq - prev_seq - 1 AS missing
FROM (SELECT device_id, seq, lag(seq) OVER (PARTITION BY device_id ORDER BY seq) AS prev_seq FROM frames) f
WHERE seq - prev_seq > 1;
