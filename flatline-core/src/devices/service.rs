//! Device operations: listing, issuing link tokens, linking, removing, capabilities.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::{
    DeviceLinkOutcome, IssuedLinkToken, LinkTokenError, NewLinkedDevice, RemovalRefused,
    check_removal, has_room, issue_link_token, verify_link_token,
};
use crate::account::{AccountAttributes, Device, RawAccountAttributes, validate_capabilities};
use crate::auth::AuthenticatedDevice;
use crate::credentials::{CredentialError, MIN_NEW_PASSWORD_LEN, SaltedTokenHash, decode_basic};
use crate::ids::{Aci, DeviceId, Pni};
use crate::keys::{KeyError, RawKey, validate_signed_key, verify_signatures};
use crate::random::SecureRandom;
use crate::ratelimit::{LimitError, Limiter, RateLimited, RateLimiters};
use crate::store::{InitialKeys, Store, StoreError};
use crate::time::Clock;

/// `[devices]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevicesConfig {
    /// Devices per account, the primary included (Signal: 6).
    pub max_per_account: u8,
}

impl Default for DevicesConfig {
    fn default() -> Self {
        DevicesConfig {
            max_per_account: super::DEFAULT_MAX_DEVICES,
        }
    }
}

/// Why a device operation failed; the server maps each to its status.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// 401: missing or malformed credentials, a linked device doing what only the primary may, or removing another
    /// linked device.
    #[error("unauthorized")]
    Unauthorized,
    /// 403: a bad, expired or used link token (or its account is gone).
    #[error("invalid, expired or used link token")]
    BadToken,
    /// 403: the primary device cannot be removed.
    #[error("the primary device cannot be removed")]
    PrimaryRemoval,
    /// 411: the account has its maximum of devices.
    #[error("the account already has its maximum of {0} devices")]
    TooManyDevices(u8),
    /// 422: attributes, keys, signatures or the password.
    #[error("{0}")]
    Invalid(String),
    /// 429.
    #[error(transparent)]
    RateLimited(RateLimited),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LimitError> for DeviceError {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::Limited(r) => DeviceError::RateLimited(r),
            LimitError::Store(s) => DeviceError::Store(s),
        }
    }
}

impl From<RemovalRefused> for DeviceError {
    fn from(e: RemovalRefused) -> Self {
        match e {
            RemovalRefused::NotAllowed => DeviceError::Unauthorized,
            RemovalRefused::Primary => DeviceError::PrimaryRemoval,
        }
    }
}

impl From<LinkTokenError> for DeviceError {
    fn from(_: LinkTokenError) -> Self {
        DeviceError::BadToken
    }
}

/// `PUT /v1/devices/link`, decoded but unvalidated.
#[derive(Debug, Clone, Default)]
pub struct LinkRequest {
    /// The link token the primary sent in its provisioning message.
    pub verification_code: String,
    /// The new device's attributes (only the device-level part and capabilities count).
    pub attributes: Option<RawAccountAttributes>,
    /// ACI signed EC prekey.
    pub aci_signed_pre_key: Option<RawKey>,
    /// PNI signed EC prekey.
    pub pni_signed_pre_key: Option<RawKey>,
    /// ACI last-resort Kyber key.
    pub aci_pq_last_resort_pre_key: Option<RawKey>,
    /// PNI last-resort Kyber key.
    pub pni_pq_last_resort_pre_key: Option<RawKey>,
}

/// A linked device, as `PUT /v1/devices/link` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkedDevice {
    /// The account.
    pub aci: Aci,
    /// Its PNI.
    pub pni: Pni,
    /// The new device's id.
    pub device_id: DeviceId,
    /// SHA-256 of the link token it used (what `wait_for_linked_device` waiters are keyed by).
    pub token_hash: [u8; 32],
}

/// Device operations over the store.
#[derive(Clone)]
pub struct DeviceService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn SecureRandom>,
    limiters: RateLimiters,
    link_secret: Arc<Zeroizing<Vec<u8>>>,
    config: DevicesConfig,
}

fn invalid(msg: impl Into<String>) -> DeviceError {
    DeviceError::Invalid(msg.into())
}

fn key_error(e: KeyError) -> DeviceError {
    match e {
        KeyError::Store(s) => DeviceError::Store(s),
        other => invalid(other.to_string()),
    }
}

fn required<'a>(field: &str, key: &'a Option<RawKey>) -> Result<&'a RawKey, DeviceError> {
    key.as_ref()
        .ok_or_else(|| invalid(format!("{field} is required")))
}

impl DeviceService {
    /// Device operations; `link_secret` signs link tokens (keep it stable across restarts and processes, or
    /// tokens issued before a restart are refused).
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn SecureRandom>,
        limiters: RateLimiters,
        link_secret: Zeroizing<Vec<u8>>,
        config: DevicesConfig,
    ) -> Self {
        DeviceService {
            store,
            clock,
            rng,
            limiters,
            link_secret: Arc::new(link_secret),
            config,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> DevicesConfig {
        self.config
    }

    /// The account's devices, freshly loaded (a device may have been linked or removed since authentication).
    pub async fn devices(&self, aci: Aci) -> Result<Vec<Device>, DeviceError> {
        let account = self
            .store
            .account(aci)
            .await?
            .ok_or(DeviceError::Unauthorized)?;
        Ok(account.devices)
    }

    /// `GET /v1/devices/provisioning/code`, in Signal-Server's order: `allocateDevice` limiter, device limit, then
    /// primary only.
    pub async fn provisioning_code(
        &self,
        auth: &AuthenticatedDevice,
    ) -> Result<IssuedLinkToken, DeviceError> {
        let aci = auth.account.aci;
        self.limiters
            .check(Limiter::AllocateDevice, &aci.to_string())
            .await?;
        has_room(&auth.account, self.config.max_per_account)
            .map_err(|e| DeviceError::TooManyDevices(e.max))?;
        if auth.device_id != DeviceId::PRIMARY {
            return Err(DeviceError::Unauthorized);
        }
        issue_link_token(&self.link_secret, aci, self.clock.now())
            .ok_or_else(|| DeviceError::Store(StoreError::corrupt("link token signing failed")))
    }

    /// `PUT /v1/devices/link`. `authorization` is the Basic header: only its password counts (the new device's).
    /// Order: credentials (401), token (403), `verifyDevice` limiter (429), fields and signatures (422), device
    /// limit (411); then the store's transaction, which refuses a used token (403) or a full account (411) again.
    pub async fn link(
        &self,
        authorization: Option<&str>,
        request: LinkRequest,
    ) -> Result<LinkedDevice, DeviceError> {
        let (_, password) = decode_basic(authorization.ok_or(DeviceError::Unauthorized)?, true)
            .map_err(|_: CredentialError| DeviceError::Unauthorized)?;
        let now = self.clock.now();
        let token = verify_link_token(&self.link_secret, &request.verification_code, now)?;
        let account = self
            .store
            .account(token.aci)
            .await?
            .ok_or(DeviceError::BadToken)?;
        self.limiters
            .check(Limiter::VerifyDevice, &account.aci.to_string())
            .await?;

        if password.len() < MIN_NEW_PASSWORD_LEN {
            return Err(invalid(format!(
                "the device password must be at least {MIN_NEW_PASSWORD_LEN} characters (clients generate random ones)"
            )));
        }
        let attributes = AccountAttributes::validate(
            request
                .attributes
                .ok_or_else(|| invalid("accountAttributes is required"))?,
        )
        .map_err(|e| invalid(e.to_string()))?;
        let keys = InitialKeys {
            aci_signed: validate_signed_key(
                "aciSignedPreKey",
                required("aciSignedPreKey", &request.aci_signed_pre_key)?,
                false,
            )
            .map_err(key_error)?,
            pni_signed: validate_signed_key(
                "pniSignedPreKey",
                required("pniSignedPreKey", &request.pni_signed_pre_key)?,
                false,
            )
            .map_err(key_error)?,
            aci_last_resort: validate_signed_key(
                "aciPqLastResortPreKey",
                required("aciPqLastResortPreKey", &request.aci_pq_last_resort_pre_key)?,
                true,
            )
            .map_err(key_error)?,
            pni_last_resort: validate_signed_key(
                "pniPqLastResortPreKey",
                required("pniPqLastResortPreKey", &request.pni_pq_last_resort_pre_key)?,
                true,
            )
            .map_err(key_error)?,
        };
        verify_signatures(
            &account.aci_identity_key,
            &[&keys.aci_signed, &keys.aci_last_resort],
        )
        .map_err(key_error)?;
        verify_signatures(
            &account.pni_identity_key,
            &[&keys.pni_signed, &keys.pni_last_resort],
        )
        .map_err(key_error)?;
        has_room(&account, self.config.max_per_account)
            .map_err(|e| DeviceError::TooManyDevices(e.max))?;

        let device = Device {
            // Replaced by the store's choice.
            id: DeviceId::PRIMARY,
            credential: SaltedTokenHash::generate(&password, self.rng.as_ref()),
            settings: attributes.device,
            created_at: now,
            last_seen: crate::auth::start_of_day(now),
            capabilities: attributes.capabilities,
        };
        let outcome = self
            .store
            .link_device(NewLinkedDevice {
                aci: account.aci,
                token_hash: token.hash,
                token_expires_at: token.expires_at,
                device,
                keys,
                max_devices: self.config.max_per_account,
                now,
            })
            .await?;
        match outcome {
            DeviceLinkOutcome::Linked(device_id) => Ok(LinkedDevice {
                aci: account.aci,
                pni: account.pni,
                device_id,
                token_hash: token.hash,
            }),
            DeviceLinkOutcome::TokenUsed | DeviceLinkOutcome::NoAccount => {
                Err(DeviceError::BadToken)
            }
            DeviceLinkOutcome::TooManyDevices => {
                Err(DeviceError::TooManyDevices(self.config.max_per_account))
            }
        }
    }

    /// `DELETE /v1/devices/{id}`: a linked device may remove only itself, the primary any linked device; removing
    /// a device that does not exist succeeds (as upstream). Returns whether a device was removed.
    pub async fn remove(
        &self,
        auth: &AuthenticatedDevice,
        target: DeviceId,
    ) -> Result<bool, DeviceError> {
        check_removal(auth.device_id, target)?;
        Ok(self.store.remove_device(auth.account.aci, target).await?)
    }

    /// `PUT /v1/devices/capabilities` for the authenticated device (only `true` entries are kept).
    pub async fn set_capabilities(
        &self,
        auth: &AuthenticatedDevice,
        capabilities: Vec<(String, bool)>,
    ) -> Result<(), DeviceError> {
        let capabilities =
            validate_capabilities(capabilities).map_err(|e| invalid(e.to_string()))?;
        self.store
            .set_capabilities(auth.account.aci, auth.device_id, &capabilities)
            .await?;
        Ok(())
    }

    /// Charges one `waitForLinkedDevice` permit to the waiting account.
    pub async fn start_waiting(&self, aci: Aci) -> Result<(), DeviceError> {
        Ok(self
            .limiters
            .check(Limiter::WaitForLinkedDevice, &aci.to_string())
            .await?)
    }

    /// The device linked to `aci` with the token whose SHA-256 is `token_hash`, if it was linked (and still is).
    pub async fn linked_with(
        &self,
        aci: Aci,
        token_hash: &[u8; 32],
    ) -> Result<Option<Device>, DeviceError> {
        Ok(self.store.device_linked_with(aci, token_hash).await?)
    }
}
