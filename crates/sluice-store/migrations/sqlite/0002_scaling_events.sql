-- Every scaling decision that changed an endpoint's desired worker count (R4.7).
CREATE TABLE scaling_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id TEXT NOT NULL,
    at          INTEGER NOT NULL,
    from_count  INTEGER NOT NULL,
    to_count    INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    inputs      TEXT NOT NULL          -- JSON of sluice_core::autoscale::DecisionInputs
);
CREATE INDEX scaling_events_by_endpoint ON scaling_events (endpoint_id, id);
