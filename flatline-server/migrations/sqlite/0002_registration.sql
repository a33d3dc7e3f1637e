-- Verification sessions, (provider, sub) bindings, tombstones, pinned JWKS and the token-id replay cache.

CREATE TABLE verification_sessions (
    id                   TEXT PRIMARY KEY,
    provider_id          TEXT NOT NULL,
    state                TEXT NOT NULL,
    nonce                TEXT NOT NULL,
    redirect_uri         TEXT NOT NULL,
    request_uri          TEXT NOT NULL,
    request_uri_lifetime INTEGER NOT NULL,
    invite_code_hash     BLOB,
    created_at           INTEGER NOT NULL,
    expires_at           INTEGER NOT NULL,
    -- Set together once verified.
    subject_provider     TEXT,
    subject              TEXT,
    subject_hash         BLOB,
    principal            TEXT,
    principal_opaque     INTEGER,
    sid                  TEXT,
    reserved_invite      BLOB
) STRICT;

CREATE INDEX verification_sessions_expires_at ON verification_sessions (expires_at);
CREATE INDEX verification_sessions_reserved_invite ON verification_sessions (reserved_invite);

CREATE TABLE account_subjects (
    provider     TEXT NOT NULL,
    subject      TEXT NOT NULL,
    aci          BLOB NOT NULL UNIQUE REFERENCES accounts (aci) ON DELETE CASCADE,
    subject_hash BLOB NOT NULL,
    sid          TEXT,
    PRIMARY KEY (provider, subject)
) STRICT;

CREATE INDEX account_subjects_sid ON account_subjects (provider, sid);

CREATE TABLE subject_tombstones (
    subject_hash BLOB PRIMARY KEY,
    aci          BLOB NOT NULL,
    expires_at   INTEGER NOT NULL
) STRICT;

CREATE TABLE pinned_jwks (
    provider  TEXT PRIMARY KEY,
    jwks      TEXT NOT NULL,
    pinned_at INTEGER NOT NULL
) STRICT;

CREATE TABLE seen_token_ids (
    scope      TEXT NOT NULL,
    token_id   TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (scope, token_id)
) STRICT;
