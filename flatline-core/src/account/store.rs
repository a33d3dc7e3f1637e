//! The account store contract: accounts with their devices.

use async_trait::async_trait;

use super::{Account, AccountAttributes};
use crate::ids::{Aci, DeviceId, Pni, Principal, ServiceId};
use crate::keys::InitialKeys;
use crate::store::StoreResult;
use crate::time::Timestamp;

/// Everything a new account consists of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    /// The account (with exactly one device, the primary).
    pub account: Account,
    /// Its initial signed keys, stored in the same transaction.
    pub keys: InitialKeys,
}

/// Accounts and their devices.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates an account, its primary device and initial signed keys in one transaction.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the ACI, PNI or principal is already in use; nothing is written then.
    async fn create_account(&self, new: NewAccount) -> StoreResult<()>;

    /// The account with this ACI.
    async fn account(&self, aci: Aci) -> StoreResult<Option<Account>>;

    /// The account with this ACI, for accepting a device's credentials. A backend may answer from a cache: it
    /// always reflects what was committed through this store value, and what another process committed once that
    /// process's change has been notified (a bound the backend documents). `None` is never cached. Only an
    /// acceptance may rest on a cached answer: a caller confirms a refusal with [`AccountStore::account`].
    async fn account_for_auth(&self, aci: Aci) -> StoreResult<Option<AuthAccount>> {
        Ok(self.account(aci).await?.map(|account| AuthAccount {
            account,
            cached: false,
        }))
    }

    /// The accounts of `ids` (ACIs, or current PNIs), in their order, `None` where there is none. The default
    /// loads them one by one; a backend where every load is a round trip loads them at once.
    async fn accounts_of(&self, ids: &[ServiceId]) -> StoreResult<Vec<Option<Account>>> {
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            found.push(match *id {
                ServiceId::Aci(aci) => self.account(aci).await?,
                ServiceId::Pni(pni) => self.account_by_pni(pni).await?,
            });
        }
        Ok(found)
    }

    /// The account whose current PNI is `pni`.
    async fn account_by_pni(&self, pni: Pni) -> StoreResult<Option<Account>>;

    /// The account holding `principal`.
    async fn account_by_principal(&self, principal: &Principal) -> StoreResult<Option<Account>>;

    /// Applies attributes: the device-level part to the device, the account-level part to the account.
    /// Returns false (writing nothing) when that generation of the device does not exist.
    async fn update_attributes(
        &self,
        writer: &DeviceGeneration,
        attributes: &AccountAttributes,
    ) -> StoreResult<bool>;

    /// Records a device's last use (callers round it to a day so this writes at most daily).
    async fn touch_device(
        &self,
        aci: Aci,
        device: DeviceId,
        last_seen: Timestamp,
    ) -> StoreResult<()>;

    /// Replaces every device credential of the account with its locked form; returns false when absent.
    async fn lock_credentials(&self, aci: Aci) -> StoreResult<bool>;

    /// Deletes the account, atomically with everything every aggregate keeps of it: each aggregate's store
    /// contract says what that is (keys under its ACI and PNI, owned invites revoked, username claims, the contact
    /// graph and shortcodes, message queues and filed reports, profiles, linked devices). Its (provider, sub)
    /// binding becomes a tombstone kept for [`TOMBSTONE_RETENTION`](crate::registration::TOMBSTONE_RETENTION) from
    /// `now`, so the same subject re-registering in that time gets the same ACI. Returns false when absent.
    /// Backends compose this from one hook per aggregate (docs/ARCHITECTURE.md, "where to add a new aggregate").
    async fn delete_account(&self, aci: Aci, now: Timestamp) -> StoreResult<bool>;
}

/// A device as a request authenticated it. Writes made on its behalf apply only while that same device exists: the
/// credential salt is drawn afresh for every device (registration, re-registration, each link), so a request
/// authenticated just before its device was removed, relinked under the same id or replaced by a re-registration
/// writes nothing (security review F-10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceGeneration {
    /// The account.
    pub aci: Aci,
    /// The device id.
    pub device: DeviceId,
    /// The device's credential salt when it authenticated.
    pub credential_salt: String,
}

impl DeviceGeneration {
    /// The generation of `device` of `account`, if it has that device.
    pub fn of(account: &crate::account::Account, device: DeviceId) -> Option<Self> {
        account.device(device).map(|d| DeviceGeneration {
            aci: account.aci,
            device,
            credential_salt: d.credential.salt.clone(),
        })
    }
}

/// An account as [`AccountStore::account_for_auth`] found it.
#[derive(Debug, Clone)]
pub struct AuthAccount {
    /// The account.
    pub account: Account,
    /// Whether it came from a cache rather than from the store just now.
    pub cached: bool,
}
