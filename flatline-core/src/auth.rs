//! Authentication of device credentials.

use std::sync::Arc;
use std::time::Duration;

use crate::account::Account;
use crate::credentials::{DeviceCredentials, SaltedTokenHash};
use crate::ids::DeviceId;
use crate::ratelimit::{Level, Limiter, RateLimited, RateLimiters};
use crate::store::{AccountStore, StoreError};
use crate::time::{Clock, Timestamp};

/// An authenticated request's account and device.
#[derive(Debug, Clone)]
pub struct AuthenticatedDevice {
    /// The account, as loaded for this request.
    pub account: Account,
    /// The device that authenticated.
    pub device_id: DeviceId,
}

/// Why authentication failed. Every reason answers 401; the reason is for logs and metrics only.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No account with that ACI.
    #[error("unknown account")]
    UnknownAccount,
    /// The account has no such device.
    #[error("unknown device")]
    UnknownDevice,
    /// The credential is locked (e.g. after a back-channel logout).
    #[error("credential locked")]
    Locked,
    /// Wrong password.
    #[error("wrong password")]
    WrongPassword,
    /// Too many failures for this account from this network (or from everywhere, see
    /// [`Limiter::AuthFailureAccount`]); the password was not checked. 429.
    #[error(transparent)]
    RateLimited(RateLimited),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

const DAY: Duration = Duration::from_secs(86_400);

/// Checks Basic credentials against stored salted hashes.
#[derive(Clone)]
pub struct Authenticator {
    store: Arc<dyn AccountStore>,
    clock: Arc<dyn Clock>,
    limiters: Option<RateLimiters>,
}

/// Verified when the account or device does not exist, so that a miss costs the same hashing as a wrong password.
fn decoy() -> SaltedTokenHash {
    SaltedTokenHash {
        hash: format!("2.{}", "0".repeat(64)),
        salt: "0".repeat(32),
    }
}

impl Authenticator {
    /// An authenticator over `store`, without failure limits (see [`Authenticator::with_failure_limits`]).
    pub fn new(store: Arc<dyn AccountStore>, clock: Arc<dyn Clock>) -> Self {
        Authenticator {
            store,
            clock,
            limiters: None,
        }
    }

    /// Limits failed authentication in [`Authenticator::authenticate_from`]: per (account, client network) with
    /// [`Limiter::AuthFailure`], and per account with [`Limiter::AuthFailureAccount`] (when that one is empty, a
    /// network needs a full `AuthFailure` bucket, i.e. gets one try per regeneration). Only failures are charged,
    /// so the owner's networks keep working while someone guesses elsewhere.
    pub fn with_failure_limits(mut self, limiters: RateLimiters) -> Self {
        self.limiters = Some(limiters);
        self
    }

    /// [`Authenticator::authenticate`] for a request from `network` (a limiter key, e.g. the client's /64): refused
    /// with [`AuthError::RateLimited`] before the password is checked when the failure limits say so, and a failure
    /// is charged to them.
    pub async fn authenticate_from(
        &self,
        credentials: &DeviceCredentials,
        network: &str,
    ) -> Result<AuthenticatedDevice, AuthError> {
        let Some(limiters) = &self.limiters else {
            return self.authenticate(credentials).await;
        };
        let account = credentials.aci.to_string();
        let pair = format!("{account}/{network}");
        match limiters.level(Limiter::AuthFailure, &pair).await? {
            Level::Empty(r) => return Err(AuthError::RateLimited(r)),
            Level::Partial => {
                if let Level::Empty(r) = limiters
                    .level(Limiter::AuthFailureAccount, &account)
                    .await?
                {
                    return Err(AuthError::RateLimited(r));
                }
            }
            Level::Full => {}
        }
        let result = self.authenticate(credentials).await;
        if let Err(
            AuthError::UnknownAccount
            | AuthError::UnknownDevice
            | AuthError::Locked
            | AuthError::WrongPassword,
        ) = &result
        {
            for (limiter, key) in [
                (Limiter::AuthFailure, pair.as_str()),
                (Limiter::AuthFailureAccount, account.as_str()),
            ] {
                match limiters.check(limiter, key).await {
                    Ok(()) | Err(crate::ratelimit::LimitError::Limited(_)) => {}
                    Err(crate::ratelimit::LimitError::Store(e)) => return Err(e.into()),
                }
            }
        }
        result
    }

    /// Verifies `credentials` in constant time and records the device's use (at most one write a day). An unknown
    /// account or device costs the same password hashing as a wrong password. No failure limits: request paths
    /// use [`Authenticator::authenticate_from`].
    pub async fn authenticate(
        &self,
        credentials: &DeviceCredentials,
    ) -> Result<AuthenticatedDevice, AuthError> {
        // A cached account may accept; a refusal is decided on the stored one (a new device or a new password the
        // cache has not seen yet must not be refused).
        let opens = |account: &Account| {
            account.device(credentials.device_id).is_some_and(|d| {
                !d.credential.is_locked() && d.credential.verify(&credentials.password)
            })
        };
        let loaded = match self.store.account_for_auth(credentials.aci).await? {
            Some(found) if found.cached => {
                if opens(&found.account) {
                    return self.accepted(found.account, credentials.device_id).await;
                }
                self.store.account(credentials.aci).await?
            }
            other => other.map(|found| found.account),
        };
        let Some(account) = loaded else {
            decoy().verify(&credentials.password);
            return Err(AuthError::UnknownAccount);
        };
        let Some(device) = account.device(credentials.device_id) else {
            decoy().verify(&credentials.password);
            return Err(AuthError::UnknownDevice);
        };
        if device.credential.is_locked() {
            return Err(AuthError::Locked);
        }
        if !device.credential.verify(&credentials.password) {
            return Err(AuthError::WrongPassword);
        }
        self.accepted(account, credentials.device_id).await
    }

    /// Records the device's use (at most one write a day) and hands out the authenticated device.
    async fn accepted(
        &self,
        account: Account,
        device_id: DeviceId,
    ) -> Result<AuthenticatedDevice, AuthError> {
        let today = start_of_day(self.clock.now());
        if account
            .device(device_id)
            .is_some_and(|d| d.last_seen < today)
        {
            self.store
                .touch_device(account.aci, device_id, today)
                .await?;
        }
        Ok(AuthenticatedDevice { device_id, account })
    }
}

pub(crate) fn start_of_day(t: Timestamp) -> Timestamp {
    let day_ms = DAY.as_millis() as i64;
    Timestamp(t.as_millis().div_euclid(day_ms) * day_ms)
}
