-- PostgreSQL twin of ../sqlite/0001_init.sql: the same schema step in PostgreSQL's dialect
-- (BIGINT for SQLite's 64-bit INTEGER, identity columns for AUTOINCREMENT, jsonb for json_*).
-- Sluice schema v1: instance identity, API keys, endpoints (intent) and workers (planned and
-- observed lifecycle). Times are Unix milliseconds.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE api_keys (
    digest     TEXT PRIMARY KEY,      -- hex SHA-256 of the full key; the key itself is never stored
    prefix     TEXT NOT NULL,         -- first characters, for display
    account    TEXT NOT NULL,
    role       TEXT NOT NULL,         -- 'admin' or 'user'
    label      TEXT,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE endpoints (
    id         TEXT PRIMARY KEY,
    account    TEXT NOT NULL,
    name       TEXT NOT NULL,
    status     TEXT NOT NULL,         -- 'running' | 'stopped'
    spec       TEXT NOT NULL,         -- JSON of sluice_core::EndpointSpec
    generation BIGINT NOT NULL,      -- bumped when what workers run changes
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (account, name)
);

CREATE TABLE workers (
    id          TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL,
    generation  BIGINT NOT NULL,
    state       TEXT NOT NULL,
    reason      TEXT,
    node        TEXT,
    gpus        TEXT NOT NULL DEFAULT '[]',
    port        BIGINT,
    pid         BIGINT,
    created_at  BIGINT NOT NULL,
    launched_at BIGINT,
    ready_at    BIGINT,
    stopped_at  BIGINT
);
CREATE INDEX workers_by_endpoint ON workers (endpoint_id, created_at);
CREATE INDEX workers_by_state ON workers (state);
