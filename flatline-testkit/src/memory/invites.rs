//! In-memory registration invites, redemptions and suspensions.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use flatline_core::ids::Aci;
use flatline_core::invites::{
    CodeHash, CreateOutcome, Invite, InviteFilter, InviteId, InviteOwner, InviteRedemption,
    InviteState as State, InviteStore, NewInvite, OwnerLimits,
};
use flatline_core::store::StoreResult;
use flatline_core::time::Timestamp;

use super::MemoryStore;
use super::cascade::{AccountCascade, Gone};
use super::registration::RegistrationState;

#[derive(Default)]
pub(super) struct InviteState {
    invites: HashMap<InviteId, Invite>,
    by_code: HashMap<CodeHash, InviteId>,
    suspended: HashSet<Aci>,
    redemptions: Vec<InviteRedemption>,
}

impl InviteState {
    fn with_pending(
        &self,
        invite: &Invite,
        now: Timestamp,
        registration: &RegistrationState,
    ) -> Invite {
        Invite {
            pending: registration.reservations_of(invite.id, now),
            ..invite.clone()
        }
    }

    fn suspended_owner(&self, invite: &Invite) -> bool {
        matches!(invite.owner, InviteOwner::Account(a) if self.suspended.contains(&a))
    }

    /// The invite behind `code` if one more use can be reserved now.
    pub(super) fn reservable(
        &self,
        code: &CodeHash,
        now: Timestamp,
        registration: &RegistrationState,
    ) -> Option<InviteId> {
        let invite = self.by_code.get(code).and_then(|id| self.invites.get(id))?;
        let current = self.with_pending(invite, now, registration);
        (current.state(now, self.suspended_owner(invite)) == State::Active).then_some(invite.id)
    }

    /// Whether a reserved use of `id` may still be consumed at `now`: not revoked, not expired, owner not suspended.
    pub(super) fn still_usable(&self, id: InviteId, now: Timestamp) -> bool {
        self.invites
            .get(&id)
            .is_some_and(|i| i.reserved_use_consumable(now, self.suspended_owner(i)))
    }

    /// Turns a reservation into a use and logs the redemption.
    pub(super) fn consume(&mut self, id: InviteId, invitee: Aci, now: Timestamp) {
        if let Some(invite) = self.invites.get_mut(&id) {
            invite.uses += 1;
            invite.last_used_at = Some(now);
            self.redemptions.push(InviteRedemption {
                invite: id,
                inviter: invite.owner,
                invitee,
                at: now,
            });
        }
    }

    pub(super) fn revoke_all_of(&mut self, owner: Aci, now: Timestamp) -> u64 {
        let mut n = 0;
        for invite in self.invites.values_mut() {
            if invite.owner == InviteOwner::Account(owner) && invite.revoked_at.is_none() {
                invite.revoked_at = Some(now);
                n += 1;
            }
        }
        n
    }
}

impl AccountCascade for InviteState {
    /// Revokes the invites it owns (kept, so that what they admitted stays traceable).
    fn remove_account(&mut self, gone: &Gone) {
        self.revoke_all_of(gone.aci, gone.now);
    }
}

#[async_trait]
impl InviteStore for MemoryStore {
    async fn create_invite_within(
        &self,
        new: &NewInvite,
        limits: OwnerLimits,
    ) -> StoreResult<CreateOutcome> {
        let mut s = self.state();
        if let InviteOwner::Account(owner) = new.owner
            && !s.accounts.contains_key(&owner)
        {
            return Ok(CreateOutcome::OwnerGone);
        }
        let now = new.created_at;
        let (mut created, mut open) = (0u32, 0u32);
        for i in s.invites.invites.values().filter(|i| i.owner == new.owner) {
            created += 1;
            let current = s.invites.with_pending(i, now, &s.registration);
            if current.state(now, s.invites.suspended_owner(i)) == State::Active {
                open += 1;
            }
        }
        if created >= limits.max_created {
            return Ok(CreateOutcome::QuotaSpent);
        }
        if open >= limits.max_open {
            return Ok(CreateOutcome::TooManyOpen);
        }
        s.invites.by_code.insert(new.code_hash, new.id);
        s.invites.invites.insert(new.id, new.as_stored());
        Ok(CreateOutcome::Created)
    }

    async fn create_invite(&self, new: &NewInvite) -> StoreResult<()> {
        let mut s = self.state();
        s.invites.by_code.insert(new.code_hash, new.id);
        s.invites.invites.insert(new.id, new.as_stored());
        Ok(())
    }

    async fn invite(&self, id: InviteId, now: Timestamp) -> StoreResult<Option<Invite>> {
        let s = self.state();
        Ok(s.invites
            .invites
            .get(&id)
            .map(|i| s.invites.with_pending(i, now, &s.registration)))
    }

    async fn invite_by_code(&self, hash: &CodeHash, now: Timestamp) -> StoreResult<Option<Invite>> {
        let s = self.state();
        Ok(s.invites
            .by_code
            .get(hash)
            .and_then(|id| s.invites.invites.get(id))
            .map(|i| s.invites.with_pending(i, now, &s.registration)))
    }

    async fn list_invites(
        &self,
        filter: &InviteFilter,
        now: Timestamp,
    ) -> StoreResult<Vec<Invite>> {
        let s = self.state();
        let mut out: Vec<Invite> = s
            .invites
            .invites
            .values()
            .filter(|i| filter.owner.is_none_or(|o| o == i.owner))
            .map(|i| s.invites.with_pending(i, now, &s.registration))
            .filter(|i| {
                filter
                    .state
                    .is_none_or(|st| i.state(now, s.invites.suspended_owner(i)) == st)
            })
            .collect();
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(out)
    }

    async fn set_revoked(&self, id: InviteId, revoked_at: Option<Timestamp>) -> StoreResult<bool> {
        let mut s = self.state();
        Ok(s.invites
            .invites
            .get_mut(&id)
            .map(|i| i.revoked_at = revoked_at)
            .is_some())
    }

    async fn revoke_all_of(&self, owner: Aci, now: Timestamp) -> StoreResult<u64> {
        Ok(self.state().invites.revoke_all_of(owner, now))
    }

    async fn set_suspended(&self, aci: Aci, suspended: bool, _now: Timestamp) -> StoreResult<()> {
        let mut s = self.state();
        if suspended {
            s.invites.suspended.insert(aci);
        } else {
            s.invites.suspended.remove(&aci);
        }
        Ok(())
    }

    async fn is_suspended(&self, aci: Aci) -> StoreResult<bool> {
        Ok(self.state().invites.suspended.contains(&aci))
    }

    async fn redemption_of(&self, invitee: Aci) -> StoreResult<Option<InviteRedemption>> {
        Ok(self
            .state()
            .invites
            .redemptions
            .iter()
            .find(|r| r.invitee == invitee)
            .cloned())
    }

    async fn redemptions_by(&self, owner: InviteOwner) -> StoreResult<Vec<InviteRedemption>> {
        Ok(self
            .state()
            .invites
            .redemptions
            .iter()
            .filter(|r| r.inviter == owner)
            .cloned()
            .collect())
    }
}
