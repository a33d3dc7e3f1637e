//! The two stateful hash objects of poksho/zkgroup behind one trait, plus the point and scalar
//! squeezes every zkgroup derivation uses.
//!
//! * [`ShoHmacSha256`] (re-used from [`crate::crypto`]): zkgroup's `Sho`, poksho's transcripts.
//! * [`ShoSha256`]: poksho's "innerpad" SHA-256 SHO; zkcredential derives its system points with it.

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use sha2::{Digest, Sha256};

pub use crate::crypto::ShoHmacSha256;

const BLOCK_LEN: usize = 64;
const HASH_LEN: usize = 32;

/// poksho's `ShoApi`: absorb, ratchet, squeeze (which ratchets first when needed).
pub trait Sho {
    /// Appends bytes to the current absorb phase.
    fn absorb(&mut self, data: &[u8]);
    /// Closes the absorb phase; a no-op when already ratcheted.
    fn ratchet(&mut self);
    /// Squeezes `out.len()` bytes and ratchets past them.
    fn squeeze_into(&mut self, out: &mut [u8]);

    /// `absorb` then `ratchet`.
    fn absorb_and_ratchet(&mut self, data: &[u8]) {
        self.absorb(data);
        self.ratchet();
    }

    /// A pseudorandom point: 64 squeezed bytes through Ristretto's hash-to-group (two Elligator maps).
    fn get_point(&mut self) -> RistrettoPoint {
        let mut wide = [0u8; 64];
        self.squeeze_into(&mut wide);
        RistrettoPoint::from_uniform_bytes(&wide)
    }

    /// A pseudorandom scalar: 64 squeezed bytes reduced mod ℓ.
    fn get_scalar(&mut self) -> Scalar {
        let mut wide = [0u8; 64];
        self.squeeze_into(&mut wide);
        Scalar::from_bytes_mod_order_wide(&wide)
    }
}

impl Sho for ShoHmacSha256 {
    fn absorb(&mut self, data: &[u8]) {
        ShoHmacSha256::absorb(self, data);
    }
    fn ratchet(&mut self) {
        ShoHmacSha256::ratchet(self);
    }
    fn squeeze_into(&mut self, out: &mut [u8]) {
        ShoHmacSha256::squeeze_into(self, out);
    }
}

/// zkgroup's `Sho::new(label, data)`: a SHO-HMAC-SHA256 with `data` absorbed and ratcheted.
pub fn sho_hmac(label: &[u8], data: &[u8]) -> ShoHmacSha256 {
    let mut sho = ShoHmacSha256::new(label);
    sho.absorb_and_ratchet(data);
    sho
}

/// poksho's `ShoSha256` ("innerpad" SHO on SHA-256).
///
/// Absorbing starts a hash of `0^64 ‖ cv ‖ input…`; a ratchet double-hashes it into the new `cv`.
/// Squeezing hashes `0^63 ‖ 0x01 ‖ cv ‖ i_be64` per 32-byte block, then `cv` becomes
/// `H(0^63 ‖ 0x02 ‖ cv ‖ len_be64)`.
#[derive(Clone)]
pub struct ShoSha256 {
    hasher: Sha256,
    cv: [u8; HASH_LEN],
    absorbing: bool,
}

impl ShoSha256 {
    /// Starts a SHO with a domain-separation label (absorbed and ratcheted).
    pub fn new(label: &[u8]) -> Self {
        let mut sho = Self {
            hasher: Sha256::new(),
            cv: [0u8; HASH_LEN],
            absorbing: false,
        };
        Sho::absorb_and_ratchet(&mut sho, label);
        sho
    }
}

impl Sho for ShoSha256 {
    fn absorb(&mut self, data: &[u8]) {
        if !self.absorbing {
            self.hasher = Sha256::new();
            self.hasher.update([0u8; BLOCK_LEN]);
            self.hasher.update(self.cv);
            self.absorbing = true;
        }
        self.hasher.update(data);
    }

    fn ratchet(&mut self) {
        if !self.absorbing {
            return;
        }
        let inner = core::mem::take(&mut self.hasher).finalize();
        self.cv.copy_from_slice(&Sha256::digest(inner));
        self.absorbing = false;
    }

    fn squeeze_into(&mut self, out: &mut [u8]) {
        self.ratchet();
        let mut prefix = Sha256::new();
        prefix.update([0u8; BLOCK_LEN - 1]);
        prefix.update([1u8]);
        prefix.update(self.cv);
        for (i, chunk) in out.chunks_mut(HASH_LEN).enumerate() {
            let mut h = prefix.clone();
            h.update((i as u64).to_be_bytes());
            let block = h.finalize();
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        let mut next = Sha256::new();
        next.update([0u8; BLOCK_LEN - 1]);
        next.update([2u8]);
        next.update(self.cv);
        next.update((out.len() as u64).to_be_bytes());
        self.cv.copy_from_slice(&next.finalize());
    }
}
