//! Usernames in memory: the claims table and each account's reservation pointer, holds and link blob. The rules
//! are the core's [`UsernameView`]; this file only loads and stores its data under the store's one lock.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use flatline_core::ids::Aci;
use flatline_core::store::StoreResult;
use flatline_core::time::Timestamp;
use flatline_core::usernames::{
    AccountUsernameState, ClaimKind, ConfirmOutcome, LinkOutcome, ReserveOutcome, UsernameClaim,
    UsernameStore, UsernameView,
};
use uuid::Uuid;

use super::cascade::{AccountCascade, Gone};
use super::{MemoryStore, State};

/// Username state of the whole store.
#[derive(Default)]
pub(super) struct Usernames {
    /// One claim per hash: the "one owner per hash" table.
    claims: BTreeMap<Vec<u8>, UsernameClaim>,
    /// Per-account reservation pointer, holds and link blob.
    accounts: HashMap<Aci, AccountUsernameState>,
}

impl AccountCascade for Usernames {
    /// Forgets everything the account claims or holds.
    fn remove_account(&mut self, gone: &Gone) {
        self.claims.retain(|_, c| c.owner != gone.aci);
        self.accounts.remove(&gone.aci);
    }
}

impl State {
    /// Runs `f` on the account's view (None when the account does not exist) and writes the result back.
    pub(super) fn with_view<R>(
        &mut self,
        aci: Aci,
        hashes: &[Vec<u8>],
        f: impl FnOnce(&mut UsernameView) -> R,
    ) -> Option<R> {
        let account = self.accounts.get_mut(&aci)?;
        let u = &mut self.usernames;
        let claims: Vec<UsernameClaim> = u
            .claims
            .values()
            .filter(|c| c.owner == aci)
            .chain(hashes.iter().filter_map(|h| u.claims.get(h)))
            .cloned()
            .collect();
        let mut view = UsernameView::new(
            aci,
            account.username_hash.clone(),
            account.username_link_handle,
            u.accounts.get(&aci).cloned().unwrap_or_default(),
            claims,
        );
        let result = f(&mut view);
        for (hash, claim) in view.claim_writes() {
            match claim {
                Some(c) => u.claims.insert(hash, c),
                None => u.claims.remove(&hash),
            };
        }
        account.username_hash = view.username_hash;
        account.username_link_handle = view.link_handle;
        u.accounts.insert(aci, view.state);
        Some(result)
    }
}

#[async_trait]
impl UsernameStore for MemoryStore {
    async fn reserve_username_hash(
        &self,
        aci: Aci,
        hashes: &[Vec<u8>],
        now: Timestamp,
    ) -> StoreResult<ReserveOutcome> {
        Ok(self
            .state()
            .with_view(aci, hashes, |v| v.reserve(hashes, now))
            .unwrap_or(ReserveOutcome::NoAccount))
    }

    async fn confirm_username_hash(
        &self,
        aci: Aci,
        hash: &[u8],
        encrypted_username: Option<&[u8]>,
        new_link_handle: Uuid,
        now: Timestamp,
    ) -> StoreResult<ConfirmOutcome> {
        Ok(self
            .state()
            .with_view(aci, &[hash.to_vec()], |v| {
                v.confirm(hash, encrypted_username, new_link_handle, now)
            })
            .unwrap_or(ConfirmOutcome::NoAccount))
    }

    async fn clear_username_hash(&self, aci: Aci, now: Timestamp) -> StoreResult<bool> {
        Ok(self
            .state()
            .with_view(aci, &[], |v| v.clear(now))
            .unwrap_or(false))
    }

    async fn account_by_username_hash(&self, hash: &[u8]) -> StoreResult<Option<Aci>> {
        Ok(self
            .state()
            .usernames
            .claims
            .get(hash)
            .filter(|c| c.kind == ClaimKind::Confirmed)
            .map(|c| c.owner))
    }

    async fn set_username_link(
        &self,
        aci: Aci,
        encrypted_username: &[u8],
        keep_handle: bool,
        new_handle: Uuid,
    ) -> StoreResult<LinkOutcome> {
        Ok(self
            .state()
            .with_view(aci, &[], |v| {
                v.set_link(encrypted_username, keep_handle, new_handle)
            })
            .unwrap_or(LinkOutcome::NoAccount))
    }

    async fn clear_username_link(&self, aci: Aci) -> StoreResult<bool> {
        Ok(self
            .state()
            .with_view(aci, &[], |v| v.clear_link())
            .is_some())
    }

    async fn username_link(&self, handle: Uuid) -> StoreResult<Option<Vec<u8>>> {
        let s = self.state();
        Ok(s.accounts
            .values()
            .find(|a| a.username_link_handle == Some(handle))
            .and_then(|a| s.usernames.accounts.get(&a.aci))
            .and_then(|u| u.link_blob.clone()))
    }

    async fn hold_username_for_reclaim(&self, aci: Aci, now: Timestamp) -> StoreResult<bool> {
        Ok(self
            .state()
            .with_view(aci, &[], |v| v.hold_for_reclaim(now))
            .unwrap_or(false))
    }

    async fn username_claim(&self, hash: &[u8]) -> StoreResult<Option<UsernameClaim>> {
        Ok(self.state().usernames.claims.get(hash).cloned())
    }

    async fn username_claims_of(&self, aci: Aci) -> StoreResult<Vec<UsernameClaim>> {
        Ok(self
            .state()
            .usernames
            .claims
            .values()
            .filter(|c| c.owner == aci)
            .cloned()
            .collect())
    }

    async fn account_username_state(&self, aci: Aci) -> StoreResult<Option<AccountUsernameState>> {
        let s = self.state();
        Ok(s.accounts
            .contains_key(&aci)
            .then(|| s.usernames.accounts.get(&aci).cloned().unwrap_or_default()))
    }
}
