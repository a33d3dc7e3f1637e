//! Prekeys on SQLite: [`crate::store::shared::keys`]. The single writer takes keys one transaction at a time, so
//! a take is two `DELETE … RETURNING` of the lowest id; bundles use the trait's default composition.

use sqlx::Sqlite;

use super::SqliteStore;

crate::store::shared::keys::key_store!(SqliteStore, {
    async fn take_one_time_keys(
        &self,
        owner: ServiceId,
        device: DeviceId,
    ) -> StoreResult<TakenKeys> {
        let identity = identity_code(owner);
        let owner_b = owner_bytes(owner);
        let dev = i64::from(device.get());
        let mut tx = self.begin_write().await?;
        // Each DELETE … RETURNING picks and removes the lowest id in one statement on the single writer.
        let ec = sqlx::query(
            "DELETE FROM one_time_ec_keys WHERE rowid = (SELECT rowid FROM one_time_ec_keys
             WHERE identity = $1 AND owner = $2 AND device_id = $3 ORDER BY key_id LIMIT 1)
             RETURNING key_id, public_key",
        )
        .bind(identity)
        .bind(&owner_b)
        .bind(dev)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let kem = sqlx::query(
            "DELETE FROM one_time_kem_keys WHERE rowid = (SELECT rowid FROM one_time_kem_keys
             WHERE identity = $1 AND owner = $2 AND device_id = $3 ORDER BY key_id LIMIT 1)
             RETURNING key_id, public_key, signature",
        )
        .bind(identity)
        .bind(&owner_b)
        .bind(dev)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(TakenKeys {
            ec: ec
                .map(|r| {
                    Ok::<_, flatline_core::store::StoreError>(EcPreKey {
                        key_id: key_id(get(&r, "key_id")?)?,
                        public_key: get(&r, "public_key")?,
                    })
                })
                .transpose()?,
            kem: kem.as_ref().map(signed_from_row).transpose()?,
        })
    }
});

/// Inserts one-time EC keys (deduplicated, the table's rows of that device just deleted), one statement each
/// (SQLite binds no arrays; each is a step on the writer's thread, not a round trip over a network).
async fn insert_ec_keys(
    tx: &mut Transaction<'_, Sqlite>,
    identity: i64,
    owner: &[u8],
    device: i64,
    keys: &[&EcPreKey],
) -> StoreResult<()> {
    for k in keys {
        sqlx::query(
            "INSERT OR REPLACE INTO one_time_ec_keys (identity, owner, device_id, key_id, public_key)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(identity)
        .bind(owner)
        .bind(device)
        .bind(i64::from(k.key_id.get()))
        .bind(&k.public_key)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    }
    Ok(())
}

/// Inserts one-time Kyber keys likewise.
async fn insert_kem_keys(
    tx: &mut Transaction<'_, Sqlite>,
    identity: i64,
    owner: &[u8],
    device: i64,
    keys: &[&SignedPreKey],
) -> StoreResult<()> {
    for k in keys {
        sqlx::query(
            "INSERT OR REPLACE INTO one_time_kem_keys (identity, owner, device_id, key_id, public_key, signature)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(identity)
        .bind(owner)
        .bind(device)
        .bind(i64::from(k.key_id.get()))
        .bind(&k.public_key)
        .bind(&k.signature)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    }
    Ok(())
}
