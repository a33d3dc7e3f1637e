//! The embedded SQLite store.
//!
//! One writer connection serializes every write (SQLite allows one writer anyway; doing it in-process avoids
//! `SQLITE_BUSY` on lock upgrades), and a pool of readers serves lookups concurrently thanks to WAL mode.
//! Every trait method that writes runs in one transaction on the writer, which makes it atomic.
//!
//! What this shares with PostgreSQL is written once in [`super::shared`]; the modules here instantiate it and hold
//! what SQLite writes differently.

use std::str::FromStr;
use std::time::Duration;

use flatline_core::store::{StoreError, StoreResult};
use sqlx::Sqlite;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::Migration;
use super::shared::codecs::{LAST_RESORT, SIGNED_EC, db, join_capabilities, uuid_of};
use accounts::{device_from_row, insert_account, insert_device, put_initial_keys};
use keys::{delete_keys_of, put_signed};

mod accounts;
mod cascade;
mod contacts;
mod devices;
mod dialect;
mod invites;
mod keys;
mod messages;
mod profiles;
mod rate_limits;
mod registration;
mod server_state;
mod shortcodes;
mod usernames;

/// Embedded migrations, applied in order at start-up.
pub const MIGRATIONS: &[Migration] = super::migrations!("sqlite");

/// `database.acquire_timeout_seconds`' default.
const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

super::shared::codecs::checked_get!(Sqlite);

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Rate-limit buckets, in a database of their own (see [`SqliteStore::open_with`]).
    buckets: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://path`), with the default acquire timeout.
    pub async fn open(url: &str, readers: u32, busy_timeout_ms: u64) -> StoreResult<Self> {
        Self::open_with(url, readers, busy_timeout_ms, DEFAULT_ACQUIRE_TIMEOUT).await
    }

    /// [`SqliteStore::open`] with how long a request waits for a pooled connection (`database.
    /// acquire_timeout_seconds`) before it fails with a pool timeout (503). Writes queue for the single writer
    /// connection while the one at the head waits up to `busy_timeout_ms` for another process's lock; without a
    /// bound below `server.request_timeout_seconds` the queued ones ended as 408 `request_timeout` instead of 503.
    pub async fn open_with(
        url: &str,
        readers: u32,
        busy_timeout_ms: u64,
        acquire_timeout: Duration,
    ) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(db)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_millis(busy_timeout_ms));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(acquire_timeout)
            .after_connect(|conn, _| Box::pin(writable(conn)))
            .before_acquire(|conn, _| Box::pin(not_stuck_in_a_transaction(conn)))
            .connect_with(options.clone())
            .await
            .map_err(db)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(readers.max(1))
            .acquire_timeout(acquire_timeout)
            .before_acquire(|conn, _| Box::pin(not_stuck_in_a_transaction(conn)))
            .connect_with(options.clone().read_only(true))
            .await
            .map_err(db)?;
        let buckets = open_buckets(&options, acquire_timeout).await?;
        Ok(SqliteStore {
            writer,
            reader,
            buckets,
        })
    }

    /// Applies pending migrations; refuses a database migrated by a newer server.
    pub async fn migrate(&self) -> StoreResult<()> {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
        )
        .execute(&self.writer)
        .await
        .map_err(db)?;
        let current: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                .fetch_one(&self.writer)
                .await
                .map_err(db)?;
        let newest = MIGRATIONS.last().map_or(0, |m| m.version);
        if current > newest {
            return Err(StoreError::corrupt(format!(
                "database schema version {current} is newer than this server knows ({newest}); refusing to start"
            )));
        }
        for m in MIGRATIONS.iter().filter(|m| m.version > current) {
            let mut tx = self
                .writer
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(db)?;
            sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(db)?;
            sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, strftime('%s','now'))")
                .bind(m.version)
                .bind(m.name)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)?;
            tracing::info!(version = m.version, name = m.name, "applied migration");
        }
        Ok(())
    }

    /// The schema version in the database.
    pub async fn schema_version(&self) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            .fetch_one(&self.reader)
            .await
            .map_err(db)
    }
}

/// The rate-limit buckets' database: `<database file>.ratelimits` next to the main file (in memory for an
/// in-memory store), one connection, `synchronous = OFF`.
///
/// Every rate-limited request writes a bucket, and SQLite has one writer per database: in the main file a bucket
/// write queued behind (and ahead of) every key take and message insert, so a bundle fetch cost two writer
/// turns. In a file of their own, buckets are written in parallel with the main writer. They are ephemeral
/// state, like PostgreSQL's asynchronously committed buckets: a crash may forget the last updates (handing back a
/// few permits), and a backup of the main file does not need them.
async fn open_buckets(
    main: &SqliteConnectOptions,
    acquire_timeout: Duration,
) -> StoreResult<SqlitePool> {
    let file = main.get_filename();
    let in_memory = file.as_os_str().is_empty() || file.to_string_lossy().contains(":memory:");
    let options = if in_memory {
        SqliteConnectOptions::from_str("sqlite::memory:").map_err(db)?
    } else {
        let mut name = file.as_os_str().to_owned();
        name.push(".ratelimits");
        SqliteConnectOptions::new()
            .filename(name)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Only this process writes it; a command-line tool opening the store may hold it a moment.
            .busy_timeout(Duration::from_secs(5))
    }
    .synchronous(SqliteSynchronous::Off);
    let pool = SqlitePoolOptions::new()
        // One connection: an in-memory database lives as long as its connection, so it is never closed.
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(acquire_timeout)
        .before_acquire(|conn, _| Box::pin(not_stuck_in_a_transaction(conn)))
        .connect_with(options)
        .await
        .map_err(db)?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS rate_limit_buckets (
             bucket     TEXT PRIMARY KEY,
             credit_ms  INTEGER NOT NULL,
             updated_at INTEGER NOT NULL,
             full_at    INTEGER NOT NULL,
             admitted   INTEGER NOT NULL DEFAULT 1
         ) STRICT;
         CREATE INDEX IF NOT EXISTS rate_limit_buckets_full_at ON rate_limit_buckets (full_at);",
    )
    .execute(&pool)
    .await
    .map_err(db)?;
    Ok(pool)
}

/// Refuses a writer connection that SQLite opened read-only.
///
/// SQLite opens a file it cannot open for writing read-only without saying so (a file made unwritable while the
/// server runs, e.g. a file system remounted read-only or the immutable flag); such a writer connection would answer
/// every write with SQLITE_READONLY for as long as it lives, also after the file is writable again. `BEGIN
/// IMMEDIATE` fails at once on a read-only connection, so the pool drops it and keeps reconnecting (requests get
/// 503 meanwhile) until the file is writable. It is also what every write transaction begins with, so it costs one
/// round trip per new writer connection.
async fn writable(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    sqlx::query("ROLLBACK").execute(&mut *conn).await?;
    Ok(())
}

/// Whether a pooled connection may be handed out: not when sqlx still counts it inside a transaction.
///
/// When a write fails with an I/O error (the file became unwritable, the disk is full), SQLite rolls the
/// transaction back by itself; sqlx's `COMMIT` then fails, and so does the `ROLLBACK` it sends when the transaction
/// is dropped ("no transaction is active"), so sqlx keeps counting the connection as inside a transaction and
/// refuses every later `BEGIN` on it ("attempted to call begin_with at non-zero transaction depth"): with the single
/// writer connection that was a permanent 500 on every write until a restart (found by `tests/it/faults.rs`). Such
/// a connection is closed instead and the pool opens a fresh one.
async fn not_stuck_in_a_transaction(
    conn: &mut sqlx::SqliteConnection,
) -> Result<bool, sqlx::Error> {
    use sqlx::Connection as _;
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    // A dropped transaction's rollback is queued on the connection ahead of this ping: let it run, then look again.
    conn.ping().await?;
    if conn.is_in_transaction() {
        tracing::warn!("SQLite connection left inside a failed transaction; replacing it");
        return Ok(false);
    }
    Ok(true)
}
