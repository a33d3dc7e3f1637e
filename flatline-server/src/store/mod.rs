//! SQL implementations of the core's storage traits.
//!
//! SQLite (embedded, the default) and PostgreSQL (for several processes) each implement every trait; both are held
//! to the same contracts by the conformance suite in `flatline-testkit`.

pub mod postgres;
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
    } else if config.url.starts_with("postgres://") || config.url.starts_with("postgresql://") {
        let settings = postgres::PoolSettings::from(config);
        let store = postgres::PgStore::open(&config.url, &settings)
            .await
            .map_err(|e| with_url(&config.url, e))?;
        store.migrate().await?;
        Ok(Arc::new(store))
    } else {
        Err(StoreError::corrupt(format!(
            "database.url `{}`: unsupported scheme; use sqlite:// or postgres://",
            redact_url(&config.url)
        )))
    }
}

/// Names the (redacted) database in a connection failure, so operators see which one failed.
fn with_url(url: &str, e: StoreError) -> StoreError {
    match e {
        StoreError::Backend(source) => {
            StoreError::corrupt(format!("cannot connect to `{}`: {source}", redact_url(url)))
        }
        other => other,
    }
}

/// A database URL with any password (in the user info or a `password=` parameter) replaced, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &base[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &base[..scheme_end + 3], &base[at..]),
                None => base.to_owned(),
            }
        }
        _ => base.to_owned(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
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
        assert_eq!(
            super::redact_url("postgres://u@h/db?sslmode=disable&password=secret"),
            "postgres://u@h/db?sslmode=disable&password=***"
        );
        assert_eq!(
            super::redact_url("postgres://u:p@h/db?application_name=a"),
            "postgres://u:***@h/db?application_name=a"
        );
    }
}
