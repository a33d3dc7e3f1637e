//! Contact shortcodes on PostgreSQL: [`crate::store::shared::shortcodes`].

crate::store::shared::shortcodes::shortcode_store!(super::PgStore);
