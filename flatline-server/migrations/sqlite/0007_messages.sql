-- Per-device message queues (API.md §10, M§7) and spam reports.

-- One row per (account, device) queue that ever held a message: the last cursor handed out (cursors increase in
-- commit order and are never reused) and the byte total the queue bound is checked against.
CREATE TABLE message_queues (
    aci        BLOB NOT NULL,
    device_id  INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL,
    bytes      INTEGER NOT NULL CHECK (bytes >= 0),
    PRIMARY KEY (aci, device_id)
) STRICT;

-- The queued envelopes (serialized Envelope protobufs, delivered byte for byte).
CREATE TABLE messages (
    aci              BLOB NOT NULL,
    device_id        INTEGER NOT NULL,
    seq              INTEGER NOT NULL,
    guid             BLOB NOT NULL,
    envelope         BLOB NOT NULL,
    server_timestamp INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    story            INTEGER NOT NULL,
    PRIMARY KEY (aci, device_id, seq)
) STRICT;

CREATE INDEX messages_guid ON messages (aci, device_id, guid);
CREATE INDEX messages_expires_at ON messages (expires_at);

-- Spam reports for the operator: who reported which sender's message, and when.
CREATE TABLE spam_reports (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    reporter    BLOB NOT NULL,
    source      BLOB NOT NULL,
    guid        BLOB NOT NULL,
    token       BLOB,
    reported_at INTEGER NOT NULL,
    UNIQUE (reporter, guid)
) STRICT;
