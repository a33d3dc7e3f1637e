//! Storage of versioned profiles.

use async_trait::async_trait;

use super::VersionedProfile;
use crate::ids::Aci;
use crate::store::StoreResult;

/// Versioned profiles, keyed by (ACI, version), and each account's current version.
///
/// `delete_account` removes every profile of the account on every backend.
#[async_trait]
pub trait ProfileStore: Send + Sync {
    /// Stores `profile` under `(aci, profile.version)` and makes that version the account's current one, in one
    /// transaction. A profile already stored under that version is replaced, except its commitment, which is kept
    /// (a version is bound to one profile key). Returns false, writing nothing, when the account does not exist.
    async fn set_profile(&self, aci: Aci, profile: &VersionedProfile) -> StoreResult<bool>;

    /// The profile stored under `(aci, version)`.
    async fn profile(&self, aci: Aci, version: &str) -> StoreResult<Option<VersionedProfile>>;

    /// The account's current profile version, if it ever set a profile.
    async fn current_profile_version(&self, aci: Aci) -> StoreResult<Option<String>>;
}
