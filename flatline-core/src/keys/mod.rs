//! Prekeys: the stored model and the rules of an upload; fetching in `service.rs`, the store contract in
//! `store.rs`.

mod service;
mod store;

pub use service::*;
pub use store::*;

use subtle::ConstantTimeEq;

use crate::account::Account;
use crate::crypto::{KemPublicKey, PublicKey, VerifyingKey};
use crate::ids::KeyId;
use crate::store::StoreError;

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

/// One device's keys for a bundle ([`crate::store::KeyStore::take_bundle_keys`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleKeys {
    /// The signed EC prekey.
    pub signed: SignedPreKey,
    /// A one-time EC key, taken, if any was left.
    pub one_time: Option<EcPreKey>,
    /// A one-time Kyber key, taken, or else the last-resort one; `None` when the device has neither.
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

/// Most one-time keys of each kind in one upload.
pub const MAX_KEYS_PER_UPLOAD: usize = 100;

/// A key as decoded from the wire, not yet validated.
#[derive(Debug, Clone, Default)]
pub struct RawKey {
    /// Key id as sent.
    pub key_id: i64,
    /// Decoded public key.
    pub public_key: Vec<u8>,
    /// Decoded signature (empty for unsigned one-time EC keys).
    pub signature: Vec<u8>,
}

/// An upload as decoded from the wire (`SetKeysRequest`). Empty lists mean "keep".
#[derive(Debug, Clone, Default)]
pub struct RawKeyUpload {
    /// `preKeys`.
    pub ec: Vec<RawKey>,
    /// `signedPreKey`.
    pub signed: Option<RawKey>,
    /// `pqPreKeys`.
    pub kem: Vec<RawKey>,
    /// `pqLastResortPreKey`.
    pub last_resort: Option<RawKey>,
}

/// Why keys were refused (422), or the store failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A field broke a rule (size, range, format, duplicate id).
    #[error("{0}")]
    Invalid(String),
    /// A signature did not verify under the identity key.
    #[error("Invalid signature")]
    BadSignature,
    /// The device that authenticated was removed or replaced while the request ran (401).
    #[error("the device no longer exists")]
    DeviceGone,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(msg: impl Into<String>) -> KeyError {
    KeyError::Invalid(msg.into())
}

fn key_id(field: &str, id: i64) -> Result<KeyId, KeyError> {
    KeyId::new(id).map_err(|_| invalid(format!("{field}: key id must be 0..=2147483647")))
}

fn ec_key(field: &str, raw: &RawKey) -> Result<EcPreKey, KeyError> {
    PublicKey::from_bytes(&raw.public_key).map_err(|e| invalid(format!("{field}: {e}")))?;
    Ok(EcPreKey {
        key_id: key_id(field, raw.key_id)?,
        public_key: raw.public_key.clone(),
    })
}

/// Validates one signed key's format (EC or Kyber), id and signature length; the signature itself is checked by
/// [`verify_signatures`].
pub fn validate_signed_key(field: &str, raw: &RawKey, kem: bool) -> Result<SignedPreKey, KeyError> {
    if kem {
        KemPublicKey::from_bytes(&raw.public_key).map_err(|e| invalid(format!("{field}: {e}")))?;
    } else {
        PublicKey::from_bytes(&raw.public_key).map_err(|e| invalid(format!("{field}: {e}")))?;
    }
    if raw.signature.len() != 64 {
        return Err(invalid(format!("{field}: signature must be 64 bytes")));
    }
    Ok(SignedPreKey {
        key_id: key_id(field, raw.key_id)?,
        public_key: raw.public_key.clone(),
        signature: raw.signature.clone(),
    })
}

fn no_duplicate_ids<'a>(field: &str, ids: impl Iterator<Item = &'a KeyId>) -> Result<(), KeyError> {
    let mut seen = std::collections::HashSet::new();
    if ids.into_iter().all(|id| seen.insert(*id)) {
        Ok(())
    } else {
        Err(invalid(format!("{field}: duplicate key id")))
    }
}

/// Checks that every signature in `keys` verifies under `identity_key`. The identity key's curve point is
/// decoded once and shared by all signatures (an upload carries up to 102 of them).
pub fn verify_signatures(identity_key: &[u8], keys: &[&SignedPreKey]) -> Result<(), KeyError> {
    let identity = PublicKey::from_bytes(identity_key).map_err(|_| KeyError::BadSignature)?;
    let verifier = VerifyingKey::new(&identity);
    let pairs: Vec<(&[u8], &[u8])> = keys
        .iter()
        .map(|k| (k.public_key.as_slice(), k.signature.as_slice()))
        .collect();
    if verifier.verify_many(&pairs).into_iter().all(|ok| ok) {
        Ok(())
    } else {
        Err(KeyError::BadSignature)
    }
}

/// Validates a raw upload: sizes, ranges, key formats, then every signature under `identity_key`.
/// Nothing partial comes out: one bad key refuses the whole upload.
pub fn validate_upload(identity_key: &[u8], raw: &RawKeyUpload) -> Result<KeyUpload, KeyError> {
    if raw.ec.len() > MAX_KEYS_PER_UPLOAD || raw.kem.len() > MAX_KEYS_PER_UPLOAD {
        return Err(invalid(format!(
            "at most {MAX_KEYS_PER_UPLOAD} one-time keys of each kind"
        )));
    }
    let ec = raw
        .ec
        .iter()
        .map(|k| ec_key("preKeys", k))
        .collect::<Result<Vec<_>, _>>()?;
    let kem = raw
        .kem
        .iter()
        .map(|k| validate_signed_key("pqPreKeys", k, true))
        .collect::<Result<Vec<_>, _>>()?;
    no_duplicate_ids("preKeys", ec.iter().map(|k| &k.key_id))?;
    no_duplicate_ids("pqPreKeys", kem.iter().map(|k| &k.key_id))?;
    let signed = raw
        .signed
        .as_ref()
        .map(|k| validate_signed_key("signedPreKey", k, false))
        .transpose()?;
    let last_resort = raw
        .last_resort
        .as_ref()
        .map(|k| validate_signed_key("pqLastResortPreKey", k, true))
        .transpose()?;
    let to_verify: Vec<&SignedPreKey> = signed
        .iter()
        .chain(kem.iter())
        .chain(last_resort.iter())
        .collect();
    if !to_verify.is_empty() {
        verify_signatures(identity_key, &to_verify)?;
    }
    Ok(KeyUpload {
        ec: Some(ec).filter(|v| !v.is_empty()),
        signed,
        kem: Some(kem).filter(|v| !v.is_empty()),
        last_resort,
    })
}

/// Signed keys written together with a new account or device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialKeys {
    /// ACI signed EC prekey.
    pub aci_signed: SignedPreKey,
    /// PNI signed EC prekey.
    pub pni_signed: SignedPreKey,
    /// ACI last-resort Kyber key.
    pub aci_last_resort: SignedPreKey,
    /// PNI last-resort Kyber key.
    pub pni_last_resort: SignedPreKey,
}

/// Constant-time check of a presented access key against the account's, honouring unrestricted access when
/// `unrestricted_allowed`.
pub(crate) fn access_key_matches(
    account: &Account,
    presented: &[u8],
    unrestricted_allowed: bool,
) -> bool {
    if presented.len() != 16 {
        return false;
    }
    if unrestricted_allowed && account.settings.unrestricted_unidentified_access {
        return true;
    }
    account
        .settings
        .unidentified_access_key
        .is_some_and(|k| bool::from(k.as_slice().ct_eq(presented)))
}
