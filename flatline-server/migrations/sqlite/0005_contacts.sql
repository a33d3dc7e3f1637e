-- Contact gating: policies, contact invites and grants (kept only for invite_only owners).
-- Ids are 16-byte UUID blobs; times are milliseconds since the epoch. No foreign keys: account deletion removes
-- these rows explicitly in the same transaction (see delete_account).

CREATE TABLE contact_policies (
    aci           BLOB PRIMARY KEY,
    policy        TEXT NOT NULL,   -- open | invite_only
    introductions TEXT NOT NULL    -- ask | auto | off
) STRICT;

CREATE TABLE contact_invites (
    id                BLOB PRIMARY KEY,
    owner             BLOB NOT NULL,
    code_hash         BLOB NOT NULL UNIQUE,   -- SHA-256 of the canonical code; the code is never stored
    label             TEXT,
    max_uses          INTEGER NOT NULL,
    uses              INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    paused_until      INTEGER,
    flood_detected_at INTEGER,
    flood_since       INTEGER,
    flood_quarantined INTEGER,
    bucket_credit_ms  INTEGER,                -- NULL: bucket full
    bucket_updated_at INTEGER,
    burst_start       INTEGER
) STRICT;

CREATE INDEX contact_invites_owner ON contact_invites (owner, created_at);

CREATE TABLE contact_grants (
    owner          BLOB NOT NULL,
    grantee        BLOB NOT NULL,
    state          TEXT NOT NULL,   -- active | quarantined | pending | denied
    via_kind       TEXT NOT NULL,   -- invite | introduction | direct
    via_invite     BLOB,
    via_introducer BLOB,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (owner, grantee)
) STRICT;

CREATE INDEX contact_grants_grantee ON contact_grants (grantee);
CREATE INDEX contact_grants_owner_created ON contact_grants (owner, created_at);
CREATE INDEX contact_grants_invite ON contact_grants (via_invite, created_at);
