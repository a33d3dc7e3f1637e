-- Usernames: one claim per hash (Signal's Accounts_Usernames), holds, and the account's reservation pointer and
-- link blob. Claims and holds go with their account (ON DELETE CASCADE): a deleted account holds nothing.

ALTER TABLE accounts ADD COLUMN reserved_username_hash BLOB;
ALTER TABLE accounts ADD COLUMN username_link_blob BLOB;

-- kind: confirmed (expires_at NULL) | reserved | held | reclaimable. A claim with expires_at < now is free.
CREATE TABLE username_claims (
    hash       BLOB PRIMARY KEY,
    aci        BLOB NOT NULL REFERENCES accounts (aci) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('confirmed', 'reserved', 'held', 'reclaimable')),
    expires_at INTEGER,
    CHECK ((kind = 'confirmed') = (expires_at IS NULL))
) STRICT;

CREATE INDEX username_claims_aci ON username_claims (aci);

-- position orders an account's holds, oldest first (the oldest is released beyond the cap).
CREATE TABLE username_holds (
    aci        BLOB NOT NULL REFERENCES accounts (aci) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    hash       BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (aci, position)
) STRICT;
