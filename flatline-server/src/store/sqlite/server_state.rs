//! Instance-wide server state: key fingerprints and the manifest version counter.

use async_trait::async_trait;
use flatline_core::sealed::ServerCertificateRecord;
use flatline_core::store::{FingerprintRecord, ServerStateStore, StoreError, StoreResult};
use flatline_core::time::Timestamp;
use sqlx::Row;

use super::{SqliteStore, db, get};

fn version_of(v: i64) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| StoreError::corrupt("negative manifest version"))
}

#[async_trait]
impl ServerStateStore for SqliteStore {
    async fn record_key_fingerprint(
        &self,
        name: &str,
        fingerprint: &str,
        now: Timestamp,
    ) -> StoreResult<FingerprintRecord> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db)?;
        let inserted = sqlx::query(
            "INSERT INTO key_fingerprints (name, fingerprint, recorded_at) VALUES (?, ?, ?) \
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
                sqlx::query_scalar("SELECT fingerprint FROM key_fingerprints WHERE name = ?")
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
        sqlx::query_scalar("SELECT fingerprint FROM key_fingerprints WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.reader)
            .await
            .map_err(db)
    }

    async fn key_fingerprints(&self) -> StoreResult<Vec<(String, String)>> {
        sqlx::query_as("SELECT name, fingerprint FROM key_fingerprints ORDER BY name")
            .fetch_all(&self.reader)
            .await
            .map_err(db)
    }

    async fn forget_key_fingerprint(&self, name: &str) -> StoreResult<bool> {
        let removed = sqlx::query("DELETE FROM key_fingerprints WHERE name = ?")
            .bind(name)
            .execute(&self.writer)
            .await
            .map_err(db)?
            .rows_affected();
        Ok(removed == 1)
    }

    async fn advance_manifest(&self, content_hash: &[u8; 32], now: Timestamp) -> StoreResult<u64> {
        // One statement, so it is atomic even against other processes writing the same file. In the SET clause
        // every column reference is to the old row.
        let version: i64 = sqlx::query_scalar(
            "INSERT INTO manifest_state (id, version, content_hash, updated_at) VALUES (1, 1, ?1, ?2) \
             ON CONFLICT (id) DO UPDATE SET \
               version = CASE WHEN content_hash = excluded.content_hash THEN version ELSE version + 1 END, \
               updated_at = CASE WHEN content_hash = excluded.content_hash THEN updated_at ELSE excluded.updated_at END, \
               content_hash = excluded.content_hash \
             RETURNING version",
        )
        .bind(content_hash.as_slice())
        .bind(now.as_millis())
        .fetch_one(&self.writer)
        .await
        .map_err(db)?;
        version_of(version)
    }

    async fn manifest_state(&self) -> StoreResult<Option<(u64, [u8; 32])>> {
        let Some(row) =
            sqlx::query("SELECT version, content_hash FROM manifest_state WHERE id = 1")
                .fetch_optional(&self.reader)
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
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|row| {
                let id = row.try_get::<i64, _>("id").map_err(db)?;
                Ok(ServerCertificateRecord {
                    id: u32::try_from(id)
                        .map_err(|_| StoreError::corrupt("server certificate id out of range"))?,
                    certificate: row.try_get::<Vec<u8>, _>("certificate").map_err(db)?,
                    created_at: Timestamp(row.try_get::<i64, _>("created_at").map_err(db)?),
                    retired_at: row
                        .try_get::<Option<i64>, _>("retired_at")
                        .map_err(db)?
                        .map(Timestamp),
                })
            })
            .collect()
    }

    async fn add_server_certificate(
        &self,
        record: &ServerCertificateRecord,
        replace_current: bool,
    ) -> StoreResult<bool> {
        // The unique index on the current certificate decides races: an insert that would make a second current
        // certificate does nothing, and the transaction (with its retirement) is rolled back.
        let mut tx = self.writer.begin().await.map_err(db)?;
        if replace_current {
            sqlx::query("UPDATE server_certificates SET retired_at = ? WHERE retired_at IS NULL")
                .bind(record.created_at.as_millis())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        let inserted = sqlx::query(
            "INSERT INTO server_certificates (id, certificate, created_at, retired_at) \
             VALUES (?, ?, ?, NULL) ON CONFLICT DO NOTHING",
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
            "DELETE FROM server_certificates WHERE retired_at IS NOT NULL AND retired_at < ?",
        )
        .bind(retired_before.as_millis())
        .execute(&self.writer)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(removed)
    }
}
