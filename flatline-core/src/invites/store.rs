//! The invite store trait, its filters, limits and outcomes.

use crate::ids::Aci;
use crate::time::Timestamp;

use super::{CodeHash, Invite, InviteId, InviteOwner, InviteRedemption, InviteState, NewInvite};

/// Which invites to list (operator CLI).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InviteFilter {
    /// Only invites of this owner.
    pub owner: Option<InviteOwner>,
    /// Only invites in this state at the listing time.
    pub state: Option<InviteState>,
}

/// Counting limits an account's new invite is created within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerLimits {
    /// The owner may have created fewer than this many invites before (every state counts).
    pub max_created: u32,
    /// The owner may hold fewer than this many active invites (state evaluated at the creation time).
    pub max_open: u32,
}

/// Result of [`InviteStore::create_invite_within`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    /// Stored.
    Created,
    /// The owner already created `max_created` invites; nothing stored.
    QuotaSpent,
    /// The owner already holds `max_open` active invites; nothing stored.
    TooManyOpen,
    /// The owning account does not exist (it was deleted meanwhile); nothing stored.
    OwnerGone,
}

/// Registration invites.
#[async_trait::async_trait]
pub trait InviteStore: Send + Sync {
    /// Stores a new invite.
    async fn create_invite(&self, invite: &NewInvite) -> crate::store::StoreResult<()>;

    /// Stores a new invite owned by an account only if, atomically with the insert, the owner created fewer than
    /// `limits.max_created` invites and holds fewer than `limits.max_open` active ones at `invite.created_at`, and
    /// the owning account still exists (an account deleted concurrently never keeps an unrevoked invite).
    /// Concurrent calls for one owner never exceed either limit.
    async fn create_invite_within(
        &self,
        invite: &NewInvite,
        limits: OwnerLimits,
    ) -> crate::store::StoreResult<CreateOutcome>;

    /// The invite `id`, with `pending` counted from sessions live at `now`.
    async fn invite(
        &self,
        id: InviteId,
        now: Timestamp,
    ) -> crate::store::StoreResult<Option<Invite>>;

    /// The invite whose code hashes to `hash`.
    async fn invite_by_code(
        &self,
        hash: &CodeHash,
        now: Timestamp,
    ) -> crate::store::StoreResult<Option<Invite>>;

    /// Invites matching `filter` (state evaluated at `now`), newest first.
    async fn list_invites(
        &self,
        filter: &InviteFilter,
        now: Timestamp,
    ) -> crate::store::StoreResult<Vec<Invite>>;

    /// Sets (`Some`) or clears (`None`) the revocation time. Returns false when the invite does not exist.
    async fn set_revoked(
        &self,
        id: InviteId,
        revoked_at: Option<Timestamp>,
    ) -> crate::store::StoreResult<bool>;

    /// Revokes every unrevoked invite of `owner`; returns how many.
    async fn revoke_all_of(&self, owner: Aci, now: Timestamp) -> crate::store::StoreResult<u64>;

    /// Marks an account suspended (`true`) or not. Suspended owners' invites stop working.
    async fn set_suspended(
        &self,
        aci: Aci,
        suspended: bool,
        now: Timestamp,
    ) -> crate::store::StoreResult<()>;

    /// Whether `aci` is suspended.
    async fn is_suspended(&self, aci: Aci) -> crate::store::StoreResult<bool>;

    /// The redemption that admitted `invitee`, if it came in through an invite.
    async fn redemption_of(
        &self,
        invitee: Aci,
    ) -> crate::store::StoreResult<Option<InviteRedemption>>;

    /// Every redemption of invites owned by `owner`, oldest first (the owner's children in the invite tree).
    async fn redemptions_by(
        &self,
        owner: InviteOwner,
    ) -> crate::store::StoreResult<Vec<InviteRedemption>>;
}
