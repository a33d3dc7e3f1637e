-- Verification sessions, (provider, sub) bindings, tombstones, pinned JWKS and the token-id replay cache
-- (mirrors migrations/sqlite/0002).

CREATE TABLE verification_sessions (
    id                   TEXT PRIMARY KEY,
    provider_id          TEXT NOT NULL,
    state                TEXT NOT NULL,
    nonce                TEXT NOT NULL,
    redirect_uri         TEXT NOT NULL,
    request_uri          TEXT NOT NULL,
    request_uri_lifetime BIGINT NOT NULL,
    invite_code_hash     BYTEA,
    created_at           BIGINT NOT NULL,
    expires_at           BIGINT NOT NULL,
    -- Set together once verified.
    subject_provider     TEXT,
    subject              TEXT,
    subject_hash         BYTEA,
    principal            TEXT,
    principal_opaque     BOOLEAN,
    sid                  TEXT,
    reserved_invite      BYTEA
);

CREATE INDEX verification_sessions_expires_at ON verification_sessions (expires_at);
CREATE INDEX verification_sessions_reserved_invite ON verification_sessions (reserved_invite);

CREATE TABLE account_subjects (
    provider     TEXT NOT NULL,
    subject      TEXT NOT NULL,
    aci          BYTEA NOT NULL UNIQUE REFERENCES accounts (aci) ON DELETE CASCADE,
    subject_hash BYTEA NOT NULL,
    sid          TEXT,
    PRIMARY KEY (provider, subject)
);

CREATE INDEX account_subjects_sid ON account_subjects (provider, sid);

CREATE TABLE subject_tombstones (
    subject_hash BYTEA PRIMARY KEY,
    aci          BYTEA NOT NULL,
    expires_at   BIGINT NOT NULL
);

CREATE INDEX subject_tombstones_expires_at ON subject_tombstones (expires_at);

CREATE TABLE pinned_jwks (
    provider  TEXT PRIMARY KEY,
    jwks      TEXT NOT NULL,
    pinned_at BIGINT NOT NULL
);

CREATE TABLE seen_token_ids (
    scope      TEXT NOT NULL,
    token_id   TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (scope, token_id)
);

CREATE INDEX seen_token_ids_expires_at ON seen_token_ids (expires_at);
