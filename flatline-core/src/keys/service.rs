//! Key uploads and fetches: the service.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::*;
use crate::account::Account;
use crate::auth::AuthenticatedDevice;
use crate::contacts::{authenticated_fetch_allowed, is_invite_only};
use crate::ids::{DeviceId, IdentityType, ServiceId};
use crate::ratelimit::{LimitError, Limiter, RateLimited, RateLimiters};
use crate::store::{Store, StoreError};

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
