//! Profile operations: setting one's own profile, and reading others' (authenticated or by access key).
//!
//! What a reader sees (API.md §13, docs/API.md "Profiles"):
//! - **Base profile** (`identityKey`, `unidentifiedAccess`, `unrestrictedUnidentifiedAccess`, `capabilities`,
//!   `badges`, `uuid`): every authorized reader — an authenticated account, or an anonymous one presenting the
//!   target's access key. The identity key is what a sender needs to verify safety numbers; it is not a secret.
//! - **Versioned content** (`name`, `about`, `aboutEmoji`, `avatar`, `paymentAddress`, `phoneNumberSharing`,
//!   and the profile key credential): the owner, anyone reading an `open` account, holders of the account's
//!   access key, and — for an `invite_only` account — only accounts holding an active grant from it. A stranger
//!   reading an `invite_only` account gets the same answer as for a version that does not exist (all `null`), so
//!   it learns neither the content nor whether the version is real.
//! - `unrestrictedUnidentifiedAccess` is reported `false` for `invite_only` accounts, whose server ignores it.

use std::sync::Arc;

use super::{
    AvatarChange, ProfileRuleError, RawProfile, VersionedProfile, account_capabilities,
    new_avatar_key, plan_profile, unidentified_access_checksum, validate,
};
use crate::account::Account;
use crate::auth::AuthenticatedDevice;
use crate::contacts::{authenticated_fetch_allowed, is_invite_only};
use crate::ids::{Aci, IdentityType, ServiceId};
pub use crate::keys::Requester as ProfileRequester;
use crate::keys::access_key_matches;
use crate::random::SecureRandom;
use crate::ratelimit::{LimitError, Limiter, RateLimited, RateLimiters};
use crate::store::{Store, StoreError};

/// Why a profile operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// 401: no or bad credentials, a wrong access key, or (with an access key) no such account.
    #[error("unauthorized")]
    Unauthorized,
    /// 404 (authenticated readers only).
    #[error("not found")]
    NotFound,
    /// 400: the commitment does not deserialize.
    #[error("commitment is not a valid ProfileKeyCommitment")]
    BadCommitment,
    /// 422: a field has a wrong size or format.
    #[error("{0}")]
    Invalid(String),
    /// 429.
    #[error(transparent)]
    RateLimited(RateLimited),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LimitError> for ProfileError {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::Limited(r) => ProfileError::RateLimited(r),
            LimitError::Store(s) => ProfileError::Store(s),
        }
    }
}

impl From<ProfileRuleError> for ProfileError {
    fn from(e: ProfileRuleError) -> Self {
        match e {
            ProfileRuleError::BadCommitment => ProfileError::BadCommitment,
            ProfileRuleError::Invalid(m) => ProfileError::Invalid(m),
        }
    }
}

/// The base profile every authorized reader sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileView {
    /// The target as read (ACI or PNI).
    pub service_id: ServiceId,
    /// The identity key of that identity.
    pub identity_key: Vec<u8>,
    /// `UnidentifiedAccessChecksum` (ACI targets with an access key only).
    pub unidentified_access: Option<[u8; 32]>,
    /// Whether sealed sender accepts any key (never for `invite_only` accounts, nor PNI targets).
    pub unrestricted_unidentified_access: bool,
    /// Known capabilities with their values.
    pub capabilities: Vec<(&'static str, bool)>,
}

/// A versioned read: the base profile and, when visible and stored, the version's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedView {
    /// The base profile.
    pub base: ProfileView,
    /// The version's content; `None` when not stored or not visible to the reader.
    pub profile: Option<VersionedProfile>,
    /// Whether the version is the account's current one (and visible): only then is a credential issued.
    pub current: bool,
}

/// A checker of serialized `ProfileKeyCommitment`s; the default is zkgroup's deserialization.
pub type CommitmentCheck = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// Profile operations.
#[derive(Clone)]
pub struct ProfileService {
    store: Arc<dyn Store>,
    rng: Arc<dyn SecureRandom>,
    limiters: RateLimiters,
    commitment_check: CommitmentCheck,
}

impl ProfileService {
    /// Operations over `store`; commitments must deserialize as zkgroup `ProfileKeyCommitment`s.
    pub fn new(store: Arc<dyn Store>, rng: Arc<dyn SecureRandom>, limiters: RateLimiters) -> Self {
        ProfileService {
            store,
            rng,
            limiters,
            commitment_check: Arc::new(|c: &[u8]| {
                c.len() == super::COMMITMENT_LEN
                    && crate::zk::ProfileKeyCommitment::from_bytes(c).is_ok()
            }),
        }
    }

    /// Replaces the commitment check (embedders without zkgroup checks, tests).
    pub fn with_commitment_check(mut self, check: CommitmentCheck) -> Self {
        self.commitment_check = check;
        self
    }

    /// `PUT /v1/profile`: validates, stores the version and makes it current. Returns the new avatar object key
    /// when the avatar changed to a new one (the client then uploads to it). Nothing is written on any error.
    pub async fn set(
        &self,
        caller: &AuthenticatedDevice,
        raw: &RawProfile,
    ) -> Result<Option<String>, ProfileError> {
        let valid = validate(raw)?;
        if !(self.commitment_check)(&valid.commitment) {
            return Err(ProfileError::BadCommitment);
        }
        let aci = caller.account.aci;
        let existing = self.store.profile(aci, &valid.version).await?;
        let new_key =
            (valid.avatar == AvatarChange::Update).then(|| new_avatar_key(self.rng.as_ref()));
        let profile = plan_profile(&valid, existing.as_ref(), new_key.clone());
        if !self.store.set_profile(aci, &profile).await? {
            return Err(ProfileError::Unauthorized);
        }
        Ok(new_key)
    }

    /// `GET /v1/profile/{serviceId}`.
    pub async fn base(
        &self,
        requester: &ProfileRequester,
        target: ServiceId,
    ) -> Result<ProfileView, ProfileError> {
        let (account, _) = self.authorize(requester, target).await?;
        self.view(&account, target).await
    }

    /// `GET /v1/profile/{serviceId}` with a `Group-Send-Token` ([`super::BaseReadAuth::GroupSendToken`]): the
    /// token must verify for exactly `[target]` at `now` with `params` (`None`: the instance has no zkgroup params,
    /// so nothing verifies) → else 401; then the account must exist → else 404. The token proves shared group
    /// membership, so the base profile is shown whatever the target's contact policy (versioned content is never
    /// read this way).
    pub async fn base_by_group_send_token(
        &self,
        token: &crate::zk::GroupSendFullToken,
        params: Option<&crate::zk::ServerSecretParams>,
        target: ServiceId,
        now: crate::time::Timestamp,
    ) -> Result<ProfileView, ProfileError> {
        let now = u64::try_from(now.as_secs()).unwrap_or(0);
        let verified = params.is_some_and(|p| {
            crate::zk::service::verify_group_send_token(p, token, &[target], now).is_ok()
        });
        if !verified {
            return Err(ProfileError::Unauthorized);
        }
        let account = match target {
            ServiceId::Aci(aci) => self.store.account(aci).await?,
            ServiceId::Pni(pni) => self.store.account_by_pni(pni).await?,
        }
        .ok_or(ProfileError::NotFound)?;
        self.view(&account, target).await
    }

    /// `GET /v1/profile/{aci}/{version}` (and the credential variant).
    pub async fn versioned(
        &self,
        requester: &ProfileRequester,
        target: Aci,
        version: &str,
    ) -> Result<VersionedView, ProfileError> {
        let target_id = ServiceId::Aci(target);
        let (account, content_visible) = self.authorize(requester, target_id).await?;
        let base = self.view(&account, target_id).await?;
        if !content_visible {
            return Ok(VersionedView {
                base,
                profile: None,
                current: false,
            });
        }
        let profile = self.store.profile(target, version).await?;
        let current = profile.is_some()
            && self.store.current_profile_version(target).await?.as_deref() == Some(version);
        Ok(VersionedView {
            base,
            profile,
            current,
        })
    }

    /// Checks the requester's right to read `target`; returns the account and whether versioned content is
    /// visible to the requester. Anonymous requests never learn whether the account exists (401 throughout).
    async fn authorize(
        &self,
        requester: &ProfileRequester,
        target: ServiceId,
    ) -> Result<(Account, bool), ProfileError> {
        match requester {
            ProfileRequester::Anonymous => Err(ProfileError::Unauthorized),
            ProfileRequester::AccessKey(key) => {
                // Access keys never open PNI targets: the key is ignored, so the request is unauthenticated.
                let ServiceId::Aci(aci) = target else {
                    return Err(ProfileError::Unauthorized);
                };
                let Some(account) = self.store.account(aci).await? else {
                    return Err(ProfileError::Unauthorized);
                };
                let unrestricted_allowed = !is_invite_only(self.store.as_ref(), aci).await?;
                if !access_key_matches(&account, key, unrestricted_allowed) {
                    return Err(ProfileError::Unauthorized);
                }
                Ok((account, true))
            }
            ProfileRequester::Device(caller) => {
                self.limiters
                    .check(Limiter::Profile, &caller.account.aci.to_string())
                    .await?;
                let account = match target {
                    ServiceId::Aci(aci) => self.store.account(aci).await?,
                    ServiceId::Pni(pni) => self.store.account_by_pni(pni).await?,
                }
                .ok_or(ProfileError::NotFound)?;
                let visible = authenticated_fetch_allowed(
                    self.store.as_ref(),
                    account.aci,
                    caller.account.aci,
                )
                .await?;
                Ok((account, visible))
            }
        }
    }

    async fn view(
        &self,
        account: &Account,
        target: ServiceId,
    ) -> Result<ProfileView, ProfileError> {
        let identity = target.identity_type();
        let (unidentified_access, unrestricted) = match identity {
            IdentityType::Pni => (None, false),
            IdentityType::Aci => (
                account
                    .settings
                    .unidentified_access_key
                    .as_ref()
                    .map(unidentified_access_checksum),
                account.settings.unrestricted_unidentified_access
                    && !is_invite_only(self.store.as_ref(), account.aci).await?,
            ),
        };
        Ok(ProfileView {
            service_id: target,
            identity_key: account.identity_key(identity).to_vec(),
            unidentified_access,
            unrestricted_unidentified_access: unrestricted,
            capabilities: account_capabilities(account),
        })
    }
}
