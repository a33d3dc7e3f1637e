//! Query text both SQL dialects accept, written once. Parameters are `$N`: PostgreSQL's form, which sqlx's SQLite
//! driver binds by number too. A statement whose dialects differ (locking, upserts with RETURNING quirks) stays in
//! its backend's module.

/// The linked-device aggregate ([`flatline_core::devices::DeviceStore`]).
pub mod devices {
    /// Drops the account's used-token markers whose token has expired (`$1` = now, `$2` = ACI). Per account, so
    /// that concurrent links of different accounts never wait on each other's rows.
    pub const PURGE_USED_TOKENS: &str =
        "DELETE FROM used_link_tokens WHERE expires_at < $1 AND aci = $2";
    /// Whether a token was used (`$1` = token hash).
    pub const TOKEN_USED: &str = "SELECT 1 FROM used_link_tokens WHERE token_hash = $1";
    /// The account's device ids (`$1` = ACI).
    pub const DEVICE_IDS: &str = "SELECT device_id FROM devices WHERE aci = $1";
    /// Records a used token and the device it linked.
    pub const RECORD_USED_TOKEN: &str = "INSERT INTO used_link_tokens (token_hash, aci, device_id, created_at, \
         expires_at) VALUES ($1, $2, $3, $4, $5)";
    /// A device's keys of both identities, deleted when it is removed and before its id is given to a new device
    /// (`$1` = ACI, `$2` = PNI, `$3` = device id).
    pub const PURGE_DEVICE_KEYS: [&str; 3] = [
        "DELETE FROM one_time_ec_keys WHERE ((identity = 0 AND owner = $1) OR (identity = 1 AND owner = $2)) \
         AND device_id = $3",
        "DELETE FROM one_time_kem_keys WHERE ((identity = 0 AND owner = $1) OR (identity = 1 AND owner = $2)) \
         AND device_id = $3",
        "DELETE FROM signed_keys WHERE ((identity = 0 AND owner = $1) OR (identity = 1 AND owner = $2)) \
         AND device_id = $3",
    ];
    /// A device's queue and the token marker that linked it, likewise (`$1` = ACI, `$2` = device id).
    pub const PURGE_DEVICE_ROWS: [&str; 3] = [
        "DELETE FROM messages WHERE aci = $1 AND device_id = $2",
        "DELETE FROM message_queues WHERE aci = $1 AND device_id = $2",
        "DELETE FROM used_link_tokens WHERE aci = $1 AND device_id = $2",
    ];
    /// Deletes a device row (`$1` = ACI, `$2` = device id).
    pub const DELETE_DEVICE: &str = "DELETE FROM devices WHERE aci = $1 AND device_id = $2";
    /// Replaces a device's capabilities (`$1` = list, `$2` = ACI, `$3` = device id).
    pub const SET_CAPABILITIES: &str =
        "UPDATE devices SET capabilities = $1 WHERE aci = $2 AND device_id = $3";
    /// The device a token linked, if it still exists with the same creation time (`$1` = token hash, `$2` = ACI),
    /// in the `d_`-prefixed columns the backends' device row codecs read.
    pub const LINKED_WITH: &str = "SELECT d.device_id AS d_device_id, d.credential_hash AS d_credential_hash, \
         d.credential_salt AS d_credential_salt, d.registration_id AS d_registration_id, \
         d.pni_registration_id AS d_pni_registration_id, d.name AS d_name, \
         d.fetches_messages AS d_fetches_messages, d.capabilities AS d_capabilities, \
         d.created_at AS d_created_at, d.last_seen AS d_last_seen \
         FROM used_link_tokens u JOIN devices d \
         ON d.aci = u.aci AND d.device_id = u.device_id AND d.created_at = u.created_at \
         WHERE u.token_hash = $1 AND u.aci = $2";
}

/// Rate-limit buckets ([`flatline_core::ratelimit::RateLimitStore`]).
pub mod rate_limits {
    /// One request applied to a bucket in one statement, as [`flatline_core::ratelimit::apply`] does: the stored
    /// credit refilled up to now (never backwards) and capped, the cost taken when it is there, the verdict kept in
    /// `admitted` so that `RETURNING` can report it. `$1` bucket; `$2`–`$5` the state `apply` gives an absent
    /// bucket (credit, now, full-at, admitted); `$6` cost; `$7` capacity (all in milliseconds). The dialects differ
    /// only in the names of the two-argument max and min.
    macro_rules! acquire {
        ($max:literal, $min:literal) => {
            concat!(
                "INSERT INTO rate_limit_buckets AS b (bucket, credit_ms, updated_at, full_at, admitted) ",
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (bucket) DO UPDATE SET ",
                "credit_ms = CASE WHEN ", refilled!($max, $min), " >= $6 THEN ", refilled!($max, $min),
                " - $6 ELSE ", refilled!($max, $min), " END, ",
                "admitted = (", refilled!($max, $min), " >= $6), ",
                "updated_at = $3, ",
                "full_at = $3 + ", $max, "($7 - CASE WHEN ", refilled!($max, $min), " >= $6 THEN ",
                refilled!($max, $min), " - $6 ELSE ", refilled!($max, $min), " END, 0) ",
                "RETURNING credit_ms, admitted"
            )
        };
    }
    macro_rules! refilled {
        ($max:literal, $min:literal) => {
            concat!($min, "(b.credit_ms + ", $max, "($3 - b.updated_at, 0), $7)")
        };
    }
    /// [`acquire!`] in PostgreSQL.
    pub const ACQUIRE_POSTGRES: &str = acquire!("GREATEST", "LEAST");
    /// [`acquire!`] in SQLite (whose scalar `max`/`min` take several arguments).
    pub const ACQUIRE_SQLITE: &str = acquire!("max", "min");
}
