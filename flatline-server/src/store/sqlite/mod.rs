//! The embedded SQLite store.
//!
//! One writer connection serializes every write (SQLite allows one writer anyway; doing it in-process avoids
//! `SQLITE_BUSY` on lock upgrades), and a pool of readers serves lookups concurrently thanks to WAL mode.
//! Every trait method that writes runs in one transaction on the writer, which makes it atomic.

mod server_state;

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use flatline_core::account::{Account, AccountAttributes, AccountSettings, Device, DeviceSettings};
use flatline_core::credentials::SaltedTokenHash;
use flatline_core::ids::{Aci, DeviceId, IdentityType, KeyId, Pni, Principal, ServiceId};
use flatline_core::keys::{EcPreKey, KeyCounts, KeyUpload, SignedPreKey, TakenKeys};
use flatline_core::ratelimit::{Admission, BucketConfig, BucketState};
use flatline_core::store::{
    AccountStore, Conflict, DeviceGeneration, InitialKeys, KeyStore, NewAccount, RateLimitStore,
    StoreError, StoreResult,
};
use flatline_core::time::Timestamp;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use uuid::Uuid;

use super::{Migration, sql};

mod contacts;
mod devices;
mod dialect;
mod invites;
mod messages;
mod profiles;
mod registration;
mod shortcodes;
mod usernames;

/// Embedded migrations, applied in order at start-up.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "accounts_keys_limits",
        sql: include_str!("../../../migrations/sqlite/0001_accounts_keys_limits.sql"),
    },
    Migration {
        version: 2,
        name: "registration",
        sql: include_str!("../../../migrations/sqlite/0002_registration.sql"),
    },
    Migration {
        version: 3,
        name: "invites",
        sql: include_str!("../../../migrations/sqlite/0003_invites.sql"),
    },
    Migration {
        version: 4,
        name: "usernames",
        sql: include_str!("../../../migrations/sqlite/0004_usernames.sql"),
    },
    Migration {
        version: 5,
        name: "contacts",
        sql: include_str!("../../../migrations/sqlite/0005_contacts.sql"),
    },
    Migration {
        version: 6,
        name: "server_state",
        sql: include_str!("../../../migrations/sqlite/0006_server_state.sql"),
    },
    Migration {
        version: 7,
        name: "messages",
        sql: include_str!("../../../migrations/sqlite/0007_messages.sql"),
    },
    Migration {
        version: 8,
        name: "sealed_sender",
        sql: include_str!("../../../migrations/sqlite/0008_sealed_sender.sql"),
    },
    Migration {
        version: 10,
        name: "shortcodes",
        sql: include_str!("../../../migrations/sqlite/0010_shortcodes.sql"),
    },
    Migration {
        version: 12,
        name: "profiles",
        sql: include_str!("../../../migrations/sqlite/0012_profiles.sql"),
    },
    Migration {
        version: 13,
        name: "devices",
        sql: include_str!("../../../migrations/sqlite/0013_devices.sql"),
    },
    Migration {
        version: 14,
        name: "message_sources",
        sql: include_str!("../../../migrations/sqlite/0014_message_sources.sql"),
    },
    Migration {
        version: 15,
        name: "shared_payloads",
        sql: include_str!("../../../migrations/sqlite/0015_shared_payloads.sql"),
    },
    Migration {
        version: 18,
        name: "bucket_admission",
        sql: include_str!("../../../migrations/sqlite/0018_bucket_admission.sql"),
    },
    Migration {
        version: 19,
        name: "account_notifications",
        sql: include_str!("../../../migrations/sqlite/0019_account_notifications.sql"),
    },
    Migration {
        version: 20,
        name: "buckets_in_their_own_file",
        sql: include_str!("../../../migrations/sqlite/0020_buckets_in_their_own_file.sql"),
    },
];

/// `database.acquire_timeout_seconds`' default.
const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

const SIGNED_EC: i64 = 0;
const LAST_RESORT: i64 = 1;

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Rate-limit buckets, in a database of their own (see [`SqliteStore::open_with`]).
    buckets: SqlitePool,
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::backend(e)
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

    /// The account and its devices in one statement: every authenticated request loads an account, so a second
    /// query for the devices would be a second trip through the reader pool each time (docs/PERFORMANCE.md).
    async fn load_account(&self, where_clause: &str, key: Vec<u8>) -> StoreResult<Option<Account>> {
        let sql = format!(
            "SELECT a.*, d.device_id AS d_device_id, d.credential_hash AS d_credential_hash,
                    d.credential_salt AS d_credential_salt, d.registration_id AS d_registration_id,
                    d.pni_registration_id AS d_pni_registration_id, d.name AS d_name,
                    d.fetches_messages AS d_fetches_messages, d.capabilities AS d_capabilities,
                    d.created_at AS d_created_at, d.last_seen AS d_last_seen
             FROM accounts a LEFT JOIN devices d ON d.aci = a.aci
             WHERE a.{where_clause} = ? ORDER BY d.device_id"
        );
        let rows = sqlx::query(&sql)
            .bind(key)
            .fetch_all(&self.reader)
            .await
            .map_err(db)?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        account_from_rows(first, &rows).map(Some)
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

/// A column of `row`; a missing column or a value of another type is a store error, never a panic.
fn get<'r, T>(row: &'r SqliteRow, column: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(column).map_err(db)
}

fn bucket_state(r: &SqliteRow) -> StoreResult<BucketState> {
    Ok(BucketState {
        credit_ms: get(r, "credit_ms")?,
        updated_at: Timestamp(get(r, "updated_at")?),
    })
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

fn uuid_of(bytes: &[u8]) -> StoreResult<Uuid> {
    Uuid::from_slice(bytes).map_err(|_| StoreError::corrupt("uuid column is not 16 bytes"))
}

fn account_from_rows(row: &SqliteRow, devices: &[SqliteRow]) -> StoreResult<Account> {
    let principal: String = get(row, "principal")?;
    let uak: Option<Vec<u8>> = get(row, "unidentified_access_key")?;
    let link: Option<Vec<u8>> = get(row, "username_link_handle")?;
    Ok(Account {
        aci: Aci(uuid_of(get(row, "aci")?)?),
        pni: Pni(uuid_of(get(row, "pni")?)?),
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

/// A device from the `d_`-prefixed columns of [`SqliteStore::load_account`]'s join.
fn device_from_row(row: &SqliteRow) -> StoreResult<Device> {
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

/// Capabilities are stored as a comma-separated list; names never contain commas (validated at the edge... and
/// filtered here for safety).
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

fn key_id(v: i64) -> StoreResult<KeyId> {
    KeyId::new(v).map_err(|_| StoreError::corrupt("stored key id out of range"))
}

fn signed_from_row(row: &SqliteRow) -> StoreResult<SignedPreKey> {
    Ok(SignedPreKey {
        key_id: key_id(get(row, "key_id")?)?,
        public_key: get(row, "public_key")?,
        signature: get(row, "signature")?,
    })
}

async fn insert_device(tx: &mut Transaction<'_, Sqlite>, aci: Aci, d: &Device) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO devices (aci, device_id, credential_hash, credential_salt, registration_id, pni_registration_id,
         name, fetches_messages, capabilities, created_at, last_seen) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
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
    tx: &mut Transaction<'_, Sqlite>,
    owner: ServiceId,
    device: DeviceId,
    kind: i64,
    key: &SignedPreKey,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO signed_keys (identity, owner, device_id, kind, key_id, public_key, signature) VALUES (?,?,?,?,?,?,?)
         ON CONFLICT (identity, owner, device_id, kind)
         DO UPDATE SET key_id = excluded.key_id, public_key = excluded.public_key, signature = excluded.signature",
    )
    .bind(identity_code(owner))
    .bind(owner.uuid().as_bytes().to_vec())
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

async fn delete_keys_of(tx: &mut Transaction<'_, Sqlite>, owner: ServiceId) -> StoreResult<()> {
    for table in ["one_time_ec_keys", "one_time_kem_keys", "signed_keys"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE identity = ? AND owner = ?"
        ))
        .bind(identity_code(owner))
        .bind(owner.uuid().as_bytes().to_vec())
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    }
    Ok(())
}

/// Which of the account's unique values is already taken, if any. Checked inside the single-writer transaction
/// so that the conflict is named precisely.
async fn taken(
    tx: &mut Transaction<'_, Sqlite>,
    aci: Aci,
    pni: Pni,
    principal: &Principal,
) -> StoreResult<Option<Conflict>> {
    for (conflict, query) in [
        (
            Conflict::Aci,
            sqlx::query("SELECT 1 FROM accounts WHERE aci = ?").bind(aci.as_bytes().to_vec()),
        ),
        (
            Conflict::Pni,
            sqlx::query("SELECT 1 FROM accounts WHERE pni = ?").bind(pni.as_bytes().to_vec()),
        ),
        (
            Conflict::Principal,
            sqlx::query("SELECT 1 FROM accounts WHERE principal = ?")
                .bind(principal.as_str().to_owned()),
        ),
    ] {
        if query.fetch_optional(&mut **tx).await.map_err(db)?.is_some() {
            return Ok(Some(conflict));
        }
    }
    Ok(None)
}

/// Inserts the account row and its devices.
async fn insert_account(tx: &mut Transaction<'_, Sqlite>, a: &Account) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO accounts (aci, pni, principal, principal_opaque, aci_identity_key, pni_identity_key,
         unidentified_access_key, unrestricted_unidentified_access, discoverable_by_principal, username_hash,
         username_link_handle, created_at)
         VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
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
    .map_err(db)?;
    for d in &a.devices {
        insert_device(tx, a.aci, d).await?;
    }
    Ok(())
}

/// Writes the primary device's signed and last-resort keys for both identities.
async fn put_initial_keys(
    tx: &mut Transaction<'_, Sqlite>,
    aci: Aci,
    pni: Pni,
    k: &InitialKeys,
) -> StoreResult<()> {
    let primary = i64::from(DeviceId::PRIMARY.get());
    let (aci, pni) = (ServiceId::Aci(aci), ServiceId::Pni(pni));
    // One statement for the four keys (each statement is a round trip to the writer's thread).
    let mut q = sqlx::query(
        "INSERT INTO signed_keys (identity, owner, device_id, kind, key_id, public_key, signature)
         VALUES (?,?,?,?,?,?,?), (?,?,?,?,?,?,?), (?,?,?,?,?,?,?), (?,?,?,?,?,?,?)
         ON CONFLICT (identity, owner, device_id, kind)
         DO UPDATE SET key_id = excluded.key_id, public_key = excluded.public_key, signature = excluded.signature",
    );
    for (owner, kind, key) in [
        (aci, SIGNED_EC, &k.aci_signed),
        (pni, SIGNED_EC, &k.pni_signed),
        (aci, LAST_RESORT, &k.aci_last_resort),
        (pni, LAST_RESORT, &k.pni_last_resort),
    ] {
        q = q
            .bind(identity_code(owner))
            .bind(owner.uuid().as_bytes().to_vec())
            .bind(primary)
            .bind(kind)
            .bind(i64::from(key.key_id.get()))
            .bind(key.public_key.clone())
            .bind(key.signature.clone());
    }
    q.execute(&mut **tx).await.map_err(db)?;
    Ok(())
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_account(&self, new: NewAccount) -> StoreResult<()> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db)?;
        if let Some(conflict) = taken(
            &mut tx,
            new.account.aci,
            new.account.pni,
            &new.account.principal,
        )
        .await?
        {
            return Err(StoreError::Conflict(conflict));
        }
        insert_account(&mut tx, &new.account).await?;
        put_initial_keys(&mut tx, new.account.aci, new.account.pni, &new.keys).await?;
        tx.commit().await.map_err(db)
    }

    async fn account(&self, aci: Aci) -> StoreResult<Option<Account>> {
        self.load_account("aci", aci.as_bytes().to_vec()).await
    }

    async fn account_by_pni(&self, pni: Pni) -> StoreResult<Option<Account>> {
        self.load_account("pni", pni.as_bytes().to_vec()).await
    }

    async fn account_by_principal(&self, principal: &Principal) -> StoreResult<Option<Account>> {
        let Some(aci): Option<Vec<u8>> =
            sqlx::query_scalar("SELECT aci FROM accounts WHERE principal = ?")
                .bind(principal.as_str())
                .fetch_optional(&self.reader)
                .await
                .map_err(db)?
        else {
            return Ok(None);
        };
        self.load_account("aci", aci).await
    }

    async fn update_attributes(
        &self,
        writer: &DeviceGeneration,
        attributes: &AccountAttributes,
    ) -> StoreResult<bool> {
        let (aci, device) = (writer.aci, writer.device);
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db)?;
        let d = &attributes.device;
        let updated = sqlx::query(
            "UPDATE devices SET registration_id = ?, pni_registration_id = ?, name = ?, fetches_messages = ?,
             capabilities = ? WHERE aci = ? AND device_id = ? AND credential_salt = ?",
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
            "UPDATE accounts SET unidentified_access_key = ?, unrestricted_unidentified_access = ?,
             discoverable_by_principal = ? WHERE aci = ?",
        )
        .bind(s.unidentified_access_key.map(|k| k.to_vec()))
        .bind(s.unrestricted_unidentified_access)
        .bind(s.discoverable_by_principal)
        .bind(aci.as_bytes().to_vec())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn touch_device(
        &self,
        aci: Aci,
        device: DeviceId,
        last_seen: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE devices SET last_seen = MAX(last_seen, ?) WHERE aci = ? AND device_id = ?",
        )
        .bind(last_seen.as_millis())
        .bind(aci.as_bytes().to_vec())
        .bind(i64::from(device.get()))
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn lock_credentials(&self, aci: Aci) -> StoreResult<bool> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db)?;
        let exists = sqlx::query("SELECT 1 FROM accounts WHERE aci = ?")
            .bind(aci.as_bytes().to_vec())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .is_some();
        sqlx::query(
            "UPDATE devices SET credential_hash = '!' || credential_hash
             WHERE aci = ? AND substr(credential_hash, 1, 1) <> '!'",
        )
        .bind(aci.as_bytes().to_vec())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(exists)
    }

    async fn delete_account(&self, aci: Aci, now: Timestamp) -> StoreResult<bool> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db)?;
        let Some(pni): Option<Vec<u8>> =
            sqlx::query_scalar("SELECT pni FROM accounts WHERE aci = ?")
                .bind(aci.as_bytes().to_vec())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
        else {
            return Ok(false);
        };
        delete_keys_of(&mut tx, ServiceId::Aci(aci)).await?;
        delete_keys_of(&mut tx, ServiceId::Pni(Pni(uuid_of(&pni)?))).await?;
        registration::tombstone(&mut tx, aci, now).await?;
        invites::revoke_all_of(&mut tx, aci, now).await?;
        // Devices and the subject binding go with the account (ON DELETE CASCADE).
        contacts::delete_contacts_of(&mut tx, aci).await?;
        messages::delete_messages_of(&mut tx, aci).await?;
        // Devices go with the account (ON DELETE CASCADE).
        sqlx::query("DELETE FROM accounts WHERE aci = ?")
            .bind(aci.as_bytes().to_vec())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }
}

/// Whether `writer`'s generation of its device still exists (inside the writing transaction; on PostgreSQL the
/// row is share-locked, so a removal or re-registration waits for this write and then deletes what it wrote).
async fn device_is_current(
    tx: &mut Transaction<'_, Sqlite>,
    writer: &DeviceGeneration,
) -> StoreResult<bool> {
    Ok(sqlx::query(
        "SELECT 1 FROM devices WHERE aci = $1 AND device_id = $2 AND credential_salt = $3",
    )
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
    tx: &mut Transaction<'_, Sqlite>,
    owner: ServiceId,
    device: DeviceId,
    upload: &KeyUpload,
) -> StoreResult<()> {
    let identity = identity_code(owner);
    let owner_bytes = owner.uuid().as_bytes().to_vec();
    let dev = i64::from(device.get());
    if let Some(ec) = &upload.ec {
        sqlx::query(
            "DELETE FROM one_time_ec_keys WHERE identity = ? AND owner = ? AND device_id = ?",
        )
        .bind(identity)
        .bind(&owner_bytes)
        .bind(dev)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        for k in ec {
            sqlx::query(
                    "INSERT OR REPLACE INTO one_time_ec_keys (identity, owner, device_id, key_id, public_key) VALUES (?,?,?,?,?)",
                )
                .bind(identity)
                .bind(&owner_bytes)
                .bind(dev)
                .bind(i64::from(k.key_id.get()))
                .bind(&k.public_key)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
        }
    }
    if let Some(kem) = &upload.kem {
        sqlx::query(
            "DELETE FROM one_time_kem_keys WHERE identity = ? AND owner = ? AND device_id = ?",
        )
        .bind(identity)
        .bind(&owner_bytes)
        .bind(dev)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        for k in kem {
            sqlx::query(
                    "INSERT OR REPLACE INTO one_time_kem_keys (identity, owner, device_id, key_id, public_key, signature)
                     VALUES (?,?,?,?,?,?)",
                )
                .bind(identity)
                .bind(&owner_bytes)
                .bind(dev)
                .bind(i64::from(k.key_id.get()))
                .bind(&k.public_key)
                .bind(&k.signature)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
        }
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
impl KeyStore for SqliteStore {
    async fn store_keys(
        &self,
        owner: ServiceId,
        device: DeviceId,
        upload: &KeyUpload,
    ) -> StoreResult<()> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db)?;
        write_keys(&mut tx, owner, device, upload).await?;
        tx.commit().await.map_err(db)
    }

    async fn store_keys_as(
        &self,
        writer: &DeviceGeneration,
        owner: ServiceId,
        upload: &KeyUpload,
    ) -> StoreResult<bool> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db)?;
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
        let identity = identity_code(owner);
        let owner_bytes = owner.uuid().as_bytes().to_vec();
        let dev = i64::from(device.get());
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db)?;
        // Each DELETE … RETURNING picks and removes the lowest id in one statement on the single writer.
        let ec = sqlx::query(
            "DELETE FROM one_time_ec_keys WHERE rowid = (SELECT rowid FROM one_time_ec_keys
             WHERE identity = ? AND owner = ? AND device_id = ? ORDER BY key_id LIMIT 1) RETURNING key_id, public_key",
        )
        .bind(identity)
        .bind(&owner_bytes)
        .bind(dev)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let kem = sqlx::query(
            "DELETE FROM one_time_kem_keys WHERE rowid = (SELECT rowid FROM one_time_kem_keys
             WHERE identity = ? AND owner = ? AND device_id = ? ORDER BY key_id LIMIT 1)
             RETURNING key_id, public_key, signature",
        )
        .bind(identity)
        .bind(&owner_bytes)
        .bind(dev)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(TakenKeys {
            ec: ec
                .map(|r| {
                    Ok::<_, StoreError>(EcPreKey {
                        key_id: key_id(get(&r, "key_id")?)?,
                        public_key: get(&r, "public_key")?,
                    })
                })
                .transpose()?,
            kem: kem.as_ref().map(signed_from_row).transpose()?,
        })
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
            "SELECT (SELECT COUNT(*) FROM one_time_ec_keys WHERE identity = ?1 AND owner = ?2 AND device_id = ?3) AS ec,
                    (SELECT COUNT(*) FROM one_time_kem_keys WHERE identity = ?1 AND owner = ?2 AND device_id = ?3) AS kem",
        )
        .bind(identity_code(owner))
        .bind(owner.uuid().as_bytes().to_vec())
        .bind(i64::from(device.get()))
        .fetch_one(&self.reader)
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
            "SELECT key_id, public_key FROM one_time_ec_keys WHERE identity = ? AND owner = ? AND device_id = ? ORDER BY key_id",
        )
        .bind(identity_code(owner))
        .bind(owner.uuid().as_bytes().to_vec())
        .bind(i64::from(device.get()))
        .fetch_all(&self.reader)
        .await
        .map_err(db)?
        .iter()
        .map(|r| Ok(EcPreKey { key_id: key_id(get(r, "key_id")?)?, public_key: get(r, "public_key")? }))
        .collect()
    }
}

impl SqliteStore {
    async fn signed(
        &self,
        owner: ServiceId,
        device: DeviceId,
        kind: i64,
    ) -> StoreResult<Option<SignedPreKey>> {
        sqlx::query(
            "SELECT key_id, public_key, signature FROM signed_keys WHERE identity = ? AND owner = ? AND device_id = ? AND kind = ?",
        )
        .bind(identity_code(owner))
        .bind(owner.uuid().as_bytes().to_vec())
        .bind(i64::from(device.get()))
        .bind(kind)
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?
        .as_ref()
        .map(signed_from_row)
        .transpose()
    }
}

#[async_trait]
impl RateLimitStore for SqliteStore {
    async fn acquire(
        &self,
        key: &str,
        config: &BucketConfig,
        amount: u32,
        now: Timestamp,
    ) -> StoreResult<Admission> {
        // One statement on the buckets' own database: the decision is made by SQLite itself (see
        // `sql::rate_limits`), so no transaction is held open across round trips.
        let row =
            crate::store::bucket_upsert(sql::rate_limits::ACQUIRE_SQLITE, key, config, amount, now)
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
        sqlx::query("SELECT credit_ms, updated_at FROM rate_limit_buckets WHERE bucket = ?")
            .bind(key)
            .fetch_optional(&self.buckets)
            .await
            .map_err(db)?
            .map(|r| bucket_state(&r))
            .transpose()
    }

    async fn purge_full_buckets(&self, now: Timestamp) -> StoreResult<u64> {
        let r = sqlx::query("DELETE FROM rate_limit_buckets WHERE full_at <= ?")
            .bind(now.as_millis())
            .execute(&self.buckets)
            .await
            .map_err(db)?;
        Ok(r.rows_affected())
    }
}
