-- AI generation jobs. One row per job: its state, the provider attempts made for it, its cost
-- and the lease of the instance driving it. A job whose lease has passed while it is still
-- queued, starting or processing has stalled and is picked up again (FOR UPDATE SKIP LOCKED).
CREATE TABLE IF NOT EXISTS jobs (
    id                 TEXT             PRIMARY KEY,
    owner              TEXT             NOT NULL,
    kind               TEXT             NOT NULL,
    status             TEXT             NOT NULL,
    input              JSONB            NOT NULL,
    output             JSONB,
    error              TEXT,
    progress           DOUBLE PRECISION NOT NULL DEFAULT 0,
    requested_provider TEXT,
    provider           TEXT,
    provider_job_id    TEXT,
    attempts           JSONB            NOT NULL DEFAULT '[]',
    recoveries         BIGINT           NOT NULL DEFAULT 0,
    cost_estimate      DOUBLE PRECISION,
    cost_actual        DOUBLE PRECISION,
    idempotency_key    TEXT             NOT NULL,
    request_hash       TEXT             NOT NULL,
    lease_until_ms     BIGINT           NOT NULL,
    created_at_ms      BIGINT           NOT NULL,
    updated_at_ms      BIGINT           NOT NULL,
    UNIQUE (owner, idempotency_key)
);

CREATE INDEX IF NOT EXISTS jobs_owner_created ON jobs (owner, created_at_ms DESC);
CREATE INDEX IF NOT EXISTS jobs_live_lease ON jobs (lease_until_ms)
    WHERE status IN ('queued', 'starting', 'processing');
