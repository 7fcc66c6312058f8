-- Intent is written conditionally (issue 15): a change of an endpoint's spec names the version
-- it was made from and bumps it, so two changes made from the same read cannot both land. The
-- status (running, stopped, stopped_no_credit) is written on its own, from the status read, so
-- an update of the spec never writes back a status that changed meanwhile (the credit cut-off).
ALTER TABLE endpoints ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
