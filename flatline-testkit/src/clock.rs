//! Deterministic time and randomness.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use flatline_core::random::SecureRandom;
use flatline_core::time::{Clock, Timestamp};
use sha2::{Digest, Sha256};

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct MockClock(AtomicI64);

impl MockClock {
    /// 2026-01-01T00:00:00Z: a fixed, realistic start.
    pub const DEFAULT_START: Timestamp = Timestamp(1_767_225_600_000);

    /// A clock frozen at `start`.
    pub fn at(start: Timestamp) -> Self {
        MockClock(AtomicI64::new(start.as_millis()))
    }
    /// Moves time forward.
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(
            i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Ordering::SeqCst,
        );
    }
    /// Sets the time.
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.as_millis(), Ordering::SeqCst);
    }
}

impl Default for MockClock {
    fn default() -> Self {
        MockClock::at(Self::DEFAULT_START)
    }
}

impl Clock for MockClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// A deterministic random source: SHA-256 over (seed, counter). For tests only: predictable by design.
#[derive(Debug)]
pub struct SeededRng {
    seed: [u8; 32],
    counter: Mutex<u64>,
}

impl SeededRng {
    /// A generator for `seed`; the same seed yields the same bytes.
    pub fn new(seed: u64) -> Self {
        SeededRng {
            seed: Sha256::digest(seed.to_be_bytes()).into(),
            counter: Mutex::new(0),
        }
    }
}

impl SecureRandom for SeededRng {
    fn fill(&self, dest: &mut [u8]) {
        let mut counter = self.counter.lock().unwrap_or_else(|e| e.into_inner());
        for chunk in dest.chunks_mut(32) {
            let block = Sha256::new()
                .chain_update(self.seed)
                .chain_update(counter.to_be_bytes())
                .finalize();
            *counter += 1;
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }
}
