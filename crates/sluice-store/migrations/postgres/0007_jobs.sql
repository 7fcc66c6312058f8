-- PostgreSQL twin of ../sqlite/0007_jobs.sql: the same schema step in PostgreSQL's dialect
-- (BIGINT for SQLite's 64-bit INTEGER, identity columns for AUTOINCREMENT, jsonb for json_*).
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
    execution_timeout_ms BIGINT NOT NULL,
    ttl_ms            BIGINT NOT NULL,
    low_priority      BIGINT NOT NULL DEFAULT 0,
    sync              BIGINT NOT NULL DEFAULT 0,
    webhook           TEXT,
    idempotency_key   TEXT,
    worker_id         TEXT,
    retries           BIGINT NOT NULL DEFAULT 0,
    stream_delivered  BIGINT NOT NULL DEFAULT 0,
    created_at        BIGINT NOT NULL,
    started_at        BIGINT,
    finished_at       BIGINT,
    UNIQUE (endpoint_id, idempotency_key)
);
CREATE INDEX jobs_queue ON jobs (endpoint_id, state, created_at);
CREATE INDEX jobs_by_worker ON jobs (worker_id, state);

-- Partial output of generator handlers, in order; /stream hands out each chunk once.
CREATE TABLE job_stream (
    job_id TEXT NOT NULL,
    seq    BIGINT NOT NULL,
    chunk  TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
