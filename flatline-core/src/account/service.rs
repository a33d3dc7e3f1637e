//! Account operations behind the accounts endpoints.

use std::sync::Arc;

use crate::account::{AccountAttributes, AttributesError, RawAccountAttributes};
use crate::auth::AuthenticatedDevice;
use crate::ids::DeviceId;
use crate::store::{Store, StoreError};
use crate::time::Clock;

/// Why an account operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Attributes failed validation (422).
    #[error(transparent)]
    Attributes(#[from] AttributesError),
    /// Only the primary device may do this (403).
    #[error("only the primary device may do this")]
    PrimaryRequired,
    /// The account or the device disappeared (or was replaced) while the request ran (401: its credentials no
    /// longer exist).
    #[error("account no longer exists")]
    Gone,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Account operations.
#[derive(Clone)]
pub struct Accounts {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl Accounts {
    /// Operations over `store`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Accounts { store, clock }
    }

    /// Validates and applies account attributes for the calling device.
    pub async fn set_attributes(
        &self,
        caller: &AuthenticatedDevice,
        raw: RawAccountAttributes,
    ) -> Result<(), AccountError> {
        let attributes = AccountAttributes::validate(raw)?;
        let writer = crate::store::DeviceGeneration::of(&caller.account, caller.device_id)
            .ok_or(AccountError::Gone)?;
        if self.store.update_attributes(&writer, &attributes).await? {
            Ok(())
        } else {
            Err(AccountError::Gone)
        }
    }

    /// Deletes the caller's account with its devices and keys. Only the primary device may.
    pub async fn delete(&self, caller: &AuthenticatedDevice) -> Result<(), AccountError> {
        if caller.device_id != DeviceId::PRIMARY {
            return Err(AccountError::PrimaryRequired);
        }
        self.store
            .delete_account(caller.account.aci, self.clock.now())
            .await?;
        Ok(())
    }
}
