-- Versioned profiles (M§4): encrypted content per (account, version), and each account's current version.
-- Rows go with the account (ON DELETE CASCADE), so a profile write racing an account deletion leaves nothing.

CREATE TABLE profiles (
    aci                  BLOB NOT NULL REFERENCES accounts (aci) ON DELETE CASCADE,
    version              TEXT NOT NULL,      -- 64 hex characters, as sent
    name                 BLOB NOT NULL,
    about_emoji          BLOB,
    about                BLOB,
    payment_address      BLOB,
    phone_number_sharing BLOB,
    avatar               TEXT,               -- object key profiles/...
    commitment           BLOB NOT NULL,        -- the first commitment stored for the version is kept
    PRIMARY KEY (aci, version)
) STRICT;

CREATE TABLE profile_current (
    aci     BLOB PRIMARY KEY REFERENCES accounts (aci) ON DELETE CASCADE,
    version TEXT NOT NULL
) STRICT;
