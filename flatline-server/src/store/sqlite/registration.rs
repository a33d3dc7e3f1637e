//! Verification sessions, subject bindings, tombstones, pinned JWKS and the token-id replay cache on SQLite:
//! [`crate::store::shared::registration`].

crate::store::shared::registration::registration_store!(super::SqliteStore);
