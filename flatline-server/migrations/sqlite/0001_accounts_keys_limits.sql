-- Accounts, devices, prekeys and rate-limit buckets.
-- Ids are 16-byte UUID blobs; identity is 0 = ACI, 1 = PNI; times are milliseconds since the epoch.

CREATE TABLE accounts (
    aci                              BLOB PRIMARY KEY,
    pni                              BLOB NOT NULL UNIQUE,
    principal                        TEXT NOT NULL UNIQUE,
    principal_opaque                 INTEGER NOT NULL,
    aci_identity_key                 BLOB NOT NULL,
    pni_identity_key                 BLOB NOT NULL,
    unidentified_access_key          BLOB,
    unrestricted_unidentified_access INTEGER NOT NULL,
    discoverable_by_principal        INTEGER NOT NULL,
    username_hash                    BLOB UNIQUE,
    username_link_handle             BLOB UNIQUE,
    created_at                       INTEGER NOT NULL
) STRICT;

CREATE TABLE devices (
    aci                 BLOB NOT NULL REFERENCES accounts (aci) ON DELETE CASCADE,
    device_id           INTEGER NOT NULL,
    credential_hash     TEXT NOT NULL,
    credential_salt     TEXT NOT NULL,
    registration_id     INTEGER NOT NULL,
    pni_registration_id INTEGER NOT NULL,
    name                BLOB,
    fetches_messages    INTEGER NOT NULL,
    capabilities        TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    last_seen           INTEGER NOT NULL,
    PRIMARY KEY (aci, device_id)
) STRICT;

CREATE TABLE one_time_ec_keys (
    identity   INTEGER NOT NULL,
    owner      BLOB NOT NULL,
    device_id  INTEGER NOT NULL,
    key_id     INTEGER NOT NULL,
    public_key BLOB NOT NULL,
    PRIMARY KEY (identity, owner, device_id, key_id)
) STRICT;

CREATE TABLE one_time_kem_keys (
    identity   INTEGER NOT NULL,
    owner      BLOB NOT NULL,
    device_id  INTEGER NOT NULL,
    key_id     INTEGER NOT NULL,
    public_key BLOB NOT NULL,
    signature  BLOB NOT NULL,
    PRIMARY KEY (identity, owner, device_id, key_id)
) STRICT;

-- kind: 0 = signed EC prekey, 1 = last-resort Kyber key.
CREATE TABLE signed_keys (
    identity   INTEGER NOT NULL,
    owner      BLOB NOT NULL,
    device_id  INTEGER NOT NULL,
    kind       INTEGER NOT NULL,
    key_id     INTEGER NOT NULL,
    public_key BLOB NOT NULL,
    signature  BLOB NOT NULL,
    PRIMARY KEY (identity, owner, device_id, kind)
) STRICT;

CREATE TABLE rate_limit_buckets (
    bucket     TEXT PRIMARY KEY,
    credit_ms  INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    full_at    INTEGER NOT NULL
) STRICT;

CREATE INDEX rate_limit_buckets_full_at ON rate_limit_buckets (full_at);
