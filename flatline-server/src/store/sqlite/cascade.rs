//! Account deletion's hooks on SQLite: [`crate::store::shared::cascade`].

crate::store::shared::cascade::account_cascade!(super::SqliteStore);
