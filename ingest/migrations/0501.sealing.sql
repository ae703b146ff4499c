-- Sealing without rewriting readings (ledger/seal.py, docs/proofs.md "Batch"):
-- * a batch's readings are its window's readings whose key is one of its anchored leaf keys, so readings
--   no longer carry a batch id (marking 10M rows cost ~2 minutes of UPDATE; a store row's claim of
--   membership was never evidence anyway);
-- * the sealing queue: every accepted frame is queued by the ingest writer in the transaction that stores
--   it; sealing takes the queued frames whose readings lie in complete windows and dequeues each frame
--   once all its readings are in complete windows.
-- depends: 0401.quarantine

CREATE TABLE unsealed_frames (
    device_id  text   NOT NULL,
    seq        bigint NOT NULL,
    min_ts_ms  bigint NOT NULL,
    max_ts_ms  bigint NOT NULL,
    queued_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, seq)
);

-- frames with readings not yet sealed, from the old per-reading marks
INSERT INTO unsealed_frames (device_id, seq, min_ts_ms, max_ts_ms)
SELECT r.device_id, r.seq, (extract(epoch FROM min(f.ts)) * 1000)::bigint, (extract(epoch FROM max(f.ts)) * 1000)::bigint
FROM (SELECT DISTINCT device_id, seq FROM readings WHERE batch_id IS NULL) r
JOIN readings f USING (device_id, seq)
GROUP BY 1, 2;

ALTER TABLE readings DROP COLUMN batch_id;
