-- PostgreSQL twin of ../sqlite/0006_demo_public.sql: the same schema step in PostgreSQL's dialect
-- (BIGINT for SQLite's 64-bit INTEGER, identity columns for AUTOINCREMENT, jsonb for json_*).
-- Endpoints became private by default (R3.5). The demo endpoint of a data directory from before
-- that stays reachable without a key, as it was; later choices are the user's.
UPDATE endpoints SET spec = jsonb_set(spec::jsonb, '{public}', 'true'::jsonb)::text
    WHERE account = 'admin' AND name = 'demo' AND (spec::jsonb -> 'public') IS NULL;
