-- PostgreSQL twin of ../sqlite/0012_worker_phases.sql: each worker's start phases as JSON text.
ALTER TABLE workers ADD COLUMN phases TEXT NOT NULL DEFAULT '[]';
