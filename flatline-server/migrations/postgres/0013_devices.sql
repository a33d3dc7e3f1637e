-- Linked devices (mirrors migrations/sqlite/0013): used link tokens, and the provisioning relay between processes.

CREATE TABLE used_link_tokens (
    token_hash BYTEA PRIMARY KEY,
    aci        BYTEA NOT NULL REFERENCES accounts (aci) ON DELETE CASCADE,
    device_id  BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX used_link_tokens_expires_at ON used_link_tokens (aci, expires_at);

-- Open provisioning sockets by address, so that `PUT /v1/provisioning/{address}` on any process finds the one
-- holding it (rows of a crashed process expire with the socket's lifetime).
CREATE TABLE provisioning_listeners (
    address    TEXT PRIMARY KEY,
    server_id  BYTEA NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Envelopes relayed to a socket on another process: written by the relaying process, taken (deleted) by the
-- holder when the cluster notification names the address. Larger than a notification may carry (8000 bytes).
CREATE TABLE provisioning_envelopes (
    address    TEXT PRIMARY KEY,
    envelope   BYTEA NOT NULL,
    expires_at BIGINT NOT NULL
);
