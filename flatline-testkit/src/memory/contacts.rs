//! Contact policies, invites and grants in memory. Each method runs under the store's one lock, which makes it
//! atomic; the decisions come from the pure rules in `flatline_core::contacts`, as in every backend.

use std::collections::HashMap;

use async_trait::async_trait;
use flatline_core::contacts::{
    self, ContactInvite, ContactInviteId, ContactPolicy, CreateInvite, Decisions, Flood,
    FloodConfig, Grant, GrantState, Introduction, PolicyMode, RedeemPlan, Redemption, Via,
};
use flatline_core::ids::Aci;
use flatline_core::shortcodes::{ContactShortcode, ShortcodeId};
use flatline_core::store::{ContactStore, StoreResult};
use flatline_core::time::Timestamp;

use super::MemoryStore;
use super::cascade::{AccountCascade, Gone};

#[derive(Default)]
pub(super) struct ContactState {
    policies: HashMap<Aci, ContactPolicy>,
    invites: HashMap<ContactInviteId, ContactInvite>,
    /// Keyed by (owner, grantee).
    pub(super) grants: HashMap<(Aci, Aci), Grant>,
    /// Contact shortcodes (see `memory/shortcodes.rs`), part of the contact graph.
    pub(super) shortcodes: HashMap<ShortcodeId, ContactShortcode>,
}

impl AccountCascade for ContactState {
    /// Removes its policy, contact invites and shortcodes, and every grant it gave or holds.
    fn remove_account(&mut self, gone: &Gone) {
        let aci = gone.aci;
        self.policies.remove(&aci);
        self.invites.retain(|_, i| i.owner != aci);
        self.shortcodes.retain(|_, c| c.owner != aci);
        self.grants
            .retain(|(owner, grantee), _| *owner != aci && *grantee != aci);
    }
}

impl ContactState {
    pub(super) fn invite_only(&self, aci: Aci) -> bool {
        self.policies
            .get(&aci)
            .is_some_and(|p| p.mode == PolicyMode::InviteOnly)
    }

    /// Grants the owner accepted through invites or introductions after `since`.
    pub(super) fn recent(&self, owner: Aci, since: Timestamp) -> u32 {
        let n = self
            .grants
            .values()
            .filter(|g| g.owner == owner && g.via != Via::Direct && g.created_at > since)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

fn sorted_invites(mut v: Vec<ContactInvite>) -> Vec<ContactInvite> {
    v.sort_by_key(|i| (i.created_at, i.id));
    v
}

#[async_trait]
impl ContactStore for MemoryStore {
    async fn contact_policy(&self, aci: Aci) -> StoreResult<Option<ContactPolicy>> {
        Ok(self.state().contacts.policies.get(&aci).copied())
    }

    async fn set_contact_policy(&self, aci: Aci, policy: ContactPolicy) -> StoreResult<bool> {
        let mut s = self.state();
        if !s.accounts.contains_key(&aci) {
            return Ok(false);
        }
        let c = &mut s.contacts;
        c.policies.insert(aci, policy);
        if policy.mode == PolicyMode::Open {
            c.invites.retain(|_, i| i.owner != aci);
            c.shortcodes.retain(|_, sc| sc.owner != aci);
            c.grants.retain(|(owner, _), _| *owner != aci);
        }
        Ok(true)
    }

    async fn create_contact_invite(
        &self,
        invite: &ContactInvite,
        max_per_owner: u32,
    ) -> StoreResult<CreateInvite> {
        let mut s = self.state();
        if !s.accounts.contains_key(&invite.owner) {
            return Ok(CreateInvite::NotInviteOnly);
        }
        let c = &mut s.contacts;
        if !c.invite_only(invite.owner) {
            return Ok(CreateInvite::NotInviteOnly);
        }
        let held = c
            .invites
            .values()
            .filter(|i| i.owner == invite.owner)
            .count();
        if held >= usize::try_from(max_per_owner).unwrap_or(usize::MAX) {
            return Ok(CreateInvite::QuotaExceeded);
        }
        c.invites.insert(invite.id, invite.clone());
        Ok(CreateInvite::Created)
    }

    async fn contact_invites(&self, owner: Aci) -> StoreResult<Vec<ContactInvite>> {
        let s = self.state();
        Ok(sorted_invites(
            s.contacts
                .invites
                .values()
                .filter(|i| i.owner == owner)
                .cloned()
                .collect(),
        ))
    }

    async fn contact_invite(
        &self,
        owner: Aci,
        id: ContactInviteId,
    ) -> StoreResult<Option<ContactInvite>> {
        Ok(self
            .state()
            .contacts
            .invites
            .get(&id)
            .filter(|i| i.owner == owner)
            .cloned())
    }

    async fn delete_contact_invite(&self, owner: Aci, id: ContactInviteId) -> StoreResult<bool> {
        let mut s = self.state();
        let invites = &mut s.contacts.invites;
        if invites.get(&id).is_some_and(|i| i.owner == owner) {
            invites.remove(&id);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    async fn rotate_contact_invite(
        &self,
        owner: Aci,
        id: ContactInviteId,
        code_hash: [u8; 32],
    ) -> StoreResult<Option<ContactInvite>> {
        let mut s = self.state();
        Ok(s.contacts
            .invites
            .get_mut(&id)
            .filter(|i| i.owner == owner)
            .map(|i| {
                i.code_hash = code_hash;
                i.clone()
            }))
    }

    async fn resume_contact_invite(&self, owner: Aci, id: ContactInviteId) -> StoreResult<bool> {
        let mut s = self.state();
        let Some(i) = s.contacts.invites.get_mut(&id).filter(|i| i.owner == owner) else {
            return Ok(false);
        };
        i.paused_until = None;
        i.flood = None;
        i.bucket = None;
        Ok(true)
    }

    async fn redeem_contact_invite(
        &self,
        code_hash: &[u8; 32],
        redeemer: Aci,
        now: Timestamp,
        config: &FloodConfig,
    ) -> StoreResult<Redemption> {
        let mut s = self.state();
        if !s.accounts.contains_key(&redeemer) {
            return Ok(Redemption::Invalid);
        }
        let c = &mut s.contacts;
        // Lookup by hash: timing reveals at most bits of a hash, never of a code.
        let Some(invite) = c
            .invites
            .values()
            .find(|i| &i.code_hash == code_hash)
            .cloned()
        else {
            return Ok(Redemption::Invalid);
        };
        let owner = invite.owner;
        let existing = c.grants.get(&(owner, redeemer)).copied();
        let recent = c.recent(owner, contacts::owner_window_start(now, config));
        let plan =
            contacts::plan_redemption(&invite, redeemer, existing.as_ref(), recent, now, config);
        Ok(match plan {
            RedeemPlan::Invalid => Redemption::Invalid,
            RedeemPlan::OwnInvite => Redemption::OwnInvite,
            RedeemPlan::Paused => Redemption::Paused,
            RedeemPlan::Existing(state) => Redemption::Existing { owner, state },
            RedeemPlan::Grant { state, bucket } => {
                c.grants.insert(
                    (owner, redeemer),
                    Grant {
                        owner,
                        grantee: redeemer,
                        state,
                        via: Via::Invite(invite.id),
                        created_at: now,
                    },
                );
                if let Some(i) = c.invites.get_mut(&invite.id) {
                    i.uses += 1;
                    i.bucket = Some(bucket);
                }
                Redemption::Granted { owner, state }
            }
            RedeemPlan::Trip {
                since,
                paused_until,
            } => {
                let mut quarantined = 0u32;
                for g in c.grants.values_mut().filter(|g| {
                    g.owner == owner && g.via == Via::Invite(invite.id) && g.created_at >= since
                }) {
                    if g.state == GrantState::Active {
                        g.state = GrantState::Quarantined;
                    }
                    if g.state == GrantState::Quarantined {
                        quarantined += 1;
                    }
                }
                let flood = Flood {
                    detected_at: now,
                    since,
                    quarantined,
                };
                if let Some(i) = c.invites.get_mut(&invite.id) {
                    i.paused_until = Some(paused_until);
                    i.flood = Some(flood);
                }
                Redemption::Tripped(flood)
            }
        })
    }

    async fn contact_grant(&self, owner: Aci, grantee: Aci) -> StoreResult<Option<Grant>> {
        Ok(self.state().contacts.grants.get(&(owner, grantee)).copied())
    }

    async fn contact_grants(&self, owner: Aci) -> StoreResult<Vec<Grant>> {
        let s = self.state();
        let mut v: Vec<Grant> = s
            .contacts
            .grants
            .values()
            .filter(|g| g.owner == owner)
            .copied()
            .collect();
        v.sort_by_key(|g| (g.created_at, g.grantee));
        Ok(v)
    }

    async fn decide_contact_requests(
        &self,
        owner: Aci,
        decisions: &Decisions,
    ) -> StoreResult<bool> {
        let mut s = self.state();
        if !s.contacts.invite_only(owner) {
            return Ok(false);
        }
        let grants: Vec<Grant> = s
            .contacts
            .grants
            .values()
            .filter(|g| g.owner == owner)
            .copied()
            .collect();
        let plan = contacts::plan_decisions(&grants, decisions);
        for (list, state) in [
            (&plan.activate, GrantState::Active),
            (&plan.deny, GrantState::Denied),
        ] {
            for grantee in list {
                if let Some(g) = s.contacts.grants.get_mut(&(owner, *grantee)) {
                    g.state = state;
                }
            }
        }
        s.messages.delete_from(owner, &plan.deny);
        Ok(true)
    }

    async fn set_contact_grant(
        &self,
        owner: Aci,
        grantee: Aci,
        state: GrantState,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let mut s = self.state();
        if !s.accounts.contains_key(&owner) || !s.accounts.contains_key(&grantee) {
            return Ok(false);
        }
        let c = &mut s.contacts;
        if !c.invite_only(owner) {
            return Ok(false);
        }
        c.grants
            .entry((owner, grantee))
            .and_modify(|g| g.state = state)
            .or_insert(Grant {
                owner,
                grantee,
                state,
                via: Via::Direct,
                created_at: now,
            });
        if state == GrantState::Denied {
            s.messages.delete_from(owner, &[grantee]);
        }
        Ok(true)
    }

    async fn introduce(
        &self,
        recipient: Aci,
        introducer: Aci,
        introducee: Aci,
        now: Timestamp,
        config: &FloodConfig,
    ) -> StoreResult<Introduction> {
        let mut s = self.state();
        if !s.accounts.contains_key(&recipient) || !s.accounts.contains_key(&introducee) {
            return Ok(Introduction::NotGranted);
        }
        let c = &mut s.contacts;
        let policy = c.policies.get(&recipient).copied().unwrap_or_default();
        let outcome = contacts::plan_introduction(
            policy,
            c.grants.get(&(recipient, introducer)),
            c.grants.get(&(recipient, introducee)),
            c.recent(recipient, contacts::owner_window_start(now, config)),
            config,
        );
        if let Introduction::Recorded(Some(state)) = outcome {
            c.grants.insert(
                (recipient, introducee),
                Grant {
                    owner: recipient,
                    grantee: introducee,
                    state,
                    via: Via::Introduction(introducer),
                    created_at: now,
                },
            );
        }
        Ok(outcome)
    }
}
