//! XEdDSA signatures in libsignal's convention.
//!
//! Differences from the published XEdDSA spec: the signer's Edwards key `A = a·B` is used as is
//! (not forced to sign bit 0), and A's sign bit travels in bit 7 of signature byte 63, which is
//! otherwise zero because `s < 2^253`.

use std::sync::OnceLock;

use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use super::field::edwards_from_montgomery;
use super::keys::{PrivateKey, PublicKey};
use crate::random::{SecureRandom, random_array};

/// Length of an XEdDSA signature: `R ‖ s`.
pub const SIGNATURE_LEN: usize = 64;

/// Prefix of the nonce hash ("hash1" in the XEdDSA spec): `0xFE ‖ 0xFF × 31`.
const HASH1_PREFIX: [u8; 32] = {
    let mut p = [0xffu8; 32];
    p[0] = 0xfe;
    p
};

fn wide_reduce(hash: Sha512) -> Scalar {
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&hash.finalize());
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// `h = SHA-512(R ‖ A ‖ msg) mod ℓ`.
fn challenge(r: &[u8], a: &[u8; 32], msg: &[u8]) -> Scalar {
    wide_reduce(
        Sha512::new()
            .chain_update(r)
            .chain_update(a)
            .chain_update(msg),
    )
}

/// Splits a signature into its sign bit, `R` bytes and `s`, applying libsignal's format checks:
/// exactly 64 bytes, and after clearing the sign bit, `s < 2^253` (bits 5–6 of byte 63 clear).
/// `s` is otherwise not required to be reduced; `s·B` equals `(s mod ℓ)·B`, so reducing is sound.
fn split_signature(sig: &[u8]) -> Option<(u8, &[u8], Scalar)> {
    let sig: &[u8; SIGNATURE_LEN] = sig.try_into().ok()?;
    let sign = sig[63] >> 7;
    let mut s = [0u8; 32];
    s.copy_from_slice(&sig[32..]);
    s[31] &= 0x7f;
    if s[31] & 0x60 != 0 {
        return None;
    }
    Some((sign, &sig[..32], Scalar::from_bytes_mod_order(s)))
}

impl PublicKey {
    /// Verifies an XEdDSA signature over `msg` exactly as libsignal does. Any malformed input
    /// (wrong length, bad sign/high bits, key not convertible to Edwards form) yields `false`.
    pub fn verify_signature(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Some((sign, r_bytes, s)) = split_signature(sig) else {
            return false;
        };
        // The Edwards key and its encoding from one inversion (see `field`), not to_edwards + compress.
        let Some((a, a_bytes)) = edwards_from_montgomery(&self.u, sign) else {
            return false;
        };
        let h = challenge(r_bytes, &a_bytes, msg);
        let r_check = EdwardsPoint::vartime_double_scalar_mul_basepoint(&h, &(-a), &s);
        r_check.compress().as_bytes().ct_eq(r_bytes).into()
    }
}

impl PrivateKey {
    /// Signs `msg` deterministically given the 64 bytes of nonce input `z`.
    /// With fresh random `z` this is libsignal's (randomized) signing; fixed `z` is for tests.
    pub fn sign_with_z(&self, msg: &[u8], z: &[u8; 64]) -> [u8; SIGNATURE_LEN] {
        let mut a = Scalar::from_bytes_mod_order(self.bytes);
        let a_bytes = EdwardsPoint::mul_base_clamped(self.bytes)
            .compress()
            .to_bytes();
        let mut r = wide_reduce(
            Sha512::new()
                .chain_update(HASH1_PREFIX)
                .chain_update(self.bytes)
                .chain_update(msg)
                .chain_update(z),
        );
        let r_bytes = (&r * ED25519_BASEPOINT_TABLE).compress().to_bytes();
        let h = challenge(&r_bytes, &a_bytes, msg);
        let s = h * a + r;
        a.zeroize();
        r.zeroize();

        let mut sig = [0u8; SIGNATURE_LEN];
        sig[..32].copy_from_slice(&r_bytes);
        sig[32..].copy_from_slice(s.as_bytes());
        sig[63] |= a_bytes[31] & 0x80;
        sig
    }

    /// Signs `msg` with 64 fresh random bytes of nonce input from `rng`.
    pub fn sign(&self, msg: &[u8], rng: &dyn SecureRandom) -> [u8; SIGNATURE_LEN] {
        let mut z = random_array::<64>(rng);
        let sig = self.sign_with_z(msg, &z);
        z.zeroize();
        sig
    }
}

/// Per-sign-bit precomputation: the Edwards key `−A` and the compressed `A`, so each
/// verification skips the Montgomery→Edwards conversion (a square root and an inversion) and
/// the compression of `A` (another inversion) — about a quarter of a lone verification.
struct Prepared {
    a_bytes: [u8; 32],
    neg_a: EdwardsPoint,
}

impl Prepared {
    fn new(u: &[u8; 32], sign: u8) -> Option<Self> {
        let (a, a_bytes) = edwards_from_montgomery(u, sign)?;
        Some(Self { a_bytes, neg_a: -a })
    }

    /// `R' = s·B − h·A`, not yet compressed (so a batch can share one field inversion).
    /// dalek's double-base routine already uses its static wide table for `B`; a per-key wide
    /// table for `A` measured no faster, so none is kept.
    fn r_check(&self, r_bytes: &[u8], s: &Scalar, msg: &[u8]) -> EdwardsPoint {
        let h = challenge(r_bytes, &self.a_bytes, msg);
        EdwardsPoint::vartime_double_scalar_mul_basepoint(&h, &self.neg_a, s)
    }
}

/// A public key prepared for verifying many signatures (e.g. ~100 prekey signatures by one
/// identity key in a single upload). Verdicts are identical to [`PublicKey::verify_signature`].
pub struct VerifyingKey {
    key: PublicKey,
    /// Index = sign bit; filled on first use. `None` inside means that sign bit cannot verify.
    prepared: [OnceLock<Option<Prepared>>; 2],
}

impl VerifyingKey {
    /// Wraps `key`; the expensive precomputation happens lazily per sign bit.
    pub fn new(key: &PublicKey) -> Self {
        Self {
            key: *key,
            prepared: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// The key this verifier checks against.
    pub fn public_key(&self) -> &PublicKey {
        &self.key
    }

    fn prepared(&self, sign: u8) -> Option<&Prepared> {
        let slot = &self.prepared[usize::from(sign & 1)];
        slot.get_or_init(|| Prepared::new(&self.key.u, sign))
            .as_ref()
    }

    /// Verifies one signature; same verdict as [`PublicKey::verify_signature`].
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Some((sign, r_bytes, s)) = split_signature(sig) else {
            return false;
        };
        let Some(prep) = self.prepared(sign) else {
            return false;
        };
        let r_check = prep.r_check(r_bytes, &s, msg);
        r_check.compress().as_bytes().ct_eq(r_bytes).into()
    }

    /// Verifies many `(message, signature)` pairs, returning one verdict per pair (each equal to
    /// what [`Self::verify`] returns). Faster than separate calls: the final compressions share
    /// one batched field inversion. This is not a probabilistic batch check; every signature is
    /// checked by its own equation.
    pub fn verify_many(&self, items: &[(&[u8], &[u8])]) -> Vec<bool> {
        let mut verdicts = vec![false; items.len()];
        let mut points = Vec::with_capacity(items.len());
        let mut pending = Vec::with_capacity(items.len());
        for (i, (msg, sig)) in items.iter().enumerate() {
            let Some((sign, r_bytes, s)) = split_signature(sig) else {
                continue;
            };
            let Some(prep) = self.prepared(sign) else {
                continue;
            };
            points.push(prep.r_check(r_bytes, &s, msg));
            pending.push((i, r_bytes));
        }
        let compressed = EdwardsPoint::compress_batch_alloc(&points);
        for ((i, r_bytes), c) in pending.into_iter().zip(compressed) {
            verdicts[i] = c.as_bytes().ct_eq(r_bytes).into();
        }
        verdicts
    }
}
