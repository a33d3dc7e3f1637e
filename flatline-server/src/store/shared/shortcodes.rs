//! Contact shortcodes on both dialects. Every writing method is one transaction deciding with the pure rules of
//! `flatline_core::shortcodes` on rows read inside it; a right guess creates its grant with the contact graph's own
//! helpers in the same transaction. On SQLite the single writer runs those transactions one at a time. On
//! PostgreSQL creations serialize on one advisory lock (after the owner's), so nameplates are picked one at a time
//! across processes, and an attempt takes the code owner's contact lock (the one every decision about that owner's
//! graph holds) and then the code's row, so attempts on one code apply one after the other and see each other's
//! counts.

/// Implements [`flatline_core::shortcodes::ShortcodeStore`] for `$store` (see [the module docs](super)).
macro_rules! shortcode_store {
    ($store:ty) => {
        use async_trait::async_trait;
        use flatline_core::contacts::{self, FloodConfig, Grant, Via};
        use flatline_core::ids::Aci;
        use flatline_core::shortcodes::{
            self, AttemptPlan, ContactShortcode, CreateShortcode, SALT_BYTES, Shortcode, ShortcodeId,
            ShortcodeRedemption, ShortcodeStatus, ShortcodeStore,
        };
        use flatline_core::store::{StoreError, StoreResult};
        use flatline_core::time::Timestamp;

        use super::contacts::{accounts_stay, grant_of, insert_grant, invite_only, lock_owner, recent};
        use super::{db, get, uuid_of};
        use $crate::store::shared::Dialect;

        type Db = <$store as Dialect>::Db;
        type Conn = <Db as sqlx::Database>::Connection;
        type Row = <Db as sqlx::Database>::Row;

        /// Advisory-lock class of nameplate allocation (one key: every creation takes it).
        const NAMEPLATE_LOCK_CLASS: i32 = 0x6673_6863;

        const COLUMNS: &str =
            "id, owner, nameplate, salt, mac, failed_guesses, status, created_at, expires_at";

        fn code_id(i: ShortcodeId) -> Vec<u8> {
            i.0.as_bytes().to_vec()
        }

        fn small(v: i64, what: &str) -> StoreResult<u32> {
            u32::try_from(v).map_err(|_| StoreError::corrupt(format!("shortcode {what} out of range")))
        }

        fn code_from_row(r: &Row) -> StoreResult<ContactShortcode> {
            let salt: Vec<u8> = get(r, "salt")?;
            let mac: Vec<u8> = get(r, "mac")?;
            let status: String = get(r, "status")?;
            Ok(ContactShortcode {
                id: ShortcodeId(uuid_of(get(r, "id")?)?),
                owner: Aci(uuid_of(get(r, "owner")?)?),
                nameplate: small(get(r, "nameplate")?, "nameplate")?,
                salt: <[u8; SALT_BYTES]>::try_from(salt.as_slice())
                    .map_err(|_| StoreError::corrupt("shortcode salt has the wrong length"))?,
                mac: <[u8; 32]>::try_from(mac.as_slice())
                    .map_err(|_| StoreError::corrupt("shortcode mac is not 32 bytes"))?,
                failed_guesses: small(get(r, "failed_guesses")?, "failed guesses")?,
                status: status
                    .parse()
                    .map_err(|_| StoreError::corrupt(format!("shortcode status `{status}`")))?,
                created_at: Timestamp(get(r, "created_at")?),
                expires_at: Timestamp(get(r, "expires_at")?),
            })
        }

        /// The code holding `nameplate` at `now` (at most one: see the migration), row-locked on PostgreSQL.
        async fn holder(
            conn: &mut Conn,
            nameplate: u32,
            now: Timestamp,
        ) -> StoreResult<Option<ContactShortcode>> {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM contact_shortcodes WHERE nameplate = $1 AND expires_at > $2
                 ORDER BY created_at DESC LIMIT 1{}",
                <$store as Dialect>::FOR_UPDATE
            ))
            .bind(i64::from(nameplate))
            .bind(now.as_millis())
            .fetch_optional(conn)
            .await
            .map_err(db)?
            .as_ref()
            .map(code_from_row)
            .transpose()
        }

        async fn set_status(
            conn: &mut Conn,
            id: ShortcodeId,
            status: ShortcodeStatus,
            failed_guesses: u32,
        ) -> StoreResult<()> {
            sqlx::query("UPDATE contact_shortcodes SET status = $1, failed_guesses = $2 WHERE id = $3")
                .bind(status.as_str())
                .bind(i64::from(failed_guesses))
                .bind(code_id(id))
                .execute(conn)
                .await
                .map_err(db)?;
            Ok(())
        }

        #[async_trait]
        impl ShortcodeStore for $store {
            async fn create_contact_shortcode(
                &self,
                code: &ContactShortcode,
                now: Timestamp,
                max_live: u32,
                history: u32,
            ) -> StoreResult<CreateShortcode> {
                let mut tx = self.begin_deferred().await?;
                let owner = code.owner.as_bytes().to_vec();
                lock_owner(&mut tx, code.owner).await?;
                if !accounts_stay(&mut tx, &[code.owner]).await?
                    || !invite_only(&mut tx, code.owner).await?
                {
                    return Ok(CreateShortcode::NotInviteOnly);
                }
                // Taken after the owner's lock, never before it (attempts take only the owner's).
                <$store as Dialect>::advisory_lock(&mut tx, NAMEPLATE_LOCK_CLASS, 0).await?;
                let live: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM contact_shortcodes WHERE owner = $1 AND status = 'live' AND expires_at > $2",
                )
                .bind(&owner)
                .bind(now.as_millis())
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
                if live >= i64::from(max_live) {
                    return Ok(CreateShortcode::QuotaExceeded);
                }
                let taken: Vec<i64> =
                    sqlx::query_scalar("SELECT nameplate FROM contact_shortcodes WHERE expires_at > $1")
                        .bind(now.as_millis())
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(db)?;
                let taken: Vec<u32> = taken
                    .into_iter()
                    .filter_map(|n| u32::try_from(n).ok())
                    .collect();
                let Some(nameplate) = shortcodes::smallest_free_nameplate(&taken) else {
                    return Ok(CreateShortcode::NoNameplate);
                };
                sqlx::query(
                    "DELETE FROM contact_shortcodes WHERE owner = $1 AND expires_at <= $2 AND id NOT IN
                     (SELECT id FROM contact_shortcodes WHERE owner = $1 AND expires_at <= $2
                      ORDER BY created_at DESC, id DESC LIMIT $3)",
                )
                .bind(&owner)
                .bind(now.as_millis())
                .bind(i64::from(history))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                sqlx::query(&format!(
                    "INSERT INTO contact_shortcodes ({COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)"
                ))
                .bind(code_id(code.id))
                .bind(&owner)
                .bind(i64::from(nameplate))
                .bind(code.salt.to_vec())
                .bind(code.mac.to_vec())
                .bind(i64::from(code.failed_guesses))
                .bind(code.status.as_str())
                .bind(code.created_at.as_millis())
                .bind(code.expires_at.as_millis())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                tx.commit().await.map_err(db)?;
                Ok(CreateShortcode::Created(nameplate))
            }

            async fn contact_shortcodes(&self, owner: Aci) -> StoreResult<Vec<ContactShortcode>> {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM contact_shortcodes WHERE owner = $1 ORDER BY created_at, id"
                ))
                .bind(owner.as_bytes().to_vec())
                .fetch_all(self.reader())
                .await
                .map_err(db)?
                .iter()
                .map(code_from_row)
                .collect()
            }

            async fn revoke_contact_shortcode(&self, owner: Aci, id: ShortcodeId) -> StoreResult<bool> {
                let r = sqlx::query(
                    "UPDATE contact_shortcodes SET status = CASE status WHEN 'live' THEN 'revoked' ELSE status END
                     WHERE id = $1 AND owner = $2",
                )
                .bind(code_id(id))
                .bind(owner.as_bytes().to_vec())
                .execute(self.writer())
                .await
                .map_err(db)?;
                Ok(r.rows_affected() > 0)
            }

            async fn redeem_contact_shortcode(
                &self,
                guess: &Shortcode,
                redeemer: Aci,
                now: Timestamp,
                config: &FloodConfig,
            ) -> StoreResult<ShortcodeRedemption> {
                let mut tx = self.begin_deferred().await?;
                // The owner is known only from the code: find it, take the owner's lock, then read the code again (locked,
                // in a new statement and so a fresh snapshot with every earlier attempt's count).
                let found: Option<Vec<u8>> = sqlx::query_scalar(
                    "SELECT owner FROM contact_shortcodes WHERE nameplate = $1 AND expires_at > $2
                     ORDER BY created_at DESC LIMIT 1",
                )
                .bind(i64::from(guess.nameplate()))
                .bind(now.as_millis())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
                let locked = match found {
                    Some(o) => {
                        let o = Aci(uuid_of(&o)?);
                        lock_owner(&mut tx, o).await?;
                        Some(o)
                    }
                    None => None,
                };
                // A code of another owner on the nameplate now (the locked one's expired meanwhile) is left alone.
                let code = holder(&mut tx, guess.nameplate(), now)
                    .await?
                    .filter(|c| Some(c.owner) == locked);
                // The owner's side is covered by the code row locked above (deleting the owner deletes it first).
                if !accounts_stay(&mut tx, &[redeemer]).await? {
                    return Ok(ShortcodeRedemption::Invalid);
                }
                let (existing, owner_recent) = match &code {
                    Some(c) => (
                        grant_of(&mut tx, c.owner, redeemer).await?,
                        recent(&mut tx, c.owner, contacts::owner_window_start(now, config)).await?,
                    ),
                    None => (None, 0),
                };
                let plan = shortcodes::plan_shortcode_redemption(
                    code.as_ref(),
                    guess,
                    redeemer,
                    existing.as_ref(),
                    owner_recent,
                    now,
                    config,
                );
                let Some(code) = code else {
                    return Ok(ShortcodeRedemption::Invalid);
                };
                let owner = code.owner;
                let outcome = match plan {
                    AttemptPlan::Invalid => return Ok(ShortcodeRedemption::Invalid),
                    AttemptPlan::OwnShortcode => return Ok(ShortcodeRedemption::OwnShortcode),
                    AttemptPlan::FailedGuess {
                        failed_guesses,
                        burned,
                    } => {
                        let status = if burned {
                            ShortcodeStatus::Burned
                        } else {
                            ShortcodeStatus::Live
                        };
                        set_status(&mut tx, code.id, status, failed_guesses).await?;
                        ShortcodeRedemption::FailedGuess { burned }
                    }
                    AttemptPlan::Existing(state) => {
                        set_status(&mut tx, code.id, ShortcodeStatus::Used, code.failed_guesses).await?;
                        ShortcodeRedemption::Existing { owner, state }
                    }
                    AttemptPlan::Grant(state) => {
                        set_status(&mut tx, code.id, ShortcodeStatus::Used, code.failed_guesses).await?;
                        insert_grant(
                            &mut tx,
                            &Grant {
                                owner,
                                grantee: redeemer,
                                state,
                                via: Via::Shortcode(code.id),
                                created_at: now,
                            },
                        )
                        .await?;
                        ShortcodeRedemption::Granted { owner, state }
                    }
                };
                tx.commit().await.map_err(db)?;
                Ok(outcome)
            }
        }
    };
}
pub(crate) use shortcode_store;
