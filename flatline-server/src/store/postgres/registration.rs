//! PostgreSQL: verification sessions, subject bindings, tombstones, pinned JWKS and the token-id replay cache.
//!
//! Lock order, shared by every transaction here and by `delete_account`, so they cannot deadlock: the session row,
//! then the subject's advisory lock, then the principal's, then account rows, then invite rows.

use async_trait::async_trait;
use flatline_core::account::Account;
use flatline_core::ids::{Aci, Pni, Principal, ServiceId};
use flatline_core::invites::{CodeHash, InviteId};
use flatline_core::registration::{
    OidcStateStore, RegistrationCommit, RegistrationOutcome, RegistrationStore, SessionId, Subject,
    TOMBSTONE_RETENTION, VerificationSession, VerifiedIdentity, VerifyOutcome,
};
use flatline_core::store::{Conflict, StoreError, StoreResult};
use flatline_core::time::Timestamp;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Transaction};

use super::{
    PRINCIPAL_LOCK_CLASS, PgStore, SUBJECT_LOCK_CLASS, db, delete_keys_of, get, insert_account,
    insert_device, lock_key, put_initial_keys, uuid_of, xact_lock,
};

fn hash32(v: Option<Vec<u8>>) -> StoreResult<Option<[u8; 32]>> {
    v.map(|b| {
        <[u8; 32]>::try_from(b.as_slice())
            .map_err(|_| StoreError::corrupt("hash column is not 32 bytes"))
    })
    .transpose()
}

fn session_from_row(row: &PgRow) -> StoreResult<VerificationSession> {
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
                subject_hash: hash32(get(row, "subject_hash")?)?
                    .ok_or_else(|| StoreError::corrupt("verified session without subject hash"))?,
                principal: Principal::parse(&principal)
                    .map_err(|e| StoreError::corrupt(format!("session principal: {e}")))?,
                principal_opaque: get::<Option<bool>>(row, "principal_opaque")?.unwrap_or(false),
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
        request_uri_lifetime: u64::try_from(get::<i64>(row, "request_uri_lifetime")?).unwrap_or(0),
        invite_code: hash32(get(row, "invite_code_hash")?)?.map(CodeHash),
        created_at: Timestamp(get(row, "created_at")?),
        expires_at: Timestamp(get(row, "expires_at")?),
        verified,
        reserved_invite: reserved.map(|b| uuid_of(&b).map(InviteId)).transpose()?,
    })
}

/// The live session `id`, its row locked until the transaction ends (a concurrent verify or register of the same
/// session waits, then sees this one's outcome).
async fn lock_live_session(
    tx: &mut Transaction<'_, Postgres>,
    id: &SessionId,
    now: Timestamp,
) -> StoreResult<Option<VerificationSession>> {
    sqlx::query("SELECT * FROM verification_sessions WHERE id = $1 AND expires_at > $2 FOR UPDATE")
        .bind(id.as_str())
        .bind(now.as_millis())
        .fetch_optional(&mut **tx)
        .await
        .map_err(db)?
        .as_ref()
        .map(session_from_row)
        .transpose()
}

fn aci_of(v: Option<Vec<u8>>) -> StoreResult<Option<Aci>> {
    v.map(|b| uuid_of(&b).map(Aci)).transpose()
}

/// Moves the account's subject binding to a tombstone (called by account deletion, in its transaction, before the
/// account row and so the binding go).
pub(super) async fn tombstone(
    tx: &mut Transaction<'_, Postgres>,
    aci: Aci,
    now: Timestamp,
) -> StoreResult<()> {
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

/// Which of the account's unique values is already taken, if any (inside `register`'s transaction, after its locks,
/// so the conflict is named precisely; the unique constraints still back it up).
async fn taken(
    tx: &mut Transaction<'_, Postgres>,
    aci: Aci,
    pni: Pni,
    principal: &Principal,
) -> StoreResult<Option<Conflict>> {
    let exists = |sql: &'static str| sqlx::query(sql);
    for (conflict, query) in [
        (
            Conflict::Aci,
            exists("SELECT 1 FROM accounts WHERE aci = $1").bind(aci.as_bytes().to_vec()),
        ),
        (
            Conflict::Pni,
            exists("SELECT 1 FROM accounts WHERE pni = $1").bind(pni.as_bytes().to_vec()),
        ),
        (
            Conflict::Principal,
            exists("SELECT 1 FROM accounts WHERE principal = $1")
                .bind(principal.as_str().to_owned()),
        ),
    ] {
        if query.fetch_optional(&mut **tx).await.map_err(db)?.is_some() {
            return Ok(Some(conflict));
        }
    }
    Ok(None)
}

#[async_trait]
impl RegistrationStore for PgStore {
    async fn create_session(&self, s: &VerificationSession) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO verification_sessions (id, provider_id, state, nonce, redirect_uri, request_uri,
             request_uri_lifetime, invite_code_hash, created_at, expires_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
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
        .execute(&self.pool)
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
            .fetch_optional(&self.pool)
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
        let mut tx = self.pool.begin().await.map_err(db)?;
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
            // Locks the invite row until this reservation commits.
            match super::invites::reservable(&mut tx, &code, now).await? {
                Some(invite) => reserved = Some(invite),
                None => return Ok(VerifyOutcome::InviteUnavailable),
            }
        }
        sqlx::query(
            "UPDATE verification_sessions SET subject_provider = $1, subject = $2, subject_hash = $3, principal = $4,
             principal_opaque = $5, sid = $6, reserved_invite = $7, expires_at = $8 WHERE id = $9",
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
        let mut tx = self.pool.begin().await.map_err(db)?;
        let Some(session) = lock_live_session(&mut tx, &c.session_id, now).await? else {
            return Ok(RegistrationOutcome::SessionInvalid);
        };
        let Some(v) = session.verified.clone() else {
            return Ok(RegistrationOutcome::SessionInvalid);
        };
        if let Some(invite) = session.reserved_invite
            && !super::invites::still_usable(&mut tx, invite, now).await?
        {
            return Ok(RegistrationOutcome::InviteInvalid);
        }
        // Two sessions of one subject (or two subjects wanting one principal) registering at once would both see
        // "no account yet"; these locks make the second see the first's result, as the single SQLite writer does.
        xact_lock(&mut tx, SUBJECT_LOCK_CLASS, lock_key(&v.subject_hash)).await?;
        xact_lock(
            &mut tx,
            PRINCIPAL_LOCK_CLASS,
            lock_key(v.principal.as_str().as_bytes()),
        )
        .await?;
        let existing = aci_of(
            sqlx::query_scalar(
                "SELECT aci FROM account_subjects WHERE provider = $1 AND subject = $2",
            )
            .bind(&v.subject.provider)
            .bind(&v.subject.sub)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?,
        )?;
        let holder = aci_of(
            sqlx::query_scalar("SELECT aci FROM accounts WHERE principal = $1")
                .bind(v.principal.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?,
        )?;
        if let Some(holder) = holder
            && Some(holder) != existing
        {
            return Ok(RegistrationOutcome::PrincipalConflict);
        }
        let outcome = match existing {
            Some(aci) => {
                let row =
                    sqlx::query("SELECT pni, principal FROM accounts WHERE aci = $1 FOR UPDATE")
                        .bind(aci.as_bytes().to_vec())
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db)?;
                let old_pni: Vec<u8> = get(&row, "pni")?;
                let old_pni = Pni(uuid_of(&old_pni)?);
                let old_principal: String = get(&row, "principal")?;
                let pni = if old_principal == v.principal.as_str() {
                    old_pni
                } else {
                    let in_use = sqlx::query("SELECT 1 FROM accounts WHERE pni = $1")
                        .bind(c.candidate_pni.as_bytes().to_vec())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db)?;
                    if in_use.is_some() {
                        return Err(StoreError::Conflict(Conflict::Pni));
                    }
                    c.candidate_pni
                };
                delete_keys_of(&mut tx, ServiceId::Aci(aci)).await?;
                delete_keys_of(&mut tx, ServiceId::Pni(old_pni)).await?;
                sqlx::query(
                    "UPDATE accounts SET pni = $1, principal = $2, principal_opaque = $3, aci_identity_key = $4,
                     pni_identity_key = $5, unidentified_access_key = $6, unrestricted_unidentified_access = $7,
                     discoverable_by_principal = $8 WHERE aci = $9",
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
                .map_err(|e| match super::account_conflict(&e) {
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
                RegistrationOutcome::Reregistered { aci, pni }
            }
            None => {
                let tomb = sqlx::query(
                    "DELETE FROM subject_tombstones WHERE subject_hash = $1 RETURNING aci, expires_at",
                )
                .bind(v.subject_hash.to_vec())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
                let aci = match tomb {
                    Some(r) if get::<i64>(&r, "expires_at")? > now.as_millis() => {
                        let aci: Vec<u8> = get(&r, "aci")?;
                        Aci(uuid_of(&aci)?)
                    }
                    _ => c.candidate_aci,
                };
                if let Some(conflict) = taken(&mut tx, aci, c.candidate_pni, &v.principal).await? {
                    return Err(StoreError::Conflict(conflict));
                }
                let account = Account {
                    aci,
                    pni: c.candidate_pni,
                    principal: v.principal.clone(),
                    principal_opaque: v.principal_opaque,
                    aci_identity_key: c.aci_identity_key.clone(),
                    pni_identity_key: c.pni_identity_key.clone(),
                    settings: c.settings.clone(),
                    username_hash: None,
                    username_link_handle: None,
                    created_at: now,
                    devices: vec![c.device.clone()],
                };
                insert_account(&mut tx, &account).await?;
                sqlx::query(
                    "INSERT INTO account_subjects (provider, subject, aci, subject_hash, sid) VALUES ($1,$2,$3,$4,$5)",
                )
                .bind(&v.subject.provider)
                .bind(&v.subject.sub)
                .bind(aci.as_bytes().to_vec())
                .bind(v.subject_hash.to_vec())
                .bind(&v.sid)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                put_initial_keys(&mut tx, aci, c.candidate_pni, &c.keys).await?;
                RegistrationOutcome::Created {
                    aci,
                    pni: c.candidate_pni,
                }
            }
        };
        let aci = match outcome {
            RegistrationOutcome::Created { aci, .. }
            | RegistrationOutcome::Reregistered { aci, .. } => aci,
            _ => return Ok(outcome),
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
        self.auth_cache.drop_account(aci);
        Ok(outcome)
    }

    async fn account_of_subject(&self, subject: &Subject) -> StoreResult<Option<Aci>> {
        aci_of(
            sqlx::query_scalar(
                "SELECT aci FROM account_subjects WHERE provider = $1 AND subject = $2",
            )
            .bind(&subject.provider)
            .bind(&subject.sub)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?,
        )
    }

    async fn subject_of(&self, aci: Aci) -> StoreResult<Option<Subject>> {
        sqlx::query("SELECT provider, subject FROM account_subjects WHERE aci = $1")
            .bind(aci.as_bytes().to_vec())
            .fetch_optional(&self.pool)
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
        let rows: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT aci FROM account_subjects WHERE provider = $1 AND sid = $2")
                .bind(provider)
                .bind(sid)
                .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await.map_err(db)?;
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
impl OidcStateStore for PgStore {
    async fn pinned_jwks(&self, provider: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT jwks FROM pinned_jwks WHERE provider = $1")
            .bind(provider)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }

    async fn pin_jwks(&self, provider: &str, jwks: &str, now: Timestamp) -> StoreResult<String> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // A concurrent first pin makes this insert wait and then do nothing; the SELECT (new snapshot) sees it.
        sqlx::query(
            "INSERT INTO pinned_jwks (provider, jwks, pinned_at) VALUES ($1, $2, $3) ON CONFLICT (provider) DO NOTHING",
        )
        .bind(provider)
        .bind(jwks)
        .bind(now.as_millis())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let pinned: String = sqlx::query_scalar("SELECT jwks FROM pinned_jwks WHERE provider = $1")
            .bind(provider)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(pinned)
    }

    async fn replace_jwks(&self, provider: &str, jwks: &str, now: Timestamp) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO pinned_jwks (provider, jwks, pinned_at) VALUES ($1, $2, $3)
             ON CONFLICT (provider) DO UPDATE SET jwks = excluded.jwks, pinned_at = excluded.pinned_at",
        )
        .bind(provider)
        .bind(jwks)
        .bind(now.as_millis())
        .execute(&self.pool)
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
        // An expired entry is replaced; a live one makes the upsert a no-op (0 rows), also against a concurrent
        // recorder of the same id, whose insert this one waits for.
        let r = sqlx::query(
            "INSERT INTO seen_token_ids AS s (scope, token_id, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (scope, token_id) DO UPDATE SET expires_at = excluded.expires_at
             WHERE s.expires_at <= $4",
        )
        .bind(scope)
        .bind(token_id)
        .bind(expires_at.as_millis())
        .bind(now.as_millis())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(r.rows_affected() == 1)
    }
}
