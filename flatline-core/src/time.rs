//! Time is injected: only the server's system clock reads the wall clock.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch.
///
/// Milliseconds (not seconds) so rate-limit buckets refill smoothly; the wire shows seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// From whole seconds.
    pub fn from_secs(secs: i64) -> Self {
        Timestamp(secs.saturating_mul(1000))
    }
    /// Whole seconds, rounded down.
    pub fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }
    /// Milliseconds since the epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }
    /// This instant plus `d` (saturating).
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }
    /// This instant minus `d` (saturating).
    pub fn minus(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }
    /// Time from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
}
