//! Verification sessions, subject bindings, tombstones, pinned JWKS and the token-id replay cache
//! ([`flatline_core::registration::RegistrationStore`], [`flatline_core::registration::OidcStateStore`]) on both
//! dialects.
//!
//! Registration (consume the reserved invite, create or re-register the account, rotate the PNI when the principal
//! changed) is one write transaction on every backend: on SQLite the single writer runs it alone (`BEGIN
//! IMMEDIATE`); on PostgreSQL it takes locks in this order, shared by every transaction here and by
//! `delete_account`, so they cannot deadlock: the session row (`FOR UPDATE`), then the subject's advisory lock
//! (`SUBJECT_LOCK_CLASS`), then the principal's (`PRINCIPAL_LOCK_CLASS`), then account rows, then invite rows.
//! Inside it, `register` loads the facts of [`flatline_core::registration::plan_registration`] (the decision, once
//! for every backend) and writes what the plan says.

/// Implements the registration and OIDC state stores for `$store` (see [the module docs](self)).
macro_rules! registration_store {
    ($store:ty) => {
        use async_trait::async_trait;
        use flatline_core::ids::{Aci, Pni, Principal, ServiceId};
        use flatline_core::invites::{CodeHash, InviteId};
        use flatline_core::registration::{
            ExistingAccount, OidcStateStore, RegistrationCommit, RegistrationFacts,
            RegistrationOutcome, RegistrationPlan, RegistrationStore, SessionId, Subject,
            TOMBSTONE_RETENTION, VerificationSession, VerifiedIdentity, VerifyOutcome,
            plan_registration,
        };
        use flatline_core::store::{Conflict, StoreError, StoreResult};
        use flatline_core::time::Timestamp;
        use sqlx::Transaction;

        use super::{
            db, delete_keys_of, get, insert_account, insert_device, put_initial_keys, uuid_of,
        };
        use $crate::store::shared::codecs::{
            PRINCIPAL_LOCK_CLASS, SUBJECT_LOCK_CLASS, account_conflict,
        };
        use $crate::store::shared::{Dialect, lock_key};

        type Db = <$store as Dialect>::Db;
        type Row = <Db as sqlx::Database>::Row;

        fn hash32(v: Option<Vec<u8>>) -> StoreResult<Option<[u8; 32]>> {
            v.map(|b| {
                <[u8; 32]>::try_from(b.as_slice())
                    .map_err(|_| StoreError::corrupt("hash column is not 32 bytes"))
            })
            .transpose()
        }

        fn aci_of(v: Option<Vec<u8>>) -> StoreResult<Option<Aci>> {
            v.map(|b| uuid_of(&b).map(Aci)).transpose()
        }

        fn session_from_row(row: &Row) -> StoreResult<VerificationSession> {
            let id: String = get(row, "id")?;
            let verified = match get::<Option<String>>(row, "subject")? {
                None => None,
                Some(sub) => {
                    let principal: String = get(row, "principal")?;
                    Some(VerifiedIdentity {
                        subject: Subject {
                            provider: get(row, "subject_provider")?,
                            sub,
                        },
                        subject_hash: hash32(get(row, "subject_hash")?)?.ok_or_else(|| {
                            StoreError::corrupt("verified session without subject hash")
                        })?,
                        principal: Principal::parse(&principal)
                            .map_err(|e| StoreError::corrupt(format!("session principal: {e}")))?,
                        principal_opaque: get::<Option<bool>>(row, "principal_opaque")?
                            .unwrap_or(false),
                        sid: get(row, "sid")?,
                    })
                }
            };
            let reserved: Option<Vec<u8>> = get(row, "reserved_invite")?;
            Ok(VerificationSession {
                id: SessionId::parse(&id).ok_or_else(|| StoreError::corrupt("stored session id"))?,
                provider_id: get(row, "provider_id")?,
                state: get(row, "state")?,
                nonce: get(row, "nonce")?,
                redirect_uri: get(row, "redirect_uri")?,
                request_uri: get(row, "request_uri")?,
                request_uri_lifetime: u64::try_from(get::<i64>(row, "request_uri_lifetime")?)
                    .unwrap_or(0),
                invite_code: hash32(get(row, "invite_code_hash")?)?.map(CodeHash),
                created_at: Timestamp(get(row, "created_at")?),
                expires_at: Timestamp(get(row, "expires_at")?),
                verified,
                reserved_invite: reserved.map(|b| uuid_of(&b).map(InviteId)).transpose()?,
            })
        }

        /// The live session `id`, its row locked on PostgreSQL until the transaction ends (a concurrent verify or
        /// register of the same session waits, then sees this one's outcome).
        async fn lock_live_session(
            tx: &mut Transaction<'_, Db>,
            id: &SessionId,
            now: Timestamp,
        ) -> StoreResult<Option<VerificationSession>> {
            sqlx::query(&format!(
                "SELECT * FROM verification_sessions WHERE id = $1 AND expires_at > $2{}",
                <$store as Dialect>::FOR_UPDATE
            ))
            .bind(id.as_str())
            .bind(now.as_millis())
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?
            .as_ref()
            .map(session_from_row)
            .transpose()
        }

        /// Moves the account's subject binding to a tombstone (called by account deletion, in its transaction,
        /// before the account row and so the binding go).
        pub(super) async fn tombstone(
            tx: &mut Transaction<'_, Db>,
            aci: Aci,
            now: Timestamp,
        ) -> StoreResult<()> {
            // `WHERE` before `ON CONFLICT`: SQLite needs it to parse an upsert from a `SELECT`.
            sqlx::query(
                "INSERT INTO subject_tombstones (subject_hash, aci, expires_at)
                 SELECT subject_hash, aci, $1 FROM account_subjects WHERE aci = $2
                 ON CONFLICT (subject_hash) DO UPDATE SET aci = excluded.aci, expires_at = excluded.expires_at",
            )
            .bind(now.plus(TOMBSTONE_RETENTION).as_millis())
            .bind(aci.as_bytes().to_vec())
            .execute(&mut **tx)
            .await
            .map_err(db)?;
            Ok(())
        }

        #[async_trait]
        impl RegistrationStore for $store {
            async fn create_session(&self, s: &VerificationSession) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO verification_sessions (id, provider_id, state, nonce, redirect_uri, request_uri,
                     request_uri_lifetime, invite_code_hash, created_at, expires_at)
                     VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
                )
                .bind(s.id.as_str())
                .bind(&s.provider_id)
                .bind(&s.state)
                .bind(&s.nonce)
                .bind(&s.redirect_uri)
                .bind(&s.request_uri)
                .bind(i64::try_from(s.request_uri_lifetime).unwrap_or(i64::MAX))
                .bind(s.invite_code.map(|c| c.0.to_vec()))
                .bind(s.created_at.as_millis())
                .bind(s.expires_at.as_millis())
                .execute(self.writer())
                .await
                .map_err(db)?;
                Ok(())
            }

            async fn session(
                &self,
                id: &SessionId,
                now: Timestamp,
            ) -> StoreResult<Option<VerificationSession>> {
                sqlx::query("SELECT * FROM verification_sessions WHERE id = $1 AND expires_at > $2")
                    .bind(id.as_str())
                    .bind(now.as_millis())
                    .fetch_optional(self.reader())
                    .await
                    .map_err(db)?
                    .as_ref()
                    .map(session_from_row)
                    .transpose()
            }

            async fn verify_session(
                &self,
                id: &SessionId,
                identity: &VerifiedIdentity,
                reserve_invite: bool,
                expires_at: Timestamp,
                now: Timestamp,
            ) -> StoreResult<VerifyOutcome> {
                let mut tx = self.begin_write().await?;
                let Some(session) = lock_live_session(&mut tx, id, now).await? else {
                    return Ok(VerifyOutcome::NotFound);
                };
                if session.verified.is_some() {
                    return Ok(VerifyOutcome::AlreadyVerified);
                }
                let mut reserved = None;
                if reserve_invite {
                    let Some(code) = session.invite_code else {
                        return Ok(VerifyOutcome::InviteUnavailable);
                    };
                    // On PostgreSQL this locks the invite row until this reservation commits.
                    match super::invites::reservable(&mut tx, &code, now).await? {
                        Some(invite) => reserved = Some(invite),
                        None => return Ok(VerifyOutcome::InviteUnavailable),
                    }
                }
                sqlx::query(
                    "UPDATE verification_sessions SET subject_provider = $1, subject = $2, subject_hash = $3,
                     principal = $4, principal_opaque = $5, sid = $6, reserved_invite = $7, expires_at = $8
                     WHERE id = $9",
                )
                .bind(&identity.subject.provider)
                .bind(&identity.subject.sub)
                .bind(identity.subject_hash.to_vec())
                .bind(identity.principal.as_str())
                .bind(identity.principal_opaque)
                .bind(&identity.sid)
                .bind(reserved.map(|i: InviteId| i.0.as_bytes().to_vec()))
                .bind(expires_at.as_millis())
                .bind(id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                tx.commit().await.map_err(db)?;
                Ok(VerifyOutcome::Verified)
            }

            async fn register(&self, c: RegistrationCommit) -> StoreResult<RegistrationOutcome> {
                let now = c.now;
                let mut tx = self.begin_write().await?;
                // The facts `plan_registration` decides on, loaded in the lock order of the module docs.
                let session = lock_live_session(&mut tx, &c.session_id, now).await?;
                let verified = session.as_ref().and_then(|s| s.verified.clone());
                let invite_usable = match session.as_ref().and_then(|s| s.reserved_invite) {
                    Some(invite) if verified.is_some() => {
                        super::invites::still_usable(&mut tx, invite, now).await?
                    }
                    _ => false,
                };
                // The session and invite checks need nothing more: refuse before taking the locks.
                let checked = RegistrationFacts {
                    session: session.as_ref(),
                    invite_usable,
                    existing: None,
                    principal_holder: None,
                    tombstone: None,
                };
                if let RegistrationPlan::Refuse(outcome) =
                    plan_registration(&checked, c.candidate_aci, c.candidate_pni)
                {
                    return Ok(outcome);
                }
                let (mut existing, mut principal_holder, mut tombstone) = (None, None, None);
                if let Some(v) = &verified {
                    // Two sessions of one subject (or two subjects wanting one principal) registering at once
                    // would both see "no account yet"; on PostgreSQL these locks make the second see the first's
                    // result, as the single SQLite writer does.
                    <$store as Dialect>::advisory_lock(
                        &mut tx,
                        SUBJECT_LOCK_CLASS,
                        lock_key(&v.subject_hash),
                    )
                    .await?;
                    <$store as Dialect>::advisory_lock(
                        &mut tx,
                        PRINCIPAL_LOCK_CLASS,
                        lock_key(v.principal.as_str().as_bytes()),
                    )
                    .await?;
                    let subject_aci = aci_of(
                        sqlx::query_scalar(
                            "SELECT aci FROM account_subjects WHERE provider = $1 AND subject = $2",
                        )
                        .bind(&v.subject.provider)
                        .bind(&v.subject.sub)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db)?,
                    )?;
                    principal_holder = aci_of(
                        sqlx::query_scalar("SELECT aci FROM accounts WHERE principal = $1")
                            .bind(v.principal.as_str())
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(db)?,
                    )?;
                    match subject_aci {
                        Some(aci) => {
                            let row = sqlx::query(&format!(
                                "SELECT pni, principal FROM accounts WHERE aci = $1{}",
                                <$store as Dialect>::FOR_UPDATE
                            ))
                            .bind(aci.as_bytes().to_vec())
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(db)?;
                            let pni: Vec<u8> = get(&row, "pni")?;
                            let principal: String = get(&row, "principal")?;
                            existing = Some(ExistingAccount {
                                aci,
                                pni: Pni(uuid_of(&pni)?),
                                principal: Principal::parse(&principal).map_err(|e| {
                                    StoreError::corrupt(format!("account principal: {e}"))
                                })?,
                            });
                        }
                        None => {
                            // Consumed here; a refused plan rolls the deletion back.
                            let tomb = sqlx::query(
                                "DELETE FROM subject_tombstones WHERE subject_hash = $1 RETURNING aci, expires_at",
                            )
                            .bind(v.subject_hash.to_vec())
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(db)?;
                            if let Some(r) = tomb
                                && get::<i64>(&r, "expires_at")? > now.as_millis()
                            {
                                let aci: Vec<u8> = get(&r, "aci")?;
                                tombstone = Some(Aci(uuid_of(&aci)?));
                            }
                        }
                    }
                }
                let plan = plan_registration(
                    &RegistrationFacts {
                        session: session.as_ref(),
                        invite_usable,
                        existing: existing.as_ref(),
                        principal_holder,
                        tombstone,
                    },
                    c.candidate_aci,
                    c.candidate_pni,
                );
                let outcome = plan.outcome();
                let (Some(session), Some(v)) = (session, verified) else {
                    return Ok(outcome);
                };
                let aci = match plan {
                    RegistrationPlan::Refuse(outcome) => return Ok(outcome),
                    RegistrationPlan::Reregister { aci, old_pni, pni } => {
                        if pni != old_pni {
                            let in_use = sqlx::query("SELECT 1 FROM accounts WHERE pni = $1")
                                .bind(pni.as_bytes().to_vec())
                                .fetch_optional(&mut *tx)
                                .await
                                .map_err(db)?;
                            if in_use.is_some() {
                                return Err(StoreError::Conflict(Conflict::Pni));
                            }
                        }
                        delete_keys_of(&mut tx, ServiceId::Aci(aci)).await?;
                        delete_keys_of(&mut tx, ServiceId::Pni(old_pni)).await?;
                        sqlx::query(
                            "UPDATE accounts SET pni = $1, principal = $2, principal_opaque = $3,
                             aci_identity_key = $4, pni_identity_key = $5, unidentified_access_key = $6,
                             unrestricted_unidentified_access = $7, discoverable_by_principal = $8 WHERE aci = $9",
                        )
                        .bind(pni.as_bytes().to_vec())
                        .bind(v.principal.as_str())
                        .bind(v.principal_opaque)
                        .bind(&c.aci_identity_key)
                        .bind(&c.pni_identity_key)
                        .bind(c.settings.unidentified_access_key.map(|k| k.to_vec()))
                        .bind(c.settings.unrestricted_unidentified_access)
                        .bind(c.settings.discoverable_by_principal)
                        .bind(aci.as_bytes().to_vec())
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| match account_conflict(&e) {
                            Some(conflict) => StoreError::Conflict(conflict),
                            None => db(e),
                        })?;
                        sqlx::query("DELETE FROM devices WHERE aci = $1")
                            .bind(aci.as_bytes().to_vec())
                            .execute(&mut *tx)
                            .await
                            .map_err(db)?;
                        insert_device(&mut tx, aci, &c.device).await?;
                        sqlx::query("UPDATE account_subjects SET sid = $1 WHERE aci = $2")
                            .bind(&v.sid)
                            .bind(aci.as_bytes().to_vec())
                            .execute(&mut *tx)
                            .await
                            .map_err(db)?;
                        put_initial_keys(&mut tx, aci, pni, &c.keys).await?;
                        // The old username waits 3 days for the re-registered account to confirm it again.
                        if let Some(mut view) = super::usernames::load_view(&mut tx, aci, &[]).await? {
                            view.hold_for_reclaim(now);
                            super::usernames::store_view(&mut tx, &view).await?;
                        }
                        aci
                    }
                    RegistrationPlan::Create { aci, pni, .. } => {
                        if let Some(conflict) =
                            super::accounts::taken(&mut tx, aci, pni, &v.principal).await?
                        {
                            return Err(StoreError::Conflict(conflict));
                        }
                        insert_account(&mut tx, &c.new_account(aci, pni, &v)).await?;
                        sqlx::query(
                            "INSERT INTO account_subjects (provider, subject, aci, subject_hash, sid)
                             VALUES ($1,$2,$3,$4,$5)",
                        )
                        .bind(&v.subject.provider)
                        .bind(&v.subject.sub)
                        .bind(aci.as_bytes().to_vec())
                        .bind(v.subject_hash.to_vec())
                        .bind(&v.sid)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                        put_initial_keys(&mut tx, aci, pni, &c.keys).await?;
                        aci
                    }
                };
                sqlx::query("DELETE FROM verification_sessions WHERE id = $1")
                    .bind(c.session_id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                if let Some(invite) = session.reserved_invite
                    && !super::invites::consume(&mut tx, invite, aci, now).await?
                {
                    // Dropping the transaction rolls the account back.
                    return Ok(RegistrationOutcome::InviteInvalid);
                }
                tx.commit().await.map_err(db)?;
                // A re-registration replaced the devices and their passwords.
                self.account_changed(aci);
                Ok(outcome)
            }

            async fn account_of_subject(&self, subject: &Subject) -> StoreResult<Option<Aci>> {
                aci_of(
                    sqlx::query_scalar(
                        "SELECT aci FROM account_subjects WHERE provider = $1 AND subject = $2",
                    )
                    .bind(&subject.provider)
                    .bind(&subject.sub)
                    .fetch_optional(self.reader())
                    .await
                    .map_err(db)?,
                )
            }

            async fn subject_of(&self, aci: Aci) -> StoreResult<Option<Subject>> {
                sqlx::query("SELECT provider, subject FROM account_subjects WHERE aci = $1")
                    .bind(aci.as_bytes().to_vec())
                    .fetch_optional(self.reader())
                    .await
                    .map_err(db)?
                    .map(|r| {
                        Ok(Subject {
                            provider: get(&r, "provider")?,
                            sub: get(&r, "subject")?,
                        })
                    })
                    .transpose()
            }

            async fn accounts_with_sid(&self, provider: &str, sid: &str) -> StoreResult<Vec<Aci>> {
                let rows: Vec<Vec<u8>> = sqlx::query_scalar(
                    "SELECT aci FROM account_subjects WHERE provider = $1 AND sid = $2",
                )
                .bind(provider)
                .bind(sid)
                .fetch_all(self.reader())
                .await
                .map_err(db)?;
                let mut acis = rows
                    .iter()
                    .map(|b| uuid_of(b).map(Aci))
                    .collect::<StoreResult<Vec<_>>>()?;
                acis.sort();
                Ok(acis)
            }

            async fn purge_expired_registrations(&self, now: Timestamp) -> StoreResult<u64> {
                let mut tx = self.begin_write().await?;
                let mut removed = 0;
                for table in [
                    "verification_sessions",
                    "subject_tombstones",
                    "seen_token_ids",
                ] {
                    removed += sqlx::query(&format!("DELETE FROM {table} WHERE expires_at <= $1"))
                        .bind(now.as_millis())
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?
                        .rows_affected();
                }
                tx.commit().await.map_err(db)?;
                Ok(removed)
            }
        }

        #[async_trait]
        impl OidcStateStore for $store {
            async fn pinned_jwks(&self, provider: &str) -> StoreResult<Option<String>> {
                sqlx::query_scalar("SELECT jwks FROM pinned_jwks WHERE provider = $1")
                    .bind(provider)
                    .fetch_optional(self.reader())
                    .await
                    .map_err(db)
            }

            async fn pin_jwks(
                &self,
                provider: &str,
                jwks: &str,
                now: Timestamp,
            ) -> StoreResult<String> {
                let mut tx = self.begin_write().await?;
                // On PostgreSQL a concurrent first pin makes this insert wait and then do nothing; the SELECT (new
                // snapshot) sees it.
                sqlx::query(
                    "INSERT INTO pinned_jwks (provider, jwks, pinned_at) VALUES ($1, $2, $3)
                     ON CONFLICT (provider) DO NOTHING",
                )
                .bind(provider)
                .bind(jwks)
                .bind(now.as_millis())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                let pinned: String =
                    sqlx::query_scalar("SELECT jwks FROM pinned_jwks WHERE provider = $1")
                        .bind(provider)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db)?;
                tx.commit().await.map_err(db)?;
                Ok(pinned)
            }

            async fn replace_jwks(
                &self,
                provider: &str,
                jwks: &str,
                now: Timestamp,
            ) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO pinned_jwks (provider, jwks, pinned_at) VALUES ($1, $2, $3)
                     ON CONFLICT (provider) DO UPDATE SET jwks = excluded.jwks, pinned_at = excluded.pinned_at",
                )
                .bind(provider)
                .bind(jwks)
                .bind(now.as_millis())
                .execute(self.writer())
                .await
                .map_err(db)?;
                Ok(())
            }

            async fn record_token_id(
                &self,
                scope: &str,
                token_id: &str,
                expires_at: Timestamp,
                now: Timestamp,
            ) -> StoreResult<bool> {
                // An expired entry is replaced; a live one makes the upsert a no-op (0 rows), on PostgreSQL also
                // against a concurrent recorder of the same id, whose insert this one waits for.
                let r = sqlx::query(
                    "INSERT INTO seen_token_ids (scope, token_id, expires_at) VALUES ($1, $2, $3)
                     ON CONFLICT (scope, token_id) DO UPDATE SET expires_at = excluded.expires_at
                     WHERE seen_token_ids.expires_at <= $4",
                )
                .bind(scope)
                .bind(token_id)
                .bind(expires_at.as_millis())
                .bind(now.as_millis())
                .execute(self.writer())
                .await
                .map_err(db)?;
                Ok(r.rows_affected() == 1)
            }
        }
    };
}
pub(crate) use registration_store;
