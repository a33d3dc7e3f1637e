//! Account deletion's hooks on PostgreSQL: [`crate::store::shared::cascade`].

crate::store::shared::cascade::account_cascade!(super::PgStore);
