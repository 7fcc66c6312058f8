-- The anatomy of a start (issue 17): each worker's phases with their times (placed, image,
-- started, healthy, slept, wake_called, woke), as a JSON array of {"phase", "at"}.
ALTER TABLE workers ADD COLUMN phases TEXT NOT NULL DEFAULT '[]';
