-- Sealed-sender server certificates (mirrors migrations/sqlite/0008; API.md §11). Public data only: each
-- certificate's private key is derived from the instance sealed-sender key (the trust root) and the id.
CREATE TABLE server_certificates (
    id          BIGINT PRIMARY KEY CHECK (id BETWEEN 0 AND 4294967295),
    certificate BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    -- NULL for the current certificate; set when a rotation replaced it. Kept until every sender certificate it
    -- signed has expired.
    retired_at  BIGINT
);

-- At most one current certificate: concurrent first issues and rotations cannot leave two.
CREATE UNIQUE INDEX server_certificates_one_current ON server_certificates ((retired_at IS NULL))
    WHERE retired_at IS NULL;
