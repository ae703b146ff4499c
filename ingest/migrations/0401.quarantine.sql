-- Quarantine bounded and idempotent (docs/store.md, "Quarantine: idempotent and bounded").
--   payload_sha256, payload_len: of the whole payload; `payload` may hold only its first bytes (oversized
--                                unauthenticated junk), so length(payload) < payload_len says it was cut.
--   repeats, last_seen:          identical messages (same reason, payload and topic) are one row, counted.
--   quarantine_dropped:          messages over the per-topic or overall row budget, only counted.
-- depends: 0301.rollups

ALTER TABLE quarantine
    ADD COLUMN payload_sha256 bytea,
    ADD COLUMN payload_len    integer,
    ADD COLUMN repeats        bigint NOT NULL DEFAULT 1 CHECK (repeats >= 1),
    ADD COLUMN last_seen      timestamptz;

UPDATE quarantine SET payload_sha256 = sha256(payload), payload_len = length(payload), last_seen = received_at;

-- Rows kept twice by earlier versions (a retained message on every restart) become one, counted.
UPDATE quarantine q SET repeats = g.n, last_seen = g.last
FROM (SELECT min(id) AS keep, count(*) AS n, max(received_at) AS last FROM quarantine
      GROUP BY reason, payload_sha256, md5(topic) HAVING count(*) > 1) g
WHERE q.id = g.keep;
DELETE FROM quarantine q
USING (SELECT min(id) AS keep, reason, payload_sha256, md5(topic) AS topic_md5 FROM quarantine GROUP BY 2, 3, 4) g
WHERE q.reason = g.reason AND q.payload_sha256 = g.payload_sha256 AND md5(q.topic) = g.topic_md5 AND q.id <> g.keep;

ALTER TABLE quarantine
    ALTER COLUMN payload_sha256 SET NOT NULL,
    ALTER COLUMN payload_len SET NOT NULL,
    ALTER COLUMN last_seen SET NOT NULL,
    ALTER COLUMN last_seen SET DEFAULT now();

-- The identity of a quarantined message; the writer upserts on it (topic hashed: topics can be long).
CREATE UNIQUE INDEX quarantine_identity_idx ON quarantine (reason, payload_sha256, md5(topic));

-- Refused messages not stored as rows because a row budget was spent (per ingest process, per minute):
-- cause 'topic_rate' (scope = the topic) or 'total_rate' (scope = '*').
CREATE TABLE quarantine_dropped (
    minute    timestamptz NOT NULL,
    cause     text NOT NULL CHECK (cause IN ('topic_rate', 'total_rate')),
    scope     text NOT NULL,
    reason    text NOT NULL,
    messages  bigint NOT NULL,
    bytes     bigint NOT NULL,
    PRIMARY KEY (minute, cause, scope, reason)
);
