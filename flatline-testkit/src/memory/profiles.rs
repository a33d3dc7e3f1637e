//! Versioned profiles.

use std::collections::HashMap;

use async_trait::async_trait;
use flatline_core::ids::Aci;
use flatline_core::profiles::{ProfileStore, VersionedProfile};
use flatline_core::store::StoreResult;

use super::MemoryStore;
use super::cascade::{AccountCascade, Gone};

#[derive(Default)]
pub(super) struct ProfileState {
    versions: HashMap<(Aci, String), VersionedProfile>,
    current: HashMap<Aci, String>,
}

impl AccountCascade for ProfileState {
    /// Removes its versioned profiles.
    fn remove_account(&mut self, gone: &Gone) {
        self.versions.retain(|(a, _), _| *a != gone.aci);
        self.current.remove(&gone.aci);
    }
}

#[async_trait]
impl ProfileStore for MemoryStore {
    async fn set_profile(&self, aci: Aci, profile: &VersionedProfile) -> StoreResult<bool> {
        let mut s = self.state();
        if !s.accounts.contains_key(&aci) {
            return Ok(false);
        }
        let key = (aci, profile.version.clone());
        let mut stored = profile.clone();
        if let Some(old) = s.profiles.versions.get(&key) {
            stored.commitment = old.commitment.clone();
        }
        s.profiles.versions.insert(key, stored);
        s.profiles.current.insert(aci, profile.version.clone());
        Ok(true)
    }

    async fn profile(&self, aci: Aci, version: &str) -> StoreResult<Option<VersionedProfile>> {
        Ok(self
            .state()
            .profiles
            .versions
            .get(&(aci, version.to_owned()))
            .cloned())
    }

    async fn current_profile_version(&self, aci: Aci) -> StoreResult<Option<String>> {
        Ok(self.state().profiles.current.get(&aci).cloned())
    }
}
