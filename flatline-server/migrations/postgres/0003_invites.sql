-- Registration invites (codes stored only as SHA-256), the redemption log (the invite tree), suspensions
-- (mirrors migrations/sqlite/0003). Pending reservations are the live verification sessions that reserved an invite.

CREATE TABLE invites (
    id           BYTEA PRIMARY KEY,
    code_hash    BYTEA NOT NULL UNIQUE,
    owner        BYTEA,          -- NULL: the operator
    max_uses     BIGINT NOT NULL,
    uses         BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    last_used_at BIGINT,
    revoked_at   BIGINT,
    note         TEXT
);

CREATE INDEX invites_owner ON invites (owner);

-- Never deleted: the audit trail outlives accounts. seq orders redemptions made in the same millisecond.
CREATE TABLE invite_redemptions (
    seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    invite_id BYTEA NOT NULL REFERENCES invites (id),
    inviter   BYTEA,             -- NULL: the operator
    invitee   BYTEA NOT NULL,
    at        BIGINT NOT NULL
);

CREATE INDEX invite_redemptions_inviter ON invite_redemptions (inviter);
CREATE INDEX invite_redemptions_invitee ON invite_redemptions (invitee);

CREATE TABLE account_suspensions (
    aci          BYTEA PRIMARY KEY,
    suspended_at BIGINT NOT NULL
);
