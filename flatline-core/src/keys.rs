//! Prekeys: the stored model and the rules of an upload.

use crate::ids::KeyId;

/// A one-time EC prekey (no signature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcPreKey {
    /// Key id.
    pub key_id: KeyId,
    /// Serialized public key, 33 bytes.
    pub public_key: Vec<u8>,
}

/// A signed prekey: the signed EC prekey, a one-time Kyber key or the last-resort Kyber key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPreKey {
    /// Key id.
    pub key_id: KeyId,
    /// Serialized public key (33 bytes EC, 1569 bytes Kyber).
    pub public_key: Vec<u8>,
    /// XEdDSA signature by the identity key over `public_key`, 64 bytes.
    pub signature: Vec<u8>,
}

/// A validated key upload. `None` lists keep what is stored; `Some` lists (never empty) replace it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyUpload {
    /// One-time EC keys.
    pub ec: Option<Vec<EcPreKey>>,
    /// The signed EC prekey.
    pub signed: Option<SignedPreKey>,
    /// One-time Kyber keys.
    pub kem: Option<Vec<SignedPreKey>>,
    /// The last-resort Kyber key.
    pub last_resort: Option<SignedPreKey>,
}

/// One-time keys taken for a fetch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TakenKeys {
    /// The lowest-id one-time EC key, if any was left.
    pub ec: Option<EcPreKey>,
    /// The lowest-id one-time Kyber key, if any was left.
    pub kem: Option<SignedPreKey>,
}

/// Remaining one-time keys of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyCounts {
    /// One-time EC keys.
    pub ec: u32,
    /// One-time Kyber keys.
    pub kem: u32,
}
