//! Prekeys: the stored model, the rules of an upload, and fetching.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::account::Account;
use crate::auth::AuthenticatedDevice;
use crate::contacts::{authenticated_fetch_allowed, is_invite_only};
use crate::crypto::{KemPublicKey, PublicKey, VerifyingKey};
use crate::ids::{DeviceId, IdentityType, KeyId, ServiceId};
use crate::ratelimit::{LimitError, Limiter, RateLimited, RateLimiters};
use crate::store::{Store, StoreError};

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

/// Who is fetching keys.
#[derive(Debug, Clone)]
pub enum Requester {
    /// An authenticated device.
    Device(Box<AuthenticatedDevice>),
    /// An anonymous caller presenting an `Unidentified-Access-Key` (already decoded; any length).
    AccessKey(Vec<u8>),
    /// No credentials at all.
    Anonymous,
}

/// Which devices of the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSelector {
    /// Every device (`*`).
    All,
    /// One device.
    One(DeviceId),
}

/// One device's keys in a fetch answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceBundle {
    /// The device.
    pub device_id: DeviceId,
    /// Its registration id for the fetched identity.
    pub registration_id: u16,
    /// Signed EC prekey.
    pub signed: SignedPreKey,
    /// A one-time EC key, if any was left.
    pub one_time: Option<EcPreKey>,
    /// A one-time Kyber key, or the last-resort key when none is left.
    pub kem: SignedPreKey,
}

/// A fetch answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreKeyBundle {
    /// The target identity's public key.
    pub identity_key: Vec<u8>,
    /// Devices with complete keys.
    pub devices: Vec<DeviceBundle>,
}

/// Why a fetch was refused. Anonymous callers get [`FetchError::Unauthorized`] where an authenticated one would
/// get [`FetchError::NotFound`], so the endpoint does not reveal which accounts exist.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// 401.
    #[error("unauthorized")]
    Unauthorized,
    /// 404.
    #[error("not found")]
    NotFound,
    /// 403 `contact_not_allowed`: the target is `invite_only` and the requester holds no active grant.
    #[error("contact not allowed")]
    ContactNotAllowed,
    /// 429.
    #[error(transparent)]
    RateLimited(RateLimited),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LimitError> for FetchError {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::Limited(r) => FetchError::RateLimited(r),
            LimitError::Store(s) => FetchError::Store(s),
        }
    }
}

/// Prekey operations.
#[derive(Clone)]
pub struct KeyService {
    store: Arc<dyn Store>,
    limiters: RateLimiters,
}

impl KeyService {
    /// Operations over `store`, limited by `limiters`.
    pub fn new(store: Arc<dyn Store>, limiters: RateLimiters) -> Self {
        KeyService { store, limiters }
    }

    fn owner(account: &Account, identity: IdentityType) -> ServiceId {
        match identity {
            IdentityType::Aci => ServiceId::Aci(account.aci),
            IdentityType::Pni => ServiceId::Pni(account.pni),
        }
    }

    /// Validates and stores the caller's keys for `identity`. All or nothing.
    pub async fn upload(
        &self,
        caller: &AuthenticatedDevice,
        identity: IdentityType,
        raw: &RawKeyUpload,
    ) -> Result<(), KeyError> {
        let upload = validate_upload(caller.account.identity_key(identity), raw)?;
        let writer = crate::store::DeviceGeneration::of(&caller.account, caller.device_id)
            .ok_or(KeyError::DeviceGone)?;
        if self
            .store
            .store_keys_as(&writer, Self::owner(&caller.account, identity), &upload)
            .await?
        {
            Ok(())
        } else {
            Err(KeyError::DeviceGone)
        }
    }

    /// Remaining one-time keys of the calling device.
    pub async fn counts(
        &self,
        caller: &AuthenticatedDevice,
        identity: IdentityType,
    ) -> Result<KeyCounts, StoreError> {
        self.store
            .key_counts(Self::owner(&caller.account, identity), caller.device_id)
            .await
    }

    /// Whether the client's digest of its identity, signed and last-resort keys matches what is stored
    /// (`POST /v2/keys/check`). A missing key is a mismatch.
    pub async fn check(
        &self,
        caller: &AuthenticatedDevice,
        identity: IdentityType,
        digest: &[u8],
    ) -> Result<bool, KeyError> {
        if digest.len() != 32 {
            return Err(invalid("digest must be 32 bytes"));
        }
        let owner = Self::owner(&caller.account, identity);
        let signed = self.store.signed_pre_key(owner, caller.device_id).await?;
        let last_resort = self.store.last_resort_key(owner, caller.device_id).await?;
        let (Some(signed), Some(last_resort)) = (signed, last_resort) else {
            return Ok(false);
        };
        let ours = Sha256::new()
            .chain_update(caller.account.identity_key(identity))
            .chain_update(u64::from(signed.key_id.get()).to_be_bytes())
            .chain_update(&signed.public_key)
            .chain_update(u64::from(last_resort.key_id.get()).to_be_bytes())
            .chain_update(&last_resort.public_key)
            .finalize();
        Ok(bool::from(ours.as_slice().ct_eq(digest)))
    }

    /// Fetches (and consumes one-time keys of) the target's devices.
    pub async fn fetch(
        &self,
        requester: &Requester,
        target: ServiceId,
        devices: DeviceSelector,
    ) -> Result<PreKeyBundle, FetchError> {
        let anonymous = !matches!(requester, Requester::Device(_));
        let missing = || {
            if anonymous {
                FetchError::Unauthorized
            } else {
                FetchError::NotFound
            }
        };
        let account = match target {
            ServiceId::Aci(aci) => self.store.account(aci).await?,
            ServiceId::Pni(pni) => self.store.account_by_pni(pni).await?,
        };
        match requester {
            Requester::Anonymous => return Err(FetchError::Unauthorized),
            Requester::AccessKey(key) => {
                // The contact policy is read for every ACI target, existing or not, so that a miss costs the same
                // store queries as a hit (F-16: timing must not confirm that an ACI exists).
                let invite_only = match target {
                    ServiceId::Aci(aci) => is_invite_only(self.store.as_ref(), aci).await?,
                    ServiceId::Pni(_) => true,
                };
                // Access keys never open PNI targets.
                let Some(account) = account
                    .as_ref()
                    .filter(|_| target.identity_type() == IdentityType::Aci)
                else {
                    return Err(FetchError::Unauthorized);
                };
                // `unrestrictedUnidentifiedAccess` would let anyone in; invite_only accounts ignore it.
                let unrestricted_allowed = !invite_only;
                if !access_key_matches(account, key, unrestricted_allowed) {
                    return Err(FetchError::Unauthorized);
                }
            }
            Requester::Device(caller) => {
                let selector = match devices {
                    DeviceSelector::All => "*".to_owned(),
                    DeviceSelector::One(d) => d.to_string(),
                };
                let key = format!(
                    "{}.{}__{}.{}",
                    caller.account.aci,
                    caller.device_id,
                    target.uuid(),
                    selector
                );
                self.limiters.check(Limiter::PreKeys, &key).await?;
            }
        }
        let account = account.ok_or_else(missing)?;
        // Contact gating comes before device selection, so that a stranger learns nothing about the devices.
        if let Requester::Device(caller) = requester
            && !authenticated_fetch_allowed(self.store.as_ref(), account.aci, caller.account.aci)
                .await?
        {
            return Err(FetchError::ContactNotAllowed);
        }
        let identity = target.identity_type();
        let chosen: Vec<_> = match devices {
            DeviceSelector::All => account.devices.iter().collect(),
            DeviceSelector::One(id) => vec![account.device(id).ok_or_else(missing)?],
        };
        let mut bundles = Vec::with_capacity(chosen.len());
        for device in chosen {
            // A device without a signed key loses no one-time keys for nothing: the store takes none then.
            let Some(BundleKeys {
                signed,
                one_time,
                kem,
            }) = self.store.take_bundle_keys(target, device.id).await?
            else {
                continue;
            };
            let Some(kem) = kem else { continue };
            bundles.push(DeviceBundle {
                device_id: device.id,
                registration_id: match identity {
                    IdentityType::Aci => device.settings.registration_id,
                    IdentityType::Pni => device.settings.pni_registration_id,
                },
                signed,
                one_time,
                kem,
            });
        }
        if bundles.is_empty() {
            return Err(FetchError::NotFound);
        }
        Ok(PreKeyBundle {
            identity_key: account.identity_key(identity).to_vec(),
            devices: bundles,
        })
    }
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
