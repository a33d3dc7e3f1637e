//! Instance-wide server state on both dialects: key fingerprints, the manifest version counter and the sealed-sender
//! server certificates. Every write that could race is a single statement whose conflict the database resolves
//! (or, for a fingerprint, an insert whose conflict waits for the concurrent inserter), so processes agree.

/// Implements [`flatline_core::store::ServerStateStore`] for `$store` (see [the module docs](super)).
macro_rules! server_state_store {
    ($store:ty) => {
        use async_trait::async_trait;
        use flatline_core::sealed::ServerCertificateRecord;
        use flatline_core::store::{FingerprintRecord, ServerStateStore, StoreError, StoreResult};
        use flatline_core::time::Timestamp;

        use super::{db, get};
        use $crate::store::shared::Dialect;

        fn version_of(v: i64) -> StoreResult<u64> {
            u64::try_from(v).map_err(|_| StoreError::corrupt("negative manifest version"))
        }

        #[async_trait]
        impl ServerStateStore for $store {
            async fn record_key_fingerprint(
                &self,
                name: &str,
                fingerprint: &str,
                now: Timestamp,
            ) -> StoreResult<FingerprintRecord> {
                let mut tx = self.begin_write().await?;
                // On PostgreSQL, ON CONFLICT waits for a concurrent inserter to commit; the SELECT (a new
                // statement, so a new snapshot under READ COMMITTED) then sees the winner's row.
                let inserted = sqlx::query(
                    "INSERT INTO key_fingerprints (name, fingerprint, recorded_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(name)
                .bind(fingerprint)
                .bind(now.as_millis())
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected()
                    == 1;
                let outcome = if inserted {
                    FingerprintRecord::Recorded
                } else {
                    let stored: String =
                        sqlx::query_scalar("SELECT fingerprint FROM key_fingerprints WHERE name = $1")
                            .bind(name)
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(db)?;
                    FingerprintRecord::Existing(stored)
                };
                tx.commit().await.map_err(db)?;
                Ok(outcome)
            }

            async fn key_fingerprint(&self, name: &str) -> StoreResult<Option<String>> {
                sqlx::query_scalar("SELECT fingerprint FROM key_fingerprints WHERE name = $1")
                    .bind(name)
                    .fetch_optional(self.reader())
                    .await
                    .map_err(db)
            }

            async fn key_fingerprints(&self) -> StoreResult<Vec<(String, String)>> {
                sqlx::query_as("SELECT name, fingerprint FROM key_fingerprints ORDER BY name")
                    .fetch_all(self.reader())
                    .await
                    .map_err(db)
            }

            async fn forget_key_fingerprint(&self, name: &str) -> StoreResult<bool> {
                let removed = sqlx::query("DELETE FROM key_fingerprints WHERE name = $1")
                    .bind(name)
                    .execute(self.writer())
                    .await
                    .map_err(db)?
                    .rows_affected();
                Ok(removed == 1)
            }

            async fn advance_manifest(&self, content_hash: &[u8; 32], now: Timestamp) -> StoreResult<u64> {
                // One statement: the upsert locks the row (on SQLite, the database), so concurrent advances with
                // different content get distinct versions. `m` is the existing row, `excluded` the proposed one.
                let version: i64 = sqlx::query_scalar(
                    "INSERT INTO manifest_state AS m (id, version, content_hash, updated_at) VALUES (1, 1, $1, $2) \
                     ON CONFLICT (id) DO UPDATE SET \
                       version = CASE WHEN m.content_hash = excluded.content_hash THEN m.version \
                                 ELSE m.version + 1 END, \
                       updated_at = CASE WHEN m.content_hash = excluded.content_hash THEN m.updated_at \
                                    ELSE excluded.updated_at END, \
                       content_hash = excluded.content_hash \
                     RETURNING version",
                )
                .bind(content_hash.as_slice())
                .bind(now.as_millis())
                .fetch_one(self.writer())
                .await
                .map_err(db)?;
                version_of(version)
            }

            async fn manifest_state(&self) -> StoreResult<Option<(u64, [u8; 32])>> {
                let Some(row) = sqlx::query("SELECT version, content_hash FROM manifest_state WHERE id = 1")
                    .fetch_optional(self.reader())
                    .await
                    .map_err(db)?
                else {
                    return Ok(None);
                };
                let hash: Vec<u8> = get(&row, "content_hash")?;
                let hash: [u8; 32] = hash
                    .try_into()
                    .map_err(|_| StoreError::corrupt("manifest content hash is not 32 bytes"))?;
                Ok(Some((version_of(get(&row, "version")?)?, hash)))
            }

            async fn server_certificates(&self) -> StoreResult<Vec<ServerCertificateRecord>> {
                let rows = sqlx::query(
                    "SELECT id, certificate, created_at, retired_at FROM server_certificates \
                     ORDER BY retired_at IS NOT NULL, retired_at DESC, id DESC",
                )
                .fetch_all(self.reader())
                .await
                .map_err(db)?;
                rows.into_iter()
                    .map(|row| {
                        let id = get::<i64>(&row, "id")?;
                        Ok(ServerCertificateRecord {
                            id: u32::try_from(id)
                                .map_err(|_| StoreError::corrupt("server certificate id out of range"))?,
                            certificate: get::<Vec<u8>>(&row, "certificate")?,
                            created_at: Timestamp(get::<i64>(&row, "created_at")?),
                            retired_at: get::<Option<i64>>(&row, "retired_at")?.map(Timestamp),
                        })
                    })
                    .collect()
            }

            async fn add_server_certificate(
                &self,
                record: &ServerCertificateRecord,
                replace_current: bool,
            ) -> StoreResult<bool> {
                // The unique index on the current certificate decides races: an insert that would make a second
                // current certificate does nothing, and the transaction (with its retirement) is rolled back.
                let mut tx = self.begin_deferred().await?;
                if replace_current {
                    sqlx::query("UPDATE server_certificates SET retired_at = $1 WHERE retired_at IS NULL")
                        .bind(record.created_at.as_millis())
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                }
                let inserted = sqlx::query(
                    "INSERT INTO server_certificates (id, certificate, created_at, retired_at) \
                     VALUES ($1, $2, $3, NULL) ON CONFLICT DO NOTHING",
                )
                .bind(i64::from(record.id))
                .bind(record.certificate.as_slice())
                .bind(record.created_at.as_millis())
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected()
                    == 1;
                if inserted {
                    tx.commit().await.map_err(db)?;
                } else {
                    tx.rollback().await.map_err(db)?;
                }
                Ok(inserted)
            }

            async fn prune_server_certificates(&self, retired_before: Timestamp) -> StoreResult<u64> {
                let removed = sqlx::query(
                    "DELETE FROM server_certificates WHERE retired_at IS NOT NULL AND retired_at < $1",
                )
                .bind(retired_before.as_millis())
                .execute(self.writer())
                .await
                .map_err(db)?
                .rows_affected();
                Ok(removed)
            }
        }
    };
}
pub(crate) use server_state_store;
