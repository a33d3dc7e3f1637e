-- Linked devices (API.md §12, M§5): used link tokens. A token is single-use: SHA-256(token) is recorded in the
-- transaction that adds the device, and kept until the token would have expired anyway. The row also names the
-- device it linked, which is what `wait_for_linked_device` answers (also to a waiter that starts late); a device
-- that was removed and whose id was reused has another created_at and is not answered.

CREATE TABLE used_link_tokens (
    token_hash BLOB PRIMARY KEY,
    aci        BLOB NOT NULL REFERENCES accounts (aci) ON DELETE CASCADE,
    device_id  INTEGER NOT NULL,
    created_at INTEGER NOT NULL,   -- the linked device's created_at
    expires_at INTEGER NOT NULL
) STRICT;

CREATE INDEX used_link_tokens_expires_at ON used_link_tokens (aci, expires_at);
