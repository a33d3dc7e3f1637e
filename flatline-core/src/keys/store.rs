//! The key store contract: prekeys, partitioned by identity and device.

use async_trait::async_trait;

use super::{BundleKeys, EcPreKey, KeyCounts, KeyUpload, SignedPreKey, TakenKeys};
use crate::account::DeviceGeneration;
use crate::ids::{DeviceId, ServiceId};
use crate::store::StoreResult;

/// Prekeys, partitioned by identity (an ACI or a PNI) and device.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Applies an upload in one transaction: a present (non-empty) one-time list replaces the stored list, an absent
    /// one keeps it; a present signed or last-resort key overwrites the stored one.
    async fn store_keys(
        &self,
        owner: ServiceId,
        device: DeviceId,
        upload: &KeyUpload,
    ) -> StoreResult<()>;

    /// [`KeyStore::store_keys`] for `owner` (the writer's ACI or PNI) and the writer's device, applied only while
    /// that generation of the device exists (checked in the same transaction); false, writing nothing, otherwise.
    async fn store_keys_as(
        &self,
        writer: &DeviceGeneration,
        owner: ServiceId,
        upload: &KeyUpload,
    ) -> StoreResult<bool>;

    /// Atomically removes and returns the lowest-id one-time EC key and the lowest-id one-time Kyber key, if any.
    /// Concurrent callers never receive the same key.
    async fn take_one_time_keys(
        &self,
        owner: ServiceId,
        device: DeviceId,
    ) -> StoreResult<TakenKeys>;

    /// The signed EC prekey of `device`, if stored.
    async fn signed_pre_key(
        &self,
        owner: ServiceId,
        device: DeviceId,
    ) -> StoreResult<Option<SignedPreKey>>;

    /// The last-resort Kyber key of `device`, if stored. Never consumed.
    async fn last_resort_key(
        &self,
        owner: ServiceId,
        device: DeviceId,
    ) -> StoreResult<Option<SignedPreKey>>;

    /// One device's part of a prekey bundle, taken at once: `None` when the device has no signed prekey (then
    /// nothing is taken); otherwise the signed prekey, the one-time keys [`KeyStore::take_one_time_keys`] takes,
    /// and the last-resort Kyber key in place of a one-time one when none was left. The default composes those
    /// calls; a backend where each call is a round trip does it in one.
    async fn take_bundle_keys(
        &self,
        owner: ServiceId,
        device: DeviceId,
    ) -> StoreResult<Option<BundleKeys>> {
        let Some(signed) = self.signed_pre_key(owner, device).await? else {
            return Ok(None);
        };
        let taken = self.take_one_time_keys(owner, device).await?;
        let kem = match taken.kem {
            Some(kem) => Some(kem),
            None => self.last_resort_key(owner, device).await?,
        };
        Ok(Some(BundleKeys {
            signed,
            one_time: taken.ec,
            kem,
        }))
    }

    /// How many one-time keys remain.
    async fn key_counts(&self, owner: ServiceId, device: DeviceId) -> StoreResult<KeyCounts>;

    /// All one-time EC keys of `device`, lowest id first (for tests and diagnostics).
    async fn one_time_ec_keys(
        &self,
        owner: ServiceId,
        device: DeviceId,
    ) -> StoreResult<Vec<EcPreKey>>;
}
