//! The rate-limit store contract: shared leaky-bucket state.

use async_trait::async_trait;

use super::{Admission, BucketConfig};
use crate::store::StoreResult;
use crate::time::Timestamp;

/// Shared leaky-bucket state.
#[async_trait]
pub trait RateLimitStore: Send + Sync {
    /// Atomically refills the bucket `key` per `config` and takes `amount` permits if available
    /// exactly as [`crate::ratelimit::apply`] does (a backend may do the arithmetic in its own language; the
    /// conformance suite checks it against `apply` over long random sequences).
    async fn acquire(
        &self,
        key: &str,
        config: &BucketConfig,
        amount: u32,
        now: Timestamp,
    ) -> StoreResult<Admission>;

    /// The stored state of bucket `key`, if any (absent = full). A read only: nothing is refilled or taken.
    async fn peek(&self, key: &str) -> StoreResult<Option<crate::ratelimit::BucketState>>;

    /// Forgets buckets that are full again at `now` (housekeeping); returns how many were removed.
    async fn purge_full_buckets(&self, now: Timestamp) -> StoreResult<u64>;
}
