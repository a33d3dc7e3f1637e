//! Rate-limit buckets on PostgreSQL: [`crate::store::shared::rate_limits`].
//!
//! On the bucket pool, whose connections commit asynchronously (no wait for the WAL flush, which otherwise
//! dominates every rate-limited request: docs/PERFORMANCE.md, "Load"). Atomicity and isolation are unchanged (the
//! upsert locks the row); a crash can only forget the last fraction of a second of bucket updates, handing back a
//! few permits. Nothing but buckets is written on that pool.

crate::store::shared::rate_limits::rate_limit_store!(
    super::PgStore,
    crate::store::sql::rate_limits::ACQUIRE_POSTGRES
);
