//! Randomness is injected: the core never reaches for a global RNG.

/// A cryptographically secure source of random bytes.
///
/// The server uses the operating system's generator; tests use a seeded, deterministic one from the test kit.
/// `&self` (not `&mut self`) so one instance can be shared by concurrent requests.
pub trait SecureRandom: Send + Sync {
    /// Fills `dest` with random bytes.
    fn fill(&self, dest: &mut [u8]);
}

/// Returns `N` random bytes from `rng`.
pub fn random_array<const N: usize>(rng: &dyn SecureRandom) -> [u8; N] {
    let mut out = [0u8; N];
    rng.fill(&mut out);
    out
}
