-- Async jobs (R6.3): durable, so an accepted job survives a kill -9 of the platform. JSON values
-- (input, output) are stored as text; times are Unix ms.
CREATE TABLE jobs (
    id                TEXT PRIMARY KEY,
    endpoint_id       TEXT NOT NULL,
    account           TEXT NOT NULL,
    state             TEXT NOT NULL,     -- IN_QUEUE | IN_PROGRESS | COMPLETED | FAILED | CANCELLED | TIMED_OUT
    input             TEXT NOT NULL,
    output            TEXT,
    error             TEXT,
    execution_timeout_ms INTEGER NOT NULL,
    ttl_ms            INTEGER NOT NULL,
    low_priority      INTEGER NOT NULL DEFAULT 0,
    sync              INTEGER NOT NULL DEFAULT 0,
    webhook           TEXT,
    idempotency_key   TEXT,
    worker_id         TEXT,
    retries           INTEGER NOT NULL DEFAULT 0,
    stream_delivered  INTEGER NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL,
    started_at        INTEGER,
    finished_at       INTEGER,
    UNIQUE (endpoint_id, idempotency_key)
);
CREATE INDEX jobs_queue ON jobs (endpoint_id, state, created_at);
CREATE INDEX jobs_by_worker ON jobs (worker_id, state);

-- Partial output of generator handlers, in order; /stream hands out each chunk once.
CREATE TABLE job_stream (
    job_id TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    chunk  TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
