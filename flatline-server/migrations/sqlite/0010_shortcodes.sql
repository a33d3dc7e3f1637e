-- Contact shortcodes (API §15): a nameplate and two words; only a salted HMAC of the words is stored.
-- A nameplate is held by the code created on it until that code's expires_at, whatever its status, so at most one
-- unexpired row has a given nameplate (creation, on the single writer, picks the smallest free one).

CREATE TABLE contact_shortcodes (
    id             BLOB PRIMARY KEY,
    owner          BLOB NOT NULL,
    nameplate      INTEGER NOT NULL,
    salt           BLOB NOT NULL,      -- 16 random bytes, the HMAC key
    mac            BLOB NOT NULL,      -- HMAC-SHA-256(salt, words); the words are never stored
    failed_guesses INTEGER NOT NULL,
    status         TEXT NOT NULL,      -- live | used | burned | revoked (expired follows from expires_at)
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL
) STRICT;

CREATE INDEX contact_shortcodes_nameplate ON contact_shortcodes (nameplate, expires_at);
CREATE INDEX contact_shortcodes_owner ON contact_shortcodes (owner, created_at);

-- Provenance of grants made by redeeming a shortcode (via_kind = 'shortcode').
ALTER TABLE contact_grants ADD COLUMN via_shortcode BLOB;
