-- Endpoints became private by default (R3.5). The demo endpoint of a data directory from before
-- that stays reachable without a key, as it was; later choices are the user's.
UPDATE endpoints SET spec = json_set(spec, '$.public', json('true'))
    WHERE account = 'admin' AND name = 'demo' AND json_extract(spec, '$.public') IS NULL;
