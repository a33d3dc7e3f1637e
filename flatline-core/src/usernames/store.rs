//! The username store trait and its outcomes.

use async_trait::async_trait;
use uuid::Uuid;

use crate::ids::Aci;
use crate::store::StoreResult;
use crate::time::Timestamp;

use super::{AccountUsernameState, UsernameClaim};

/// Result of [`UsernameStore::reserve_username_hash`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// This hash is now reserved for the account (new, extended, or taken over from an expired claim).
    Reserved(Vec<u8>),
    /// One of the hashes is already the account's confirmed username; nothing changed.
    AlreadyConfirmed(Vec<u8>),
    /// Every hash is claimed by another account (confirmed, reserved, held or awaiting reclaim).
    Unavailable,
    /// No such account.
    NoAccount,
}

/// Result of [`UsernameStore::confirm_username_hash`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmOutcome {
    /// The hash is now the account's username, with this link handle (`None`: no link).
    Confirmed {
        /// The confirmed hash.
        hash: Vec<u8>,
        /// The link handle after confirmation.
        link_handle: Option<Uuid>,
    },
    /// The hash already was the account's username (a retry); nothing changed.
    AlreadyConfirmed {
        /// The confirmed hash.
        hash: Vec<u8>,
        /// The unchanged link handle.
        link_handle: Option<Uuid>,
    },
    /// The account's current reservation is not this hash (409).
    NoReservation,
    /// The reservation lapsed and another account claimed the hash (410). The stale reservation is dropped.
    Taken,
    /// No such account.
    NoAccount,
}

/// Result of [`UsernameStore::set_username_link`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkOutcome {
    /// The link now has this handle.
    Set(Uuid),
    /// The account has no confirmed username (409).
    NoUsername,
    /// No such account.
    NoAccount,
}

/// Username storage. Every method is atomic; "one owner per hash" holds under any concurrency.
#[async_trait]
pub trait UsernameStore: Send + Sync {
    /// Reserves the first available of `hashes` for `aci` until `now + RESERVATION_TTL`.
    ///
    /// If any of `hashes` is the account's confirmed username, answers [`ReserveOutcome::AlreadyConfirmed`] and
    /// changes nothing. Otherwise a hash is available when it is unclaimed, its claim expired, or the claim is the
    /// account's own unconfirmed one (reservation, hold, reclaim); an own claim keeps the later of its expiry and
    /// the new one. The account's previous reservation of another hash is released (a hold underneath reverts to
    /// a hold). Holds and reclaims of other accounts are not available.
    async fn reserve_username_hash(
        &self,
        aci: Aci,
        hashes: &[Vec<u8>],
        now: Timestamp,
    ) -> StoreResult<ReserveOutcome>;

    /// Confirms `hash` as the account's username.
    ///
    /// Already its username → [`ConfirmOutcome::AlreadyConfirmed`], unchanged. The account's reservation is not
    /// `hash` → [`ConfirmOutcome::NoReservation`]. Another account holds an unexpired claim on it →
    /// [`ConfirmOutcome::Taken`] (the stale reservation is dropped). Otherwise the claim becomes confirmed, the old
    /// username (if any) becomes a hold (`now + HOLD_TTL`; beyond [`MAX_HOLDS`](super::MAX_HOLDS) the oldest is released), and the
    /// link is set: without `encrypted_username` it is cleared; with it, the handle is `new_link_handle`, except
    /// that confirming a reclaimable hash keeps the account's existing handle.
    async fn confirm_username_hash(
        &self,
        aci: Aci,
        hash: &[u8],
        encrypted_username: Option<&[u8]>,
        new_link_handle: Uuid,
        now: Timestamp,
    ) -> StoreResult<ConfirmOutcome>;

    /// Clears the account's username and link; the old hash becomes a hold as in confirmation. Returns false (and
    /// changes nothing) when the account has no username or does not exist.
    async fn clear_username_hash(&self, aci: Aci, now: Timestamp) -> StoreResult<bool>;

    /// The owner of the *confirmed* username `hash` (reservations and holds are not found).
    async fn account_by_username_hash(&self, hash: &[u8]) -> StoreResult<Option<Aci>>;

    /// Sets the encrypted username behind the account's link. The handle is kept when `keep_handle` and one
    /// exists, else it becomes `new_handle`. Needs a confirmed username.
    async fn set_username_link(
        &self,
        aci: Aci,
        encrypted_username: &[u8],
        keep_handle: bool,
        new_handle: Uuid,
    ) -> StoreResult<LinkOutcome>;

    /// Removes the account's link (handle and blob). Returns false when the account does not exist.
    async fn clear_username_link(&self, aci: Aci) -> StoreResult<bool>;

    /// The encrypted username behind a link handle, if the handle exists and has one.
    async fn username_link(&self, handle: Uuid) -> StoreResult<Option<Vec<u8>>>;

    /// Re-registration hook: turns the account's confirmed username into a reclaimable reservation until
    /// `now + RECLAIM_TTL` (the account's reservation pointer is set to it), clears the username and the link blob
    /// and keeps the link handle, so that confirming the same hash restores the old link handle. Returns false
    /// (nothing changed) when the account has no username or does not exist.
    async fn hold_username_for_reclaim(&self, aci: Aci, now: Timestamp) -> StoreResult<bool>;

    /// The claim on `hash`, expired or not (diagnostics and tests).
    async fn username_claim(&self, hash: &[u8]) -> StoreResult<Option<UsernameClaim>>;

    /// Every claim owned by `aci`, expired or not, in hash order (diagnostics and tests).
    async fn username_claims_of(&self, aci: Aci) -> StoreResult<Vec<UsernameClaim>>;

    /// The account's reservation pointer, holds and link blob; `None` when the account does not exist.
    async fn account_username_state(&self, aci: Aci) -> StoreResult<Option<AccountUsernameState>>;
}
