//! The PostgreSQL store, for several server processes sharing one database.
//!
//! Every method is atomic across processes, not just across tasks of one process, because every rule is enforced
//! by the database itself:
//! - one-time keys are taken with `DELETE … WHERE key_id = (SELECT … ORDER BY key_id LIMIT 1 FOR UPDATE SKIP
//!   LOCKED)`, both kinds in one statement, so concurrent takers lock different rows and never get the same key;
//! - a key upload serializes with other uploads to the same device through a transaction-scoped advisory lock,
//!   so "replace" never turns into a union of two uploads;
//! - a rate-limit acquire is one upsert that does [`flatline_core::ratelimit::apply`]'s arithmetic on the locked
//!   row (checked against `apply` by the conformance suite), on a small pool of its own that commits
//!   asynchronously;
//! - accounts read to authenticate requests may come from a cache kept current by this store's writes and by
//!   other processes' notifications ([`auth_cache`]);
//! - account creation relies on the unique constraints, each mapped to its
//!   [`Conflict`](flatline_core::store::Conflict), in one transaction.
//!
//! What this shares with SQLite is written once in [`super::shared`]; the modules here instantiate it and hold
//! what PostgreSQL writes differently.
//!
//! Migrations are embedded and applied under an advisory lock, so processes starting together migrate once.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use flatline_core::store::{StoreError, StoreResult};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Executor, Postgres, Transaction};

use super::Migration;
use super::shared::codecs::{LAST_RESORT, SIGNED_EC, db, join_capabilities, uuid_of};
use accounts::{device_from_row, insert_account, insert_device, put_initial_keys};
use keys::{delete_keys_of, put_signed};

mod accounts;
mod auth_cache;
mod cascade;
mod contacts;
mod devices;
mod dialect;
mod invites;
mod keys;
mod messages;
mod profiles;
pub use messages::{MESSAGES_CHANNEL, parse_notification};
mod rate_limits;
mod registration;
mod server_state;
mod shortcodes;
mod usernames;

/// Embedded migrations, applied in order at start-up.
pub const MIGRATIONS: &[Migration] = super::migrations!("postgres");

/// Advisory lock (single 64-bit key space) held while migrating: ASCII "flatmigr".
const MIGRATION_LOCK: i64 = 0x666c_6174_6d69_6772;

/// Takes the transaction-scoped advisory lock (`class`, `key`); released at commit or rollback.
async fn xact_lock(tx: &mut Transaction<'_, Postgres>, class: i32, key: i32) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(class)
        .bind(key)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

super::shared::codecs::checked_get!(Postgres);

/// Connection pool settings (from `[database]` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Most connections this process opens.
    pub max_connections: u32,
    /// How long a query waits for a free connection before failing.
    pub acquire_timeout: Duration,
    /// Idle connections are closed after this long; `None` keeps them.
    pub idle_timeout: Option<Duration>,
    /// `statement_timeout` set on every connection, in milliseconds; 0 means none.
    pub statement_timeout_ms: u64,
    /// How long an account stays cached for authentication ([`auth_cache`]); zero turns the cache off.
    pub auth_cache: Duration,
}

impl Default for PoolSettings {
    /// `[database]`'s defaults.
    fn default() -> Self {
        crate::config::DatabaseConfig::default().pool_settings()
    }
}

/// The PostgreSQL store: every method is one statement or one transaction, on one of two pools.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Rate-limit buckets only: its connections commit asynchronously (`synchronous_commit = off`, see
    /// [`RateLimitStore::acquire`]), which nothing else may do. A quarter of `max_connections`, taken from them.
    buckets: PgPool,
    /// Accounts cached for authentication; kept current by this store's writes and other processes' notifications.
    auth_cache: Arc<auth_cache::AuthCache>,
}

impl PgStore {
    /// Connects to `url` (`postgres://…` or `postgresql://…`). Errors never contain the URL or its password.
    pub async fn open(url: &str, settings: &PoolSettings) -> StoreResult<Self> {
        // The URL is not repeated here (it may hold a password); `store::open` adds its redacted form.
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::corrupt(format!("invalid PostgreSQL URL: {e}")))?;
        Self::connect_with(options, settings).await
    }

    /// Connects with explicit options (tests use this to pin a `search_path`).
    pub async fn connect_with(
        options: PgConnectOptions,
        settings: &PoolSettings,
    ) -> StoreResult<Self> {
        let total = settings.max_connections.max(1);
        let for_buckets = (total / 4).max(1);
        let pool = Self::pool_options(settings, total.saturating_sub(for_buckets).max(1))
            .connect_with(options.clone())
            .await
            .map_err(db)?;
        // Lazy: the main pool has just proven the database reachable; this one connects on first use.
        let buckets = Self::pool_options(settings, for_buckets)
            .connect_lazy_with(options.clone().options([("synchronous_commit", "off")]));
        // One more connection, held by the cache's LISTEN.
        let listen = Self::pool_options(settings, 1).connect_lazy_with(options);
        let auth_cache = auth_cache::AuthCache::start(settings.auth_cache, listen);
        Ok(PgStore {
            pool,
            buckets,
            auth_cache,
        })
    }

    fn pool_options(settings: &PoolSettings, max_connections: u32) -> PgPoolOptions {
        let statement_timeout = settings.statement_timeout_ms;
        PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .idle_timeout(settings.idle_timeout)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    // Bounds runaway queries; a value, not user input, so formatting it in is safe.
                    conn.execute(format!("SET statement_timeout = {statement_timeout}").as_str())
                        .await?;
                    Ok(())
                })
            })
    }

    /// The connection pool (for diagnostics and tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations in one transaction under an advisory lock, so several processes starting at once
    /// migrate exactly once; refuses a database migrated by a newer server.
    pub async fn migrate(&self) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // Schema changes may legitimately outlast the per-query limit; "already exists, skipping" notices are noise.
        for setting in [
            "SET LOCAL statement_timeout = 0",
            "SET LOCAL client_min_messages = warning",
        ] {
            sqlx::query(setting).execute(&mut *tx).await.map_err(db)?;
        }
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let current: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
        let newest = MIGRATIONS.last().map_or(0, |m| m.version);
        if current > newest {
            return Err(StoreError::corrupt(format!(
                "database schema version {current} is newer than this server knows ({newest}); refusing to start"
            )));
        }
        let pending: Vec<&Migration> = MIGRATIONS.iter().filter(|m| m.version > current).collect();
        for m in &pending {
            // Without arguments this is a simple-protocol query, which may hold several statements.
            tx.execute(m.sql).await.map_err(db)?;
            sqlx::query(
                "INSERT INTO schema_migrations (version, name, applied_at)
                 VALUES ($1, $2, EXTRACT(EPOCH FROM now())::BIGINT)",
            )
            .bind(m.version)
            .bind(m.name)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        for m in pending {
            tracing::info!(version = m.version, name = m.name, "applied migration");
        }
        Ok(())
    }

    /// The schema version in the database (0 before the first migration).
    pub async fn schema_version(&self) -> StoreResult<i64> {
        let exists: bool =
            sqlx::query_scalar("SELECT to_regclass('schema_migrations') IS NOT NULL")
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
        if !exists {
            return Ok(0);
        }
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            .fetch_one(&self.pool)
            .await
            .map_err(db)
    }
}
