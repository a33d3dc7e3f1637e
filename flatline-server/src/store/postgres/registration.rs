//! Verification sessions, subject bindings, tombstones, pinned JWKS and the token-id replay cache on PostgreSQL:
//! [`crate::store::shared::registration`] (which documents the lock order every transaction here and
//! `delete_account` follow).

crate::store::shared::registration::registration_store!(super::PgStore);
