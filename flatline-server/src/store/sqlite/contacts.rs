//! Contact policies, invites and grants in SQLite. Every writing method is one transaction on the single writer,
//! deciding with the pure rules of `flatline_core::contacts` on rows read inside that transaction.

use async_trait::async_trait;
use flatline_core::contacts::{
    self, ContactInvite, ContactInviteId, ContactPolicy, CreateInvite, Decisions, Flood,
    FloodBucket, FloodConfig, Grant, GrantState, Introduction, IntroductionPolicy, PolicyMode,
    RedeemPlan, Redemption, Via,
};
use flatline_core::ids::Aci;
use flatline_core::shortcodes::ShortcodeId;
use flatline_core::store::{ContactStore, StoreError, StoreResult};
use flatline_core::time::Timestamp;
use sqlx::sqlite::SqliteRow;
use sqlx::{Sqlite, SqliteConnection, Transaction};

use super::{SqliteStore, db, get, uuid_of};

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

fn invite_from_row(r: &SqliteRow) -> StoreResult<ContactInvite> {
    let hash: Vec<u8> = get(r, "code_hash")?;
    let ts = |c: &str| get::<Option<i64>>(r, c).map(|v| v.map(Timestamp));
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
            credit_ms,
            updated_at,
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

fn grant_from_row(r: &SqliteRow) -> StoreResult<Grant> {
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

/// Whether every one of `acis` is an account. Read inside the write transaction, so an account deleted before it
/// gets no new grant, invite or policy (the deletion removed those it had, and SQLite runs one writer at a time).
/// Nothing to lock: the single writer already serializes every decision about an owner's contact graph.
pub(super) async fn lock_owner(_tx: &mut Transaction<'_, Sqlite>, _owner: Aci) -> StoreResult<()> {
    Ok(())
}

pub(super) async fn accounts_stay(conn: &mut SqliteConnection, acis: &[Aci]) -> StoreResult<bool> {
    for aci in acis {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM accounts WHERE aci = ?")
            .bind(id(*aci))
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
        if found.is_none() {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn policy_of(conn: &mut SqliteConnection, aci: Aci) -> StoreResult<Option<ContactPolicy>> {
    let Some(r) = sqlx::query("SELECT policy, introductions FROM contact_policies WHERE aci = ?")
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

pub(super) async fn invite_only(conn: &mut SqliteConnection, aci: Aci) -> StoreResult<bool> {
    Ok(policy_of(conn, aci)
        .await?
        .is_some_and(|p| p.mode == PolicyMode::InviteOnly))
}

pub(super) async fn grant_of(
    conn: &mut SqliteConnection,
    owner: Aci,
    grantee: Aci,
) -> StoreResult<Option<Grant>> {
    sqlx::query("SELECT * FROM contact_grants WHERE owner = ? AND grantee = ?")
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
    conn: &mut SqliteConnection,
    owner: Aci,
    since: Timestamp,
) -> StoreResult<u32> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM contact_grants WHERE owner = ? AND via_kind <> 'direct' AND created_at > ?",
    )
    .bind(id(owner))
    .bind(since.as_millis())
    .fetch_one(conn)
    .await
    .map_err(db)?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

pub(super) async fn insert_grant(conn: &mut SqliteConnection, g: &Grant) -> StoreResult<()> {
    let (invite, introducer, shortcode) = match g.via {
        Via::Invite(i) => (Some(invite_id(i)), None, None),
        Via::Introduction(a) => (None, Some(id(a)), None),
        Via::Direct => (None, None, None),
        Via::Shortcode(s) => (None, None, Some(s.0.as_bytes().to_vec())),
    };
    sqlx::query(
        "INSERT INTO contact_grants (owner, grantee, state, via_kind, via_invite, via_introducer, via_shortcode,
         created_at) VALUES (?,?,?,?,?,?,?,?)",
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

/// Removes everything of the contact graph that involves `aci` (inside `delete_account`'s transaction).
pub(super) async fn delete_contacts_of(
    tx: &mut Transaction<'_, Sqlite>,
    aci: Aci,
) -> StoreResult<()> {
    for sql in [
        "DELETE FROM contact_policies WHERE aci = ?1",
        "DELETE FROM contact_invites WHERE owner = ?1",
        "DELETE FROM contact_shortcodes WHERE owner = ?1",
        "DELETE FROM contact_grants WHERE owner = ?1 OR grantee = ?1",
    ] {
        sqlx::query(sql)
            .bind(id(aci))
            .execute(&mut **tx)
            .await
            .map_err(db)?;
    }
    Ok(())
}

#[async_trait]
impl ContactStore for SqliteStore {
    async fn contact_policy(&self, aci: Aci) -> StoreResult<Option<ContactPolicy>> {
        let mut conn = self.reader.acquire().await.map_err(db)?;
        policy_of(&mut conn, aci).await
    }

    async fn set_contact_policy(&self, aci: Aci, policy: ContactPolicy) -> StoreResult<bool> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db)?;
        if !accounts_stay(&mut tx, &[aci]).await? {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO contact_policies (aci, policy, introductions) VALUES (?,?,?)
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
                "DELETE FROM contact_invites WHERE owner = ?",
                "DELETE FROM contact_shortcodes WHERE owner = ?",
                "DELETE FROM contact_grants WHERE owner = ?",
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
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db)?;
        if !accounts_stay(&mut tx, &[invite.owner]).await?
            || !invite_only(&mut tx, invite.owner).await?
        {
            return Ok(CreateInvite::NotInviteOnly);
        }
        let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM contact_invites WHERE owner = ?")
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
            "INSERT INTO contact_invites ({INVITE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
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
        .bind(b.map(|b| b.credit_ms))
        .bind(b.map(|b| b.updated_at.as_millis()))
        .bind(b.map(|b| b.burst_start.as_millis()))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(CreateInvite::Created)
    }

    async fn contact_invites(&self, owner: Aci) -> StoreResult<Vec<ContactInvite>> {
        sqlx::query(&format!(
            "SELECT {INVITE_COLUMNS} FROM contact_invites WHERE owner = ? ORDER BY created_at, id"
        ))
        .bind(id(owner))
        .fetch_all(&self.reader)
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
            "SELECT {INVITE_COLUMNS} FROM contact_invites WHERE id = ? AND owner = ?"
        ))
        .bind(invite_id(invite))
        .bind(id(owner))
        .fetch_optional(&self.reader)
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
        let r = sqlx::query("DELETE FROM contact_invites WHERE id = ? AND owner = ?")
            .bind(invite_id(invite))
            .bind(id(owner))
            .execute(&self.writer)
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
            "UPDATE contact_invites SET code_hash = ? WHERE id = ? AND owner = ? RETURNING {INVITE_COLUMNS}"
        ))
        .bind(code_hash.to_vec())
        .bind(invite_id(invite))
        .bind(id(owner))
        .fetch_optional(&self.writer)
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
             WHERE id = ? AND owner = ?",
        )
        .bind(invite_id(invite))
        .bind(id(owner))
        .execute(&self.writer)
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
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db)?;
        let Some(invite) = sqlx::query(&format!(
            "SELECT {INVITE_COLUMNS} FROM contact_invites WHERE code_hash = ?"
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
                    "UPDATE contact_invites SET uses = uses + 1, bucket_credit_ms = ?, bucket_updated_at = ?,
                     burst_start = ? WHERE id = ?",
                )
                .bind(bucket.credit_ms)
                .bind(bucket.updated_at.as_millis())
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
                     WHERE owner = ? AND via_kind = 'invite' AND via_invite = ? AND created_at >= ? AND state = 'active'",
                )
                .bind(id(owner))
                .bind(invite_id(invite.id))
                .bind(since.as_millis())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                let quarantined: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM contact_grants
                     WHERE owner = ? AND via_kind = 'invite' AND via_invite = ? AND created_at >= ? AND state = 'quarantined'",
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
                    "UPDATE contact_invites SET paused_until = ?, flood_detected_at = ?, flood_since = ?,
                     flood_quarantined = ? WHERE id = ?",
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
        let mut conn = self.reader.acquire().await.map_err(db)?;
        grant_of(&mut conn, owner, grantee).await
    }

    async fn contact_grants(&self, owner: Aci) -> StoreResult<Vec<Grant>> {
        sqlx::query("SELECT * FROM contact_grants WHERE owner = ? ORDER BY created_at, grantee")
            .bind(id(owner))
            .fetch_all(&self.reader)
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
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db)?;
        if !invite_only(&mut tx, owner).await? {
            return Ok(false);
        }
        let grants: Vec<Grant> = sqlx::query("SELECT * FROM contact_grants WHERE owner = ?")
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
            for grantee in list {
                sqlx::query("UPDATE contact_grants SET state = ? WHERE owner = ? AND grantee = ?")
                    .bind(state.as_str())
                    .bind(id(owner))
                    .bind(id(*grantee))
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
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
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db)?;
        if !accounts_stay(&mut tx, &[owner, grantee]).await? || !invite_only(&mut tx, owner).await?
        {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO contact_grants (owner, grantee, state, via_kind, created_at) VALUES (?,?,?,'direct',?)
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
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db)?;
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
