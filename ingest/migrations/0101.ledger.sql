-- Sealed batches (ledger/): what was committed, so that verify can replay it and name changes.
-- depends: 0001.initial

CREATE TABLE batches (
    batch_id      text PRIMARY KEY,
    site_id       text NOT NULL REFERENCES sites (site_id),
    kind          text NOT NULL CHECK (kind IN ('seal', 'amendment')),
    amends        text REFERENCES batches (batch_id),
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    leaf_count    integer NOT NULL,
    root          bytea NOT NULL,
    header        bytea NOT NULL,      -- the canonical header bytes that were anchored
    header_hash   bytea NOT NULL,
    -- the sealed leaves' keys and hashes, in leaf order: authenticated by recomputing the root
    -- from leaf_hashes and comparing it with the ledger; then they localise any later change
    leaf_devices  text[] NOT NULL,
    leaf_seqs     bigint[] NOT NULL,
    leaf_idxs     integer[] NOT NULL,
    leaf_hashes   bytea NOT NULL,
    receipt       jsonb NOT NULL,
    sealed_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX batches_site_window_idx ON batches (site_id, window_start);
