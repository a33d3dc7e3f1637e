-- (mirrors migrations/sqlite/0015)
-- The shared part of a multi-recipient message (M§2.5 step 8), stored once per send: each recipient device's row keeps
-- its envelope without those bytes, where they go (shared_offset) and the delivered size the queue bound counts (size;
-- NULL for whole envelopes, whose size is length(envelope)). A payload row outlives its last message until the
-- message TTL at most (removals other than acknowledgements leave it to expiry).

CREATE TABLE shared_payloads (
    id         BYTEA PRIMARY KEY,
    payload    BYTEA NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX shared_payloads_expires_at ON shared_payloads (expires_at);

ALTER TABLE messages ADD COLUMN shared_id BYTEA;
ALTER TABLE messages ADD COLUMN shared_offset BIGINT;
ALTER TABLE messages ADD COLUMN size BIGINT;

CREATE INDEX messages_shared_id ON messages (shared_id) WHERE shared_id IS NOT NULL;
