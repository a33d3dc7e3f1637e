//! Prekeys on PostgreSQL: [`crate::store::shared::keys`]. Several processes take keys at once, so a take deletes
//! `WHERE key_id = (SELECT … ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED)`, both kinds in one statement:
//! concurrent takers lock different rows and never get the same key.

use flatline_core::keys::BundleKeys;
use sqlx::Postgres;
use sqlx::postgres::PgRow;

use super::PgStore;

crate::store::shared::keys::key_store!(PgStore, {
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
        .fetch_one(self.writer())
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
        .fetch_one(self.writer())
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
});

/// Inserts one-time EC keys (deduplicated, the table's rows of that device just deleted) in one statement.
async fn insert_ec_keys(
    tx: &mut Transaction<'_, Postgres>,
    identity: i64,
    owner: &[u8],
    device: i64,
    keys: &[&EcPreKey],
) -> StoreResult<()> {
    let ids: Vec<i64> = keys.iter().map(|k| i64::from(k.key_id.get())).collect();
    let publics: Vec<&[u8]> = keys.iter().map(|k| k.public_key.as_slice()).collect();
    sqlx::query(
        "INSERT INTO one_time_ec_keys (identity, owner, device_id, key_id, public_key)
         SELECT $1, $2, $3, k.key_id, k.public_key FROM UNNEST($4::BIGINT[], $5::BYTEA[]) AS k (key_id, public_key)",
    )
    .bind(identity)
    .bind(owner)
    .bind(device)
    .bind(&ids)
    .bind(&publics)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

/// Inserts one-time Kyber keys likewise.
async fn insert_kem_keys(
    tx: &mut Transaction<'_, Postgres>,
    identity: i64,
    owner: &[u8],
    device: i64,
    keys: &[&SignedPreKey],
) -> StoreResult<()> {
    let ids: Vec<i64> = keys.iter().map(|k| i64::from(k.key_id.get())).collect();
    let publics: Vec<&[u8]> = keys.iter().map(|k| k.public_key.as_slice()).collect();
    let signatures: Vec<&[u8]> = keys.iter().map(|k| k.signature.as_slice()).collect();
    sqlx::query(
        "INSERT INTO one_time_kem_keys (identity, owner, device_id, key_id, public_key, signature)
         SELECT $1, $2, $3, k.key_id, k.public_key, k.signature
         FROM UNNEST($4::BIGINT[], $5::BYTEA[], $6::BYTEA[]) AS k (key_id, public_key, signature)",
    )
    .bind(identity)
    .bind(owner)
    .bind(device)
    .bind(&ids)
    .bind(&publics)
    .bind(&signatures)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
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
