-- Versioned profiles (M§4): encrypted content per (account, version), and each account's current version.
-- Rows go with the account (ON DELETE CASCADE), so a profile write racing an account deletion leaves nothing.

CREATE TABLE profiles (
    aci                  BYTEA NOT NULL REFERENCES accounts (aci) ON DELETE CASCADE,
    version              TEXT NOT NULL,      -- 64 hex characters, as sent
    name                 BYTEA NOT NULL,
    about_emoji          BYTEA,
    about                BYTEA,
    payment_address      BYTEA,
    phone_number_sharing BYTEA,
    avatar               TEXT,               -- object key profiles/...
    commitment           BYTEA NOT NULL,        -- the first commitment stored for the version is kept
    PRIMARY KEY (aci, version)
);

CREATE TABLE profile_current (
    aci     BYTEA PRIMARY KEY REFERENCES accounts (aci) ON DELETE CASCADE,
    version TEXT NOT NULL
);
