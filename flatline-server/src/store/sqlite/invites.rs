//! Registration invites on SQLite: [`crate::store::shared::invites`].

crate::store::shared::invites::invite_store!(super::SqliteStore);
