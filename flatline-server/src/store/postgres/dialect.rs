//! PostgreSQL's side of [`Dialect`]: several processes write at once, so decisions take row and advisory locks.

use flatline_core::store::StoreResult;
use sqlx::{PgPool, Postgres, Transaction};

use super::{PgStore, db};
use crate::store::shared::Dialect;

impl Dialect for PgStore {
    type Db = Postgres;

    const SERIALIZED: bool = false;
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const FOR_SHARE: &'static str = " FOR SHARE";
    const INSERTION_ORDER: &'static str = "seq";

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    fn writer(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_write(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(db)
    }

    async fn begin_deferred(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(db)
    }

    async fn begin_snapshot(&self) -> StoreResult<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        Ok(tx)
    }

    fn account_changed(&self, aci: flatline_core::ids::Aci) {
        self.auth_cache.drop_account(aci);
    }

    async fn advisory_lock(
        tx: &mut Transaction<'_, Postgres>,
        class: i32,
        key: i32,
    ) -> StoreResult<()> {
        super::xact_lock(tx, class, key).await
    }
}
