//! SQLite: registration invites, redemptions and suspensions.

use async_trait::async_trait;
use flatline_core::ids::Aci;
use flatline_core::invites::{
    CodeHash, CreateOutcome, Invite, InviteFilter, InviteId, InviteOwner, InviteState, InviteStore,
    NewInvite, OwnerLimits, Redemption,
};
use flatline_core::store::{StoreError, StoreResult};
use flatline_core::time::Timestamp;
use sqlx::sqlite::SqliteRow;
use sqlx::{Sqlite, SqliteConnection, Transaction};

use super::{SqliteStore, db, get, uuid_of};

/// Reservations are the live sessions holding the invite.
const SELECT_INVITE: &str = "SELECT i.*, (SELECT COUNT(*) FROM verification_sessions s
     WHERE s.reserved_invite = i.id AND s.expires_at > ?1) AS pending,
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

fn invite_from_row(r: &SqliteRow) -> StoreResult<(Invite, bool)> {
    let hash: Vec<u8> = get(r, "code_hash")?;
    let invite = Invite {
        id: InviteId(uuid_of(get(r, "id")?)?),
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
    conn: &mut SqliteConnection,
    clause: &str,
    key: Vec<u8>,
    now: Timestamp,
) -> StoreResult<Option<(Invite, bool)>> {
    sqlx::query(&format!("{SELECT_INVITE} WHERE {clause} = ?2"))
        .bind(now.as_millis())
        .bind(key)
        .fetch_optional(conn)
        .await
        .map_err(db)?
        .as_ref()
        .map(invite_from_row)
        .transpose()
}

/// The invite behind `code` if one more use can be reserved at `now` (inside the caller's write transaction).
pub(super) async fn reservable(
    tx: &mut Transaction<'_, Sqlite>,
    code: &CodeHash,
    now: Timestamp,
) -> StoreResult<Option<InviteId>> {
    let found = find(tx, "i.code_hash", code.0.to_vec(), now).await?;
    Ok(found
        .filter(|(i, suspended)| i.state(now, *suspended) == InviteState::Active)
        .map(|(i, _)| i.id))
}

/// Whether a reserved use of `id` may still be consumed at `now`: not revoked, not expired, owner not suspended.
pub(super) async fn still_usable(
    tx: &mut Transaction<'_, Sqlite>,
    id: InviteId,
    now: Timestamp,
) -> StoreResult<bool> {
    Ok(find(tx, "i.id", id.0.as_bytes().to_vec(), now)
        .await?
        .is_some_and(|(i, suspended)| {
            i.revoked_at.is_none()
                && i.expires_at.is_none_or(|e| e > now)
                && !suspended
                && i.uses < i.max_uses
        }))
}

/// Turns a reservation into a use and logs the redemption (inside registration's transaction). False, with nothing
/// written, when the invite has no use left (a stale `now` must not push `uses` past `max_uses`, F-09); the caller
/// then rolls the registration back.
pub(super) async fn consume(
    tx: &mut Transaction<'_, Sqlite>,
    id: InviteId,
    invitee: Aci,
    now: Timestamp,
) -> StoreResult<bool> {
    let owner: Option<Option<Vec<u8>>> = sqlx::query_scalar(
        "UPDATE invites SET uses = uses + 1, last_used_at = ? WHERE id = ? AND uses < max_uses RETURNING owner",
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
        "INSERT INTO invite_redemptions (invite_id, inviter, invitee, at) VALUES (?,?,?,?)",
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

/// Revokes every unrevoked invite of `owner`.
pub(super) async fn revoke_all_of(
    tx: &mut Transaction<'_, Sqlite>,
    owner: Aci,
    now: Timestamp,
) -> StoreResult<u64> {
    Ok(
        sqlx::query("UPDATE invites SET revoked_at = ? WHERE owner = ? AND revoked_at IS NULL")
            .bind(now.as_millis())
            .bind(owner.as_bytes().to_vec())
            .execute(&mut **tx)
            .await
            .map_err(db)?
            .rows_affected(),
    )
}

fn redemption_from_row(r: &SqliteRow) -> StoreResult<Redemption> {
    Ok(Redemption {
        invite: InviteId(uuid_of(get(r, "invite_id")?)?),
        inviter: owner_of(get(r, "inviter")?)?,
        invitee: Aci(uuid_of(get(r, "invitee")?)?),
        at: Timestamp(get(r, "at")?),
    })
}

const INSERT_INVITE: &str = "INSERT INTO invites (id, code_hash, owner, max_uses, created_at, expires_at, note) VALUES (?,?,?,?,?,?,?)";

async fn insert(conn: &mut SqliteConnection, i: &NewInvite) -> StoreResult<()> {
    sqlx::query(INSERT_INVITE)
        .bind(i.id.0.as_bytes().to_vec())
        .bind(i.code_hash.0.to_vec())
        .bind(owner_bytes(i.owner))
        .bind(i64::from(i.max_uses))
        .bind(i.created_at.as_millis())
        .bind(i.expires_at.map(Timestamp::as_millis))
        .bind(&i.note)
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(())
}

#[async_trait]
impl InviteStore for SqliteStore {
    async fn create_invite_within(
        &self,
        new: &NewInvite,
        limits: OwnerLimits,
    ) -> StoreResult<CreateOutcome> {
        let now = new.created_at;
        // Count and insert in one write transaction: the writer connection serializes this against every other
        // write, so two concurrent creations cannot both see the last free slot.
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db)?;
        if let InviteOwner::Account(owner) = new.owner {
            let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM accounts WHERE aci = ?")
                .bind(owner.as_bytes().to_vec())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            if exists.is_none() {
                return Ok(CreateOutcome::OwnerGone);
            }
        }
        let rows = sqlx::query(&format!(
            "{SELECT_INVITE} WHERE i.owner IS ?2 AND i.owner IS NOT NULL"
        ))
        .bind(now.as_millis())
        .bind(owner_bytes(new.owner))
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
        let outcome = if created >= limits.max_created {
            CreateOutcome::QuotaSpent
        } else if open >= limits.max_open {
            CreateOutcome::TooManyOpen
        } else {
            insert(&mut tx, new).await?;
            CreateOutcome::Created
        };
        tx.commit().await.map_err(db)?;
        Ok(outcome)
    }

    async fn create_invite(&self, i: &NewInvite) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO invites (id, code_hash, owner, max_uses, created_at, expires_at, note) VALUES (?,?,?,?,?,?,?)",
        )
        .bind(i.id.0.as_bytes().to_vec())
        .bind(i.code_hash.0.to_vec())
        .bind(owner_bytes(i.owner))
        .bind(i64::from(i.max_uses))
        .bind(i.created_at.as_millis())
        .bind(i.expires_at.map(Timestamp::as_millis))
        .bind(&i.note)
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn invite(&self, id: InviteId, now: Timestamp) -> StoreResult<Option<Invite>> {
        let mut conn = self.reader.acquire().await.map_err(db)?;
        Ok(find(&mut conn, "i.id", id.0.as_bytes().to_vec(), now)
            .await?
            .map(|(i, _)| i))
    }

    async fn invite_by_code(&self, hash: &CodeHash, now: Timestamp) -> StoreResult<Option<Invite>> {
        let mut conn = self.reader.acquire().await.map_err(db)?;
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
            Some(InviteOwner::Account(a)) => ("WHERE i.owner = ?2", Some(a.as_bytes().to_vec())),
        };
        let sql = format!("{SELECT_INVITE} {clause} ORDER BY i.created_at DESC, i.id DESC");
        let mut query = sqlx::query(&sql).bind(now.as_millis());
        if let Some(owner) = owner {
            query = query.bind(owner);
        }
        let rows = query.fetch_all(&self.reader).await.map_err(db)?;
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
            sqlx::query("UPDATE invites SET revoked_at = ? WHERE id = ?")
                .bind(revoked_at.map(Timestamp::as_millis))
                .bind(id.0.as_bytes().to_vec())
                .execute(&self.writer)
                .await
                .map_err(db)?
                .rows_affected()
                == 1,
        )
    }

    async fn revoke_all_of(&self, owner: Aci, now: Timestamp) -> StoreResult<u64> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db)?;
        let n = revoke_all_of(&mut tx, owner, now).await?;
        tx.commit().await.map_err(db)?;
        Ok(n)
    }

    async fn set_suspended(&self, aci: Aci, suspended: bool, now: Timestamp) -> StoreResult<()> {
        let q = if suspended {
            sqlx::query("INSERT INTO account_suspensions (aci, suspended_at) VALUES (?, ?) ON CONFLICT (aci) DO NOTHING")
                .bind(aci.as_bytes().to_vec())
                .bind(now.as_millis())
        } else {
            sqlx::query("DELETE FROM account_suspensions WHERE aci = ?")
                .bind(aci.as_bytes().to_vec())
        };
        q.execute(&self.writer).await.map_err(db)?;
        Ok(())
    }

    async fn is_suspended(&self, aci: Aci) -> StoreResult<bool> {
        Ok(
            sqlx::query("SELECT 1 FROM account_suspensions WHERE aci = ?")
                .bind(aci.as_bytes().to_vec())
                .fetch_optional(&self.reader)
                .await
                .map_err(db)?
                .is_some(),
        )
    }

    async fn redemption_of(&self, invitee: Aci) -> StoreResult<Option<Redemption>> {
        sqlx::query("SELECT * FROM invite_redemptions WHERE invitee = ? ORDER BY at LIMIT 1")
            .bind(invitee.as_bytes().to_vec())
            .fetch_optional(&self.reader)
            .await
            .map_err(db)?
            .as_ref()
            .map(redemption_from_row)
            .transpose()
    }

    async fn redemptions_by(&self, owner: InviteOwner) -> StoreResult<Vec<Redemption>> {
        let q = match owner {
            InviteOwner::Operator => sqlx::query(
                "SELECT * FROM invite_redemptions WHERE inviter IS NULL ORDER BY at, rowid",
            ),
            InviteOwner::Account(a) => {
                sqlx::query("SELECT * FROM invite_redemptions WHERE inviter = ? ORDER BY at, rowid")
                    .bind(a.as_bytes().to_vec())
            }
        };
        q.fetch_all(&self.reader)
            .await
            .map_err(db)?
            .iter()
            .map(redemption_from_row)
            .collect()
    }
}
