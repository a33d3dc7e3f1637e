//! Account deletion as a list of per-aggregate hooks, written once for both dialects.
//!
//! `delete_account` (in [`super::accounts`]) locks (the subject's advisory lock, then the account row), runs
//! [`account_cascade!`]'s list inside its transaction, deletes the account row (which takes whatever is linked to it
//! by `ON DELETE CASCADE`: devices, the subject binding, username claims and holds, profiles, …), commits and calls
//! [`Dialect::account_changed`](super::Dialect::account_changed). An aggregate whose rows do not go with the
//! account row by foreign key adds one hook to the list; nothing else names it.

use flatline_core::ids::{Aci, Pni};
use flatline_core::time::Timestamp;

/// The account being deleted, as the cascade hooks see it (the row still exists, locked).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gone {
    /// Its ACI.
    pub aci: Aci,
    /// Its current PNI.
    pub pni: Pni,
    /// When it is deleted.
    pub now: Timestamp,
}

/// Defines `account_deleted(tx, &gone)` for `$store`: every aggregate's hook, in order.
macro_rules! account_cascade {
    ($store:ty) => {
        use flatline_core::store::StoreResult;
        use sqlx::Transaction;

        use $crate::store::shared::Dialect;
        use $crate::store::shared::cascade::Gone;

        /// Removes, inside `delete_account`'s transaction, what of the account does not go with its row.
        pub(super) async fn account_deleted(
            tx: &mut Transaction<'_, <$store as Dialect>::Db>,
            gone: &Gone,
        ) -> StoreResult<()> {
            // Keys are keyed by identity, not by account.
            super::keys::account_deleted(tx, gone).await?;
            // Before the account row goes: the subject binding it reads is removed by the row's cascade.
            super::registration::tombstone(tx, gone.aci, gone.now).await?;
            super::invites::account_deleted(tx, gone).await?;
            super::contacts::account_deleted(tx, gone).await?;
            super::messages::delete_messages_of(tx, gone.aci).await?;
            Ok(())
        }
    };
}
pub(crate) use account_cascade;
