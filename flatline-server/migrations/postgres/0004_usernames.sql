-- Usernames (mirrors migrations/sqlite/0004): one claim per hash, holds, and the account's reservation pointer and
-- link blob. Claims and holds go with their account (ON DELETE CASCADE): a deleted account holds nothing.

ALTER TABLE accounts ADD COLUMN reserved_username_hash BYTEA;
ALTER TABLE accounts ADD COLUMN username_link_blob BYTEA;

-- kind: confirmed (expires_at NULL) | reserved | held | reclaimable. A claim with expires_at < now is free.
CREATE TABLE username_claims (
    hash       BYTEA PRIMARY KEY,
    aci        BYTEA NOT NULL REFERENCES accounts (aci) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('confirmed', 'reserved', 'held', 'reclaimable')),
    expires_at BIGINT,
    CHECK ((kind = 'confirmed') = (expires_at IS NULL))
);

CREATE INDEX username_claims_aci ON username_claims (aci);

-- position orders an account's holds, oldest first (the oldest is released beyond the cap).
CREATE TABLE username_holds (
    aci        BYTEA NOT NULL REFERENCES accounts (aci) ON DELETE CASCADE,
    position   BIGINT NOT NULL,
    hash       BYTEA NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (aci, position)
);
