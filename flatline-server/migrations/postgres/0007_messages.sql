-- Per-device message queues (mirrors migrations/sqlite/0007; API.md §10, M§7) and spam reports.

-- One row per (account, device) queue that ever held a message: the last cursor handed out and the byte total the
-- queue bound is checked against. An insert locks its queue rows (in a fixed order) until it commits, so cursors
-- increase in commit order: a reader continuing after the last cursor it saw never skips a message.
CREATE TABLE message_queues (
    aci        BYTEA NOT NULL,
    device_id  SMALLINT NOT NULL,
    last_seq   BIGINT NOT NULL,
    bytes      BIGINT NOT NULL CHECK (bytes >= 0),
    PRIMARY KEY (aci, device_id)
);

-- The queued envelopes (serialized Envelope protobufs, delivered byte for byte).
CREATE TABLE messages (
    aci              BYTEA NOT NULL,
    device_id        SMALLINT NOT NULL,
    seq              BIGINT NOT NULL,
    guid             BYTEA NOT NULL,
    envelope         BYTEA NOT NULL,
    server_timestamp BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    story            BOOLEAN NOT NULL,
    PRIMARY KEY (aci, device_id, seq)
);

CREATE INDEX messages_guid ON messages (aci, device_id, guid);
CREATE INDEX messages_expires_at ON messages (expires_at);

-- Spam reports for the operator: who reported which sender's message, and when.
CREATE TABLE spam_reports (
    id          BIGSERIAL PRIMARY KEY,
    reporter    BYTEA NOT NULL,
    source      BYTEA NOT NULL,
    guid        BYTEA NOT NULL,
    token       BYTEA,
    reported_at BIGINT NOT NULL,
    UNIQUE (reporter, guid)
);
