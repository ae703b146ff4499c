-- Energy rollups maintained incrementally: readings_15min holds, per device, channel and
-- 15-minute bucket, the last register value and the reading count. energy_15min/energy_hourly read
-- it instead of scanning readings, and stay the same views on both stores.
--   TimescaleDB: a continuous aggregate (real-time: the newest buckets are read live), refreshed
--                by a policy. (Not exercised by CI: no reachable registry ships TimescaleDB.)
--   PostgreSQL:  a table kept exact by triggers on readings — inserts are folded in per statement
--                (max/count are incremental); a changed or deleted reading recomputes its bucket.
-- depends: 0201.findings

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        EXECUTE $q$CREATE MATERIALIZED VIEW readings_15min WITH (timescaledb.continuous) AS
                   SELECT device_id, channel, time_bucket(interval '15 minutes', ts) AS bucket,
                          max(energy_wh) AS last_wh, count(*) AS n_readings
                   FROM readings GROUP BY 1, 2, 3 WITH NO DATA$q$;
        EXECUTE 'ALTER MATERIALIZED VIEW readings_15min SET (timescaledb.materialized_only = false)';
        PERFORM add_continuous_aggregate_policy('readings_15min', start_offset => NULL,
                end_offset => interval '15 minutes', schedule_interval => interval '5 minutes');
    ELSE
        CREATE TABLE readings_15min (
            device_id  text NOT NULL,
            channel    text NOT NULL,
            bucket     timestamptz NOT NULL,
            last_wh    bigint NOT NULL,
            n_readings bigint NOT NULL,
            PRIMARY KEY (device_id, channel, bucket));
        INSERT INTO readings_15min
            SELECT device_id, channel, date_bin('15 minutes', ts, timestamptz '2000-01-01'), max(energy_wh), count(*)
            FROM readings GROUP BY 1, 2, 3;
    END IF;
END $$;

CREATE FUNCTION rollup_recompute(d text, ch text, b timestamptz) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM readings_15min WHERE device_id = d AND channel = ch AND bucket = b;
    INSERT INTO readings_15min
        SELECT d, ch, b, max(energy_wh), count(*) FROM readings
        WHERE device_id = d AND channel = ch AND ts >= b AND ts < b + interval '15 minutes'
        HAVING count(*) > 0;
END $$;

-- Inserts (COPY included): one upsert per statement, rows in key order so that concurrent
-- ingest workers lock buckets in the same order (no deadlocks).
CREATE FUNCTION rollup_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO readings_15min AS r
        SELECT device_id, channel, date_bin('15 minutes', ts, timestamptz '2000-01-01') AS bucket,
               max(energy_wh), count(*)
        FROM new_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (device_id, channel, bucket) DO UPDATE
        SET last_wh = greatest(r.last_wh, excluded.last_wh), n_readings = r.n_readings + excluded.n_readings;
    RETURN NULL;
END $$;

CREATE FUNCTION rollup_on_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM rollup_recompute(device_id, channel, bucket)
    FROM (SELECT DISTINCT device_id, channel, date_bin('15 minutes', ts, timestamptz '2000-01-01') AS bucket
          FROM old_rows ORDER BY 1, 2, 3) k;
    RETURN NULL;
END $$;

-- Row level and only for the columns that matter: sealing's `UPDATE … SET batch_id` never fires it.
CREATE FUNCTION rollup_on_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM rollup_recompute(OLD.device_id, OLD.channel, date_bin('15 minutes', OLD.ts, timestamptz '2000-01-01'));
    IF (NEW.device_id, NEW.channel, date_bin('15 minutes', NEW.ts, timestamptz '2000-01-01'))
       IS DISTINCT FROM (OLD.device_id, OLD.channel, date_bin('15 minutes', OLD.ts, timestamptz '2000-01-01')) THEN
        PERFORM rollup_recompute(NEW.device_id, NEW.channel, date_bin('15 minutes', NEW.ts, timestamptz '2000-01-01'));
    END IF;
    RETURN NULL;
END $$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        CREATE TRIGGER readings_rollup_insert AFTER INSERT ON readings
            REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_on_insert();
        CREATE TRIGGER readings_rollup_delete AFTER DELETE ON readings
            REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_on_delete();
        CREATE TRIGGER readings_rollup_update AFTER UPDATE OF device_id, channel, ts, energy_wh ON readings
            FOR EACH ROW EXECUTE FUNCTION rollup_on_update();
    END IF;
END $$;

CREATE OR REPLACE VIEW energy_15min AS
SELECT device_id, channel, bucket,
       last_wh - lag(last_wh) OVER (PARTITION BY device_id, channel ORDER BY bucket) AS energy_wh,
       n_readings
FROM readings_15min;

CREATE OR REPLACE VIEW energy_hourly AS
SELECT device_id, channel, bucket,
       last_wh - lag(last_wh) OVER (PARTITION BY device_id, channel ORDER BY bucket) AS energy_wh,
       n_readings
FROM (SELECT device_id, channel, date_trunc('hour', bucket) AS bucket, max(last_wh) AS last_wh,
             sum(n_readings)::bigint AS n_readings
      FROM readings_15min GROUP BY 1, 2, 3) h;
