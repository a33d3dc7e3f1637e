//! Versioned profiles on PostgreSQL: [`crate::store::shared::profiles`].

crate::store::shared::profiles::profile_store!(super::PgStore);
