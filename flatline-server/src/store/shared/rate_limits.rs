//! Rate-limit buckets on both dialects ([`flatline_core::ratelimit::RateLimitStore`]), on the store's `buckets`
//! pool: PostgreSQL's connections that commit asynchronously, SQLite's database file of its own (see each
//! dialect's module docs). An acquire is one upsert doing [`flatline_core::ratelimit::apply`]'s arithmetic in the
//! database ([`crate::store::sql::rate_limits`]), so no transaction is held open across round trips; `$acquire` is
//! that statement in the dialect's words.

/// Implements [`flatline_core::ratelimit::RateLimitStore`] for `$store` (see [the module docs](self)).
macro_rules! rate_limit_store {
    ($store:ty, $acquire:expr) => {
        use async_trait::async_trait;
        use flatline_core::ratelimit::{Admission, BucketConfig, BucketState};
        use flatline_core::store::{RateLimitStore, StoreResult};
        use flatline_core::time::Timestamp;

        use super::{db, get};

        #[async_trait]
        impl RateLimitStore for $store {
            async fn acquire(
                &self,
                key: &str,
                config: &BucketConfig,
                amount: u32,
                now: Timestamp,
            ) -> StoreResult<Admission> {
                let row = $crate::store::bucket_upsert($acquire, key, config, amount, now)
                    .fetch_one(&self.buckets)
                    .await
                    .map_err(db)?;
                $crate::store::admission_of(
                    config,
                    amount,
                    get(&row, "credit_ms")?,
                    get(&row, "admitted")?,
                )
            }

            async fn peek(&self, key: &str) -> StoreResult<Option<BucketState>> {
                sqlx::query(
                    "SELECT credit_ms, updated_at FROM rate_limit_buckets WHERE bucket = $1",
                )
                .bind(key)
                .fetch_optional(&self.buckets)
                .await
                .map_err(db)?
                .map(|r| {
                    Ok(BucketState {
                        credit_ms: get(&r, "credit_ms")?,
                        updated_at: Timestamp(get(&r, "updated_at")?),
                    })
                })
                .transpose()
            }

            async fn purge_full_buckets(&self, now: Timestamp) -> StoreResult<u64> {
                let r = sqlx::query("DELETE FROM rate_limit_buckets WHERE full_at <= $1")
                    .bind(now.as_millis())
                    .execute(&self.buckets)
                    .await
                    .map_err(db)?;
                Ok(r.rows_affected())
            }
        }
    };
}
pub(crate) use rate_limit_store;
