//! The real clock and randomness. The only place that reads wall time or the OS random source.

use flatline_core::random::SecureRandom;
use flatline_core::time::{Clock, Timestamp};

/// Wall-clock time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }
}

/// The operating system's CSPRNG.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl SecureRandom for OsRandom {
    fn fill(&self, dest: &mut [u8]) {
        // Without an OS random source nothing the server does is safe; stopping is the only correct answer.
        #[expect(
            clippy::expect_used,
            reason = "no CSPRNG means no safe way to continue"
        )]
        getrandom::fill(dest).expect("the operating system random source failed");
    }
}
