//! The storage trait of contact shortcodes.

use async_trait::async_trait;

use super::{ContactShortcode, Shortcode, ShortcodeId};
use crate::contacts::{FloodConfig, GrantState};
use crate::ids::Aci;
use crate::store::StoreResult;
use crate::time::Timestamp;

/// The outcome of creating a shortcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateShortcode {
    /// Stored on this nameplate.
    Created(u32),
    /// The owner's policy is not `invite_only` (or the owner is gone).
    NotInviteOnly,
    /// The owner already has the maximum number of live shortcodes.
    QuotaExceeded,
    /// Every nameplate is taken (practically unreachable; answered like a full quota).
    NoNameplate,
}

/// The outcome of a redemption attempt, as the store reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShortcodeRedemption {
    /// A new grant was created and the code is used.
    Granted {
        /// The code's owner.
        owner: Aci,
        /// The new grant's state (`active`, or `quarantined` by the owner window).
        state: GrantState,
    },
    /// The redeemer already had a (non-denied) grant from the owner; the code is used, nothing else changed.
    Existing {
        /// The code's owner.
        owner: Aci,
        /// The existing grant's state.
        state: GrantState,
    },
    /// No live code on the nameplate, or a redeemer the owner denied. Nothing changed.
    Invalid,
    /// A wrong word pair for a live code: counted; `burned` when it was the third.
    FailedGuess {
        /// Whether this guess burned the code.
        burned: bool,
    },
    /// The owner said its own code. Nothing changed.
    OwnShortcode,
}

/// Contact shortcodes. Every rule that must hold under concurrency (one nameplate per unexpired code, one use, each
/// failed guess counted once and the burn at exactly the third, the owner window) is applied inside one method,
/// with the pure rules of [`crate::shortcodes`] and [`crate::contacts`] on the state read in the same transaction.
/// Shortcodes belong to the contact graph: `delete_account` and switching the owner's policy to `open` delete them.
#[async_trait]
pub trait ShortcodeStore: Send + Sync {
    /// Stores `code` on the smallest nameplate not held at `now` by an unexpired code
    /// ([`crate::shortcodes::smallest_free_nameplate`]; `code.nameplate` is ignored), unless its owner is not
    /// `invite_only` or already has `max_live` live codes. In the same transaction, forgets the owner's codes that
    /// no longer hold a nameplate beyond the newest `history` of them.
    async fn create_contact_shortcode(
        &self,
        code: &ContactShortcode,
        now: Timestamp,
        max_live: u32,
        history: u32,
    ) -> StoreResult<CreateShortcode>;

    /// The owner's shortcodes (any state), oldest first.
    async fn contact_shortcodes(&self, owner: Aci) -> StoreResult<Vec<ContactShortcode>>;

    /// Revokes one of the owner's codes (a live one becomes `revoked`; one already used, burned or revoked stays
    /// as it is; its nameplate stays held until expiry). False when the owner has no such code.
    async fn revoke_contact_shortcode(&self, owner: Aci, id: ShortcodeId) -> StoreResult<bool>;

    /// One attempt of `guess` by `redeemer`, atomically: reads the code holding the nameplate, the owner's grant to
    /// the redeemer and the owner's grants in the window, decides with
    /// [`crate::shortcodes::plan_shortcode_redemption`] and applies the plan (count or burn; or grant + use) in one
    /// transaction. Concurrent attempts never use a code twice, never lose a failed guess, and burn at exactly the
    /// third.
    async fn redeem_contact_shortcode(
        &self,
        guess: &Shortcode,
        redeemer: Aci,
        now: Timestamp,
        config: &FloodConfig,
    ) -> StoreResult<ShortcodeRedemption>;
}
