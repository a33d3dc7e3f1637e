-- Contact gating (mirrors migrations/sqlite/0005): policies, contact invites and grants (kept only for invite_only
-- owners). No foreign keys: account deletion removes these rows explicitly in its transaction.

CREATE TABLE contact_policies (
    aci           BYTEA PRIMARY KEY,
    policy        TEXT NOT NULL,   -- open | invite_only
    introductions TEXT NOT NULL    -- ask | auto | off
);

CREATE TABLE contact_invites (
    id                BYTEA PRIMARY KEY,
    owner             BYTEA NOT NULL,
    code_hash         BYTEA NOT NULL UNIQUE,   -- SHA-256 of the canonical code; the code is never stored
    label             TEXT,
    max_uses          BIGINT NOT NULL,
    uses              BIGINT NOT NULL,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    paused_until      BIGINT,
    flood_detected_at BIGINT,
    flood_since       BIGINT,
    flood_quarantined BIGINT,
    bucket_credit_ms  BIGINT,                  -- NULL: bucket full
    bucket_updated_at BIGINT,
    burst_start       BIGINT
);

CREATE INDEX contact_invites_owner ON contact_invites (owner, created_at);

CREATE TABLE contact_grants (
    owner          BYTEA NOT NULL,
    grantee        BYTEA NOT NULL,
    state          TEXT NOT NULL,   -- active | quarantined | pending | denied
    via_kind       TEXT NOT NULL,   -- invite | introduction | direct
    via_invite     BYTEA,
    via_introducer BYTEA,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (owner, grantee)
);

CREATE INDEX contact_grants_grantee ON contact_grants (grantee);
CREATE INDEX contact_grants_owner_created ON contact_grants (owner, created_at);
CREATE INDEX contact_grants_invite ON contact_grants (via_invite, created_at);
