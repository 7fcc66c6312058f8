-- Credit (R5.4): a balance per account in nanodollars (NULL: unlimited, the admin account),
-- charged in the same transaction as the usage that costs it; the low-credit warning state;
-- a webhook for warnings; and account events (warnings, turn-offs, top-ups).
ALTER TABLE accounts ADD COLUMN balance_nanos INTEGER;
ALTER TABLE accounts ADD COLUMN low_credit_warned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN webhook_url TEXT;
UPDATE accounts SET balance_nanos = 0 WHERE name <> 'admin';

CREATE TABLE account_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    at      INTEGER NOT NULL,
    kind    TEXT NOT NULL,      -- 'low_credit' | 'turned_off' | 'credit_added'
    message TEXT NOT NULL
);
CREATE INDEX account_events_by_account ON account_events (account, id);
