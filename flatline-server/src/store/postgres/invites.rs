//! Registration invites on PostgreSQL: [`crate::store::shared::invites`].

crate::store::shared::invites::invite_store!(super::PgStore);
