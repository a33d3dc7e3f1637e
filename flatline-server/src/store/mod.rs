//! SQL implementations of the core's storage traits.
//!
//! SQLite (embedded, the default) and PostgreSQL (for several processes) each implement every trait; both are held
//! to the same contracts by the conformance suite in `flatline-testkit`.

pub mod postgres;
mod shared;
mod sql;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use flatline_core::ratelimit::{self, Admission, BucketConfig};
use flatline_core::store::{Store, StoreError, StoreResult};
use flatline_core::time::Timestamp;

use crate::config::DatabaseSettings;

/// Opens the configured database and applies pending migrations.
pub async fn open(config: &DatabaseSettings) -> Result<Arc<dyn Store>, StoreError> {
    match config {
        DatabaseSettings::Sqlite {
            url,
            readers,
            busy_timeout,
            acquire_timeout,
        } => {
            let busy_timeout_ms = u64::try_from(busy_timeout.as_millis()).unwrap_or(u64::MAX);
            let store =
                sqlite::SqliteStore::open_with(url, *readers, busy_timeout_ms, *acquire_timeout)
                    .await?;
            store.migrate().await?;
            Ok(Arc::new(store))
        }
        DatabaseSettings::Postgres { url, pool } => {
            let store =
                retry_unavailable(url, STARTUP_RETRIES, || postgres::PgStore::open(url, pool))
                    .await
                    .map_err(|e| with_url(url, e))?;
            store.migrate().await?;
            Ok(Arc::new(store))
        }
    }
}

/// Waits between connection attempts at start-up: 0.5 s doubling to 10 s, nine attempts (about a minute).
pub const STARTUP_RETRIES: &[Duration] = &[
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(10),
    Duration::from_secs(10),
    Duration::from_secs(10),
];

/// Runs `attempt` until it succeeds, fails for a reason other than an unreachable database, or `waits` are used
/// up; every retry is logged with the (redacted) database and the wait.
pub async fn retry_unavailable<T, F, Fut>(
    url: &str,
    waits: &[Duration],
    mut attempt: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut waits = waits.iter();
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if database_unavailable(&e) => match waits.next() {
                Some(wait) => {
                    tracing::warn!(database = %redact_url(url), error = %e, retry_in_ms = wait.as_millis() as u64,
                        "database unreachable; retrying");
                    tokio::time::sleep(*wait).await;
                }
                None => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
}

/// Whether `e` (or an error it wraps) says the database cannot be reached right now (connection lost or refused,
/// pool exhausted, PostgreSQL shutting down, SQLite busy, read-only or full), as opposed to a bug or bad data.
pub fn database_unavailable(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(sqlx_error) = err.downcast_ref::<sqlx::Error>() {
            return match sqlx_error {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(db) => db.code().is_some_and(|code| unavailable_code(&code)),
                _ => false,
            };
        }
        current = err.source();
    }
    false
}

/// PostgreSQL SQLSTATEs and SQLite result codes of a database that is away, busy or out of space.
pub fn unavailable_code(code: &str) -> bool {
    // SQLSTATEs are five characters; SQLite's extended result codes stay below 10000.
    if code.len() == 5 {
        // 08: connection exception; 57P01-03: shutdown / cannot connect now; 53: insufficient resources.
        return code.starts_with("08") || code.starts_with("57P0") || code.starts_with("53");
    }
    match code.parse::<u32>() {
        // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN (extended codes
        // keep the primary code in the low byte).
        Ok(n) => matches!(n & 0xff, 5 | 6 | 8 | 10 | 13 | 14),
        Err(_) => false,
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

/// One [`Migration`] of dialect directory `$dir`: `migrations/<dir>/<file>_<name>.sql`.
macro_rules! migration {
    ($dir:literal, $version:literal, $file:literal, $name:literal) => {
        $crate::store::Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/migrations/",
                $dir,
                "/",
                $file,
                "_",
                $name,
                ".sql"
            )),
        }
    };
}
pub(crate) use migration;

/// The embedded migrations of dialect directory `$dir`, in order. Both dialects have the same versions and names
/// (each its own SQL), so the list is written once: a new migration is one line here and one file per dialect.
macro_rules! migrations {
    ($dir:literal) => {
        &[
            $crate::store::migration!($dir, 1, "0001", "accounts_keys_limits"),
            $crate::store::migration!($dir, 2, "0002", "registration"),
            $crate::store::migration!($dir, 3, "0003", "invites"),
            $crate::store::migration!($dir, 4, "0004", "usernames"),
            $crate::store::migration!($dir, 5, "0005", "contacts"),
            $crate::store::migration!($dir, 6, "0006", "server_state"),
            $crate::store::migration!($dir, 7, "0007", "messages"),
            $crate::store::migration!($dir, 8, "0008", "sealed_sender"),
            $crate::store::migration!($dir, 10, "0010", "shortcodes"),
            $crate::store::migration!($dir, 12, "0012", "profiles"),
            $crate::store::migration!($dir, 13, "0013", "devices"),
            $crate::store::migration!($dir, 14, "0014", "message_sources"),
            $crate::store::migration!($dir, 15, "0015", "shared_payloads"),
            $crate::store::migration!($dir, 18, "0018", "bucket_admission"),
            $crate::store::migration!($dir, 19, "0019", "account_notifications"),
            $crate::store::migration!($dir, 20, "0020", "buckets_in_their_own_file"),
        ]
    };
}
pub(crate) use migrations;

/// The bucket upsert of [`sql::rate_limits`] with its parameters bound: the state `ratelimit::apply` gives a
/// bucket that does not exist yet (computed here, so the SQL only handles the existing row), the cost and the
/// capacity.
pub(crate) fn bucket_upsert<'q, DB: sqlx::Database>(
    statement: &'q str,
    key: &'q str,
    config: &BucketConfig,
    amount: u32,
    now: Timestamp,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let (fresh, admission) = ratelimit::apply(config, None, amount, now);
    sqlx::query::<DB>(statement)
        .bind(key)
        .bind(fresh.credit_ms)
        .bind(fresh.updated_at.as_millis())
        .bind(ratelimit::full_at(config, &fresh).as_millis())
        .bind(admission == Admission::Allowed)
        .bind(config.cost_ms(amount))
        .bind(config.capacity_ms())
}

/// The verdict of a bucket upsert from the row it returned: when denied, the credit still missing is the wait.
pub(crate) fn admission_of(
    config: &BucketConfig,
    amount: u32,
    credit_ms: i64,
    admitted: bool,
) -> StoreResult<Admission> {
    if admitted {
        return Ok(Admission::Allowed);
    }
    let missing = config.cost_ms(amount).saturating_sub(credit_ms).max(0);
    Ok(Admission::Denied {
        retry_after: Duration::from_millis(u64::try_from(missing).unwrap_or(0)),
    })
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
