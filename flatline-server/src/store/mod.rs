//! SQL implementations of the core's storage traits.
//!
//! SQLite (embedded, the default) and PostgreSQL (for several processes) each implement every trait; both are held
//! to the same contracts by the conformance suite in `flatline-testkit`.

pub mod sqlite;

use std::sync::Arc;

use flatline_core::store::{Store, StoreError};

use crate::config::DatabaseConfig;

/// Opens the configured database and applies pending migrations.
pub async fn open(config: &DatabaseConfig) -> Result<Arc<dyn Store>, StoreError> {
    if config.url.starts_with("sqlite:") {
        let store =
            sqlite::SqliteStore::open(&config.url, config.max_connections, config.busy_timeout_ms)
                .await?;
        store.migrate().await?;
        Ok(Arc::new(store))
    } else {
        Err(StoreError::corrupt(format!(
            "database.url `{}`: PostgreSQL support is not built yet; use sqlite://",
            redact_url(&config.url)
        )))
    }
}

/// A database URL with any password replaced, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// An ordered, embedded schema migration.
pub struct Migration {
    /// Strictly increasing version.
    pub version: i64,
    /// Short name, recorded with the version.
    pub name: &'static str,
    /// The SQL, run in one transaction.
    pub sql: &'static str,
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
