//! The invites service: user and operator operations around the atomic store methods and the pure policy.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::policy::{InvitePolicy, InviterFacts, Refusal};
use super::{
    BadCode, CreateOutcome, Invite, InviteCode, InviteFilter, InviteId, InviteOwner, InviteState,
    NewInvite, OwnerLimits,
};
use crate::account::Account;
use crate::ids::Aci;
use crate::random::SecureRandom;
use crate::ratelimit::{LimitError, Limiter, RateLimited, RateLimiters};
use crate::store::{Store, StoreError};
use crate::time::{Clock, Timestamp};

/// Longest note, in characters.
pub const MAX_NOTE_CHARS: usize = 200;

/// Bound on walks up and down the invite tree (a guard against corrupt data forming a cycle).
const MAX_WALK: usize = 100_000;

/// Why an invite operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    /// 403 `invites_disabled`.
    #[error("this account may not create invites")]
    Disabled,
    /// 403 `tree_limit`.
    #[error("the invite tree of this account is full")]
    TreeLimit,
    /// 403 `chain_limit`.
    #[error("this account was admitted through a fast invite chain")]
    ChainLimit {
        /// When the chain stops counting as fast.
        available_at: Timestamp,
    },
    /// 403 `quota_exceeded`.
    #[error("invite quota exceeded")]
    QuotaExceeded {
        /// When the next invite can be created, if known.
        available_at: Option<Timestamp>,
    },
    /// 422.
    #[error("{0}")]
    Invalid(String),
    /// 404: no such invite, or not the caller's.
    #[error("no such invite")]
    NotFound,
    /// 429.
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    /// 500.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LimitError> for InviteError {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::Limited(r) => InviteError::RateLimited(r),
            LimitError::Store(s) => InviteError::Store(s),
        }
    }
}

impl From<Refusal> for InviteError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Disabled => InviteError::Disabled,
            Refusal::TreeLimit => InviteError::TreeLimit,
            Refusal::ChainLimit { available_at } => InviteError::ChainLimit { available_at },
            Refusal::Quota { available_at } => InviteError::QuotaExceeded { available_at },
        }
    }
}

/// What a caller asks for (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewInviteRequest {
    /// Uses (default 1).
    pub max_uses: Option<u32>,
    /// Lifetime (default: the policy's default expiry).
    pub expires_in: Option<Duration>,
    /// Free text for the owner.
    pub note: Option<String>,
}

/// One edge of the invite tree: `inviter` admitted `invitee` through `invite` at `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEdge {
    /// Distance from the root (its direct invitees are at depth 1).
    pub depth: usize,
    /// The invite's owner.
    pub inviter: InviteOwner,
    /// The admitted account.
    pub invitee: Aci,
    /// The invite used.
    pub invite: InviteId,
    /// When.
    pub at: Timestamp,
}

/// Registration invite operations.
#[derive(Clone)]
pub struct Invites {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn SecureRandom>,
    limiters: RateLimiters,
    policy: Arc<InvitePolicy>,
}

fn check_note(note: Option<String>) -> Result<Option<String>, InviteError> {
    match note {
        Some(n) if n.chars().count() > MAX_NOTE_CHARS => Err(InviteError::Invalid(format!(
            "note must be at most {MAX_NOTE_CHARS} characters"
        ))),
        Some(n) if n.chars().any(char::is_control) => {
            Err(InviteError::Invalid("note must be printable text".into()))
        }
        Some(n) if n.is_empty() => Ok(None),
        other => Ok(other),
    }
}

impl Invites {
    /// Operations over `store` with `policy`.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn SecureRandom>,
        limiters: RateLimiters,
        policy: InvitePolicy,
    ) -> Self {
        Invites {
            store,
            clock,
            rng,
            limiters,
            policy: Arc::new(policy),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &InvitePolicy {
        &self.policy
    }

    /// The state of `invite` at `now`, looking up whether its owner is suspended.
    pub async fn state_of(
        &self,
        invite: &Invite,
        now: Timestamp,
    ) -> Result<InviteState, InviteError> {
        let suspended = match invite.owner {
            InviteOwner::Account(a) => self.store.is_suspended(a).await?,
            InviteOwner::Operator => false,
        };
        Ok(invite.state(now, suspended))
    }

    /// Creates an invite owned by `owner` under the policy. The code is returned once and never stored.
    pub async fn create(
        &self,
        owner: &Account,
        req: NewInviteRequest,
    ) -> Result<(Invite, InviteCode), InviteError> {
        let p = &self.policy;
        let max_uses = req.max_uses.unwrap_or(1);
        if !(1..=p.max_uses_per_user_invite).contains(&max_uses) {
            return Err(InviteError::Invalid(format!(
                "maxUses must be between 1 and {}",
                p.max_uses_per_user_invite
            )));
        }
        let lifetime = req.expires_in.unwrap_or(p.default_expiry);
        if lifetime.is_zero() || lifetime > p.max_expiry {
            return Err(InviteError::Invalid(format!(
                "expiresInSeconds must be between 1 and {}",
                p.max_expiry.as_secs()
            )));
        }
        let note = check_note(req.note)?;
        self.limiters
            .check(Limiter::InviteCreate, &owner.aci.to_string())
            .await?;
        let now = self.clock.now();
        // An account that may not invite at all (disabled, suspended, younger than `min_account_age`) is refused
        // from its own rows, without the tree walk (F-07). Other refusals keep the documented order (permanent
        // reasons first), so they need the full facts; the limiter above bounds how often.
        let cheap = self.own_facts(owner, now).await?;
        if let Err(r) = p.decide(&cheap, now)
            && (r == Refusal::Disabled || p.earned(owner.created_at, now) == 0)
        {
            return Err(r.into());
        }
        let facts = self.facts(owner, now).await?;
        p.decide(&facts, now)?;
        let (new, code) = self.new_invite(
            InviteOwner::Account(owner.aci),
            max_uses,
            Some(now.plus(lifetime)),
            note,
            now,
        );
        let limits = OwnerLimits {
            max_created: p.earned(owner.created_at, now),
            max_open: p.max_open_invites,
        };
        match self.store.create_invite_within(&new, limits).await? {
            CreateOutcome::Created => Ok((new.as_stored(), code)),
            CreateOutcome::OwnerGone => Err(InviteError::Disabled),
            // A concurrent creation took the last slot: report when the next one frees up.
            CreateOutcome::QuotaSpent | CreateOutcome::TooManyOpen => {
                let facts = self.own_facts(owner, now).await?;
                Err(match p.decide(&facts, now) {
                    Err(r) => r.into(),
                    Ok(()) => InviteError::QuotaExceeded { available_at: None },
                })
            }
        }
    }

    /// Creates an operator invite (outside quotas and the per-user bounds). `expires_in: None` never expires.
    pub async fn create_operator(
        &self,
        max_uses: u32,
        expires_in: Option<Duration>,
        note: Option<String>,
    ) -> Result<(Invite, InviteCode), InviteError> {
        if max_uses == 0 {
            return Err(InviteError::Invalid("max uses must be at least 1".into()));
        }
        if expires_in.is_some_and(|d| d.is_zero()) {
            return Err(InviteError::Invalid("expiry must be in the future".into()));
        }
        let note = check_note(note)?;
        let now = self.clock.now();
        let (new, code) = self.new_invite(
            InviteOwner::Operator,
            max_uses,
            expires_in.map(|d| now.plus(d)),
            note,
            now,
        );
        self.store.create_invite(&new).await?;
        Ok((new.as_stored(), code))
    }

    fn new_invite(
        &self,
        owner: InviteOwner,
        max_uses: u32,
        expires_at: Option<Timestamp>,
        note: Option<String>,
        now: Timestamp,
    ) -> (NewInvite, InviteCode) {
        let code = InviteCode::generate(self.rng.as_ref());
        let new = NewInvite {
            id: InviteId::random(self.rng.as_ref()),
            code_hash: code.hash(),
            owner,
            max_uses,
            expires_at,
            note,
            created_at: now,
        };
        (new, code)
    }

    /// The facts that need only the owner's own rows: the tree and chain are left empty (so they refuse
    /// nothing), which makes [`InvitePolicy::decide`] on them a cheap first pass.
    async fn own_facts(
        &self,
        owner: &Account,
        now: Timestamp,
    ) -> Result<InviterFacts, InviteError> {
        let aci = owner.aci;
        let suspended = self.store.is_suspended(aci).await?;
        let mine = self
            .store
            .list_invites(
                &InviteFilter {
                    owner: Some(InviteOwner::Account(aci)),
                    state: None,
                },
                now,
            )
            .await?;
        Ok(InviterFacts {
            account_created_at: owner.created_at,
            suspended,
            invites_created: u32::try_from(mine.len()).unwrap_or(u32::MAX),
            open_invites: mine
                .iter()
                .filter(|i| i.state(now, suspended) == InviteState::Active)
                .map(|i| i.expires_at)
                .collect(),
            tree_size: 0,
            chain: vec![],
        })
    }

    /// The facts the policy decides on.
    pub async fn facts(
        &self,
        owner: &Account,
        now: Timestamp,
    ) -> Result<InviterFacts, InviteError> {
        let aci = owner.aci;
        let suspended = self.store.is_suspended(aci).await?;
        let mine = self
            .store
            .list_invites(
                &InviteFilter {
                    owner: Some(InviteOwner::Account(aci)),
                    state: None,
                },
                now,
            )
            .await?;
        let open_invites = mine
            .iter()
            .filter(|i| i.state(now, suspended) == InviteState::Active)
            .map(|i| i.expires_at)
            .collect();
        let root = self.tree_root(aci).await?;
        let tree_size = self.tree_size(root, self.policy.tree_size_limit).await?;
        Ok(InviterFacts {
            account_created_at: owner.created_at,
            suspended,
            invites_created: u32::try_from(mine.len()).unwrap_or(u32::MAX),
            open_invites,
            tree_size,
            chain: self.chain(aci, self.policy.chain_hops as usize).await?,
        })
    }

    /// Admission times up the chain from `aci` (its own first), at most `hops` of them; the walk stops at an
    /// operator invite or an account that was not invited.
    pub async fn chain(&self, aci: Aci, hops: usize) -> Result<Vec<Timestamp>, InviteError> {
        let mut out = vec![];
        let mut current = aci;
        let mut seen = HashSet::from([aci]);
        while out.len() < hops {
            let Some(r) = self.store.redemption_of(current).await? else {
                break;
            };
            out.push(r.at);
            match r.inviter {
                InviteOwner::Account(up) if seen.insert(up) => current = up,
                _ => break,
            }
        }
        Ok(out)
    }

    /// The root of `aci`'s invite tree: the topmost account up its chain of inviters (an account admitted by an
    /// operator invite, or without an invite, is a root).
    pub async fn tree_root(&self, aci: Aci) -> Result<Aci, InviteError> {
        let mut current = aci;
        let mut seen = HashSet::from([aci]);
        while seen.len() < MAX_WALK {
            match self.store.redemption_of(current).await? {
                Some(r) => match r.inviter {
                    InviteOwner::Account(up) if seen.insert(up) => current = up,
                    _ => break,
                },
                None => break,
            }
        }
        Ok(current)
    }

    /// Members of the tree rooted at `root` (the root included), counting stops at `limit`.
    pub async fn tree_size(&self, root: Aci, limit: u64) -> Result<u64, InviteError> {
        let mut seen = HashSet::from([root]);
        let mut queue = vec![root];
        while let Some(node) = queue.pop() {
            if seen.len() as u64 >= limit {
                break;
            }
            for r in self
                .store
                .redemptions_by(InviteOwner::Account(node))
                .await?
            {
                if seen.insert(r.invitee) {
                    queue.push(r.invitee);
                }
            }
        }
        Ok(seen.len() as u64)
    }

    /// Every edge below `root`, depth first, siblings in redemption order (for the operator's tree view).
    pub async fn tree(&self, root: InviteOwner) -> Result<Vec<TreeEdge>, InviteError> {
        let mut seen = HashSet::new();
        if let InviteOwner::Account(a) = root {
            seen.insert(a);
        }
        let mut out = vec![];
        let mut stack = vec![];
        self.push_children(root, 1, &mut seen, &mut stack).await?;
        while let Some(edge) = stack.pop() {
            if out.len() >= MAX_WALK {
                break;
            }
            let (below, depth) = (InviteOwner::Account(edge.invitee), edge.depth + 1);
            out.push(edge);
            self.push_children(below, depth, &mut seen, &mut stack)
                .await?;
        }
        Ok(out)
    }

    async fn push_children(
        &self,
        owner: InviteOwner,
        depth: usize,
        seen: &mut HashSet<Aci>,
        stack: &mut Vec<TreeEdge>,
    ) -> Result<(), InviteError> {
        let children = self.store.redemptions_by(owner).await?;
        // Reversed so the oldest sibling is popped first.
        for r in children.into_iter().rev() {
            if seen.insert(r.invitee) {
                stack.push(TreeEdge {
                    depth,
                    inviter: r.inviter,
                    invitee: r.invitee,
                    invite: r.invite,
                    at: r.at,
                });
            }
        }
        Ok(())
    }

    /// The caller's invites with their states, newest first.
    pub async fn list_own(&self, owner: Aci) -> Result<Vec<(Invite, InviteState)>, InviteError> {
        let now = self.clock.now();
        let suspended = self.store.is_suspended(owner).await?;
        Ok(self
            .store
            .list_invites(
                &InviteFilter {
                    owner: Some(InviteOwner::Account(owner)),
                    state: None,
                },
                now,
            )
            .await?
            .into_iter()
            .map(|i| {
                let s = i.state(now, suspended);
                (i, s)
            })
            .collect())
    }

    /// Revokes one of the caller's invites (idempotent; another account's invite is [`InviteError::NotFound`]).
    pub async fn revoke_own(&self, owner: Aci, id: InviteId) -> Result<(), InviteError> {
        let now = self.clock.now();
        match self.store.invite(id, now).await? {
            Some(i) if i.owner == InviteOwner::Account(owner) => {
                if i.revoked_at.is_none() {
                    self.store.set_revoked(id, Some(now)).await?;
                }
                Ok(())
            }
            _ => Err(InviteError::NotFound),
        }
    }

    /// Whether `code` could start a registration now. Rate limited per client IP (also counts as an invite
    /// attempt, so probing here does not bypass the attempt limit of session starts).
    pub async fn validity(&self, code: &str, client_ip: &str) -> Result<bool, InviteError> {
        self.limiters
            .check(Limiter::InviteValidity, client_ip)
            .await?;
        self.limiters
            .check(Limiter::InviteAttempt, client_ip)
            .await?;
        let code = match InviteCode::parse(code) {
            Ok(c) => c,
            Err(BadCode) => return Ok(false),
        };
        let now = self.clock.now();
        match self.store.invite_by_code(&code.hash(), now).await? {
            Some(i) => Ok(self.state_of(&i, now).await? == InviteState::Active),
            None => Ok(false),
        }
    }
}
