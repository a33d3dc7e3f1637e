//! Usernames on PostgreSQL: [`crate::store::shared::usernames`].

crate::store::shared::usernames::username_store!(super::PgStore);
