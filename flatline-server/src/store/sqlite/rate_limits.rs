//! Rate-limit buckets on SQLite: [`crate::store::shared::rate_limits`], in the buckets' database file of their own
//! (see `open_buckets`).

crate::store::shared::rate_limits::rate_limit_store!(
    super::SqliteStore,
    crate::store::sql::rate_limits::ACQUIRE_SQLITE
);
