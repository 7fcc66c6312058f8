-- Accounts (R5.1, R5.5): who owns endpoints and keys, with a max_workers quota.
CREATE TABLE accounts (
    name              TEXT PRIMARY KEY,   -- DNS-label-like; also the account's id
    max_workers_quota INTEGER NOT NULL,
    created_at        INTEGER NOT NULL
);
INSERT INTO accounts (name, max_workers_quota, created_at)
    SELECT DISTINCT account, 10, 0 FROM api_keys WHERE account NOT IN (SELECT name FROM accounts);
