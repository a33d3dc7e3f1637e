//! Versioned profiles (M§4). Rows go with the account by foreign key (ON DELETE CASCADE).

use async_trait::async_trait;
use flatline_core::ids::Aci;
use flatline_core::profiles::{ProfileStore, VersionedProfile};
use flatline_core::store::StoreResult;
use sqlx::Row;

use super::{PgStore, db};

const COLUMNS: &str =
    "version, name, about_emoji, about, payment_address, phone_number_sharing, avatar, commitment";

fn profile_of(row: &sqlx::postgres::PgRow) -> StoreResult<VersionedProfile> {
    Ok(VersionedProfile {
        version: row.try_get("version").map_err(db)?,
        name: row.try_get("name").map_err(db)?,
        about_emoji: row.try_get("about_emoji").map_err(db)?,
        about: row.try_get("about").map_err(db)?,
        payment_address: row.try_get("payment_address").map_err(db)?,
        phone_number_sharing: row.try_get("phone_number_sharing").map_err(db)?,
        avatar: row.try_get("avatar").map_err(db)?,
        commitment: row.try_get("commitment").map_err(db)?,
    })
}

#[async_trait]
impl ProfileStore for PgStore {
    async fn set_profile(&self, aci: Aci, profile: &VersionedProfile) -> StoreResult<bool> {
        let aci = aci.as_bytes().to_vec();
        let mut tx = self.pool.begin().await.map_err(db)?;
        // The version row first: it fails (writing nothing) when the account is gone.
        let inserted = sqlx::query(
            "INSERT INTO profiles (aci, version, name, about_emoji, about, payment_address, phone_number_sharing, \
             avatar, commitment) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE EXISTS (SELECT 1 FROM accounts WHERE aci = $1) \
             ON CONFLICT (aci, version) DO UPDATE SET name = excluded.name, about_emoji = excluded.about_emoji, \
             about = excluded.about, payment_address = excluded.payment_address, \
             phone_number_sharing = excluded.phone_number_sharing, avatar = excluded.avatar",
        )
        .bind(&aci)
        .bind(&profile.version)
        .bind(&profile.name)
        .bind(&profile.about_emoji)
        .bind(&profile.about)
        .bind(&profile.payment_address)
        .bind(&profile.phone_number_sharing)
        .bind(&profile.avatar)
        .bind(&profile.commitment)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected()
            == 1;
        if !inserted {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO profile_current (aci, version) VALUES ($1, $2) \
             ON CONFLICT (aci) DO UPDATE SET version = excluded.version",
        )
        .bind(&aci)
        .bind(&profile.version)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn profile(&self, aci: Aci, version: &str) -> StoreResult<Option<VersionedProfile>> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM profiles WHERE aci = $1 AND version = $2"
        ))
        .bind(aci.as_bytes().to_vec())
        .bind(version)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(profile_of)
        .transpose()
    }

    async fn current_profile_version(&self, aci: Aci) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT version FROM profile_current WHERE aci = $1")
            .bind(aci.as_bytes().to_vec())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }
}
