//! Linked devices on SQLite: [`crate::store::shared::devices`].

crate::store::shared::devices::device_store!(super::SqliteStore);
