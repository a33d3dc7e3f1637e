//! Registration invites: codes, the invite record and its state machine, and the store contract.
//!
//! A use is *reserved* by a verified registration session and *consumed* by the registration that creates the
//! account, in the same transaction. Pending reservations are counted from live sessions rather than kept in a
//! counter, so an abandoned session frees its use the moment it expires — no sweeper has to run for the rule
//! `uses + pending ≤ max_uses` to hold.
//!
//! Layout: the model and its state machine here, the store trait in `store.rs`, the inviter rules in `policy.rs`,
//! the [`Invites`] service in `service.rs`.

pub mod policy;
pub mod service;
mod store;

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::ids::Aci;
use crate::random::{SecureRandom, random_array};
use crate::time::Timestamp;

pub use policy::{InvitePolicy, InviterFacts, Refusal};
pub use service::{InviteError, Invites, NewInviteRequest, TreeEdge};
pub use store::{CreateOutcome, InviteFilter, InviteStore, OwnerLimits};

pub use crate::code::CODE_CHARS;

/// An invite code in its canonical form (16 Crockford base32 characters, upper case, no hyphens; see
/// [`crate::code`]).
///
/// The code is a secret: `Debug` hides it; only [`InviteCode::display`] reveals it, once, to its creator.
#[derive(Clone, PartialEq, Eq)]
pub struct InviteCode(String);

/// The SHA-256 of a canonical code: all that is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CodeHash(pub [u8; 32]);

/// A code that is not 16 Crockford base32 characters after normalization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an invite code")]
pub struct BadCode;

impl InviteCode {
    /// A fresh code with 80 bits from `rng`.
    pub fn generate(rng: &dyn SecureRandom) -> Self {
        InviteCode(crate::code::generate(rng))
    }

    /// Normalizes user input: case-insensitive, hyphens and spaces ignored, `O`→`0`, `I`/`L`→`1`.
    pub fn parse(input: &str) -> Result<Self, BadCode> {
        crate::code::normalize(input).map(InviteCode).ok_or(BadCode)
    }

    /// Grouped for people: `7KQ2-M9XD-4TRE-8JN0`.
    pub fn display(&self) -> String {
        crate::code::display(&self.0)
    }

    /// The stored hash.
    pub fn hash(&self) -> CodeHash {
        CodeHash(crate::code::hash(&self.0))
    }
}

impl fmt::Debug for InviteCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InviteCode(<redacted>)")
    }
}

impl FromStr for InviteCode {
    type Err = BadCode;
    fn from_str(s: &str) -> Result<Self, BadCode> {
        InviteCode::parse(s)
    }
}

/// Invite identifier (not secret).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct InviteId(pub Uuid);

impl InviteId {
    /// A fresh id.
    pub fn random(rng: &dyn SecureRandom) -> Self {
        InviteId(uuid::Builder::from_random_bytes(random_array(rng)).into_uuid())
    }
}

impl fmt::Display for InviteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// Who issued an invite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteOwner {
    /// The operator (CLI); outside quotas.
    Operator,
    /// An account.
    Account(Aci),
}

/// An invite as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// Identifier.
    pub id: InviteId,
    /// SHA-256 of the canonical code.
    pub code_hash: CodeHash,
    /// Issuer.
    pub owner: InviteOwner,
    /// Uses allowed.
    pub max_uses: u32,
    /// Uses consumed by registrations.
    pub uses: u32,
    /// Uses reserved by live verified sessions (computed by the store at read time).
    pub pending: u32,
    /// Creation time.
    pub created_at: Timestamp,
    /// Expiry, if any.
    pub expires_at: Option<Timestamp>,
    /// Last consumption.
    pub last_used_at: Option<Timestamp>,
    /// Soft revocation time (reversible).
    pub revoked_at: Option<Timestamp>,
    /// Free text for the owner.
    pub note: Option<String>,
}

/// The state an invite is in at a given moment. Only `Active` invites can be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteState {
    /// Usable.
    Active,
    /// Every use consumed or reserved.
    Exhausted,
    /// Past its expiry.
    Expired,
    /// Revoked (by its owner, the operator, or the owner's deletion).
    Revoked,
    /// Its owning account is suspended.
    OwnerSuspended,
}

impl InviteState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            InviteState::Active => "active",
            InviteState::Exhausted => "exhausted",
            InviteState::Expired => "expired",
            InviteState::Revoked => "revoked",
            InviteState::OwnerSuspended => "owner_suspended",
        }
    }
}

impl Invite {
    /// The state at `now`, given whether the owner is suspended. Precedence: revoked, owner suspended, expired,
    /// exhausted — the most permanent reason is reported.
    pub fn state(&self, now: Timestamp, owner_suspended: bool) -> InviteState {
        if self.revoked_at.is_some() {
            InviteState::Revoked
        } else if owner_suspended {
            InviteState::OwnerSuspended
        } else if self.expires_at.is_some_and(|e| e <= now) {
            InviteState::Expired
        } else if self.uses.saturating_add(self.pending) >= self.max_uses {
            InviteState::Exhausted
        } else {
            InviteState::Active
        }
    }

    /// Whether a use this invite already reserved may still be consumed at `now` (at registration): not revoked,
    /// owner not suspended, not expired, and a use left. Unlike [`Invite::state`], the reservation being consumed is
    /// itself among the pending ones, so only consumed uses count against `max_uses`.
    pub fn reserved_use_consumable(&self, now: Timestamp, owner_suspended: bool) -> bool {
        self.revoked_at.is_none()
            && !owner_suspended
            && self.expires_at.is_none_or(|e| e > now)
            && self.uses < self.max_uses
    }
}

/// A new invite to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInvite {
    /// Identifier.
    pub id: InviteId,
    /// Hash of its code.
    pub code_hash: CodeHash,
    /// Issuer.
    pub owner: InviteOwner,
    /// Uses allowed (≥ 1).
    pub max_uses: u32,
    /// Expiry.
    pub expires_at: Option<Timestamp>,
    /// Note.
    pub note: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
}

impl NewInvite {
    /// The invite as it stands right after it was stored: unused, unreserved, not revoked.
    pub fn as_stored(&self) -> Invite {
        Invite {
            id: self.id,
            code_hash: self.code_hash,
            owner: self.owner,
            max_uses: self.max_uses,
            uses: 0,
            pending: 0,
            created_at: self.created_at,
            expires_at: self.expires_at,
            last_used_at: None,
            revoked_at: None,
            note: self.note.clone(),
        }
    }
}

/// One consumption: who was admitted by which invite, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteRedemption {
    /// The invite.
    pub invite: InviteId,
    /// Its owner at the time.
    pub inviter: InviteOwner,
    /// The account it admitted.
    pub invitee: Aci,
    /// When.
    pub at: Timestamp,
}

#[cfg(test)]
mod tests;
