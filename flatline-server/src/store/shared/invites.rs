//! Registration invites, redemptions and suspensions on both dialects.
//!
//! On SQLite every write transaction runs alone on the single writer. On PostgreSQL a reservation (made by
//! `verify_session`) locks the invite row before counting the live reservations, so reservations of one invite
//! serialize across processes and never exceed `max_uses`; creations of one owner serialize on an advisory lock.

/// Implements [`flatline_core::invites::InviteStore`] for `$store` (see [the module docs](super)).
macro_rules! invite_store {
    ($store:ty) => {
        use async_trait::async_trait;
        use flatline_core::ids::Aci;
        use flatline_core::invites::{
            CodeHash, CreateOutcome, Invite, InviteFilter, InviteId, InviteOwner, InviteState, InviteStore,
            NewInvite, OwnerLimits, InviteRedemption,
        };
        use flatline_core::store::{StoreError, StoreResult};
        use flatline_core::time::Timestamp;
        use sqlx::Transaction;

        use super::{db, get, uuid_of};
        use $crate::store::shared::{Dialect, lock_key};

        type Db = <$store as Dialect>::Db;
        type Conn = <Db as sqlx::Database>::Connection;
        type Row = <Db as sqlx::Database>::Row;

        /// Advisory-lock class serializing invite creation per owner across processes ("finv").
        const INVITE_OWNER_LOCK_CLASS: i32 = 0x6669_6e76;

        /// Reservations are the live sessions holding the invite.
        const SELECT_INVITE: &str = "SELECT i.*, (SELECT COUNT(*) FROM verification_sessions s
             WHERE s.reserved_invite = i.id AND s.expires_at > $1) AS pending,
             (i.owner IS NOT NULL AND EXISTS (SELECT 1 FROM account_suspensions a WHERE a.aci = i.owner)) AS owner_suspended
             FROM invites i";

        fn owner_of(v: Option<Vec<u8>>) -> StoreResult<InviteOwner> {
            Ok(match v {
                None => InviteOwner::Operator,
                Some(b) => InviteOwner::Account(Aci(uuid_of(&b)?)),
            })
        }

        fn owner_bytes(o: InviteOwner) -> Option<Vec<u8>> {
            match o {
                InviteOwner::Operator => None,
                InviteOwner::Account(a) => Some(a.as_bytes().to_vec()),
            }
        }

        fn count(v: i64) -> u32 {
            u32::try_from(v).unwrap_or(u32::MAX)
        }

        fn invite_from_row(r: &Row) -> StoreResult<(Invite, bool)> {
            let hash: Vec<u8> = get(r, "code_hash")?;
            let id: Vec<u8> = get(r, "id")?;
            let invite = Invite {
                id: InviteId(uuid_of(&id)?),
                code_hash: CodeHash(
                    <[u8; 32]>::try_from(hash.as_slice())
                        .map_err(|_| StoreError::corrupt("code hash length"))?,
                ),
                owner: owner_of(get(r, "owner")?)?,
                max_uses: count(get(r, "max_uses")?),
                uses: count(get(r, "uses")?),
                pending: count(get(r, "pending")?),
                created_at: Timestamp(get(r, "created_at")?),
                expires_at: get::<Option<i64>>(r, "expires_at")?.map(Timestamp),
                last_used_at: get::<Option<i64>>(r, "last_used_at")?.map(Timestamp),
                revoked_at: get::<Option<i64>>(r, "revoked_at")?.map(Timestamp),
                note: get(r, "note")?,
            };
            Ok((invite, get(r, "owner_suspended")?))
        }

        async fn find(
            conn: &mut Conn,
            clause: &str,
            key: Vec<u8>,
            now: Timestamp,
        ) -> StoreResult<Option<(Invite, bool)>> {
            sqlx::query(&format!("{SELECT_INVITE} WHERE {clause} = $2"))
                .bind(now.as_millis())
                .bind(key)
                .fetch_optional(conn)
                .await
                .map_err(db)?
                .as_ref()
                .map(invite_from_row)
                .transpose()
        }

        /// The invite behind `code` if one more use can be reserved at `now` (inside the caller's transaction, which on
        /// PostgreSQL then holds the invite row's lock until it commits its reservation).
        pub(super) async fn reservable(
            tx: &mut Transaction<'_, Db>,
            code: &CodeHash,
            now: Timestamp,
        ) -> StoreResult<Option<InviteId>> {
            let found = if <$store as Dialect>::SERIALIZED {
                find(&mut **tx, "i.code_hash", code.0.to_vec(), now).await?
            } else {
                // Lock first, count after, in separate statements: under READ COMMITTED the second statement's
                // snapshot is taken after the lock was granted, so it sees every reservation committed by the
                // previous lock holder.
                let Some(id): Option<Vec<u8>> =
                    sqlx::query_scalar("SELECT id FROM invites WHERE code_hash = $1 FOR UPDATE")
                        .bind(code.0.to_vec())
                        .fetch_optional(&mut **tx)
                        .await
                        .map_err(db)?
                else {
                    return Ok(None);
                };
                find(&mut **tx, "i.id", id, now).await?
            };
            Ok(found
                .filter(|(i, suspended)| i.state(now, *suspended) == InviteState::Active)
                .map(|(i, _)| i.id))
        }

        /// Whether a reserved use of `id` may still be consumed at `now`: not revoked, not expired, owner not suspended.
        pub(super) async fn still_usable(
            tx: &mut Transaction<'_, Db>,
            id: InviteId,
            now: Timestamp,
        ) -> StoreResult<bool> {
            Ok(find(&mut **tx, "i.id", id.0.as_bytes().to_vec(), now)
                .await?
                .is_some_and(|(i, suspended)| i.reserved_use_consumable(now, suspended)))
        }

        /// Turns a reservation into a use and logs the redemption (inside registration's transaction). False, with nothing
        /// written, when the invite has no use left (a stale `now` must not push `uses` past `max_uses`, F-09); the caller
        /// then rolls the registration back.
        pub(super) async fn consume(
            tx: &mut Transaction<'_, Db>,
            id: InviteId,
            invitee: Aci,
            now: Timestamp,
        ) -> StoreResult<bool> {
            let owner: Option<Option<Vec<u8>>> = sqlx::query_scalar(
                "UPDATE invites SET uses = uses + 1, last_used_at = $1 WHERE id = $2 AND uses < max_uses RETURNING owner",
            )
            .bind(now.as_millis())
            .bind(id.0.as_bytes().to_vec())
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?;
            let Some(owner) = owner else {
                return Ok(false);
            };
            sqlx::query(
                "INSERT INTO invite_redemptions (invite_id, inviter, invitee, at) VALUES ($1, $2, $3, $4)",
            )
            .bind(id.0.as_bytes().to_vec())
            .bind(owner)
            .bind(invitee.as_bytes().to_vec())
            .bind(now.as_millis())
            .execute(&mut **tx)
            .await
            .map_err(db)?;
            Ok(true)
        }

        /// The cascade hook: the deleted account's invites are revoked (kept, so that what they admitted stays
        /// traceable).
        pub(super) async fn account_deleted(
            tx: &mut Transaction<'_, Db>,
            gone: &$crate::store::shared::cascade::Gone,
        ) -> StoreResult<()> {
            revoke_all_of(tx, gone.aci, gone.now).await.map(drop)
        }

        /// Revokes every unrevoked invite of `owner`.
        pub(super) async fn revoke_all_of(
            tx: &mut Transaction<'_, Db>,
            owner: Aci,
            now: Timestamp,
        ) -> StoreResult<u64> {
            Ok(
                sqlx::query("UPDATE invites SET revoked_at = $1 WHERE owner = $2 AND revoked_at IS NULL")
                    .bind(now.as_millis())
                    .bind(owner.as_bytes().to_vec())
                    .execute(&mut **tx)
                    .await
                    .map_err(db)?
                    .rows_affected(),
            )
        }

        fn redemption_from_row(r: &Row) -> StoreResult<InviteRedemption> {
            let invite: Vec<u8> = get(r, "invite_id")?;
            let invitee: Vec<u8> = get(r, "invitee")?;
            Ok(InviteRedemption {
                invite: InviteId(uuid_of(&invite)?),
                inviter: owner_of(get(r, "inviter")?)?,
                invitee: Aci(uuid_of(&invitee)?),
                at: Timestamp(get(r, "at")?),
            })
        }

        #[async_trait]
        impl InviteStore for $store {
            async fn create_invite_within(
                &self,
                new: &NewInvite,
                limits: OwnerLimits,
            ) -> StoreResult<CreateOutcome> {
                let InviteOwner::Account(owner) = new.owner else {
                    self.create_invite(new).await?;
                    return Ok(CreateOutcome::Created);
                };
                let now = new.created_at;
                let mut tx = self.begin_write().await?;
                // One creator per owner at a time: on SQLite the single writer, on PostgreSQL this lock across
                // processes; the count below then sees every committed creation.
                <$store as Dialect>::advisory_lock(
                    &mut tx,
                    INVITE_OWNER_LOCK_CLASS,
                    lock_key(owner.as_bytes()),
                )
                .await?;
                // The share lock waits for (or holds off) `delete_account`, which locks the row for update before it
                // revokes the owner's invites: an invite created here is either revoked by it or refused.
                let exists = sqlx::query(&format!(
                    "SELECT 1 FROM accounts WHERE aci = $1{}",
                    <$store as Dialect>::FOR_SHARE
                ))
                .bind(owner.as_bytes().to_vec())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
                if exists.is_none() {
                    return Ok(CreateOutcome::OwnerGone);
                }
                let rows = sqlx::query(&format!("{SELECT_INVITE} WHERE i.owner = $2"))
                    .bind(now.as_millis())
                    .bind(owner.as_bytes().to_vec())
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db)?;
                let (mut created, mut open) = (0u32, 0u32);
                for r in &rows {
                    let (invite, suspended) = invite_from_row(r)?;
                    created += 1;
                    if invite.state(now, suspended) == InviteState::Active {
                        open += 1;
                    }
                }
                if created >= limits.max_created {
                    return Ok(CreateOutcome::QuotaSpent);
                }
                if open >= limits.max_open {
                    return Ok(CreateOutcome::TooManyOpen);
                }
                sqlx::query(
                    "INSERT INTO invites (id, code_hash, owner, max_uses, created_at, expires_at, note)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(new.id.0.as_bytes().to_vec())
                .bind(new.code_hash.0.to_vec())
                .bind(owner_bytes(new.owner))
                .bind(i64::from(new.max_uses))
                .bind(new.created_at.as_millis())
                .bind(new.expires_at.map(Timestamp::as_millis))
                .bind(&new.note)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                tx.commit().await.map_err(db)?;
                Ok(CreateOutcome::Created)
            }

            async fn create_invite(&self, i: &NewInvite) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO invites (id, code_hash, owner, max_uses, created_at, expires_at, note)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(i.id.0.as_bytes().to_vec())
                .bind(i.code_hash.0.to_vec())
                .bind(owner_bytes(i.owner))
                .bind(i64::from(i.max_uses))
                .bind(i.created_at.as_millis())
                .bind(i.expires_at.map(Timestamp::as_millis))
                .bind(&i.note)
                .execute(self.writer())
                .await
                .map_err(db)?;
                Ok(())
            }

            async fn invite(&self, id: InviteId, now: Timestamp) -> StoreResult<Option<Invite>> {
                let mut conn = self.reader().acquire().await.map_err(db)?;
                Ok(find(&mut conn, "i.id", id.0.as_bytes().to_vec(), now)
                    .await?
                    .map(|(i, _)| i))
            }

            async fn invite_by_code(&self, hash: &CodeHash, now: Timestamp) -> StoreResult<Option<Invite>> {
                let mut conn = self.reader().acquire().await.map_err(db)?;
                Ok(find(&mut conn, "i.code_hash", hash.0.to_vec(), now)
                    .await?
                    .map(|(i, _)| i))
            }

            async fn list_invites(
                &self,
                filter: &InviteFilter,
                now: Timestamp,
            ) -> StoreResult<Vec<Invite>> {
                let (clause, owner) = match filter.owner {
                    None => ("", None),
                    Some(InviteOwner::Operator) => ("WHERE i.owner IS NULL", None),
                    Some(InviteOwner::Account(a)) => ("WHERE i.owner = $2", Some(a.as_bytes().to_vec())),
                };
                let sql = format!("{SELECT_INVITE} {clause} ORDER BY i.created_at DESC, i.id DESC");
                let mut query = sqlx::query(&sql).bind(now.as_millis());
                if let Some(owner) = owner {
                    query = query.bind(owner);
                }
                let rows = query.fetch_all(self.reader()).await.map_err(db)?;
                let mut out = vec![];
                for r in &rows {
                    let (invite, suspended) = invite_from_row(r)?;
                    if filter
                        .state
                        .is_none_or(|s| invite.state(now, suspended) == s)
                    {
                        out.push(invite);
                    }
                }
                Ok(out)
            }

            async fn set_revoked(&self, id: InviteId, revoked_at: Option<Timestamp>) -> StoreResult<bool> {
                Ok(
                    sqlx::query("UPDATE invites SET revoked_at = $1 WHERE id = $2")
                        .bind(revoked_at.map(Timestamp::as_millis))
                        .bind(id.0.as_bytes().to_vec())
                        .execute(self.writer())
                        .await
                        .map_err(db)?
                        .rows_affected()
                        == 1,
                )
            }

            async fn revoke_all_of(&self, owner: Aci, now: Timestamp) -> StoreResult<u64> {
                let mut tx = self.begin_write().await?;
                let n = revoke_all_of(&mut tx, owner, now).await?;
                tx.commit().await.map_err(db)?;
                Ok(n)
            }

            async fn set_suspended(&self, aci: Aci, suspended: bool, now: Timestamp) -> StoreResult<()> {
                let q = if suspended {
                    sqlx::query(
                        "INSERT INTO account_suspensions (aci, suspended_at) VALUES ($1, $2) ON CONFLICT (aci) DO NOTHING",
                    )
                    .bind(aci.as_bytes().to_vec())
                    .bind(now.as_millis())
                } else {
                    sqlx::query("DELETE FROM account_suspensions WHERE aci = $1")
                        .bind(aci.as_bytes().to_vec())
                };
                q.execute(self.writer()).await.map_err(db)?;
                Ok(())
            }

            async fn is_suspended(&self, aci: Aci) -> StoreResult<bool> {
                Ok(
                    sqlx::query("SELECT 1 FROM account_suspensions WHERE aci = $1")
                        .bind(aci.as_bytes().to_vec())
                        .fetch_optional(self.reader())
                        .await
                        .map_err(db)?
                        .is_some(),
                )
            }

            async fn redemption_of(&self, invitee: Aci) -> StoreResult<Option<InviteRedemption>> {
                sqlx::query(&format!(
                    "SELECT * FROM invite_redemptions WHERE invitee = $1 ORDER BY at, {} LIMIT 1",
                    <$store as Dialect>::INSERTION_ORDER
                ))
                .bind(invitee.as_bytes().to_vec())
                .fetch_optional(self.reader())
                .await
                .map_err(db)?
                .as_ref()
                .map(redemption_from_row)
                .transpose()
            }

            async fn redemptions_by(&self, owner: InviteOwner) -> StoreResult<Vec<InviteRedemption>> {
                let order = <$store as Dialect>::INSERTION_ORDER;
                let operator =
                    format!("SELECT * FROM invite_redemptions WHERE inviter IS NULL ORDER BY at, {order}");
                let account = format!("SELECT * FROM invite_redemptions WHERE inviter = $1 ORDER BY at, {order}");
                let q = match owner {
                    InviteOwner::Operator => sqlx::query(&operator),
                    InviteOwner::Account(a) => sqlx::query(&account).bind(a.as_bytes().to_vec()),
                };
                q.fetch_all(self.reader())
                    .await
                    .map_err(db)?
                    .iter()
                    .map(redemption_from_row)
                    .collect()
            }
        }
    };
}
pub(crate) use invite_store;
