//! Contact shortcodes on SQLite: [`crate::store::shared::shortcodes`].

crate::store::shared::shortcodes::shortcode_store!(super::SqliteStore);
