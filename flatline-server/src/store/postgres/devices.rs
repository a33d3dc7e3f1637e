//! Linked devices on PostgreSQL: [`crate::store::shared::devices`].

crate::store::shared::devices::device_store!(super::PgStore);
