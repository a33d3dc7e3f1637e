//! Usernames on SQLite: [`crate::store::shared::usernames`].

crate::store::shared::usernames::username_store!(super::SqliteStore);
