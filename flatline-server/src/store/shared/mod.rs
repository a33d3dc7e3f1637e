//! Store code written once for both SQL dialects.
//!
//! Each aggregate here (accounts, keys, rate limits, profiles, server state, devices, shortcodes, usernames,
//! invites, contacts, registration, messages) is one `macro_rules!` body that implements the core's trait for a
//! store type; `store/sqlite/<aggregate>.rs` and `store/postgres/<aggregate>.rs` each instantiate it in one line. A macro rather than generic code over
//! `sqlx::Database`: generic sqlx code needs a wall of higher-ranked bounds on every function (executors, encoders,
//! decoders, column indexes) and the core's traits cannot be implemented generically for foreign store types
//! anyway, whereas the expanded body is ordinary concrete sqlx code, type-checked per dialect, whose errors point
//! at the line in the body.
//!
//! What really differs between the dialects is written once, in [`Dialect`], implemented by each store:
//! - which pool reads and which writes (SQLite's reader pool and single writer; PostgreSQL's one pool);
//! - how a write transaction begins (SQLite `BEGIN IMMEDIATE` on the single writer, so every write transaction
//!   runs alone; a plain transaction on PostgreSQL, where several processes write at once);
//! - the locks PostgreSQL needs for that and SQLite does not: row locks (`FOR UPDATE`/`FOR SHARE`, empty on
//!   SQLite) and transaction-scoped advisory locks (a no-op on SQLite); [`Dialect::SERIALIZED`] guards the few
//!   multi-statement lock dances;
//! - type quirks (the insertion-order column).
//!
//! A statement whose text itself differs and serves one aggregate only is a function in the two dialect files of
//! that aggregate, which the body calls unqualified (contacts' `set_grant_states`; messages' queue upserts, row
//! inserts and removals).
//!
//! A trait method whose statement differs (PostgreSQL's one-statement forms) is passed to the body as a braced block
//! of methods by the dialect file that instantiates it (`keys`, `accounts`).
//!
//! Query text uses `$N` parameters, which sqlx's SQLite driver binds by number too. Inside a body, `super::`
//! names the dialect's module, which provides `get` (the checked column read, [`codecs::checked_get`]) and
//! re-exports the codecs the aggregates share: [`codecs`] (dialect-free: `db`, `uuid_of`, `join_capabilities`,
//! `SIGNED_EC`, …) and the row and write codecs of the `accounts` and `keys` bodies (`device_from_row`,
//! `insert_device`, `insert_account`, `put_signed`, `delete_keys_of`, …). Every column is read with the checked
//! `get`, never the panicking `Row::get`.
//!
//! Account deletion is a unit of work composed of per-aggregate hooks: [`cascade`] lists them, once.

pub(super) mod accounts;
pub(super) mod cascade;
pub(super) mod codecs;
pub(super) mod contacts;
pub(super) mod devices;
pub(super) mod invites;
pub(super) mod keys;
pub(super) mod messages;
pub(super) mod profiles;
pub(super) mod rate_limits;
pub(super) mod registration;
pub(super) mod server_state;
pub(super) mod shortcodes;
pub(super) mod usernames;

use std::future::Future;

use flatline_core::store::StoreResult;
use sqlx::{Database, Pool, Transaction};

/// What differs between SQLite and PostgreSQL for the shared aggregate code.
pub(crate) trait Dialect {
    /// The sqlx database.
    type Db: Database;

    /// Whether write transactions run one at a time (SQLite: one writer connection, `BEGIN IMMEDIATE`), so that
    /// what a transaction reads stays true until it commits without any lock; false on PostgreSQL.
    const SERIALIZED: bool;
    /// Appended to a `SELECT` that reads a row the transaction will decide on: `" FOR UPDATE"` on PostgreSQL.
    const FOR_UPDATE: &'static str;
    /// Appended to a `SELECT` of a row that must not be deleted before the transaction ends: `" FOR SHARE"`.
    const FOR_SHARE: &'static str;
    /// The column that orders rows of an append-only table by insertion (SQLite's `rowid`, a `seq` column on
    /// PostgreSQL).
    const INSERTION_ORDER: &'static str;

    /// The pool lookups run on.
    fn reader(&self) -> &Pool<Self::Db>;

    /// The pool single-statement writes run on.
    fn writer(&self) -> &Pool<Self::Db>;

    /// A write transaction that, on SQLite, holds the database's write lock from its start (`BEGIN IMMEDIATE`).
    fn begin_write(
        &self,
    ) -> impl Future<Output = StoreResult<Transaction<'static, Self::Db>>> + Send;

    /// A write transaction that, on SQLite, takes the write lock at its first write (plain `BEGIN`), for the
    /// methods that began so before the dialects shared their code; the same as [`Dialect::begin_write`] on
    /// PostgreSQL.
    fn begin_deferred(
        &self,
    ) -> impl Future<Output = StoreResult<Transaction<'static, Self::Db>>> + Send;

    /// A read-only transaction whose statements see one snapshot.
    fn begin_snapshot(
        &self,
    ) -> impl Future<Output = StoreResult<Transaction<'static, Self::Db>>> + Send;

    /// Called after a commit that changed an account or its devices: PostgreSQL drops what it cached of the
    /// account for authentication (other processes learn of it from the database's triggers); nothing on SQLite.
    fn account_changed(&self, _aci: flatline_core::ids::Aci) {}

    /// Takes the transaction-scoped advisory lock (`class`, `key`) on PostgreSQL, released at commit or rollback;
    /// nothing on SQLite, where the transaction already runs alone.
    fn advisory_lock(
        tx: &mut Transaction<'_, Self::Db>,
        class: i32,
        key: i32,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// A 32-bit advisory-lock key for `bytes` (FNV-1a). Collisions only make unrelated transactions wait for each other.
pub(crate) fn lock_key(bytes: &[u8]) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    i32::from_ne_bytes(h.to_ne_bytes())
}
