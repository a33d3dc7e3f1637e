//! The contact graph's store trait.

use async_trait::async_trait;

use crate::ids::Aci;
use crate::store::StoreResult;
use crate::time::Timestamp;

use super::{
    ContactInvite, ContactInviteId, ContactPolicy, CreateInvite, FloodConfig, Grant, GrantState,
    Introduction, Redemption,
};

/// Contact policies, contact invites and grants (the contact graph of `invite_only` accounts).
///
/// Every rule that must hold under concurrency (an invite's last use, the flood breaker, the owner window, a
/// denial) is applied inside one method, using the pure rules of [`crate::contacts`] on the state read in the same
/// transaction. The graph exists only for `invite_only` owners: writes for an owner that is not `invite_only`
/// report it instead of storing anything. A write naming an account that does not exist (anymore) stores nothing
/// either — checked inside the write's transaction, so an account deleted concurrently never keeps a grant, invite
/// or policy: redemption answers `Invalid`, introduction `NotGranted`, the others as for a non-`invite_only` owner.
#[async_trait]
pub trait ContactStore: Send + Sync {
    /// The account's policy; `None` when it never set one (meaning the default).
    async fn contact_policy(&self, aci: Aci) -> StoreResult<Option<ContactPolicy>>;

    /// Sets the policy. Switching to `open` deletes, in the same transaction, the account's contact invites, its
    /// contact shortcodes and every grant it gave. Returns false (and writes nothing) when the account does not exist.
    async fn set_contact_policy(&self, aci: Aci, policy: ContactPolicy) -> StoreResult<bool>;

    /// Stores a new contact invite unless its owner is not `invite_only` or already has `max_per_owner` invites.
    async fn create_contact_invite(
        &self,
        invite: &ContactInvite,
        max_per_owner: u32,
    ) -> StoreResult<CreateInvite>;

    /// The owner's contact invites, oldest first.
    async fn contact_invites(&self, owner: Aci) -> StoreResult<Vec<ContactInvite>>;

    /// One of the owner's contact invites (another owner's id finds nothing).
    async fn contact_invite(
        &self,
        owner: Aci,
        id: ContactInviteId,
    ) -> StoreResult<Option<ContactInvite>>;

    /// Deletes the invite (its code stops working; grants made through it stay). False when not found.
    async fn delete_contact_invite(&self, owner: Aci, id: ContactInviteId) -> StoreResult<bool>;

    /// Replaces the invite's code hash (the old code stops working; uses, bucket, pause and grants stay).
    /// Returns the updated invite, or `None` when not found.
    async fn rotate_contact_invite(
        &self,
        owner: Aci,
        id: ContactInviteId,
        code_hash: [u8; 32],
    ) -> StoreResult<Option<ContactInvite>>;

    /// Ends a pause: clears `paused_until` and the flood record and refills the bucket. Quarantined grants stay
    /// quarantined. False when not found.
    async fn resume_contact_invite(&self, owner: Aci, id: ContactInviteId) -> StoreResult<bool>;

    /// Redeems the code whose hash is `code_hash` for `redeemer`, atomically: reads the invite, the owner's grant
    /// to the redeemer and the owner's grants in the window, decides with [`crate::contacts::plan_redemption`] and
    /// applies the plan (new grant + use + bucket, or pause + retroactive quarantine + flood record) in one
    /// transaction. Concurrent redemptions never exceed `max_uses` nor skip the breaker.
    async fn redeem_contact_invite(
        &self,
        code_hash: &[u8; 32],
        redeemer: Aci,
        now: Timestamp,
        config: &FloodConfig,
    ) -> StoreResult<Redemption>;

    /// The owner's grant to `grantee`, if any.
    async fn contact_grant(&self, owner: Aci, grantee: Aci) -> StoreResult<Option<Grant>>;

    /// Every grant the owner gave (any state), oldest first.
    async fn contact_grants(&self, owner: Aci) -> StoreResult<Vec<Grant>>;

    /// Applies an owner's decisions atomically: reads the owner's grants, plans with
    /// [`crate::contacts::plan_decisions`] (approvals win; `deny_requests_from_invite` denies that invite's
    /// quarantined and pending grants; `deny_all_via` every grant through those routes, whatever its state) and, in
    /// the same transaction, sets the states and deletes every queued message whose source is a denied grantee
    /// from every device queue of the owner (keeping the queues' byte totals). Accounts without a grant are skipped.
    /// Returns false (writing nothing) when the owner is not `invite_only`.
    async fn decide_contact_requests(
        &self,
        owner: Aci,
        decisions: &crate::contacts::Decisions,
    ) -> StoreResult<bool>;

    /// Sets the owner's grant to `grantee` to `state` (the owner allowing or blocking directly): an existing grant
    /// keeps its provenance and creation time, a new one is `direct`. Blocking (`Denied`) also deletes the
    /// grantee's queued messages to the owner (every device), in the same transaction. Returns false (writing
    /// nothing) when the owner is not `invite_only`.
    async fn set_contact_grant(
        &self,
        owner: Aci,
        grantee: Aci,
        state: GrantState,
        now: Timestamp,
    ) -> StoreResult<bool>;

    /// Records an introduction of `introducee` to `recipient` by `introducer`, atomically deciding with
    /// [`crate::contacts::plan_introduction`] on the recipient's policy, its grant to the introducer, its grant to the
    /// introducee and its grants in the owner window.
    async fn introduce(
        &self,
        recipient: Aci,
        introducer: Aci,
        introducee: Aci,
        now: Timestamp,
        config: &FloodConfig,
    ) -> StoreResult<Introduction>;
}
