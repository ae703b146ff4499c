-- Regulator report manifests (audit/reports, docs/reports.md): each `wattproof report` writes a manifest
-- with the SHA-256 of every file, signed by the operator and anchored once through the ledger interface as
-- a header of kind 'report' on the organisation's chain `reports:<org>`. Never edited: a new report is a new row.
-- depends: 0601.claims

CREATE TABLE report_manifests (
    report_id        text PRIMARY KEY,             -- the anchored header's batch_id
    org_id           text NOT NULL,
    period_start     timestamptz NOT NULL,
    period_end       timestamptz NOT NULL,
    manifest         bytea NOT NULL,               -- RFC 8785 bytes of the manifest's core (files, root, signer …)
    manifest_sha256  text NOT NULL,                -- the header's findings_digest
    signature        text NOT NULL,                -- the operator's Ed25519 signature of `manifest` (base64url)
    header           bytea NOT NULL,               -- the canonical header bytes that were anchored
    receipt          jsonb NOT NULL,
    verdict_set      text REFERENCES claim_verdict_sets (set_id),
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX report_manifests_org_idx ON report_manifests (org_id, period_start, created_at);
