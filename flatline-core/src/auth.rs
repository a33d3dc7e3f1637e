//! Authentication of device credentials.

use std::sync::Arc;
use std::time::Duration;

use crate::account::Account;
use crate::credentials::DeviceCredentials;
use crate::ids::DeviceId;
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
}

impl Authenticator {
    /// An authenticator over `store`.
    pub fn new(store: Arc<dyn AccountStore>, clock: Arc<dyn Clock>) -> Self {
        Authenticator { store, clock }
    }

    /// Verifies `credentials` in constant time and records the device's use (at most one write a day).
    pub async fn authenticate(
        &self,
        credentials: &DeviceCredentials,
    ) -> Result<AuthenticatedDevice, AuthError> {
        let account = self
            .store
            .account(credentials.aci)
            .await?
            .ok_or(AuthError::UnknownAccount)?;
        let device = account
            .device(credentials.device_id)
            .ok_or(AuthError::UnknownDevice)?;
        if device.credential.is_locked() {
            return Err(AuthError::Locked);
        }
        if !device.credential.verify(&credentials.password) {
            return Err(AuthError::WrongPassword);
        }
        let today = start_of_day(self.clock.now());
        if device.last_seen < today {
            self.store
                .touch_device(account.aci, device.id, today)
                .await?;
        }
        Ok(AuthenticatedDevice {
            device_id: credentials.device_id,
            account,
        })
    }
}

fn start_of_day(t: Timestamp) -> Timestamp {
    let day_ms = DAY.as_millis() as i64;
    Timestamp(t.as_millis().div_euclid(day_ms) * day_ms)
}
