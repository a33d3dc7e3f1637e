//! Prekeys on both dialects ([`flatline_core::store::KeyStore`]). Keys are keyed by identity (an ACI or a PNI) and
//! device, not by account, so account deletion removes them through [`account_deleted`](self) (the cascade hook).
//!
//! An upload serializes with other uploads to the same device through a transaction-scoped advisory lock
//! (PostgreSQL; SQLite's single writer already does), so "replace" never turns into a union of two uploads.
//!
//! The expansion site provides what the dialects write differently: `insert_ec_keys(tx, identity, owner, device,
//! keys)` and `insert_kem_keys(…)` (PostgreSQL: one `UNNEST` statement; SQLite: one statement per key), and, as a
//! braced block of trait methods, `take_one_time_keys` (PostgreSQL: one statement with `SKIP LOCKED`; SQLite: two
//! deletes on the single writer) and any method the dialect does at once where the trait's default composes calls
//! (PostgreSQL's `take_bundle_keys`).

/// Implements [`flatline_core::store::KeyStore`] for `$store` (see [the module docs](self)).
macro_rules! key_store {
    ($store:ty, { $($methods:tt)* }) => {
        use async_trait::async_trait;
        use flatline_core::ids::{DeviceId, ServiceId};
        use flatline_core::keys::{EcPreKey, KeyCounts, KeyUpload, SignedPreKey, TakenKeys};
        use flatline_core::store::{DeviceGeneration, KeyStore, StoreResult};
        use sqlx::Transaction;

        use super::{db, get};
        use $crate::store::shared::cascade::Gone;
        use $crate::store::shared::codecs::{
            KEY_UPLOAD_LOCK_CLASS, LAST_RESORT, SIGNED_EC, dedup, identity_code, key_id, owner_bytes,
        };
        use $crate::store::shared::Dialect;

        type Db = <$store as Dialect>::Db;
        type DbRow = <Db as sqlx::Database>::Row;

        /// A signed key in the columns `key_id`, `public_key`, `signature`.
        pub(super) fn signed_from_row(row: &DbRow) -> StoreResult<SignedPreKey> {
            Ok(SignedPreKey {
                key_id: key_id(get(row, "key_id")?)?,
                public_key: get(row, "public_key")?,
                signature: get(row, "signature")?,
            })
        }

        /// Writes (or overwrites) one signed key of `kind` ([`SIGNED_EC`] or [`LAST_RESORT`]).
        pub(super) async fn put_signed(
            tx: &mut Transaction<'_, Db>,
            owner: ServiceId,
            device: DeviceId,
            kind: i64,
            key: &SignedPreKey,
        ) -> StoreResult<()> {
            sqlx::query(
                "INSERT INTO signed_keys (identity, owner, device_id, kind, key_id, public_key, signature) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT (identity, owner, device_id, kind) \
                 DO UPDATE SET key_id = excluded.key_id, public_key = excluded.public_key, \
                 signature = excluded.signature",
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

        /// Deletes every key of `owner` (an ACI or a PNI), of every device.
        pub(super) async fn delete_keys_of(
            tx: &mut Transaction<'_, Db>,
            owner: ServiceId,
        ) -> StoreResult<()> {
            for table in ["one_time_ec_keys", "one_time_kem_keys", "signed_keys"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE identity = $1 AND owner = $2"))
                    .bind(identity_code(owner))
                    .bind(owner_bytes(owner))
                    .execute(&mut **tx)
                    .await
                    .map_err(db)?;
            }
            Ok(())
        }

        /// The cascade hook: the keys of the account's ACI and PNI.
        pub(super) async fn account_deleted(
            tx: &mut Transaction<'_, Db>,
            gone: &Gone,
        ) -> StoreResult<()> {
            delete_keys_of(tx, ServiceId::Aci(gone.aci)).await?;
            delete_keys_of(tx, ServiceId::Pni(gone.pni)).await
        }

        /// Whether `writer`'s generation of its device still exists (inside the writing transaction; on PostgreSQL
        /// the row is share-locked, so a removal or re-registration waits for this write and then deletes what it
        /// wrote).
        async fn device_is_current(
            tx: &mut Transaction<'_, Db>,
            writer: &DeviceGeneration,
        ) -> StoreResult<bool> {
            Ok(sqlx::query(&format!(
                "SELECT 1 FROM devices WHERE aci = $1 AND device_id = $2 AND credential_salt = $3{}",
                <$store as Dialect>::FOR_SHARE
            ))
            .bind(writer.aci.as_bytes().to_vec())
            .bind(i64::from(writer.device.get()))
            .bind(&writer.credential_salt)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?
            .is_some())
        }

        /// Deletes a device's one-time keys from `table` (an upload replacing the list).
        async fn clear_one_time(
            tx: &mut Transaction<'_, Db>,
            table: &str,
            identity: i64,
            owner: &[u8],
            device: i64,
        ) -> StoreResult<()> {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE identity = $1 AND owner = $2 AND device_id = $3"
            ))
            .bind(identity)
            .bind(owner)
            .bind(device)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
            Ok(())
        }

        /// An upload's writes (see [`KeyStore::store_keys`]), inside the caller's transaction.
        async fn write_keys(
            tx: &mut Transaction<'_, Db>,
            owner: ServiceId,
            device: DeviceId,
            upload: &KeyUpload,
        ) -> StoreResult<()> {
            let identity = identity_code(owner);
            let owner_b = owner_bytes(owner);
            let dev = i64::from(device.get());
            // Serializes uploads to one device across processes: without it, two "replace" uploads racing under
            // READ COMMITTED could each delete only the rows they saw and leave the union of both lists.
            // The key is computed by the database, as before the dialects shared this code, so processes of
            // both versions serialize with each other during a rolling upgrade. SQLite's writer runs alone.
            if !<$store as Dialect>::SERIALIZED {
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
            }
            if let Some(ec) = &upload.ec {
                clear_one_time(tx, "one_time_ec_keys", identity, &owner_b, dev).await?;
                let keys = dedup(ec.iter().map(|k| (k.key_id, k)));
                let keys: Vec<&EcPreKey> = keys.into_values().collect();
                insert_ec_keys(tx, identity, &owner_b, dev, &keys).await?;
            }
            if let Some(kem) = &upload.kem {
                clear_one_time(tx, "one_time_kem_keys", identity, &owner_b, dev).await?;
                let keys = dedup(kem.iter().map(|k| (k.key_id, k)));
                let keys: Vec<&SignedPreKey> = keys.into_values().collect();
                insert_kem_keys(tx, identity, &owner_b, dev, &keys).await?;
            }
            if let Some(k) = &upload.signed {
                put_signed(tx, owner, device, SIGNED_EC, k).await?;
            }
            if let Some(k) = &upload.last_resort {
                put_signed(tx, owner, device, LAST_RESORT, k).await?;
            }
            Ok(())
        }

        impl $store {
            async fn signed(
                &self,
                owner: ServiceId,
                device: DeviceId,
                kind: i64,
            ) -> StoreResult<Option<SignedPreKey>> {
                sqlx::query(
                    "SELECT key_id, public_key, signature FROM signed_keys \
                     WHERE identity = $1 AND owner = $2 AND device_id = $3 AND kind = $4",
                )
                .bind(identity_code(owner))
                .bind(owner_bytes(owner))
                .bind(i64::from(device.get()))
                .bind(kind)
                .fetch_optional(self.reader())
                .await
                .map_err(db)?
                .as_ref()
                .map(signed_from_row)
                .transpose()
            }
        }

        #[async_trait]
        impl KeyStore for $store {
            async fn store_keys(
                &self,
                owner: ServiceId,
                device: DeviceId,
                upload: &KeyUpload,
            ) -> StoreResult<()> {
                let mut tx = self.begin_write().await?;
                write_keys(&mut tx, owner, device, upload).await?;
                tx.commit().await.map_err(db)
            }

            async fn store_keys_as(
                &self,
                writer: &DeviceGeneration,
                owner: ServiceId,
                upload: &KeyUpload,
            ) -> StoreResult<bool> {
                let mut tx = self.begin_write().await?;
                if !device_is_current(&mut tx, writer).await? {
                    return Ok(false);
                }
                write_keys(&mut tx, owner, writer.device, upload).await?;
                tx.commit().await.map_err(db)?;
                Ok(true)
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
                    "SELECT (SELECT COUNT(*) FROM one_time_ec_keys \
                             WHERE identity = $1 AND owner = $2 AND device_id = $3) AS ec, \
                            (SELECT COUNT(*) FROM one_time_kem_keys \
                             WHERE identity = $1 AND owner = $2 AND device_id = $3) AS kem",
                )
                .bind(identity_code(owner))
                .bind(owner_bytes(owner))
                .bind(i64::from(device.get()))
                .fetch_one(self.reader())
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
                    "SELECT key_id, public_key FROM one_time_ec_keys \
                     WHERE identity = $1 AND owner = $2 AND device_id = $3 ORDER BY key_id",
                )
                .bind(identity_code(owner))
                .bind(owner_bytes(owner))
                .bind(i64::from(device.get()))
                .fetch_all(self.reader())
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

            $($methods)*
        }
    };
}
pub(crate) use key_store;
