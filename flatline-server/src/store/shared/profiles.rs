//! Versioned profiles (M§4) on both dialects. Rows go with the account by foreign key (ON DELETE CASCADE).

/// Implements [`flatline_core::profiles::ProfileStore`] for `$store` (see [the module docs](super)).
macro_rules! profile_store {
    ($store:ty) => {
        use async_trait::async_trait;
        use flatline_core::ids::Aci;
        use flatline_core::profiles::{ProfileStore, VersionedProfile};
        use flatline_core::store::StoreResult;

        use super::{db, get};
        use $crate::store::shared::Dialect;

        type Row = <<$store as Dialect>::Db as sqlx::Database>::Row;

        const COLUMNS: &str =
            "version, name, about_emoji, about, payment_address, phone_number_sharing, avatar, commitment";

        fn profile_of(row: &Row) -> StoreResult<VersionedProfile> {
            Ok(VersionedProfile {
                version: get(row, "version")?,
                name: get(row, "name")?,
                about_emoji: get(row, "about_emoji")?,
                about: get(row, "about")?,
                payment_address: get(row, "payment_address")?,
                phone_number_sharing: get(row, "phone_number_sharing")?,
                avatar: get(row, "avatar")?,
                commitment: get(row, "commitment")?,
            })
        }

        #[async_trait]
        impl ProfileStore for $store {
            async fn set_profile(&self, aci: Aci, profile: &VersionedProfile) -> StoreResult<bool> {
                let aci = aci.as_bytes().to_vec();
                let mut tx = self.begin_deferred().await?;
                // The version row first: it fails (writing nothing) when the account is gone.
                let inserted = sqlx::query(
                    "INSERT INTO profiles (aci, version, name, about_emoji, about, payment_address, \
                     phone_number_sharing, avatar, commitment) \
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
                .fetch_optional(self.reader())
                .await
                .map_err(db)?
                .as_ref()
                .map(profile_of)
                .transpose()
            }

            async fn current_profile_version(&self, aci: Aci) -> StoreResult<Option<String>> {
                sqlx::query_scalar("SELECT version FROM profile_current WHERE aci = $1")
                    .bind(aci.as_bytes().to_vec())
                    .fetch_optional(self.reader())
                    .await
                    .map_err(db)
            }
        }
    };
}
pub(crate) use profile_store;
