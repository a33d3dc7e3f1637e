//! Contact shortcodes in memory, beside the contact graph they add to. Each method runs under the store's one lock;
//! the decisions come from the pure rules in `flatline_core::shortcodes` and `flatline_core::contacts`, as in every
//! backend.

use async_trait::async_trait;
use flatline_core::contacts::{self, FloodConfig, Grant, Via};
use flatline_core::ids::Aci;
use flatline_core::shortcodes::{
    self, AttemptPlan, ContactShortcode, CreateShortcode, Shortcode, ShortcodeId,
    ShortcodeRedemption, ShortcodeStatus, ShortcodeStore,
};
use flatline_core::store::StoreResult;
use flatline_core::time::Timestamp;

use super::MemoryStore;

#[async_trait]
impl ShortcodeStore for MemoryStore {
    async fn create_contact_shortcode(
        &self,
        code: &ContactShortcode,
        now: Timestamp,
        max_live: u32,
        history: u32,
    ) -> StoreResult<CreateShortcode> {
        let mut s = self.state();
        if !s.accounts.contains_key(&code.owner) {
            return Ok(CreateShortcode::NotInviteOnly);
        }
        let c = &mut s.contacts;
        if !c.invite_only(code.owner) {
            return Ok(CreateShortcode::NotInviteOnly);
        }
        let live = c
            .shortcodes
            .values()
            .filter(|sc| {
                sc.owner == code.owner && sc.state(now) == shortcodes::ShortcodeState::Live
            })
            .count();
        if live >= usize::try_from(max_live).unwrap_or(usize::MAX) {
            return Ok(CreateShortcode::QuotaExceeded);
        }
        let taken: Vec<u32> = c
            .shortcodes
            .values()
            .filter(|sc| sc.holds_nameplate(now))
            .map(|sc| sc.nameplate)
            .collect();
        let Some(nameplate) = shortcodes::smallest_free_nameplate(&taken) else {
            return Ok(CreateShortcode::NoNameplate);
        };
        // Forget the owner's ended codes beyond the newest `history`.
        let mut ended: Vec<(Timestamp, ShortcodeId)> = c
            .shortcodes
            .values()
            .filter(|sc| sc.owner == code.owner && !sc.holds_nameplate(now))
            .map(|sc| (sc.created_at, sc.id))
            .collect();
        ended.sort_unstable_by(|a, b| b.cmp(a));
        for (_, id) in ended
            .into_iter()
            .skip(usize::try_from(history).unwrap_or(usize::MAX))
        {
            c.shortcodes.remove(&id);
        }
        let mut stored = code.clone();
        stored.nameplate = nameplate;
        c.shortcodes.insert(stored.id, stored);
        Ok(CreateShortcode::Created(nameplate))
    }

    async fn contact_shortcodes(&self, owner: Aci) -> StoreResult<Vec<ContactShortcode>> {
        let s = self.state();
        let mut v: Vec<ContactShortcode> = s
            .contacts
            .shortcodes
            .values()
            .filter(|sc| sc.owner == owner)
            .cloned()
            .collect();
        v.sort_by_key(|sc| (sc.created_at, sc.id));
        Ok(v)
    }

    async fn revoke_contact_shortcode(&self, owner: Aci, id: ShortcodeId) -> StoreResult<bool> {
        let mut s = self.state();
        let Some(sc) = s
            .contacts
            .shortcodes
            .get_mut(&id)
            .filter(|sc| sc.owner == owner)
        else {
            return Ok(false);
        };
        if sc.status == ShortcodeStatus::Live {
            sc.status = ShortcodeStatus::Revoked;
        }
        Ok(true)
    }

    async fn redeem_contact_shortcode(
        &self,
        guess: &Shortcode,
        redeemer: Aci,
        now: Timestamp,
        config: &FloodConfig,
    ) -> StoreResult<ShortcodeRedemption> {
        let mut s = self.state();
        if !s.accounts.contains_key(&redeemer) {
            return Ok(ShortcodeRedemption::Invalid);
        }
        let c = &mut s.contacts;
        // At most one code holds a nameplate at a time (creation picks a free one).
        let code = c
            .shortcodes
            .values()
            .find(|sc| sc.nameplate == guess.nameplate() && sc.holds_nameplate(now))
            .cloned();
        let (existing, recent) = match &code {
            Some(sc) => (
                c.grants.get(&(sc.owner, redeemer)).copied(),
                c.recent(sc.owner, contacts::owner_window_start(now, config)),
            ),
            None => (None, 0),
        };
        let plan = shortcodes::plan_shortcode_redemption(
            code.as_ref(),
            guess,
            redeemer,
            existing.as_ref(),
            recent,
            now,
            config,
        );
        let Some(code) = code else {
            return Ok(ShortcodeRedemption::Invalid);
        };
        let owner = code.owner;
        let mut set = |f: &dyn Fn(&mut ContactShortcode)| {
            if let Some(sc) = c.shortcodes.get_mut(&code.id) {
                f(sc);
            }
        };
        Ok(match plan {
            AttemptPlan::Invalid => ShortcodeRedemption::Invalid,
            AttemptPlan::OwnShortcode => ShortcodeRedemption::OwnShortcode,
            AttemptPlan::FailedGuess {
                failed_guesses,
                burned,
            } => {
                set(&|sc| {
                    sc.failed_guesses = failed_guesses;
                    if burned {
                        sc.status = ShortcodeStatus::Burned;
                    }
                });
                ShortcodeRedemption::FailedGuess { burned }
            }
            AttemptPlan::Existing(state) => {
                set(&|sc| sc.status = ShortcodeStatus::Used);
                ShortcodeRedemption::Existing { owner, state }
            }
            AttemptPlan::Grant(state) => {
                set(&|sc| sc.status = ShortcodeStatus::Used);
                c.grants.insert(
                    (owner, redeemer),
                    Grant {
                        owner,
                        grantee: redeemer,
                        state,
                        via: Via::Shortcode(code.id),
                        created_at: now,
                    },
                );
                ShortcodeRedemption::Granted { owner, state }
            }
        })
    }
}
