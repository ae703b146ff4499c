-- Audit findings (audit/): what the detectors found, with the numbers that show it.
-- depends: 0001.initial

CREATE TABLE findings (
    id                bigserial PRIMARY KEY,
    run_id            text NOT NULL,
    site_id           text NOT NULL,
    device_id         text,
    kind              text NOT NULL,
    severity          text NOT NULL,
    start_ts          timestamptz NOT NULL,
    end_ts            timestamptz NOT NULL,
    evidence          jsonb NOT NULL,
    detector          text NOT NULL,
    detector_version  text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
-- Re-running the audit over the same data adds nothing.
CREATE UNIQUE INDEX findings_identity_idx
    ON findings (site_id, coalesce(device_id, ''), kind, start_ts, detector, detector_version);
