//! Linked devices ([`flatline_core::devices::DeviceStore`]) on both dialects; query text in
//! [`crate::store::sql::devices`]. A link or removal first reads the account row, locked on PostgreSQL (`FOR
//! UPDATE`), so links and removals of one account are serialized across processes; on SQLite the single writer
//! serializes them.

/// Implements [`flatline_core::devices::DeviceStore`] for `$store` (see [the module docs](super)).
macro_rules! device_store {
    ($store:ty) => {
        use std::collections::BTreeSet;

        use async_trait::async_trait;
        use flatline_core::account::Device;
        use flatline_core::devices::{
            DeviceLinkOutcome, DeviceStore, NewLinkedDevice, next_device_id,
        };
        use flatline_core::ids::{Aci, DeviceId, ServiceId};
        use flatline_core::store::{StoreError, StoreResult};
        use sqlx::Transaction;

        use super::{
            LAST_RESORT, SIGNED_EC, db, device_from_row, insert_device, join_capabilities,
            put_signed,
        };
        use $crate::store::shared::Dialect;
        use $crate::store::sql::devices as q;

        type Db = <$store as Dialect>::Db;

        fn device_id(v: i64) -> StoreResult<DeviceId> {
            u8::try_from(v)
                .ok()
                .and_then(|i| DeviceId::new(i).ok())
                .ok_or_else(|| StoreError::corrupt("device id"))
        }

        /// Reads (on PostgreSQL: locks) the account row and returns its PNI (as stored bytes), or `None` when the
        /// account is gone.
        async fn pni_of(tx: &mut Transaction<'_, Db>, aci: &[u8]) -> StoreResult<Option<Vec<u8>>> {
            sqlx::query_scalar(&format!(
                "SELECT pni FROM accounts WHERE aci = $1{}",
                <$store as Dialect>::FOR_UPDATE
            ))
            .bind(aci)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)
        }

        async fn purge_device(
            tx: &mut Transaction<'_, Db>,
            aci: &[u8],
            pni: &[u8],
            device: DeviceId,
        ) -> StoreResult<()> {
            let device = i64::from(device.get());
            for sql in q::PURGE_DEVICE_KEYS {
                sqlx::query(sql)
                    .bind(aci)
                    .bind(pni)
                    .bind(device)
                    .execute(&mut **tx)
                    .await
                    .map_err(db)?;
            }
            for sql in q::PURGE_DEVICE_ROWS {
                sqlx::query(sql)
                    .bind(aci)
                    .bind(device)
                    .execute(&mut **tx)
                    .await
                    .map_err(db)?;
            }
            Ok(())
        }

        #[async_trait]
        impl DeviceStore for $store {
            async fn link_device(&self, new: NewLinkedDevice) -> StoreResult<DeviceLinkOutcome> {
                let aci = new.aci.as_bytes().to_vec();
                let mut tx = self.begin_write().await?;
                // The account (row) first: the checks below and the writes then see one state.
                let Some(pni) = pni_of(&mut tx, &aci).await? else {
                    return Ok(DeviceLinkOutcome::NoAccount);
                };
                sqlx::query(q::PURGE_USED_TOKENS)
                    .bind(new.now.as_millis())
                    .bind(&aci)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                let used = sqlx::query(q::TOKEN_USED)
                    .bind(new.token_hash.to_vec())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
                if used.is_some() {
                    return Ok(DeviceLinkOutcome::TokenUsed);
                }
                let ids: Vec<i64> = sqlx::query_scalar(q::DEVICE_IDS)
                    .bind(&aci)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db)?;
                let ids = ids
                    .into_iter()
                    .map(device_id)
                    .collect::<StoreResult<Vec<_>>>()?;
                let Ok(id) = next_device_id(ids, new.max_devices) else {
                    return Ok(DeviceLinkOutcome::TooManyDevices);
                };
                purge_device(&mut tx, &aci, &pni, id).await?;
                let device = Device { id, ..new.device };
                insert_device(&mut tx, new.aci, &device).await?;
                let pni_id = ServiceId::Pni(flatline_core::ids::Pni(super::uuid_of(&pni)?));
                let aci_id = ServiceId::Aci(new.aci);
                let k = &new.keys;
                put_signed(&mut tx, aci_id, id, SIGNED_EC, &k.aci_signed).await?;
                put_signed(&mut tx, pni_id, id, SIGNED_EC, &k.pni_signed).await?;
                put_signed(&mut tx, aci_id, id, LAST_RESORT, &k.aci_last_resort).await?;
                put_signed(&mut tx, pni_id, id, LAST_RESORT, &k.pni_last_resort).await?;
                sqlx::query(q::RECORD_USED_TOKEN)
                    .bind(new.token_hash.to_vec())
                    .bind(&aci)
                    .bind(i64::from(id.get()))
                    .bind(device.created_at.as_millis())
                    .bind(new.token_expires_at.as_millis())
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                tx.commit().await.map_err(db)?;
                self.account_changed(new.aci);
                Ok(DeviceLinkOutcome::Linked(id))
            }

            async fn device_linked_with(
                &self,
                aci: Aci,
                token_hash: &[u8; 32],
            ) -> StoreResult<Option<Device>> {
                let row = sqlx::query(q::LINKED_WITH)
                    .bind(token_hash.to_vec())
                    .bind(aci.as_bytes().to_vec())
                    .fetch_optional(self.reader())
                    .await
                    .map_err(db)?;
                row.as_ref().map(device_from_row).transpose()
            }

            async fn remove_device(&self, aci: Aci, device: DeviceId) -> StoreResult<bool> {
                let aci_bytes = aci.as_bytes().to_vec();
                let mut tx = self.begin_write().await?;
                let Some(pni) = pni_of(&mut tx, &aci_bytes).await? else {
                    return Ok(false);
                };
                let removed = sqlx::query(q::DELETE_DEVICE)
                    .bind(&aci_bytes)
                    .bind(i64::from(device.get()))
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?
                    .rows_affected();
                if removed == 0 {
                    return Ok(false);
                }
                purge_device(&mut tx, &aci_bytes, &pni, device).await?;
                tx.commit().await.map_err(db)?;
                self.account_changed(aci);
                Ok(true)
            }

            async fn set_capabilities(
                &self,
                aci: Aci,
                device: DeviceId,
                capabilities: &BTreeSet<String>,
            ) -> StoreResult<bool> {
                let updated = sqlx::query(q::SET_CAPABILITIES)
                    .bind(join_capabilities(capabilities))
                    .bind(aci.as_bytes().to_vec())
                    .bind(i64::from(device.get()))
                    .execute(self.writer())
                    .await
                    .map_err(db)?
                    .rows_affected();
                self.account_changed(aci);
                Ok(updated == 1)
            }
        }
    };
}
pub(crate) use device_store;
