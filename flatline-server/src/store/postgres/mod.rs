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
//! - account creation relies on the unique constraints, each mapped to its [`Conflict`], in one transaction.
//!
//! Migrations are embedded and applied under an advisory lock, so processes starting together migrate once.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flatline_core::account::{Account, AccountAttributes, AccountSettings, Device, DeviceSettings};
use flatline_core::credentials::SaltedTokenHash;
use flatline_core::ids::{Aci, DeviceId, IdentityType, KeyId, Pni, Principal, ServiceId};
use flatline_core::keys::{BundleKeys, EcPreKey, KeyCounts, KeyUpload, SignedPreKey, TakenKeys};
use flatline_core::ratelimit::{Admission, BucketConfig, BucketState};
use flatline_core::store::{
    AccountStore, AuthAccount, Conflict, DeviceGeneration, InitialKeys, KeyStore, NewAccount,
    RateLimitStore, StoreError, StoreResult,
};
use flatline_core::time::Timestamp;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Executor, Postgres, Row, Transaction};
use uuid::Uuid;

use super::shared::lock_key;
use super::{Migration, sql};
use crate::config::DatabaseConfig;

mod auth_cache;
mod contacts;
mod devices;
mod dialect;
mod invites;
mod messages;
mod profiles;
pub use messages::{MESSAGES_CHANNEL, parse_notification};
mod registration;
mod server_state;
mod shortcodes;
mod usernames;

/// Embedded migrations, applied in order at start-up.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "accounts_keys_limits",
        sql: include_str!("../../../migrations/postgres/0001_accounts_keys_limits.sql"),
    },
    Migration {
        version: 2,
        name: "registration",
        sql: include_str!("../../../migrations/postgres/0002_registration.sql"),
    },
    Migration {
        version: 3,
        name: "invites",
        sql: include_str!("../../../migrations/postgres/0003_invites.sql"),
    },
    Migration {
        version: 4,
        name: "usernames",
        sql: include_str!("../../../migrations/postgres/0004_usernames.sql"),
    },
    Migration {
        version: 5,
        name: "contacts",
        sql: include_str!("../../../migrations/postgres/0005_contacts.sql"),
    },
    Migration {
        version: 6,
        name: "server_state",
        sql: include_str!("../../../migrations/postgres/0006_server_state.sql"),
    },
    Migration {
        version: 7,
        name: "messages",
        sql: include_str!("../../../migrations/postgres/0007_messages.sql"),
    },
    Migration {
        version: 8,
        name: "sealed_sender",
        sql: include_str!("../../../migrations/postgres/0008_sealed_sender.sql"),
    },
    Migration {
        version: 10,
        name: "shortcodes",
        sql: include_str!("../../../migrations/postgres/0010_shortcodes.sql"),
    },
    Migration {
        version: 12,
        name: "profiles",
        sql: include_str!("../../../migrations/postgres/0012_profiles.sql"),
    },
    Migration {
        version: 13,
        name: "devices",
        sql: include_str!("../../../migrations/postgres/0013_devices.sql"),
    },
    Migration {
        version: 14,
        name: "message_sources",
        sql: include_str!("../../../migrations/postgres/0014_message_sources.sql"),
    },
    Migration {
        version: 15,
        name: "shared_payloads",
        sql: include_str!("../../../migrations/postgres/0015_shared_payloads.sql"),
    },
    Migration {
        version: 18,
        name: "bucket_admission",
        sql: include_str!("../../../migrations/postgres/0018_bucket_admission.sql"),
    },
    Migration {
        version: 19,
        name: "account_notifications",
        sql: include_str!("../../../migrations/postgres/0019_account_notifications.sql"),
    },
    Migration {
        version: 20,
        name: "buckets_in_their_own_file",
        sql: include_str!("../../../migrations/postgres/0020_buckets_in_their_own_file.sql"),
    },
];

/// Advisory lock (single 64-bit key space) held while migrating: ASCII "flatmigr".
const MIGRATION_LOCK: i64 = 0x666c_6174_6d69_6772;
/// Advisory lock class (two 32-bit key space, which does not overlap the 64-bit one) for per-device key uploads.
const KEY_UPLOAD_LOCK_CLASS: i32 = 0x666b_6579;
/// Advisory lock class serializing registrations (and deletions) of one OIDC subject: "fsub".
const SUBJECT_LOCK_CLASS: i32 = 0x6673_7562;
/// Advisory lock class serializing registrations that claim one principal: "fprn".
const PRINCIPAL_LOCK_CLASS: i32 = 0x6670_726e;

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

const SIGNED_EC: i64 = 0;
const LAST_RESORT: i64 = 1;

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

impl From<&DatabaseConfig> for PoolSettings {
    fn from(c: &DatabaseConfig) -> Self {
        PoolSettings {
            max_connections: c.max_connections.max(1),
            acquire_timeout: Duration::from_secs(c.acquire_timeout_seconds.max(1)),
            idle_timeout: (c.idle_timeout_seconds > 0)
                .then(|| Duration::from_secs(c.idle_timeout_seconds)),
            statement_timeout_ms: c.statement_timeout_ms,
            auth_cache: Duration::from_secs(c.auth_cache_seconds),
        }
    }
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings::from(&DatabaseConfig::default())
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

fn db(e: sqlx::Error) -> StoreError {
    StoreError::backend(e)
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

    /// Loads an account and its devices in one statement (one snapshot, one round trip: this runs on every
    /// authenticated request).
    async fn load_account<T>(&self, column: &str, key: T) -> StoreResult<Option<Account>>
    where
        T: for<'q> sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + Send + 'static,
    {
        let sql = format!(
            "SELECT a.*, d.device_id AS d_device_id, d.credential_hash AS d_credential_hash,
                    d.credential_salt AS d_credential_salt, d.registration_id AS d_registration_id,
                    d.pni_registration_id AS d_pni_registration_id, d.name AS d_name,
                    d.fetches_messages AS d_fetches_messages, d.capabilities AS d_capabilities,
                    d.created_at AS d_created_at, d.last_seen AS d_last_seen
             FROM accounts a LEFT JOIN devices d ON d.aci = a.aci
             WHERE a.{column} = $1 ORDER BY d.device_id"
        );
        let rows = sqlx::query(&sql)
            .bind(key)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        account_from_rows(first, &rows).map(Some)
    }

    async fn signed(
        &self,
        owner: ServiceId,
        device: DeviceId,
        kind: i64,
    ) -> StoreResult<Option<SignedPreKey>> {
        sqlx::query(
            "SELECT key_id, public_key, signature FROM signed_keys
             WHERE identity = $1 AND owner = $2 AND device_id = $3 AND kind = $4",
        )
        .bind(identity_code(owner))
        .bind(owner_bytes(owner))
        .bind(i64::from(device.get()))
        .bind(kind)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(signed_from_row)
        .transpose()
    }
}

fn uuid_of(bytes: &[u8]) -> StoreResult<Uuid> {
    Uuid::from_slice(bytes).map_err(|_| StoreError::corrupt("uuid column is not 16 bytes"))
}

fn get<'r, T>(row: &'r PgRow, column: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(column).map_err(db)
}

fn account_from_rows(row: &PgRow, devices: &[PgRow]) -> StoreResult<Account> {
    let principal: String = get(row, "principal")?;
    let uak: Option<Vec<u8>> = get(row, "unidentified_access_key")?;
    let link: Option<Vec<u8>> = get(row, "username_link_handle")?;
    let aci: Vec<u8> = get(row, "aci")?;
    let pni: Vec<u8> = get(row, "pni")?;
    Ok(Account {
        aci: Aci(uuid_of(&aci)?),
        pni: Pni(uuid_of(&pni)?),
        principal: Principal::parse(&principal)
            .map_err(|e| StoreError::corrupt(format!("stored principal: {e}")))?,
        principal_opaque: get(row, "principal_opaque")?,
        aci_identity_key: get(row, "aci_identity_key")?,
        pni_identity_key: get(row, "pni_identity_key")?,
        settings: AccountSettings {
            unidentified_access_key: uak
                .map(|k| <[u8; 16]>::try_from(k.as_slice()))
                .transpose()
                .map_err(|_| StoreError::corrupt("stored access key is not 16 bytes"))?,
            unrestricted_unidentified_access: get(row, "unrestricted_unidentified_access")?,
            discoverable_by_principal: get(row, "discoverable_by_principal")?,
        },
        username_hash: get(row, "username_hash")?,
        username_link_handle: link.map(|l| uuid_of(&l)).transpose()?,
        created_at: Timestamp(get(row, "created_at")?),
        // A LEFT JOIN row without a device (NULL device id) stands for "no devices".
        devices: devices
            .iter()
            .filter(|r| matches!(r.try_get::<Option<i64>, _>("d_device_id"), Ok(Some(_))))
            .map(device_from_row)
            .collect::<StoreResult<_>>()?,
    })
}

/// A device from the `d_`-prefixed columns of [`PgStore::load_account`]'s join.
fn device_from_row(row: &PgRow) -> StoreResult<Device> {
    let id: i64 = get(row, "d_device_id")?;
    let capabilities: String = get(row, "d_capabilities")?;
    let small =
        |v: i64| u16::try_from(v).map_err(|_| StoreError::corrupt("registration id out of range"));
    Ok(Device {
        id: u8::try_from(id)
            .ok()
            .and_then(|i| DeviceId::new(i).ok())
            .ok_or_else(|| StoreError::corrupt("device id"))?,
        credential: SaltedTokenHash {
            hash: get(row, "d_credential_hash")?,
            salt: get(row, "d_credential_salt")?,
        },
        settings: DeviceSettings {
            registration_id: small(get(row, "d_registration_id")?)?,
            pni_registration_id: small(get(row, "d_pni_registration_id")?)?,
            name: get(row, "d_name")?,
            fetches_messages: get(row, "d_fetches_messages")?,
        },
        created_at: Timestamp(get(row, "d_created_at")?),
        last_seen: Timestamp(get(row, "d_last_seen")?),
        capabilities: split_capabilities(&capabilities),
    })
}

/// Capabilities are stored as a comma-separated list (as in SQLite); names containing commas are dropped.
fn join_capabilities(c: &BTreeSet<String>) -> String {
    c.iter()
        .filter(|n| !n.contains(','))
        .cloned()
        .collect::<Vec<_>>()
        .join(",")
}

fn split_capabilities(s: &str) -> BTreeSet<String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

fn identity_code(owner: ServiceId) -> i64 {
    match owner.identity_type() {
        IdentityType::Aci => 0,
        IdentityType::Pni => 1,
    }
}

fn owner_bytes(owner: ServiceId) -> Vec<u8> {
    owner.uuid().as_bytes().to_vec()
}

fn key_id(v: i64) -> StoreResult<KeyId> {
    KeyId::new(v).map_err(|_| StoreError::corrupt("stored key id out of range"))
}

fn signed_from_row(row: &PgRow) -> StoreResult<SignedPreKey> {
    Ok(SignedPreKey {
        key_id: key_id(get(row, "key_id")?)?,
        public_key: get(row, "public_key")?,
        signature: get(row, "signature")?,
    })
}

/// An EC key in the columns `{prefix}_id`, `{prefix}_public` of an outer join (all null: none).
fn prefixed_ec(row: &PgRow, prefix: &str) -> StoreResult<Option<EcPreKey>> {
    let id: Option<i64> = get(row, &format!("{prefix}_id"))?;
    let public_key: Option<Vec<u8>> = get(row, &format!("{prefix}_public"))?;
    match (id, public_key) {
        (Some(id), Some(public_key)) => Ok(Some(EcPreKey {
            key_id: key_id(id)?,
            public_key,
        })),
        _ => Ok(None),
    }
}

/// A signed key in the columns `{prefix}_id`, `{prefix}_public`, `{prefix}_signature` of an outer join.
fn prefixed_signed(row: &PgRow, prefix: &str) -> StoreResult<Option<SignedPreKey>> {
    let id: Option<i64> = get(row, &format!("{prefix}_id"))?;
    let public_key: Option<Vec<u8>> = get(row, &format!("{prefix}_public"))?;
    let signature: Option<Vec<u8>> = get(row, &format!("{prefix}_signature"))?;
    match (id, public_key, signature) {
        (Some(id), Some(public_key), Some(signature)) => Ok(Some(SignedPreKey {
            key_id: key_id(id)?,
            public_key,
            signature,
        })),
        _ => Ok(None),
    }
}

/// Maps a unique violation on `accounts` to the rule it breaks.
fn account_conflict(e: &sqlx::Error) -> Option<Conflict> {
    let d = e.as_database_error()?;
    if !d.is_unique_violation() {
        return None;
    }
    match d.constraint()? {
        "accounts_pkey" => Some(Conflict::Aci),
        "accounts_pni_key" => Some(Conflict::Pni),
        "accounts_principal_key" => Some(Conflict::Principal),
        _ => None,
    }
}

async fn insert_device(
    tx: &mut Transaction<'_, Postgres>,
    aci: Aci,
    d: &Device,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO devices (aci, device_id, credential_hash, credential_salt, registration_id, pni_registration_id,
         name, fetches_messages, capabilities, created_at, last_seen) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
    )
    .bind(aci.as_bytes().to_vec())
    .bind(i64::from(d.id.get()))
    .bind(&d.credential.hash)
    .bind(&d.credential.salt)
    .bind(i64::from(d.settings.registration_id))
    .bind(i64::from(d.settings.pni_registration_id))
    .bind(&d.settings.name)
    .bind(d.settings.fetches_messages)
    .bind(join_capabilities(&d.capabilities))
    .bind(d.created_at.as_millis())
    .bind(d.last_seen.as_millis())
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

async fn put_signed(
    tx: &mut Transaction<'_, Postgres>,
    owner: ServiceId,
    device: DeviceId,
    kind: i64,
    key: &SignedPreKey,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO signed_keys (identity, owner, device_id, kind, key_id, public_key, signature)
         VALUES ($1,$2,$3,$4,$5,$6,$7)
         ON CONFLICT (identity, owner, device_id, kind)
         DO UPDATE SET key_id = excluded.key_id, public_key = excluded.public_key, signature = excluded.signature",
    )
    .bind(identity_code(owner))
    .bind(owner_bytes(owner))
    .bind(i64::from(device.get()))
    .bind(kind)
    .bind(i64::from(key.key_id.get()))
    .bind(&key.public_key)
    .bind(&key.signature)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

async fn delete_keys_of(tx: &mut Transaction<'_, Postgres>, owner: ServiceId) -> StoreResult<()> {
    for table in ["one_time_ec_keys", "one_time_kem_keys", "signed_keys"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE identity = $1 AND owner = $2"
        ))
        .bind(identity_code(owner))
        .bind(owner_bytes(owner))
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    }
    Ok(())
}

/// Inserts the account row and its devices; a unique violation on `accounts` becomes its [`Conflict`].
async fn insert_account(tx: &mut Transaction<'_, Postgres>, a: &Account) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO accounts (aci, pni, principal, principal_opaque, aci_identity_key, pni_identity_key,
         unidentified_access_key, unrestricted_unidentified_access, discoverable_by_principal, username_hash,
         username_link_handle, created_at)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
    )
    .bind(a.aci.as_bytes().to_vec())
    .bind(a.pni.as_bytes().to_vec())
    .bind(a.principal.as_str())
    .bind(a.principal_opaque)
    .bind(&a.aci_identity_key)
    .bind(&a.pni_identity_key)
    .bind(a.settings.unidentified_access_key.map(|k| k.to_vec()))
    .bind(a.settings.unrestricted_unidentified_access)
    .bind(a.settings.discoverable_by_principal)
    .bind(&a.username_hash)
    .bind(a.username_link_handle.map(|h| h.as_bytes().to_vec()))
    .bind(a.created_at.as_millis())
    .execute(&mut **tx)
    .await
    .map_err(|e| match account_conflict(&e) {
        Some(c) => StoreError::Conflict(c),
        None => db(e),
    })?;
    for d in &a.devices {
        insert_device(tx, a.aci, d).await?;
    }
    Ok(())
}

/// Writes the primary device's signed and last-resort keys for both identities.
async fn put_initial_keys(
    tx: &mut Transaction<'_, Postgres>,
    aci: Aci,
    pni: Pni,
    k: &InitialKeys,
) -> StoreResult<()> {
    let primary = DeviceId::PRIMARY;
    let (aci, pni) = (ServiceId::Aci(aci), ServiceId::Pni(pni));
    put_signed(tx, aci, primary, SIGNED_EC, &k.aci_signed).await?;
    put_signed(tx, pni, primary, SIGNED_EC, &k.pni_signed).await?;
    put_signed(tx, aci, primary, LAST_RESORT, &k.aci_last_resort).await?;
    put_signed(tx, pni, primary, LAST_RESORT, &k.pni_last_resort).await
}

#[async_trait]
impl AccountStore for PgStore {
    async fn create_account(&self, new: NewAccount) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // The unique constraints decide (atomically, across processes); the violated one names the conflict. An
        // error drops `tx`, which rolls back, so a refused account writes nothing.
        insert_account(&mut tx, &new.account).await?;
        put_initial_keys(&mut tx, new.account.aci, new.account.pni, &new.keys).await?;
        tx.commit().await.map_err(db)
    }

    async fn account(&self, aci: Aci) -> StoreResult<Option<Account>> {
        self.load_account("aci", aci.as_bytes().to_vec()).await
    }

    async fn account_for_auth(&self, aci: Aci) -> StoreResult<Option<AuthAccount>> {
        if let Some(account) = self.auth_cache.get(aci) {
            return Ok(Some(AuthAccount {
                account,
                cached: true,
            }));
        }
        let epoch = self.auth_cache.epoch();
        let loaded = self.account(aci).await?;
        if let Some(account) = &loaded {
            self.auth_cache.put(epoch, account);
        }
        Ok(loaded.map(|account| AuthAccount {
            account,
            cached: false,
        }))
    }

    async fn accounts_of(&self, ids: &[ServiceId]) -> StoreResult<Vec<Option<Account>>> {
        // One query for all (a multi-recipient send names up to thousands), grouped back per account.
        let (mut acis, mut pnis) = (vec![], vec![]);
        for id in ids {
            match id {
                ServiceId::Aci(a) => acis.push(a.as_bytes().to_vec()),
                ServiceId::Pni(p) => pnis.push(p.as_bytes().to_vec()),
            }
        }
        let rows = sqlx::query(
            "SELECT a.*, d.device_id AS d_device_id, d.credential_hash AS d_credential_hash,
                    d.credential_salt AS d_credential_salt, d.registration_id AS d_registration_id,
                    d.pni_registration_id AS d_pni_registration_id, d.name AS d_name,
                    d.fetches_messages AS d_fetches_messages, d.capabilities AS d_capabilities,
                    d.created_at AS d_created_at, d.last_seen AS d_last_seen
             FROM accounts a LEFT JOIN devices d ON d.aci = a.aci
             WHERE a.aci = ANY($1) OR a.pni = ANY($2) ORDER BY a.aci, d.device_id",
        )
        .bind(acis)
        .bind(pnis)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut accounts: Vec<Account> = vec![];
        for group in rows.chunk_by(|a, b| {
            a.try_get::<Vec<u8>, _>("aci").ok() == b.try_get::<Vec<u8>, _>("aci").ok()
        }) {
            accounts.push(account_from_rows(&group[0], group)?);
        }
        Ok(ids
            .iter()
            .map(|id| {
                accounts
                    .iter()
                    .find(|a| match id {
                        ServiceId::Aci(aci) => a.aci == *aci,
                        ServiceId::Pni(pni) => a.pni == *pni,
                    })
                    .cloned()
            })
            .collect())
    }

    async fn account_by_pni(&self, pni: Pni) -> StoreResult<Option<Account>> {
        self.load_account("pni", pni.as_bytes().to_vec()).await
    }

    async fn account_by_principal(&self, principal: &Principal) -> StoreResult<Option<Account>> {
        // Compared exactly (case-sensitive), like the other backends.
        self.load_account("principal", principal.as_str().to_owned())
            .await
    }

    async fn update_attributes(
        &self,
        writer: &DeviceGeneration,
        attributes: &AccountAttributes,
    ) -> StoreResult<bool> {
        let (aci, device) = (writer.aci, writer.device);
        let mut tx = self.pool.begin().await.map_err(db)?;
        let d = &attributes.device;
        let updated = sqlx::query(
            "UPDATE devices SET registration_id = $1, pni_registration_id = $2, name = $3, fetches_messages = $4,
             capabilities = $5 WHERE aci = $6 AND device_id = $7 AND credential_salt = $8",
        )
        .bind(i64::from(d.registration_id))
        .bind(i64::from(d.pni_registration_id))
        .bind(&d.name)
        .bind(d.fetches_messages)
        .bind(join_capabilities(&attributes.capabilities))
        .bind(aci.as_bytes().to_vec())
        .bind(i64::from(device.get()))
        .bind(&writer.credential_salt)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        let s = &attributes.account;
        sqlx::query(
            "UPDATE accounts SET unidentified_access_key = $1, unrestricted_unidentified_access = $2,
             discoverable_by_principal = $3 WHERE aci = $4",
        )
        .bind(s.unidentified_access_key.map(|k| k.to_vec()))
        .bind(s.unrestricted_unidentified_access)
        .bind(s.discoverable_by_principal)
        .bind(aci.as_bytes().to_vec())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.auth_cache.drop_account(aci);
        Ok(true)
    }

    async fn touch_device(
        &self,
        aci: Aci,
        device: DeviceId,
        last_seen: Timestamp,
    ) -> StoreResult<()> {
        // GREATEST in the UPDATE itself: the row lock makes concurrent touches monotonic.
        sqlx::query(
            "UPDATE devices SET last_seen = GREATEST(last_seen, $1) WHERE aci = $2 AND device_id = $3",
        )
        .bind(last_seen.as_millis())
        .bind(aci.as_bytes().to_vec())
        .bind(i64::from(device.get()))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        self.auth_cache.drop_account(aci);
        Ok(())
    }

    async fn lock_credentials(&self, aci: Aci) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // Locks the account row so a concurrent delete or device insert cannot interleave.
        let exists = sqlx::query("SELECT 1 FROM accounts WHERE aci = $1 FOR UPDATE")
            .bind(aci.as_bytes().to_vec())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .is_some();
        sqlx::query(
            "UPDATE devices SET credential_hash = '!' || credential_hash
             WHERE aci = $1 AND left(credential_hash, 1) <> '!'",
        )
        .bind(aci.as_bytes().to_vec())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.auth_cache.drop_account(aci);
        Ok(exists)
    }

    async fn delete_account(&self, aci: Aci, now: Timestamp) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // Serialize with registrations of the same subject, which would otherwise re-register into an account
        // that is going away (same lock order as `register`: subject, then the account row).
        let subject_hash: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT subject_hash FROM account_subjects WHERE aci = $1")
                .bind(aci.as_bytes().to_vec())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        if let Some(hash) = &subject_hash {
            xact_lock(&mut tx, SUBJECT_LOCK_CLASS, lock_key(hash)).await?;
        }
        // Locking the account row decides which of two concurrent deletes wins: the loser finds no row.
        let Some(pni): Option<Vec<u8>> =
            sqlx::query_scalar("SELECT pni FROM accounts WHERE aci = $1 FOR UPDATE")
                .bind(aci.as_bytes().to_vec())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
        else {
            return Ok(false);
        };
        // Keys are keyed by identity, not by account.
        delete_keys_of(&mut tx, ServiceId::Aci(aci)).await?;
        delete_keys_of(&mut tx, ServiceId::Pni(Pni(uuid_of(&pni)?))).await?;
        // Before the account row goes: the subject binding it reads is removed by the cascade.
        registration::tombstone(&mut tx, aci, now).await?;
        invites::revoke_all_of(&mut tx, aci, now).await?;
        contacts::delete_contacts_of(&mut tx, aci).await?;
        messages::delete_messages_of(&mut tx, aci).await?;
        // Devices, the subject binding, username claims and holds go with the account (ON DELETE CASCADE).
        sqlx::query("DELETE FROM accounts WHERE aci = $1")
            .bind(aci.as_bytes().to_vec())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.auth_cache.drop_account(aci);
        Ok(true)
    }
}

/// Deduplicates an upload by key id, the last occurrence winning (as the other backends' maps do), lowest id first.
fn dedup<T>(keys: impl IntoIterator<Item = (KeyId, T)>) -> BTreeMap<KeyId, T> {
    keys.into_iter().collect()
}

/// Whether `writer`'s generation of its device still exists (inside the writing transaction; on PostgreSQL the
/// row is share-locked, so a removal or re-registration waits for this write and then deletes what it wrote).
async fn device_is_current(
    tx: &mut Transaction<'_, Postgres>,
    writer: &DeviceGeneration,
) -> StoreResult<bool> {
    Ok(sqlx::query("SELECT 1 FROM devices WHERE aci = $1 AND device_id = $2 AND credential_salt = $3 FOR SHARE")
        .bind(writer.aci.as_bytes().to_vec())
        .bind(i64::from(writer.device.get()))
        .bind(&writer.credential_salt)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db)?
        .is_some())
}

/// An upload's writes (see [`KeyStore::store_keys`]), inside the caller's transaction.
async fn write_keys(
    tx: &mut Transaction<'_, Postgres>,
    owner: ServiceId,
    device: DeviceId,
    upload: &KeyUpload,
) -> StoreResult<()> {
    let identity = identity_code(owner);
    let owner_b = owner_bytes(owner);
    let dev = i64::from(device.get());
    // Serializes uploads to one device across processes: without it, two "replace" uploads racing under
    // READ COMMITTED could each delete only the rows they saw and leave the union of both lists.
    sqlx::query(
        "SELECT pg_advisory_xact_lock($1, hashtext(encode($2, 'hex') || ':' || $3 || ':' || $4))",
    )
    .bind(KEY_UPLOAD_LOCK_CLASS)
    .bind(&owner_b)
    .bind(identity)
    .bind(dev)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    if let Some(ec) = &upload.ec {
        sqlx::query(
            "DELETE FROM one_time_ec_keys WHERE identity = $1 AND owner = $2 AND device_id = $3",
        )
        .bind(identity)
        .bind(&owner_b)
        .bind(dev)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        let keys = dedup(ec.iter().map(|k| (k.key_id, &k.public_key)));
        let ids: Vec<i64> = keys.keys().map(|k| i64::from(k.get())).collect();
        let publics: Vec<Vec<u8>> = keys.values().map(|p| (*p).clone()).collect();
        sqlx::query(
                "INSERT INTO one_time_ec_keys (identity, owner, device_id, key_id, public_key)
                 SELECT $1, $2, $3, k.key_id, k.public_key FROM UNNEST($4::BIGINT[], $5::BYTEA[]) AS k (key_id, public_key)",
            )
            .bind(identity)
            .bind(&owner_b)
            .bind(dev)
            .bind(&ids)
            .bind(&publics)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
    }
    if let Some(kem) = &upload.kem {
        sqlx::query(
            "DELETE FROM one_time_kem_keys WHERE identity = $1 AND owner = $2 AND device_id = $3",
        )
        .bind(identity)
        .bind(&owner_b)
        .bind(dev)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        let keys = dedup(kem.iter().map(|k| (k.key_id, k)));
        let ids: Vec<i64> = keys.keys().map(|k| i64::from(k.get())).collect();
        let publics: Vec<Vec<u8>> = keys.values().map(|k| k.public_key.clone()).collect();
        let signatures: Vec<Vec<u8>> = keys.values().map(|k| k.signature.clone()).collect();
        sqlx::query(
                "INSERT INTO one_time_kem_keys (identity, owner, device_id, key_id, public_key, signature)
                 SELECT $1, $2, $3, k.key_id, k.public_key, k.signature
                 FROM UNNEST($4::BIGINT[], $5::BYTEA[], $6::BYTEA[]) AS k (key_id, public_key, signature)",
            )
            .bind(identity)
            .bind(&owner_b)
            .bind(dev)
            .bind(&ids)
            .bind(&publics)
            .bind(&signatures)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
    }
    if let Some(k) = &upload.signed {
        put_signed(tx, owner, device, SIGNED_EC, k).await?;
    }
    if let Some(k) = &upload.last_resort {
        put_signed(tx, owner, device, LAST_RESORT, k).await?;
    }
    Ok(())
}

#[async_trait]
impl KeyStore for PgStore {
    async fn store_keys(
        &self,
        owner: ServiceId,
        device: DeviceId,
        upload: &KeyUpload,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        write_keys(&mut tx, owner, device, upload).await?;
        tx.commit().await.map_err(db)
    }

    async fn store_keys_as(
        &self,
        writer: &DeviceGeneration,
        owner: ServiceId,
        upload: &KeyUpload,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        if !device_is_current(&mut tx, writer).await? {
            return Ok(false);
        }
        write_keys(&mut tx, owner, writer.device, upload).await?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn take_one_time_keys(
        &self,
        owner: ServiceId,
        device: DeviceId,
    ) -> StoreResult<TakenKeys> {
        // One statement, so both deletes commit together. Each picks the lowest id that no other transaction has
        // locked (SKIP LOCKED): concurrent takers lock different rows instead of queueing behind one row and then
        // finding it gone (which under READ COMMITTED would make them come back empty-handed).
        let row = sqlx::query(
            "WITH ec AS (
                 DELETE FROM one_time_ec_keys
                 WHERE identity = $1 AND owner = $2 AND device_id = $3 AND key_id = (
                     SELECT key_id FROM one_time_ec_keys WHERE identity = $1 AND owner = $2 AND device_id = $3
                     ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING key_id, public_key),
             kem AS (
                 DELETE FROM one_time_kem_keys
                 WHERE identity = $1 AND owner = $2 AND device_id = $3 AND key_id = (
                     SELECT key_id FROM one_time_kem_keys WHERE identity = $1 AND owner = $2 AND device_id = $3
                     ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING key_id, public_key, signature)
             SELECT ec.key_id AS ec_id, ec.public_key AS ec_public, kem.key_id AS kem_id,
                    kem.public_key AS kem_public, kem.signature AS kem_signature
             FROM (SELECT 1) AS one LEFT JOIN ec ON TRUE LEFT JOIN kem ON TRUE",
        )
        .bind(identity_code(owner))
        .bind(owner_bytes(owner))
        .bind(i64::from(device.get()))
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(TakenKeys {
            ec: prefixed_ec(&row, "ec")?,
            kem: prefixed_signed(&row, "kem")?,
        })
    }

    async fn take_bundle_keys(
        &self,
        owner: ServiceId,
        device: DeviceId,
    ) -> StoreResult<Option<BundleKeys>> {
        // The whole device part of a fetch in one round trip (was three): the signed key, the two takes of
        // `take_one_time_keys` (done only when there is a signed key, so a device without one loses nothing) and
        // the last-resort key, read always (it is small) and used when no one-time Kyber key was left.
        let row = sqlx::query(
            "WITH s AS (
                 SELECT key_id, public_key, signature FROM signed_keys
                 WHERE identity = $1 AND owner = $2 AND device_id = $3 AND kind = $4),
             ec AS (
                 DELETE FROM one_time_ec_keys
                 WHERE EXISTS (SELECT 1 FROM s) AND identity = $1 AND owner = $2 AND device_id = $3 AND key_id = (
                     SELECT key_id FROM one_time_ec_keys WHERE identity = $1 AND owner = $2 AND device_id = $3
                     ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING key_id, public_key),
             kem AS (
                 DELETE FROM one_time_kem_keys
                 WHERE EXISTS (SELECT 1 FROM s) AND identity = $1 AND owner = $2 AND device_id = $3 AND key_id = (
                     SELECT key_id FROM one_time_kem_keys WHERE identity = $1 AND owner = $2 AND device_id = $3
                     ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING key_id, public_key, signature),
             lr AS (
                 SELECT key_id, public_key, signature FROM signed_keys
                 WHERE identity = $1 AND owner = $2 AND device_id = $3 AND kind = $5)
             SELECT s.key_id AS s_id, s.public_key AS s_public, s.signature AS s_signature,
                    ec.key_id AS ec_id, ec.public_key AS ec_public,
                    kem.key_id AS kem_id, kem.public_key AS kem_public, kem.signature AS kem_signature,
                    lr.key_id AS lr_id, lr.public_key AS lr_public, lr.signature AS lr_signature
             FROM (SELECT 1) AS one LEFT JOIN s ON TRUE LEFT JOIN ec ON TRUE LEFT JOIN kem ON TRUE
                  LEFT JOIN lr ON TRUE",
        )
        .bind(identity_code(owner))
        .bind(owner_bytes(owner))
        .bind(i64::from(device.get()))
        .bind(SIGNED_EC)
        .bind(LAST_RESORT)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        let Some(signed) = prefixed_signed(&row, "s")? else {
            return Ok(None);
        };
        let kem = match prefixed_signed(&row, "kem")? {
            Some(kem) => Some(kem),
            None => prefixed_signed(&row, "lr")?,
        };
        Ok(Some(BundleKeys {
            signed,
            one_time: prefixed_ec(&row, "ec")?,
            kem,
        }))
    }

    async fn signed_pre_key(
        &self,
        owner: ServiceId,
        device: DeviceId,
    ) -> StoreResult<Option<SignedPreKey>> {
        self.signed(owner, device, SIGNED_EC).await
    }

    async fn last_resort_key(
        &self,
        owner: ServiceId,
        device: DeviceId,
    ) -> StoreResult<Option<SignedPreKey>> {
        self.signed(owner, device, LAST_RESORT).await
    }

    async fn key_counts(&self, owner: ServiceId, device: DeviceId) -> StoreResult<KeyCounts> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM one_time_ec_keys WHERE identity = $1 AND owner = $2 AND device_id = $3) AS ec,
                    (SELECT COUNT(*) FROM one_time_kem_keys WHERE identity = $1 AND owner = $2 AND device_id = $3) AS kem",
        )
        .bind(identity_code(owner))
        .bind(owner_bytes(owner))
        .bind(i64::from(device.get()))
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        let count = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
        Ok(KeyCounts {
            ec: count(get(&row, "ec")?),
            kem: count(get(&row, "kem")?),
        })
    }

    async fn one_time_ec_keys(
        &self,
        owner: ServiceId,
        device: DeviceId,
    ) -> StoreResult<Vec<EcPreKey>> {
        sqlx::query(
            "SELECT key_id, public_key FROM one_time_ec_keys WHERE identity = $1 AND owner = $2 AND device_id = $3
             ORDER BY key_id",
        )
        .bind(identity_code(owner))
        .bind(owner_bytes(owner))
        .bind(i64::from(device.get()))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(|r| {
            Ok(EcPreKey {
                key_id: key_id(get(r, "key_id")?)?,
                public_key: get(r, "public_key")?,
            })
        })
        .collect()
    }
}

#[async_trait]
impl RateLimitStore for PgStore {
    async fn acquire(
        &self,
        key: &str,
        config: &BucketConfig,
        amount: u32,
        now: Timestamp,
    ) -> StoreResult<Admission> {
        // One statement on the bucket pool, whose connections commit asynchronously (no wait for the WAL flush,
        // which otherwise dominates every rate-limited request: docs/PERFORMANCE.md, "Load"). Atomicity and
        // isolation are unchanged (the upsert locks the row); a crash can only forget the last fraction of a second
        // of bucket updates, handing back a few permits. Nothing but buckets is written on that pool.
        let row = crate::store::bucket_upsert(
            sql::rate_limits::ACQUIRE_POSTGRES,
            key,
            config,
            amount,
            now,
        )
        .fetch_one(&self.buckets)
        .await
        .map_err(db)?;
        crate::store::admission_of(
            config,
            amount,
            get(&row, "credit_ms")?,
            get(&row, "admitted")?,
        )
    }

    async fn peek(&self, key: &str) -> StoreResult<Option<BucketState>> {
        sqlx::query("SELECT credit_ms, updated_at FROM rate_limit_buckets WHERE bucket = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .map(|r| {
                Ok(BucketState {
                    credit_ms: get(&r, "credit_ms")?,
                    updated_at: Timestamp(get(&r, "updated_at")?),
                })
            })
            .transpose()
    }

    async fn purge_full_buckets(&self, now: Timestamp) -> StoreResult<u64> {
        let r = sqlx::query("DELETE FROM rate_limit_buckets WHERE full_at <= $1")
            .bind(now.as_millis())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(r.rows_affected())
    }
}
