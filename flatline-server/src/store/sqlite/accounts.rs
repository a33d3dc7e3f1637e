//! Accounts and devices on SQLite: [`crate::store::shared::accounts`].

crate::store::shared::accounts::account_store!(super::SqliteStore);
