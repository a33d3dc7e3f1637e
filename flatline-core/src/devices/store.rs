//! The device aggregate's storage: linking and removing devices of an account.

use async_trait::async_trait;

use crate::account::Device;
use crate::ids::{Aci, DeviceId};
use crate::store::{InitialKeys, StoreResult};
use crate::time::Timestamp;

/// A device to link, with everything the link transaction writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLinkedDevice {
    /// The account.
    pub aci: Aci,
    /// SHA-256 of the link token: recorded as used in the same transaction (a second link with it finds it).
    pub token_hash: [u8; 32],
    /// When the token expires: its used-marker is kept until then (after that the token is refused as expired).
    pub token_expires_at: Timestamp,
    /// The device, with any id: the store assigns the id ([`super::next_device_id`] over the devices it locked).
    pub device: Device,
    /// Its signed and last-resort keys for both identities.
    pub keys: InitialKeys,
    /// The account's device limit.
    pub max_devices: u8,
    /// Now (used-markers older than this are purged).
    pub now: Timestamp,
}

/// What a link did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceLinkOutcome {
    /// Linked with this id; any queue or one-time keys left under the id by an earlier device were deleted first.
    Linked(DeviceId),
    /// The token was used already: nothing written.
    TokenUsed,
    /// The account has its maximum of devices: nothing written.
    TooManyDevices,
    /// The account does not exist (anymore): nothing written.
    NoAccount,
}

/// Devices of accounts, beyond what registration writes.
///
/// A link is one transaction: lock the account, record the token as used (refusing a used one), assign the lowest
/// free id with [`super::next_device_id`] (refusing beyond the limit), delete whatever an earlier device with that
/// id left (its queue, its one-time and signed keys for both identities), insert the device and its keys. Two
/// links racing for the last free slot: exactly one wins. A removal likewise deletes the device, its queue and its
/// keys together.
#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// Links a device (see the trait docs).
    async fn link_device(&self, new: NewLinkedDevice) -> StoreResult<DeviceLinkOutcome>;

    /// The device that was linked to `aci` with the token of hash `token_hash`, while the token's used-marker is
    /// kept and the device still exists with the same creation time (an id reused since is not it).
    async fn device_linked_with(
        &self,
        aci: Aci,
        token_hash: &[u8; 32],
    ) -> StoreResult<Option<Device>>;

    /// Removes a device with its queue and keys; `false` when it does not exist. Never the primary (callers check
    /// [`super::check_removal`] first).
    async fn remove_device(&self, aci: Aci, device: DeviceId) -> StoreResult<bool>;

    /// Replaces a device's capabilities; `false` when it does not exist.
    async fn set_capabilities(
        &self,
        aci: Aci,
        device: DeviceId,
        capabilities: &std::collections::BTreeSet<String>,
    ) -> StoreResult<bool>;
}
