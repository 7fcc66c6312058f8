-- Worker output and platform events (R2.6, R7.2). The id is the SSE event id a follower resumes
-- from (Last-Event-ID), so it is never reused: AUTOINCREMENT. Times are Unix ms.
CREATE TABLE log_lines (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id TEXT NOT NULL,
    worker_id   TEXT,
    stream      TEXT NOT NULL,     -- stdout | stderr | platform
    ts          INTEGER NOT NULL,
    line        TEXT NOT NULL
);
CREATE INDEX log_lines_by_endpoint ON log_lines (endpoint_id, id);
