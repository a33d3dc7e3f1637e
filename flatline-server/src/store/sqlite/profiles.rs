//! Versioned profiles on SQLite: [`crate::store::shared::profiles`].

crate::store::shared::profiles::profile_store!(super::SqliteStore);
