//! Group send endorsements, the chat server's half: the per-expiration derived key pair and the
//! verification of a `GroupSendFullToken` for a set of recipients.
//!
//! * Derived key: `t = H_tag(expiration)`, `sk' = (sk + t)⁻¹`, `PK' = PK + t·G`
//!   (`GroupSendDerivedKeyPair`, `0 ‖ sk' ‖ PK' ‖ expiration u64`, 73 bytes).
//! * Token: `0 ‖ u64 len ‖ raw token ‖ expiration u64` (33 bytes); valid for members `S` when
//!   `raw = SHA-256(compress(sk' · Σ_{m∈S} M1(m)))[..16]`.
#![allow(non_snake_case)]

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use super::ZkError;
use super::bytes::{Reader, Writer};
use super::params::ServerSecretParams;
use super::sho::{Sho, ShoHmacSha256};
use super::uid::{calc_m1_from, m1_seed};
use crate::ids::ServiceId;

/// Length of a serialized `GroupSendDerivedKeyPair`.
pub const GROUP_SEND_DERIVED_KEY_PAIR_LEN: usize = 73;
/// Length of a `GroupSendFullToken` as libsignal makes them (16-byte raw token).
pub const GROUP_SEND_FULL_TOKEN_LEN: usize = 33;
const TOKEN_LEN: usize = 16;

/// The server's endorsement key for one expiration time.
#[derive(Clone)]
pub struct GroupSendDerivedKeyPair {
    sk_prime: Scalar,
    PK_prime: RistrettoPoint,
    expiration: u64,
}

impl Drop for GroupSendDerivedKeyPair {
    fn drop(&mut self) {
        self.sk_prime.zeroize();
    }
}

impl GroupSendDerivedKeyPair {
    /// `GroupSendDerivedKeyPair.forExpiration`.
    pub fn for_expiration(expiration: u64, params: &ServerSecretParams) -> Self {
        let mut tag = ShoHmacSha256::new(b"20240215_Signal_GroupSendEndorsement");
        tag.absorb_and_ratchet(&expiration.to_be_bytes());
        let t = Sho::get_scalar(&mut tag);
        let root = &params.endorsement;
        Self {
            sk_prime: (root.sk + t).invert(),
            PK_prime: root.PK + RistrettoPoint::mul_base(&t),
            expiration,
        }
    }

    /// The expiration (epoch seconds) this key serves.
    pub fn expiration(&self) -> u64 {
        self.expiration
    }

    /// The 73-byte serialization.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(GROUP_SEND_DERIVED_KEY_PAIR_LEN);
        out.push(0);
        out.put_scalar(&self.sk_prime);
        out.put_point(&self.PK_prime);
        out.put_u64(self.expiration);
        out
    }
}

/// A `Group-Send-Token`: proof that the sender is in a group with every recipient. A bearer credential until it
/// expires, so `Debug` shows only its expiration.
#[derive(Clone, PartialEq, Eq)]
pub struct GroupSendFullToken {
    raw_token: Vec<u8>,
    expiration: u64,
}

impl core::fmt::Debug for GroupSendFullToken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GroupSendFullToken")
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

impl GroupSendFullToken {
    /// Parses the serialization (version byte, length-prefixed raw token, expiration).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ZkError> {
        let mut r = Reader::new(bytes);
        r.version(0)?;
        let raw_token = r.bytes()?.to_vec();
        let expiration = r.u64()?;
        r.finish()?;
        Ok(Self {
            raw_token,
            expiration,
        })
    }

    /// The serialization.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(GROUP_SEND_FULL_TOKEN_LEN);
        out.push(0);
        out.put_bytes(&self.raw_token);
        out.put_u64(self.expiration);
        out
    }

    /// The expiration (epoch seconds) the client attached.
    pub fn expiration(&self) -> u64 {
        self.expiration
    }

    /// `GroupSendFullToken.verify`: the token is unexpired at `now` (epoch seconds) and covers
    /// exactly `members` (order does not matter). `key_pair` must be the one for the token's
    /// expiration, else [`ZkError::Verification`].
    pub fn verify(
        &self,
        members: &[ServiceId],
        now: u64,
        key_pair: &GroupSendDerivedKeyPair,
    ) -> Result<(), ZkError> {
        if now > self.expiration || self.expiration != key_pair.expiration {
            return Err(ZkError::Verification);
        }
        let seed = m1_seed();
        let sum = members.iter().fold(RistrettoPoint::identity(), |acc, m| {
            acc + calc_m1_from(&seed, *m)
        });
        let P = key_pair.sk_prime * sum;
        let digest = Sha256::digest(P.compress().as_bytes());
        let expected = &digest[..TOKEN_LEN];
        if bool::from(self.raw_token.as_slice().ct_eq(expected)) {
            Ok(())
        } else {
            Err(ZkError::Verification)
        }
    }

    /// [`Self::verify`] with the key derived from `params` for the token's own expiration.
    pub fn verify_with_params(
        &self,
        members: &[ServiceId],
        now: u64,
        params: &ServerSecretParams,
    ) -> Result<(), ZkError> {
        if now > self.expiration {
            return Err(ZkError::Verification);
        }
        let key = GroupSendDerivedKeyPair::for_expiration(self.expiration, params);
        self.verify(members, now, &key)
    }
}
