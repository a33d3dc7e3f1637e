-- Registration invites (codes stored only as SHA-256), the redemption log (the invite tree), suspensions.
-- Pending reservations are not stored here: they are the live verification sessions that reserved the invite.

CREATE TABLE invites (
    id           BLOB PRIMARY KEY,
    code_hash    BLOB NOT NULL UNIQUE,
    owner        BLOB,          -- NULL: the operator
    max_uses     INTEGER NOT NULL,
    uses         INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    last_used_at INTEGER,
    revoked_at   INTEGER,
    note         TEXT
) STRICT;

CREATE INDEX invites_owner ON invites (owner);

-- Never deleted: the audit trail outlives accounts.
CREATE TABLE invite_redemptions (
    invite_id BLOB NOT NULL REFERENCES invites (id),
    inviter   BLOB,             -- NULL: the operator
    invitee   BLOB NOT NULL,
    at        INTEGER NOT NULL
) STRICT;

CREATE INDEX invite_redemptions_inviter ON invite_redemptions (inviter);
CREATE INDEX invite_redemptions_invitee ON invite_redemptions (invitee);

CREATE TABLE account_suspensions (
    aci          BLOB PRIMARY KEY,
    suspended_at INTEGER NOT NULL
) STRICT;
