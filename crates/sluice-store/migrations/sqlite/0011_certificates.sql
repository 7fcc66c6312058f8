-- HTTPS (issue 16): the certificates Sluice issues over ACME, one row per host it is kept
-- under (an endpoint's host, the API host, or a data center's wildcard), with the chain and
-- its private key (PEM), what the certificate says of itself, and how the last attempt went.
-- Every control process serves from here; gateways get them over the internal protocol.
CREATE TABLE certificates (
    host         TEXT PRIMARY KEY,
    names        TEXT NOT NULL,      -- space-separated
    challenge    TEXT NOT NULL,      -- http-01, tls-alpn-01, dns-01
    state        TEXT NOT NULL,      -- pending, valid, failed
    cert_chain   TEXT,
    key_pem      TEXT,
    issuer       TEXT,
    not_before   INTEGER,
    not_after    INTEGER,
    failures     INTEGER NOT NULL DEFAULT 0,
    last_attempt INTEGER,
    last_error   TEXT,
    updated_at   INTEGER NOT NULL
);
-- The ACME account per directory URL (its credentials hold the account's private key).
CREATE TABLE acme_accounts (
    directory   TEXT PRIMARY KEY,
    credentials TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
