-- Contact shortcodes (mirrors migrations/sqlite/0010): a nameplate and two words; only a salted HMAC of the words
-- is stored. A nameplate is held by the code created on it until that code's expires_at, whatever its status;
-- creations serialize on an advisory lock, so at most one unexpired row has a given nameplate.

CREATE TABLE contact_shortcodes (
    id             BYTEA PRIMARY KEY,
    owner          BYTEA NOT NULL,
    nameplate      BIGINT NOT NULL,
    salt           BYTEA NOT NULL,      -- 16 random bytes, the HMAC key
    mac            BYTEA NOT NULL,      -- HMAC-SHA-256(salt, words); the words are never stored
    failed_guesses BIGINT NOT NULL,
    status         TEXT NOT NULL,       -- live | used | burned | revoked (expired follows from expires_at)
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL
);

CREATE INDEX contact_shortcodes_nameplate ON contact_shortcodes (nameplate, expires_at);
CREATE INDEX contact_shortcodes_owner ON contact_shortcodes (owner, created_at);

-- Provenance of grants made by redeeming a shortcode (via_kind = 'shortcode').
ALTER TABLE contact_grants ADD COLUMN via_shortcode BYTEA;
