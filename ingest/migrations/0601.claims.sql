-- Claim verdict sets (audit/claims, docs/claims.md "Verdicts are evidence"): each `wattproof claims check`
-- whose verdicts differ from the latest anchored set of the same organisation, period and claim file is
-- sealed (its verdicts, RFC 8785 each, are the leaves of an RFC 6962 tree) and anchored through the ledger
-- interface as a header of kind 'verdicts' (or 'restatement', which names the set it supersedes).
-- Nothing here is edited in place: a restatement is a new row.
-- depends: 0501.sealing

CREATE TABLE claim_verdict_sets (
    set_id             text PRIMARY KEY,            -- the anchored header's batch_id
    org_id             text NOT NULL,
    period_start       timestamptz NOT NULL,
    period_end         timestamptz NOT NULL,
    claim_file_sha256  text NOT NULL,               -- of the claim file's bytes
    context_sha256     text NOT NULL,               -- the header's findings_digest: claim file, inputs, batches
    context            bytea NOT NULL,              -- RFC 8785 bytes whose SHA-256 is context_sha256
    verdicts           bytea[] NOT NULL,            -- the leaves, in claim order
    header             bytea NOT NULL,              -- the canonical header bytes that were anchored
    receipt            jsonb NOT NULL,
    supersedes         text REFERENCES claim_verdict_sets (set_id),
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX claim_verdict_sets_org_idx ON claim_verdict_sets (org_id, period_start, created_at);
