//! SHO-HMAC-SHA256, the "stateful hash object" of Signal's poksho/zkgroup.
//!
//! A duplex-like construction on HMAC-SHA256: bytes are absorbed into an HMAC keyed with
//! the current chaining value `cv`; a ratchet closes that HMAC (after a `0x00` terminator)
//! and makes its output the new `cv`; squeezing expands `cv` in counter mode and then
//! ratchets `cv` forward so earlier outputs cannot be recomputed from later state.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Length of the chaining value and of each squeezed block.
const HASH_LEN: usize = 32;

/// A SHO-HMAC-SHA256 instance (byte-compatible with poksho's `ShoHmacSha256`).
#[derive(Clone)]
pub struct ShoHmacSha256 {
    cv: [u8; HASH_LEN],
    /// `Some` while absorbing, `None` when ratcheted.
    absorbing: Option<HmacSha256>,
}

/// HMAC keyed with a 32-byte value. HMAC accepts keys of every length, so the error arm is
/// unreachable; it is spelled out only to avoid an `unwrap` on this path.
fn keyed(key: &[u8; HASH_LEN]) -> HmacSha256 {
    HmacSha256::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC-SHA256 accepts keys of every length"))
}

fn finish(mac: HmacSha256) -> [u8; HASH_LEN] {
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

impl ShoHmacSha256 {
    /// Starts a SHO with a domain-separation label (absorbed and ratcheted).
    pub fn new(label: &[u8]) -> Self {
        let mut sho = Self {
            cv: [0u8; HASH_LEN],
            absorbing: None,
        };
        sho.absorb_and_ratchet(label);
        sho
    }

    /// Appends bytes to the current absorb phase; consecutive absorbs concatenate.
    pub fn absorb(&mut self, data: &[u8]) {
        let cv = self.cv;
        self.absorbing
            .get_or_insert_with(|| keyed(&cv))
            .update(data);
    }

    /// Ends the absorb phase: the HMAC over the absorbed bytes and `0x00` becomes the new `cv`.
    /// A no-op when nothing was absorbed since the last ratchet.
    pub fn ratchet(&mut self) {
        if let Some(mut mac) = self.absorbing.take() {
            mac.update(&[0x00]);
            self.cv = finish(mac);
        }
    }

    /// `absorb(data)` followed by `ratchet()`.
    pub fn absorb_and_ratchet(&mut self, data: &[u8]) {
        self.absorb(data);
        self.ratchet();
    }

    /// Produces `out.len()` pseudorandom bytes, then ratchets `cv` past them.
    pub fn squeeze_into(&mut self, out: &mut [u8]) {
        // Squeezing always reads a ratcheted state; finish any pending absorb first.
        self.ratchet();
        for (i, chunk) in out.chunks_mut(HASH_LEN).enumerate() {
            let mut mac = keyed(&self.cv);
            mac.update(&(i as u64).to_be_bytes());
            mac.update(&[0x01]);
            let block = finish(mac);
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        let mut mac = keyed(&self.cv);
        mac.update(&(out.len() as u64).to_be_bytes());
        mac.update(&[0x02]);
        self.cv = finish(mac);
    }

    /// Fixed-size convenience wrapper around [`Self::squeeze_into`].
    pub fn squeeze<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        self.squeeze_into(&mut out);
        out
    }
}
