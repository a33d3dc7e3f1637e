//! Contact policies, invites and grants on both dialects. Every writing method that decides on what it reads is one
//! transaction deciding with the pure rules of `flatline_core::contacts` on rows read inside it. On SQLite the
//! single writer runs those transactions one at a time. On PostgreSQL each holds the owner's advisory lock (so all
//! decisions about one owner's contact graph, including its rate window across invites and introductions,
//! serialize across processes) and reads after the lock was granted.
//!
//! The expansion site provides `set_grant_states(tx, owner, grantees, state)`, the one statement the dialects write
//! differently (PostgreSQL binds the grantees as one array).

/// Implements [`flatline_core::store::ContactStore`] for `$store` (see [the module docs](super)).
macro_rules! contact_store {
    ($store:ty) => {
        use async_trait::async_trait;
        use flatline_core::contacts::{
            self, ContactInvite, ContactInviteId, ContactPolicy, CreateInvite, Decisions, Flood,
            FloodBucket, FloodConfig, Grant, GrantState, Introduction, IntroductionPolicy, PolicyMode,
            RedeemPlan, Redemption, Via,
        };
        use flatline_core::ids::Aci;
        use flatline_core::ratelimit::BucketState;
        use flatline_core::shortcodes::ShortcodeId;
        use flatline_core::store::{ContactStore, StoreError, StoreResult};
        use flatline_core::time::Timestamp;
        use sqlx::Transaction;

        use super::{db, get, uuid_of};
        use $crate::store::shared::{Dialect, lock_key};

        type Db = <$store as Dialect>::Db;
        type Conn = <Db as sqlx::Database>::Connection;
        type Row = <Db as sqlx::Database>::Row;

        /// Advisory lock class serializing writes to one owner's contact graph: "fcon".
        const CONTACT_OWNER_LOCK_CLASS: i32 = 0x6663_6f6e;

        fn id(aci: Aci) -> Vec<u8> {
            aci.as_bytes().to_vec()
        }

        fn invite_id(i: ContactInviteId) -> Vec<u8> {
            i.0.as_bytes().to_vec()
        }

        const INVITE_COLUMNS: &str = "id, owner, code_hash, label, max_uses, uses, created_at, expires_at, paused_until,
            flood_detected_at, flood_since, flood_quarantined, bucket_credit_ms, bucket_updated_at, burst_start";

        fn count(v: i64) -> StoreResult<u32> {
            u32::try_from(v).map_err(|_| StoreError::corrupt("contact invite count out of range"))
        }

        fn invite_from_row(r: &Row) -> StoreResult<ContactInvite> {
            let hash: Vec<u8> = get(r, "code_hash")?;
            let ts = |c: &str| get::<Option<i64>>(r, c).map(|t| t.map(Timestamp));
            let flood = match (
                ts("flood_detected_at")?,
                ts("flood_since")?,
                get::<Option<i64>>(r, "flood_quarantined")?,
            ) {
                (Some(detected_at), Some(since), Some(q)) => Some(Flood {
                    detected_at,
                    since,
                    quarantined: count(q)?,
                }),
                _ => None,
            };
            let bucket = match (
                get::<Option<i64>>(r, "bucket_credit_ms")?,
                ts("bucket_updated_at")?,
                ts("burst_start")?,
            ) {
                (Some(credit_ms), Some(updated_at), Some(burst_start)) => Some(FloodBucket {
                    level: BucketState {
                        credit_ms,
                        updated_at,
                    },
                    burst_start,
                }),
                _ => None,
            };
            Ok(ContactInvite {
                id: ContactInviteId(uuid_of(get(r, "id")?)?),
                owner: Aci(uuid_of(get(r, "owner")?)?),
                code_hash: <[u8; 32]>::try_from(hash.as_slice())
                    .map_err(|_| StoreError::corrupt("code hash is not 32 bytes"))?,
                label: get(r, "label")?,
                max_uses: count(get(r, "max_uses")?)?,
                uses: count(get(r, "uses")?)?,
                created_at: Timestamp(get(r, "created_at")?),
                expires_at: Timestamp(get(r, "expires_at")?),
                paused_until: ts("paused_until")?,
                flood,
                bucket,
            })
        }

        fn grant_from_row(r: &Row) -> StoreResult<Grant> {
            let state: String = get(r, "state")?;
            let kind: String = get(r, "via_kind")?;
            let via = match kind.as_str() {
                "invite" => Via::Invite(ContactInviteId(uuid_of(
                    &get::<Option<Vec<u8>>>(r, "via_invite")?
                        .ok_or_else(|| StoreError::corrupt("invite grant without invite"))?,
                )?)),
                "introduction" => Via::Introduction(Aci(uuid_of(
                    &get::<Option<Vec<u8>>>(r, "via_introducer")?
                        .ok_or_else(|| StoreError::corrupt("introduction grant without introducer"))?,
                )?)),
                "direct" => Via::Direct,
                "shortcode" => Via::Shortcode(ShortcodeId(uuid_of(
                    &get::<Option<Vec<u8>>>(r, "via_shortcode")?
                        .ok_or_else(|| StoreError::corrupt("shortcode grant without shortcode"))?,
                )?)),
                other => return Err(StoreError::corrupt(format!("grant via `{other}`"))),
            };
            Ok(Grant {
                owner: Aci(uuid_of(get(r, "owner")?)?),
                grantee: Aci(uuid_of(get(r, "grantee")?)?),
                state: state
                    .parse()
                    .map_err(|_| StoreError::corrupt(format!("grant state `{state}`")))?,
                via,
                created_at: Timestamp(get(r, "created_at")?),
            })
        }

        async fn policy_of(conn: &mut Conn, aci: Aci) -> StoreResult<Option<ContactPolicy>> {
            let Some(r) = sqlx::query("SELECT policy, introductions FROM contact_policies WHERE aci = $1")
                .bind(id(aci))
                .fetch_optional(conn)
                .await
                .map_err(db)?
            else {
                return Ok(None);
            };
            let (p, i): (String, String) = (get(&r, "policy")?, get(&r, "introductions")?);
            Ok(Some(ContactPolicy {
                mode: p
                    .parse::<PolicyMode>()
                    .map_err(|_| StoreError::corrupt(format!("contact policy `{p}`")))?,
                introductions: i
                    .parse::<IntroductionPolicy>()
                    .map_err(|_| StoreError::corrupt(format!("introductions policy `{i}`")))?,
            }))
        }

        pub(super) async fn invite_only(conn: &mut Conn, aci: Aci) -> StoreResult<bool> {
            Ok(policy_of(conn, aci)
                .await?
                .is_some_and(|p| p.mode == PolicyMode::InviteOnly))
        }

        pub(super) async fn grant_of(
            conn: &mut Conn,
            owner: Aci,
            grantee: Aci,
        ) -> StoreResult<Option<Grant>> {
            sqlx::query("SELECT * FROM contact_grants WHERE owner = $1 AND grantee = $2")
                .bind(id(owner))
                .bind(id(grantee))
                .fetch_optional(conn)
                .await
                .map_err(db)?
                .as_ref()
                .map(grant_from_row)
                .transpose()
        }

        /// Grants the owner accepted through invites or introductions after `since`.
        pub(super) async fn recent(
            conn: &mut Conn,
            owner: Aci,
            since: Timestamp,
        ) -> StoreResult<u32> {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM contact_grants WHERE owner = $1 AND via_kind <> 'direct' AND created_at > $2",
            )
            .bind(id(owner))
            .bind(since.as_millis())
            .fetch_one(conn)
            .await
            .map_err(db)?;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        }

        /// Whether every one of `acis` is an account, read inside the write transaction, so that an account deleted
        /// before it gets no new grant, invite or policy. On SQLite the single writer keeps that true until commit;
        /// on PostgreSQL the rows are share-locked (until the transaction ends), so `delete_account`, which locks its
        /// row for update before it removes the account's grants, cannot remove them between our read and our insert
        /// and leave a grant of a deleted account behind.
        pub(super) async fn accounts_stay(
            tx: &mut Transaction<'_, Db>,
            acis: &[Aci],
        ) -> StoreResult<bool> {
            let sql = format!("SELECT 1 FROM accounts WHERE aci = $1{}", <$store as Dialect>::FOR_SHARE);
            for aci in acis {
                let found = sqlx::query(&sql)
                    .bind(aci.as_bytes().to_vec())
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(db)?;
                if found.is_none() {
                    return Ok(false);
                }
            }
            Ok(true)
        }

        /// Serializes every decision about `owner`'s contact graph with the others (until the transaction ends;
        /// nothing to do on SQLite, whose single writer serializes them all).
        pub(super) async fn lock_owner(tx: &mut Transaction<'_, Db>, owner: Aci) -> StoreResult<()> {
            <$store as Dialect>::advisory_lock(tx, CONTACT_OWNER_LOCK_CLASS, lock_key(owner.as_bytes()))
                .await
        }

        pub(super) async fn insert_grant(conn: &mut Conn, g: &Grant) -> StoreResult<()> {
            let (invite, introducer, shortcode) = match g.via {
                Via::Invite(i) => (Some(invite_id(i)), None, None),
                Via::Introduction(a) => (None, Some(id(a)), None),
                Via::Direct => (None, None, None),
                Via::Shortcode(s) => (None, None, Some(s.0.as_bytes().to_vec())),
            };
            sqlx::query(
                "INSERT INTO contact_grants (owner, grantee, state, via_kind, via_invite, via_introducer, via_shortcode,
                 created_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
            )
            .bind(id(g.owner))
            .bind(id(g.grantee))
            .bind(g.state.as_str())
            .bind(g.via.kind())
            .bind(invite)
            .bind(introducer)
            .bind(shortcode)
            .bind(g.created_at.as_millis())
            .execute(conn)
            .await
            .map_err(db)?;
            Ok(())
        }

        /// The cascade hook: everything of the contact graph that involves the deleted account.
        pub(super) async fn account_deleted(
            tx: &mut Transaction<'_, Db>,
            gone: &$crate::store::shared::cascade::Gone,
        ) -> StoreResult<()> {
            for sql in [
                "DELETE FROM contact_policies WHERE aci = $1",
                "DELETE FROM contact_invites WHERE owner = $1",
                "DELETE FROM contact_shortcodes WHERE owner = $1",
                "DELETE FROM contact_grants WHERE owner = $1 OR grantee = $1",
            ] {
                sqlx::query(sql)
                    .bind(id(gone.aci))
                    .execute(&mut **tx)
                    .await
                    .map_err(db)?;
            }
            Ok(())
        }

        #[async_trait]
        impl ContactStore for $store {
            async fn contact_policy(&self, aci: Aci) -> StoreResult<Option<ContactPolicy>> {
                let mut conn = self.reader().acquire().await.map_err(db)?;
                policy_of(&mut conn, aci).await
            }

            async fn set_contact_policy(&self, aci: Aci, policy: ContactPolicy) -> StoreResult<bool> {
                let mut tx = self.begin_write().await?;
                lock_owner(&mut tx, aci).await?;
                if !accounts_stay(&mut tx, &[aci]).await? {
                    return Ok(false);
                }
                sqlx::query(
                    "INSERT INTO contact_policies (aci, policy, introductions) VALUES ($1,$2,$3)
                     ON CONFLICT (aci) DO UPDATE SET policy = excluded.policy, introductions = excluded.introductions",
                )
                .bind(id(aci))
                .bind(policy.mode.as_str())
                .bind(policy.introductions.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                if policy.mode == PolicyMode::Open {
                    for sql in [
                        "DELETE FROM contact_invites WHERE owner = $1",
                        "DELETE FROM contact_shortcodes WHERE owner = $1",
                        "DELETE FROM contact_grants WHERE owner = $1",
                    ] {
                        sqlx::query(sql)
                            .bind(id(aci))
                            .execute(&mut *tx)
                            .await
                            .map_err(db)?;
                    }
                }
                tx.commit().await.map_err(db)?;
                Ok(true)
            }

            async fn create_contact_invite(
                &self,
                invite: &ContactInvite,
                max_per_owner: u32,
            ) -> StoreResult<CreateInvite> {
                let mut tx = self.begin_write().await?;
                lock_owner(&mut tx, invite.owner).await?;
                if !accounts_stay(&mut tx, &[invite.owner]).await?
                    || !invite_only(&mut tx, invite.owner).await?
                {
                    return Ok(CreateInvite::NotInviteOnly);
                }
                let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM contact_invites WHERE owner = $1")
                    .bind(id(invite.owner))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db)?;
                if held >= i64::from(max_per_owner) {
                    return Ok(CreateInvite::QuotaExceeded);
                }
                let b = invite.bucket;
                let f = invite.flood;
                sqlx::query(&format!(
                    "INSERT INTO contact_invites ({INVITE_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)"
                ))
                .bind(invite_id(invite.id))
                .bind(id(invite.owner))
                .bind(invite.code_hash.to_vec())
                .bind(&invite.label)
                .bind(i64::from(invite.max_uses))
                .bind(i64::from(invite.uses))
                .bind(invite.created_at.as_millis())
                .bind(invite.expires_at.as_millis())
                .bind(invite.paused_until.map(Timestamp::as_millis))
                .bind(f.map(|f| f.detected_at.as_millis()))
                .bind(f.map(|f| f.since.as_millis()))
                .bind(f.map(|f| i64::from(f.quarantined)))
                .bind(b.map(|b| b.level.credit_ms))
                .bind(b.map(|b| b.level.updated_at.as_millis()))
                .bind(b.map(|b| b.burst_start.as_millis()))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                tx.commit().await.map_err(db)?;
                Ok(CreateInvite::Created)
            }

            async fn contact_invites(&self, owner: Aci) -> StoreResult<Vec<ContactInvite>> {
                sqlx::query(&format!(
                    "SELECT {INVITE_COLUMNS} FROM contact_invites WHERE owner = $1 ORDER BY created_at, id"
                ))
                .bind(id(owner))
                .fetch_all(self.reader())
                .await
                .map_err(db)?
                .iter()
                .map(invite_from_row)
                .collect()
            }

            async fn contact_invite(
                &self,
                owner: Aci,
                invite: ContactInviteId,
            ) -> StoreResult<Option<ContactInvite>> {
                sqlx::query(&format!(
                    "SELECT {INVITE_COLUMNS} FROM contact_invites WHERE id = $1 AND owner = $2"
                ))
                .bind(invite_id(invite))
                .bind(id(owner))
                .fetch_optional(self.reader())
                .await
                .map_err(db)?
                .as_ref()
                .map(invite_from_row)
                .transpose()
            }

            async fn delete_contact_invite(
                &self,
                owner: Aci,
                invite: ContactInviteId,
            ) -> StoreResult<bool> {
                let r = sqlx::query("DELETE FROM contact_invites WHERE id = $1 AND owner = $2")
                    .bind(invite_id(invite))
                    .bind(id(owner))
                    .execute(self.writer())
                    .await
                    .map_err(db)?;
                Ok(r.rows_affected() > 0)
            }

            async fn rotate_contact_invite(
                &self,
                owner: Aci,
                invite: ContactInviteId,
                code_hash: [u8; 32],
            ) -> StoreResult<Option<ContactInvite>> {
                sqlx::query(&format!(
                    "UPDATE contact_invites SET code_hash = $1 WHERE id = $2 AND owner = $3 RETURNING {INVITE_COLUMNS}"
                ))
                .bind(code_hash.to_vec())
                .bind(invite_id(invite))
                .bind(id(owner))
                .fetch_optional(self.writer())
                .await
                .map_err(db)?
                .as_ref()
                .map(invite_from_row)
                .transpose()
            }

            async fn resume_contact_invite(
                &self,
                owner: Aci,
                invite: ContactInviteId,
            ) -> StoreResult<bool> {
                let r = sqlx::query(
                    "UPDATE contact_invites SET paused_until = NULL, flood_detected_at = NULL, flood_since = NULL,
                     flood_quarantined = NULL, bucket_credit_ms = NULL, bucket_updated_at = NULL, burst_start = NULL
                     WHERE id = $1 AND owner = $2",
                )
                .bind(invite_id(invite))
                .bind(id(owner))
                .execute(self.writer())
                .await
                .map_err(db)?;
                Ok(r.rows_affected() > 0)
            }

            async fn redeem_contact_invite(
                &self,
                code_hash: &[u8; 32],
                redeemer: Aci,
                now: Timestamp,
                config: &FloodConfig,
            ) -> StoreResult<Redemption> {
                let mut tx = self.begin_write().await?;
                if !<$store as Dialect>::SERIALIZED {
                    // The owner is known only from the invite: find it, take the owner's lock, then read the invite
                    // again (locked, in a new statement and so a fresh snapshot) in case it was rotated or deleted
                    // meanwhile.
                    let Some(owner): Option<Vec<u8>> =
                        sqlx::query_scalar("SELECT owner FROM contact_invites WHERE code_hash = $1")
                            .bind(code_hash.to_vec())
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(db)?
                    else {
                        return Ok(Redemption::Invalid);
                    };
                    lock_owner(&mut tx, Aci(uuid_of(&owner)?)).await?;
                }
                let Some(invite) = sqlx::query(&format!(
                    "SELECT {INVITE_COLUMNS} FROM contact_invites WHERE code_hash = $1{}",
                    <$store as Dialect>::FOR_UPDATE
                ))
                .bind(code_hash.to_vec())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
                .as_ref()
                .map(invite_from_row)
                .transpose()?
                else {
                    return Ok(Redemption::Invalid);
                };
                let owner = invite.owner;
                // The owner's side is covered by the invite row read (on PostgreSQL: locked) above (deleting the owner
                // deletes it first).
                if !accounts_stay(&mut tx, &[redeemer]).await? {
                    return Ok(Redemption::Invalid);
                }
                let existing = grant_of(&mut tx, owner, redeemer).await?;
                let recent = recent(&mut tx, owner, contacts::owner_window_start(now, config)).await?;
                let plan =
                    contacts::plan_redemption(&invite, redeemer, existing.as_ref(), recent, now, config);
                let outcome = match plan {
                    RedeemPlan::Invalid => return Ok(Redemption::Invalid),
                    RedeemPlan::OwnInvite => return Ok(Redemption::OwnInvite),
                    RedeemPlan::Paused => return Ok(Redemption::Paused),
                    RedeemPlan::Existing(state) => return Ok(Redemption::Existing { owner, state }),
                    RedeemPlan::Grant { state, bucket } => {
                        insert_grant(
                            &mut tx,
                            &Grant {
                                owner,
                                grantee: redeemer,
                                state,
                                via: Via::Invite(invite.id),
                                created_at: now,
                            },
                        )
                        .await?;
                        sqlx::query(
                            "UPDATE contact_invites SET uses = uses + 1, bucket_credit_ms = $1, bucket_updated_at = $2,
                             burst_start = $3 WHERE id = $4",
                        )
                        .bind(bucket.level.credit_ms)
                        .bind(bucket.level.updated_at.as_millis())
                        .bind(bucket.burst_start.as_millis())
                        .bind(invite_id(invite.id))
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                        Redemption::Granted { owner, state }
                    }
                    RedeemPlan::Trip {
                        since,
                        paused_until,
                    } => {
                        sqlx::query(
                            "UPDATE contact_grants SET state = 'quarantined'
                             WHERE owner = $1 AND via_kind = 'invite' AND via_invite = $2 AND created_at >= $3 AND state = 'active'",
                        )
                        .bind(id(owner))
                        .bind(invite_id(invite.id))
                        .bind(since.as_millis())
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                        let quarantined: i64 = sqlx::query_scalar(
                            "SELECT COUNT(*) FROM contact_grants
                             WHERE owner = $1 AND via_kind = 'invite' AND via_invite = $2 AND created_at >= $3 AND state = 'quarantined'",
                        )
                        .bind(id(owner))
                        .bind(invite_id(invite.id))
                        .bind(since.as_millis())
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db)?;
                        let flood = Flood {
                            detected_at: now,
                            since,
                            quarantined: count(quarantined)?,
                        };
                        sqlx::query(
                            "UPDATE contact_invites SET paused_until = $1, flood_detected_at = $2, flood_since = $3,
                             flood_quarantined = $4 WHERE id = $5",
                        )
                        .bind(paused_until.as_millis())
                        .bind(now.as_millis())
                        .bind(since.as_millis())
                        .bind(quarantined)
                        .bind(invite_id(invite.id))
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                        Redemption::Tripped(flood)
                    }
                };
                tx.commit().await.map_err(db)?;
                Ok(outcome)
            }

            async fn contact_grant(&self, owner: Aci, grantee: Aci) -> StoreResult<Option<Grant>> {
                let mut conn = self.reader().acquire().await.map_err(db)?;
                grant_of(&mut conn, owner, grantee).await
            }

            async fn contact_grants(&self, owner: Aci) -> StoreResult<Vec<Grant>> {
                sqlx::query("SELECT * FROM contact_grants WHERE owner = $1 ORDER BY created_at, grantee")
                    .bind(id(owner))
                    .fetch_all(self.reader())
                    .await
                    .map_err(db)?
                    .iter()
                    .map(grant_from_row)
                    .collect()
            }

            async fn decide_contact_requests(
                &self,
                owner: Aci,
                decisions: &Decisions,
            ) -> StoreResult<bool> {
                let mut tx = self.begin_write().await?;
                lock_owner(&mut tx, owner).await?;
                if !invite_only(&mut tx, owner).await? {
                    return Ok(false);
                }
                // The owner lock (SQLite: the single writer) serializes every write to this owner's grants, so the
                // plan holds until commit.
                let grants: Vec<Grant> = sqlx::query("SELECT * FROM contact_grants WHERE owner = $1")
                    .bind(id(owner))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db)?
                    .iter()
                    .map(grant_from_row)
                    .collect::<StoreResult<_>>()?;
                let plan = contacts::plan_decisions(&grants, decisions);
                for (list, state) in [
                    (&plan.activate, GrantState::Active),
                    (&plan.deny, GrantState::Denied),
                ] {
                    if !list.is_empty() {
                        // The one statement the dialects write differently, in `<dialect>/contacts.rs`.
                        set_grant_states(&mut tx, owner, list, state).await?;
                    }
                }
                super::messages::delete_messages_from(&mut tx, owner, &plan.deny).await?;
                tx.commit().await.map_err(db)?;
                Ok(true)
            }

            async fn set_contact_grant(
                &self,
                owner: Aci,
                grantee: Aci,
                state: GrantState,
                now: Timestamp,
            ) -> StoreResult<bool> {
                let mut tx = self.begin_write().await?;
                lock_owner(&mut tx, owner).await?;
                if !accounts_stay(&mut tx, &[owner, grantee]).await? || !invite_only(&mut tx, owner).await?
                {
                    return Ok(false);
                }
                sqlx::query(
                    "INSERT INTO contact_grants (owner, grantee, state, via_kind, created_at) VALUES ($1,$2,$3,'direct',$4)
                     ON CONFLICT (owner, grantee) DO UPDATE SET state = excluded.state",
                )
                .bind(id(owner))
                .bind(id(grantee))
                .bind(state.as_str())
                .bind(now.as_millis())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                if state == GrantState::Denied {
                    super::messages::delete_messages_from(&mut tx, owner, &[grantee]).await?;
                }
                tx.commit().await.map_err(db)?;
                Ok(true)
            }

            async fn introduce(
                &self,
                recipient: Aci,
                introducer: Aci,
                introducee: Aci,
                now: Timestamp,
                config: &FloodConfig,
            ) -> StoreResult<Introduction> {
                let mut tx = self.begin_write().await?;
                lock_owner(&mut tx, recipient).await?;
                if !accounts_stay(&mut tx, &[recipient, introducee]).await? {
                    return Ok(Introduction::NotGranted);
                }
                let policy = policy_of(&mut tx, recipient).await?.unwrap_or_default();
                let introducer_grant = grant_of(&mut tx, recipient, introducer).await?;
                let existing = grant_of(&mut tx, recipient, introducee).await?;
                let recent = recent(
                    &mut tx,
                    recipient,
                    contacts::owner_window_start(now, config),
                )
                .await?;
                let outcome = contacts::plan_introduction(
                    policy,
                    introducer_grant.as_ref(),
                    existing.as_ref(),
                    recent,
                    config,
                );
                if let Introduction::Recorded(Some(state)) = outcome {
                    insert_grant(
                        &mut tx,
                        &Grant {
                            owner: recipient,
                            grantee: introducee,
                            state,
                            via: Via::Introduction(introducer),
                            created_at: now,
                        },
                    )
                    .await?;
                    tx.commit().await.map_err(db)?;
                }
                Ok(outcome)
            }
        }
    };
}
pub(crate) use contact_store;
