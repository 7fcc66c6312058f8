-- PostgreSQL twin of ../sqlite/0009_leases.sql: the same schema step in PostgreSQL's dialect
-- (BIGINT for SQLite's 64-bit INTEGER, identity columns for AUTOINCREMENT, jsonb for json_*).
-- Leadership (R8.3): several control processes share one database; the holder of the `control`
-- lease runs the reconciler, autoscaler, metering and job dispatch, and the others forward to
-- it. Expiry is in the database's clock (Unix ms), so the processes' clocks do not matter.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    address    TEXT NOT NULL,     -- where the holder's API is reached (standbys forward there)
    expires_at BIGINT NOT NULL
);
