//! Instance-wide server state on PostgreSQL: [`crate::store::shared::server_state`].

crate::store::shared::server_state::server_state_store!(super::PgStore);
