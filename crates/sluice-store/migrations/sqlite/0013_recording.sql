-- Recorded traffic (issue 20): chunks of one endpoint's records (requests, starts or worker
-- spans), each a JSON array of sluice_core::recording records, one chunk per kind per pass.
CREATE TABLE recorded (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    first_at    INTEGER NOT NULL,
    last_at     INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    data        TEXT NOT NULL
);
CREATE INDEX recorded_by_endpoint ON recorded (endpoint_id, kind, last_at);
-- What each decision started from (its policy and the scaler's state), for `sluice audit`;
-- and the kind of event: a `decision`, or a `retune` of the SLO policy.
ALTER TABLE scaling_events ADD COLUMN replay TEXT NOT NULL DEFAULT '';
ALTER TABLE scaling_events ADD COLUMN kind TEXT NOT NULL DEFAULT 'decision';
-- Shadow policies' would-be worker counts, when they change.
CREATE TABLE shadow_points (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id TEXT NOT NULL,
    policy      TEXT NOT NULL,
    at          INTEGER NOT NULL,
    n           INTEGER NOT NULL
);
CREATE INDEX shadow_points_by_endpoint ON shadow_points (endpoint_id, policy, at);
