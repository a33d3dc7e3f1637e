//! SQLite's side of [`Dialect`]: the single writer serializes every write transaction, so no lock is needed.

use std::future::Future;

use flatline_core::store::StoreResult;
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::{SqliteStore, db};
use crate::store::shared::Dialect;

impl Dialect for SqliteStore {
    type Db = Sqlite;

    const SERIALIZED: bool = true;
    const FOR_UPDATE: &'static str = "";
    const FOR_SHARE: &'static str = "";
    const INSERTION_ORDER: &'static str = "rowid";

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(db)
    }

    async fn begin_deferred(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.writer.begin().await.map_err(db)
    }

    async fn begin_snapshot(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        // A deferred transaction on a WAL reader: its first read fixes the snapshot the later ones see.
        self.reader.begin().await.map_err(db)
    }

    fn advisory_lock(
        _tx: &mut Transaction<'_, Sqlite>,
        _class: i32,
        _key: i32,
    ) -> impl Future<Output = StoreResult<()>> + Send {
        std::future::ready(Ok(()))
    }
}
