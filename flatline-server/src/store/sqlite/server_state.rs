//! Instance-wide server state on SQLite: [`crate::store::shared::server_state`].

crate::store::shared::server_state::server_state_store!(super::SqliteStore);
