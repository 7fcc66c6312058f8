-- PostgreSQL twin of ../sqlite/0011_certificates.sql (BIGINT for SQLite's 64-bit INTEGER).
-- HTTPS (issue 16): the certificates Sluice issues over ACME, and the ACME account per directory.
CREATE TABLE certificates (
    host         TEXT PRIMARY KEY,
    names        TEXT NOT NULL,
    challenge    TEXT NOT NULL,
    state        TEXT NOT NULL,
    cert_chain   TEXT,
    key_pem      TEXT,
    issuer       TEXT,
    not_before   BIGINT,
    not_after    BIGINT,
    failures     BIGINT NOT NULL DEFAULT 0,
    last_attempt BIGINT,
    last_error   TEXT,
    updated_at   BIGINT NOT NULL
);
CREATE TABLE acme_accounts (
    directory   TEXT PRIMARY KEY,
    credentials TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
