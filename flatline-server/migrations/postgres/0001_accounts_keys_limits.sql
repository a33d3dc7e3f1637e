-- Accounts, devices, prekeys and rate-limit buckets (mirrors migrations/sqlite/0001).
-- Ids are 16-byte UUIDs in BYTEA (as in SQLite, so both backends share row mapping); identity is 0 = ACI, 1 = PNI;
-- times are milliseconds since the epoch. Unique constraints are named: the store maps a violation of
-- accounts_pkey / accounts_pni_key / accounts_principal_key to the matching conflict.

CREATE TABLE accounts (
    aci                              BYTEA NOT NULL,
    pni                              BYTEA NOT NULL,
    principal                        TEXT NOT NULL,
    principal_opaque                 BOOLEAN NOT NULL,
    aci_identity_key                 BYTEA NOT NULL,
    pni_identity_key                 BYTEA NOT NULL,
    unidentified_access_key          BYTEA,
    unrestricted_unidentified_access BOOLEAN NOT NULL,
    discoverable_by_principal        BOOLEAN NOT NULL,
    username_hash                    BYTEA,
    username_link_handle             BYTEA,
    created_at                       BIGINT NOT NULL,
    CONSTRAINT accounts_pkey PRIMARY KEY (aci),
    CONSTRAINT accounts_pni_key UNIQUE (pni),
    CONSTRAINT accounts_principal_key UNIQUE (principal),
    CONSTRAINT accounts_username_hash_key UNIQUE (username_hash),
    CONSTRAINT accounts_username_link_handle_key UNIQUE (username_link_handle)
);

CREATE TABLE devices (
    aci                 BYTEA NOT NULL REFERENCES accounts (aci) ON DELETE CASCADE,
    device_id           BIGINT NOT NULL,
    credential_hash     TEXT NOT NULL,
    credential_salt     TEXT NOT NULL,
    registration_id     BIGINT NOT NULL,
    pni_registration_id BIGINT NOT NULL,
    name                BYTEA,
    fetches_messages    BOOLEAN NOT NULL,
    capabilities        TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    last_seen           BIGINT NOT NULL,
    PRIMARY KEY (aci, device_id)
);

CREATE TABLE one_time_ec_keys (
    identity   BIGINT NOT NULL,
    owner      BYTEA NOT NULL,
    device_id  BIGINT NOT NULL,
    key_id     BIGINT NOT NULL,
    public_key BYTEA NOT NULL,
    PRIMARY KEY (identity, owner, device_id, key_id)
);

CREATE TABLE one_time_kem_keys (
    identity   BIGINT NOT NULL,
    owner      BYTEA NOT NULL,
    device_id  BIGINT NOT NULL,
    key_id     BIGINT NOT NULL,
    public_key BYTEA NOT NULL,
    signature  BYTEA NOT NULL,
    PRIMARY KEY (identity, owner, device_id, key_id)
);

-- kind: 0 = signed EC prekey, 1 = last-resort Kyber key.
CREATE TABLE signed_keys (
    identity   BIGINT NOT NULL,
    owner      BYTEA NOT NULL,
    device_id  BIGINT NOT NULL,
    kind       BIGINT NOT NULL,
    key_id     BIGINT NOT NULL,
    public_key BYTEA NOT NULL,
    signature  BYTEA NOT NULL,
    PRIMARY KEY (identity, owner, device_id, kind)
);

CREATE TABLE rate_limit_buckets (
    bucket     TEXT PRIMARY KEY,
    credit_ms  BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    full_at    BIGINT NOT NULL
);

CREATE INDEX rate_limit_buckets_full_at ON rate_limit_buckets (full_at);
