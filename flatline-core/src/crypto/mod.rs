//! Signal-compatible cryptography that a server needs, written on crates.io primitives
//! (curve25519-dalek, sha2, hmac) rather than libsignal. Randomness is injected through
//! [`crate::random::SecureRandom`]; nothing here reaches for a global RNG.
//!
//! * [`PublicKey`] / [`PrivateKey`] / [`KeyPair`]: Curve25519 keys in Signal's wire format.
//! * XEdDSA in libsignal's sign-bit convention: [`PublicKey::verify_signature`],
//!   [`VerifyingKey`] for many signatures by one key, [`PrivateKey::sign`].
//! * [`KemPublicKey`]: the Kyber1024 public-key envelope (type and length only).
//! * [`ShoHmacSha256`]: poksho's stateful hash object.
//! * Usernames: [`username_hash`], [`verify_username_proof`], [`generate_username_proof`].

mod field;
mod keys;
mod sho;
mod username;
mod xeddsa;

pub use keys::{
    DJB_KEY_TYPE, KEM_PUBLIC_KEY_LEN, KYBER1024_KEY_TYPE, KemPublicKey, KeyPair, KeyParseError,
    PRIVATE_KEY_LEN, PUBLIC_KEY_LEN, PrivateKey, PublicKey,
};
pub use sho::ShoHmacSha256;
pub use username::{
    MAX_NICKNAME_LEN, ProofError, USERNAME_HASH_LEN, USERNAME_PROOF_LEN, Username, UsernameError,
    generate_username_proof, username_hash, verify_username_proof,
};
pub use xeddsa::{SIGNATURE_LEN, VerifyingKey};

#[cfg(test)]
mod tests;
