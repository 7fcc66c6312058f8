-- The usage ledger (R5.3): append-only entries of metered worker time. A worker's entries add
-- up to its lifetime rounded up to the second; cost is in integer nanodollars.
CREATE TABLE usage_ledger (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account     TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    worker_id   TEXT NOT NULL,
    class       TEXT NOT NULL,      -- 'baseline' | 'autoscaled'
    gpu_type    TEXT NOT NULL,
    gpus        INTEGER NOT NULL,
    seconds     INTEGER NOT NULL,   -- worker-seconds in this entry
    cost_nanos  INTEGER NOT NULL,
    at          INTEGER NOT NULL    -- end of the metered interval, Unix ms
);
CREATE INDEX usage_by_account_time ON usage_ledger (account, at);
CREATE INDEX usage_by_worker ON usage_ledger (worker_id);
