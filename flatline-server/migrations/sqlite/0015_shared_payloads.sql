-- The shared part of a multi-recipient message (M§2.5 step 8), stored once per send: each recipient device's row keeps
-- its envelope without those bytes, where they go (shared_offset) and the delivered size the queue bound counts (size;
-- NULL for whole envelopes, whose size is length(envelope)). A payload row outlives its last message until the
-- message TTL at most (removals other than acknowledgements leave it to expiry).

CREATE TABLE shared_payloads (
    id         BLOB PRIMARY KEY,
    payload    BLOB NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;

CREATE INDEX shared_payloads_expires_at ON shared_payloads (expires_at);

ALTER TABLE messages ADD COLUMN shared_id BLOB;
ALTER TABLE messages ADD COLUMN shared_offset INTEGER;
ALTER TABLE messages ADD COLUMN size INTEGER;

CREATE INDEX messages_shared_id ON messages (shared_id) WHERE shared_id IS NOT NULL;
