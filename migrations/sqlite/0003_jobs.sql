-- AI generation jobs. One row per job: its state, the provider attempts made for it (a JSON
-- array), its cost and the lease of the instance driving it. A job whose lease has passed while
-- it is still queued, starting or processing has stalled and is picked up again.
CREATE TABLE IF NOT EXISTS jobs (
    id                 TEXT    PRIMARY KEY,
    owner              TEXT    NOT NULL,
    kind               TEXT    NOT NULL,
    status             TEXT    NOT NULL,
    input              TEXT    NOT NULL,   -- JSON
    output             TEXT,               -- JSON
    error              TEXT,
    progress           REAL    NOT NULL DEFAULT 0,
    requested_provider TEXT,
    provider           TEXT,
    provider_job_id    TEXT,
    attempts           TEXT    NOT NULL DEFAULT '[]',   -- JSON array
    recoveries         INTEGER NOT NULL DEFAULT 0,
    cost_estimate      REAL,
    cost_actual        REAL,
    idempotency_key    TEXT    NOT NULL,
    request_hash       TEXT    NOT NULL,
    lease_until_ms     INTEGER NOT NULL,
    created_at_ms      INTEGER NOT NULL,
    updated_at_ms      INTEGER NOT NULL,
    UNIQUE (owner, idempotency_key)
);

CREATE INDEX IF NOT EXISTS jobs_owner_created ON jobs (owner, created_at_ms DESC);
CREATE INDEX IF NOT EXISTS jobs_live_lease ON jobs (lease_until_ms)
    WHERE status IN ('queued', 'starting', 'processing');
