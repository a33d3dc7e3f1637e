//! Accounts and their devices on both dialects: the row codecs the other aggregates share (`account_from_rows`,
//! `device_from_row`, `insert_device`, `insert_account`, `taken`) and [`flatline_core::store::AccountStore`].
//!
//! Account creation: on SQLite's single writer ([`Dialect::SERIALIZED`]) the unique values are checked first, which
//! names the conflict precisely (SQLite's errors do not name the constraint); on PostgreSQL the unique constraints
//! decide atomically across processes and the violated one names the conflict. Account deletion locks the subject
//! (advisory, PostgreSQL) and then the account row, runs the cascade list (`super::cascade`, written once in
//! [`super::cascade`](crate::store::shared::cascade)) and deletes the row.
//!
//! The expansion may pass trait methods a dialect writes differently (PostgreSQL's cached `account_for_auth` and
//! one-query `accounts_of`) as a braced block; the others keep the trait's defaults.

/// Implements [`flatline_core::store::AccountStore`] for `$store` (see [the module docs](self)).
macro_rules! account_store {
    ($store:ty $(, { $($extra:tt)* })?) => {
        use async_trait::async_trait;
        use flatline_core::account::{
            Account, AccountAttributes, AccountSettings, Device, DeviceSettings,
        };
        use flatline_core::credentials::SaltedTokenHash;
        use flatline_core::ids::{Aci, DeviceId, Pni, Principal, ServiceId};
        use flatline_core::store::{
            AccountStore, Conflict, DeviceGeneration, InitialKeys, NewAccount, StoreError,
            StoreResult,
        };
        use flatline_core::time::Timestamp;
        use sqlx::Transaction;

        use super::{db, get, uuid_of};
        use $crate::store::shared::Dialect;
        use $crate::store::shared::codecs::{
            LAST_RESORT, SIGNED_EC, SUBJECT_LOCK_CLASS, account_conflict, identity_code,
            join_capabilities, owner_bytes, split_capabilities,
        };

        type Db = <$store as Dialect>::Db;
        type DbRow = <Db as sqlx::Database>::Row;

        /// An account joined with its devices, these in `d_`-prefixed columns (what `device_from_row` reads).
        pub(super) const ACCOUNT_SELECT: &str =
            "SELECT a.*, d.device_id AS d_device_id, d.credential_hash AS d_credential_hash, \
             d.credential_salt AS d_credential_salt, d.registration_id AS d_registration_id, \
             d.pni_registration_id AS d_pni_registration_id, d.name AS d_name, \
             d.fetches_messages AS d_fetches_messages, d.capabilities AS d_capabilities, \
             d.created_at AS d_created_at, d.last_seen AS d_last_seen \
             FROM accounts a LEFT JOIN devices d ON d.aci = a.aci";

        /// The account of `row` with the devices of `devices` (rows of [`ACCOUNT_SELECT`]).
        pub(super) fn account_from_rows(row: &DbRow, devices: &[DbRow]) -> StoreResult<Account> {
            let principal: String = get(row, "principal")?;
            let uak: Option<Vec<u8>> = get(row, "unidentified_access_key")?;
            let link: Option<Vec<u8>> = get(row, "username_link_handle")?;
            let aci: Vec<u8> = get(row, "aci")?;
            let pni: Vec<u8> = get(row, "pni")?;
            let mut present = vec![];
            for r in devices {
                // A LEFT JOIN row without a device (NULL device id) stands for "no devices".
                if get::<Option<i64>>(r, "d_device_id")?.is_some() {
                    present.push(device_from_row(r)?);
                }
            }
            Ok(Account {
                aci: Aci(uuid_of(&aci)?),
                pni: Pni(uuid_of(&pni)?),
                principal: Principal::parse(&principal)
                    .map_err(|e| StoreError::corrupt(format!("stored principal: {e}")))?,
                principal_opaque: get(row, "principal_opaque")?,
                aci_identity_key: get(row, "aci_identity_key")?,
                pni_identity_key: get(row, "pni_identity_key")?,
                settings: AccountSettings {
                    unidentified_access_key: uak
                        .map(|k| <[u8; 16]>::try_from(k.as_slice()))
                        .transpose()
                        .map_err(|_| StoreError::corrupt("stored access key is not 16 bytes"))?,
                    unrestricted_unidentified_access: get(row, "unrestricted_unidentified_access")?,
                    discoverable_by_principal: get(row, "discoverable_by_principal")?,
                },
                username_hash: get(row, "username_hash")?,
                username_link_handle: link.map(|l| uuid_of(&l)).transpose()?,
                created_at: Timestamp(get(row, "created_at")?),
                devices: present,
            })
        }

        /// A device from the `d_`-prefixed columns of [`ACCOUNT_SELECT`].
        pub(super) fn device_from_row(row: &DbRow) -> StoreResult<Device> {
            let id: i64 = get(row, "d_device_id")?;
            let capabilities: String = get(row, "d_capabilities")?;
            let small = |v: i64| {
                u16::try_from(v).map_err(|_| StoreError::corrupt("registration id out of range"))
            };
            Ok(Device {
                id: u8::try_from(id)
                    .ok()
                    .and_then(|i| DeviceId::new(i).ok())
                    .ok_or_else(|| StoreError::corrupt("device id"))?,
                credential: SaltedTokenHash {
                    hash: get(row, "d_credential_hash")?,
                    salt: get(row, "d_credential_salt")?,
                },
                settings: DeviceSettings {
                    registration_id: small(get(row, "d_registration_id")?)?,
                    pni_registration_id: small(get(row, "d_pni_registration_id")?)?,
                    name: get(row, "d_name")?,
                    fetches_messages: get(row, "d_fetches_messages")?,
                },
                created_at: Timestamp(get(row, "d_created_at")?),
                last_seen: Timestamp(get(row, "d_last_seen")?),
                capabilities: split_capabilities(&capabilities),
            })
        }

        /// Inserts a device row.
        pub(super) async fn insert_device(
            tx: &mut Transaction<'_, Db>,
            aci: Aci,
            d: &Device,
        ) -> StoreResult<()> {
            sqlx::query(
                "INSERT INTO devices (aci, device_id, credential_hash, credential_salt, registration_id, \
                 pni_registration_id, name, fetches_messages, capabilities, created_at, last_seen) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
            )
            .bind(aci.as_bytes().to_vec())
            .bind(i64::from(d.id.get()))
            .bind(&d.credential.hash)
            .bind(&d.credential.salt)
            .bind(i64::from(d.settings.registration_id))
            .bind(i64::from(d.settings.pni_registration_id))
            .bind(&d.settings.name)
            .bind(d.settings.fetches_messages)
            .bind(join_capabilities(&d.capabilities))
            .bind(d.created_at.as_millis())
            .bind(d.last_seen.as_millis())
            .execute(&mut **tx)
            .await
            .map_err(db)?;
            Ok(())
        }

        /// Which of the account's unique values is already taken, if any: on a serialized writer, checked inside
        /// the writing transaction, so that the conflict is named precisely.
        pub(super) async fn taken(
            tx: &mut Transaction<'_, Db>,
            aci: Aci,
            pni: Pni,
            principal: &Principal,
        ) -> StoreResult<Option<Conflict>> {
            for (conflict, query) in [
                (
                    Conflict::Aci,
                    sqlx::query("SELECT 1 FROM accounts WHERE aci = $1").bind(aci.as_bytes().to_vec()),
                ),
                (
                    Conflict::Pni,
                    sqlx::query("SELECT 1 FROM accounts WHERE pni = $1").bind(pni.as_bytes().to_vec()),
                ),
                (
                    Conflict::Principal,
                    sqlx::query("SELECT 1 FROM accounts WHERE principal = $1")
                        .bind(principal.as_str().to_owned()),
                ),
            ] {
                if query.fetch_optional(&mut **tx).await.map_err(db)?.is_some() {
                    return Ok(Some(conflict));
                }
            }
            Ok(None)
        }

        /// Inserts the account row and its devices; a unique violation the database names becomes its
        /// [`Conflict`].
        pub(super) async fn insert_account(
            tx: &mut Transaction<'_, Db>,
            a: &Account,
        ) -> StoreResult<()> {
            sqlx::query(
                "INSERT INTO accounts (aci, pni, principal, principal_opaque, aci_identity_key, pni_identity_key, \
                 unidentified_access_key, unrestricted_unidentified_access, discoverable_by_principal, \
                 username_hash, username_link_handle, created_at) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
            )
            .bind(a.aci.as_bytes().to_vec())
            .bind(a.pni.as_bytes().to_vec())
            .bind(a.principal.as_str())
            .bind(a.principal_opaque)
            .bind(&a.aci_identity_key)
            .bind(&a.pni_identity_key)
            .bind(a.settings.unidentified_access_key.map(|k| k.to_vec()))
            .bind(a.settings.unrestricted_unidentified_access)
            .bind(a.settings.discoverable_by_principal)
            .bind(&a.username_hash)
            .bind(a.username_link_handle.map(|h| h.as_bytes().to_vec()))
            .bind(a.created_at.as_millis())
            .execute(&mut **tx)
            .await
            .map_err(|e| match account_conflict(&e) {
                Some(c) => StoreError::Conflict(c),
                None => db(e),
            })?;
            for d in &a.devices {
                insert_device(tx, a.aci, d).await?;
            }
            Ok(())
        }

        /// Writes the primary device's signed and last-resort keys for both identities, in one statement (each
        /// statement is a round trip: to SQLite's writer thread, to PostgreSQL's server).
        pub(super) async fn put_initial_keys(
            tx: &mut Transaction<'_, Db>,
            aci: Aci,
            pni: Pni,
            k: &InitialKeys,
        ) -> StoreResult<()> {
            let primary = i64::from(DeviceId::PRIMARY.get());
            let (aci, pni) = (ServiceId::Aci(aci), ServiceId::Pni(pni));
            let mut q = sqlx::query(
                "INSERT INTO signed_keys (identity, owner, device_id, kind, key_id, public_key, signature) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7), ($8,$9,$10,$11,$12,$13,$14), \
                 ($15,$16,$17,$18,$19,$20,$21), ($22,$23,$24,$25,$26,$27,$28) \
                 ON CONFLICT (identity, owner, device_id, kind) DO UPDATE SET key_id = excluded.key_id, \
                 public_key = excluded.public_key, signature = excluded.signature",
            );
            for (owner, kind, key) in [
                (aci, SIGNED_EC, &k.aci_signed),
                (pni, SIGNED_EC, &k.pni_signed),
                (aci, LAST_RESORT, &k.aci_last_resort),
                (pni, LAST_RESORT, &k.pni_last_resort),
            ] {
                q = q
                    .bind(identity_code(owner))
                    .bind(owner_bytes(owner))
                    .bind(primary)
                    .bind(kind)
                    .bind(i64::from(key.key_id.get()))
                    .bind(key.public_key.clone())
                    .bind(key.signature.clone());
            }
            q.execute(&mut **tx).await.map_err(db)?;
            Ok(())
        }

        impl $store {
            /// Loads an account and its devices in one statement (one snapshot, one round trip: this runs on every
            /// authenticated request).
            async fn load_account<T>(&self, column: &str, key: T) -> StoreResult<Option<Account>>
            where
                T: for<'q> sqlx::Encode<'q, Db> + sqlx::Type<Db> + Send + 'static,
            {
                let rows = sqlx::query(&format!(
                    "{ACCOUNT_SELECT} WHERE a.{column} = $1 ORDER BY d.device_id"
                ))
                .bind(key)
                .fetch_all(self.reader())
                .await
                .map_err(db)?;
                let Some(first) = rows.first() else {
                    return Ok(None);
                };
                account_from_rows(first, &rows).map(Some)
            }
        }

        #[async_trait]
        impl AccountStore for $store {
            async fn create_account(&self, new: NewAccount) -> StoreResult<()> {
                let a = &new.account;
                // An error drops `tx`, which rolls back, so a refused account writes nothing.
                let mut tx = self.begin_write().await?;
                if Self::SERIALIZED {
                    if let Some(conflict) = taken(&mut tx, a.aci, a.pni, &a.principal).await? {
                        return Err(StoreError::Conflict(conflict));
                    }
                }
                insert_account(&mut tx, a).await?;
                put_initial_keys(&mut tx, a.aci, a.pni, &new.keys).await?;
                tx.commit().await.map_err(db)
            }

            async fn account(&self, aci: Aci) -> StoreResult<Option<Account>> {
                self.load_account("aci", aci.as_bytes().to_vec()).await
            }

            async fn account_by_pni(&self, pni: Pni) -> StoreResult<Option<Account>> {
                self.load_account("pni", pni.as_bytes().to_vec()).await
            }

            async fn account_by_principal(
                &self,
                principal: &Principal,
            ) -> StoreResult<Option<Account>> {
                // Compared exactly (case-sensitive), like the memory store.
                self.load_account("principal", principal.as_str().to_owned())
                    .await
            }

            async fn update_attributes(
                &self,
                writer: &DeviceGeneration,
                attributes: &AccountAttributes,
            ) -> StoreResult<bool> {
                let (aci, device) = (writer.aci, writer.device);
                let mut tx = self.begin_write().await?;
                let d = &attributes.device;
                let updated = sqlx::query(
                    "UPDATE devices SET registration_id = $1, pni_registration_id = $2, name = $3, \
                     fetches_messages = $4, capabilities = $5 \
                     WHERE aci = $6 AND device_id = $7 AND credential_salt = $8",
                )
                .bind(i64::from(d.registration_id))
                .bind(i64::from(d.pni_registration_id))
                .bind(&d.name)
                .bind(d.fetches_messages)
                .bind(join_capabilities(&attributes.capabilities))
                .bind(aci.as_bytes().to_vec())
                .bind(i64::from(device.get()))
                .bind(&writer.credential_salt)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                if updated.rows_affected() == 0 {
                    return Ok(false);
                }
                let s = &attributes.account;
                sqlx::query(
                    "UPDATE accounts SET unidentified_access_key = $1, unrestricted_unidentified_access = $2, \
                     discoverable_by_principal = $3 WHERE aci = $4",
                )
                .bind(s.unidentified_access_key.map(|k| k.to_vec()))
                .bind(s.unrestricted_unidentified_access)
                .bind(s.discoverable_by_principal)
                .bind(aci.as_bytes().to_vec())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                tx.commit().await.map_err(db)?;
                self.account_changed(aci);
                Ok(true)
            }

            async fn touch_device(
                &self,
                aci: Aci,
                device: DeviceId,
                last_seen: Timestamp,
            ) -> StoreResult<()> {
                // The maximum in the UPDATE itself: the row lock makes concurrent touches monotonic.
                sqlx::query(
                    "UPDATE devices SET last_seen = CASE WHEN last_seen > $1 THEN last_seen ELSE $1 END \
                     WHERE aci = $2 AND device_id = $3",
                )
                .bind(last_seen.as_millis())
                .bind(aci.as_bytes().to_vec())
                .bind(i64::from(device.get()))
                .execute(self.writer())
                .await
                .map_err(db)?;
                self.account_changed(aci);
                Ok(())
            }

            async fn lock_credentials(&self, aci: Aci) -> StoreResult<bool> {
                let mut tx = self.begin_write().await?;
                // Locks the account row so a concurrent delete or device insert cannot interleave.
                let exists = sqlx::query(&format!(
                    "SELECT 1 FROM accounts WHERE aci = $1{}",
                    Self::FOR_UPDATE
                ))
                .bind(aci.as_bytes().to_vec())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
                .is_some();
                sqlx::query(
                    "UPDATE devices SET credential_hash = '!' || credential_hash \
                     WHERE aci = $1 AND substr(credential_hash, 1, 1) <> '!'",
                )
                .bind(aci.as_bytes().to_vec())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                tx.commit().await.map_err(db)?;
                self.account_changed(aci);
                Ok(exists)
            }

            async fn delete_account(&self, aci: Aci, now: Timestamp) -> StoreResult<bool> {
                let mut tx = self.begin_write().await?;
                if !Self::SERIALIZED {
                    // Serialize with registrations of the same subject, which would otherwise re-register into an
                    // account that is going away (same lock order as `register`: subject, then the account row).
                    let subject_hash: Option<Vec<u8>> = sqlx::query_scalar(
                        "SELECT subject_hash FROM account_subjects WHERE aci = $1",
                    )
                    .bind(aci.as_bytes().to_vec())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
                    if let Some(hash) = &subject_hash {
                        Self::advisory_lock(
                            &mut tx,
                            SUBJECT_LOCK_CLASS,
                            $crate::store::shared::lock_key(hash),
                        )
                        .await?;
                    }
                }
                // Locking the account row decides which of two concurrent deletes wins: the loser finds no row.
                let Some(pni): Option<Vec<u8>> = sqlx::query_scalar(&format!(
                    "SELECT pni FROM accounts WHERE aci = $1{}",
                    Self::FOR_UPDATE
                ))
                .bind(aci.as_bytes().to_vec())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
                else {
                    return Ok(false);
                };
                let gone = $crate::store::shared::cascade::Gone {
                    aci,
                    pni: Pni(uuid_of(&pni)?),
                    now,
                };
                super::cascade::account_deleted(&mut tx, &gone).await?;
                // What the cascade list leaves goes with the account row (ON DELETE CASCADE).
                sqlx::query("DELETE FROM accounts WHERE aci = $1")
                    .bind(aci.as_bytes().to_vec())
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                tx.commit().await.map_err(db)?;
                self.account_changed(aci);
                Ok(true)
            }

            $($($extra)*)?
        }
    };
}
pub(crate) use account_store;
