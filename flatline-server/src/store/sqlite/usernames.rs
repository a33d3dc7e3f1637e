//! Usernames on SQLite. Each writing method is one transaction on the single writer connection: it loads the
//! account's [`UsernameView`] (account columns, holds, and the claims it owns or names), runs the core's rule and
//! writes the changes back, so the rules are the same as every other backend's and atomic.

use async_trait::async_trait;
use flatline_core::ids::Aci;
use flatline_core::store::{StoreError, StoreResult};
use flatline_core::time::Timestamp;
use flatline_core::usernames::{
    AccountUsernameState, ClaimKind, ConfirmOutcome, LinkOutcome, ReserveOutcome, UsernameClaim,
    UsernameHold, UsernameStore, UsernameView,
};
use sqlx::sqlite::SqliteRow;
use sqlx::{Sqlite, SqliteConnection, Transaction};
use uuid::Uuid;

use super::{SqliteStore, db, get, uuid_of};

fn claim_from_row(row: &SqliteRow) -> StoreResult<UsernameClaim> {
    let kind: String = get(row, "kind")?;
    let expires: Option<i64> = get(row, "expires_at")?;
    Ok(UsernameClaim {
        hash: get(row, "hash")?,
        owner: Aci(uuid_of(get(row, "aci")?)?),
        kind: ClaimKind::parse(&kind)
            .ok_or_else(|| StoreError::corrupt(format!("username claim kind {kind}")))?,
        expires_at: expires.map(Timestamp),
    })
}

async fn holds_of(conn: &mut SqliteConnection, aci: &[u8]) -> StoreResult<Vec<UsernameHold>> {
    sqlx::query("SELECT hash, expires_at FROM username_holds WHERE aci = ? ORDER BY position")
        .bind(aci)
        .fetch_all(conn)
        .await
        .map_err(db)?
        .iter()
        .map(|r| {
            Ok(UsernameHold {
                hash: get(r, "hash")?,
                expires_at: Timestamp(get(r, "expires_at")?),
            })
        })
        .collect()
}

/// Loads the view of `aci` (None when the account does not exist) with the claims it owns and those on `hashes`.
pub(super) async fn load_view(
    tx: &mut Transaction<'_, Sqlite>,
    aci: Aci,
    hashes: &[Vec<u8>],
) -> StoreResult<Option<UsernameView>> {
    let key = aci.as_bytes().to_vec();
    let Some(row) = sqlx::query(
        "SELECT username_hash, username_link_handle, reserved_username_hash, username_link_blob
         FROM accounts WHERE aci = ?",
    )
    .bind(&key)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db)?
    else {
        return Ok(None);
    };
    let handle: Option<Vec<u8>> = get(&row, "username_link_handle")?;
    let state = AccountUsernameState {
        reserved: get(&row, "reserved_username_hash")?,
        holds: holds_of(tx, &key).await?,
        link_blob: get(&row, "username_link_blob")?,
    };
    let mut claims = Vec::new();
    for r in sqlx::query("SELECT * FROM username_claims WHERE aci = ?")
        .bind(&key)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?
    {
        claims.push(claim_from_row(&r)?);
    }
    for h in hashes {
        if let Some(r) = sqlx::query("SELECT * FROM username_claims WHERE hash = ?")
            .bind(h)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?
        {
            claims.push(claim_from_row(&r)?);
        }
    }
    Ok(Some(UsernameView::new(
        aci,
        get(&row, "username_hash")?,
        handle.map(|h| uuid_of(&h)).transpose()?,
        state,
        claims,
    )))
}

/// Writes the view back: claims first (deletions before insertions, so a hash moving between rows never collides),
/// then the account columns and the holds.
pub(super) async fn store_view(
    tx: &mut Transaction<'_, Sqlite>,
    view: &UsernameView,
) -> StoreResult<()> {
    let key = view.aci.as_bytes().to_vec();
    let writes = view.claim_writes();
    for (hash, _) in writes.iter().filter(|(_, c)| c.is_none()) {
        sqlx::query("DELETE FROM username_claims WHERE hash = ?")
            .bind(hash)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
    }
    for c in writes.iter().filter_map(|(_, c)| c.as_ref()) {
        sqlx::query(
            "INSERT INTO username_claims (hash, aci, kind, expires_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (hash) DO UPDATE SET aci = excluded.aci, kind = excluded.kind, expires_at = excluded.expires_at",
        )
        .bind(&c.hash)
        .bind(c.owner.as_bytes().to_vec())
        .bind(c.kind.as_str())
        .bind(c.expires_at.map(Timestamp::as_millis))
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    }
    sqlx::query(
        "UPDATE accounts SET username_hash = ?, username_link_handle = ?, reserved_username_hash = ?,
         username_link_blob = ? WHERE aci = ?",
    )
    .bind(&view.username_hash)
    .bind(view.link_handle.map(|h| h.as_bytes().to_vec()))
    .bind(&view.state.reserved)
    .bind(&view.state.link_blob)
    .bind(&key)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    sqlx::query("DELETE FROM username_holds WHERE aci = ?")
        .bind(&key)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    for (position, hold) in view.state.holds.iter().enumerate() {
        sqlx::query(
            "INSERT INTO username_holds (aci, position, hash, expires_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&key)
        .bind(i64::try_from(position).unwrap_or(i64::MAX))
        .bind(&hold.hash)
        .bind(hold.expires_at.as_millis())
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    }
    Ok(())
}

impl SqliteStore {
    /// One transaction: load the view, apply `f`, store the view. `None` when the account does not exist.
    async fn with_view<R: Send>(
        &self,
        aci: Aci,
        hashes: &[Vec<u8>],
        f: impl FnOnce(&mut UsernameView) -> R + Send,
    ) -> StoreResult<Option<R>> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db)?;
        let Some(mut view) = load_view(&mut tx, aci, hashes).await? else {
            return Ok(None);
        };
        let result = f(&mut view);
        store_view(&mut tx, &view).await?;
        tx.commit().await.map_err(db)?;
        Ok(Some(result))
    }
}

#[async_trait]
impl UsernameStore for SqliteStore {
    async fn reserve_username_hash(
        &self,
        aci: Aci,
        hashes: &[Vec<u8>],
        now: Timestamp,
    ) -> StoreResult<ReserveOutcome> {
        Ok(self
            .with_view(aci, hashes, |v| v.reserve(hashes, now))
            .await?
            .unwrap_or(ReserveOutcome::NoAccount))
    }

    async fn confirm_username_hash(
        &self,
        aci: Aci,
        hash: &[u8],
        encrypted_username: Option<&[u8]>,
        new_link_handle: Uuid,
        now: Timestamp,
    ) -> StoreResult<ConfirmOutcome> {
        Ok(self
            .with_view(aci, &[hash.to_vec()], |v| {
                v.confirm(hash, encrypted_username, new_link_handle, now)
            })
            .await?
            .unwrap_or(ConfirmOutcome::NoAccount))
    }

    async fn clear_username_hash(&self, aci: Aci, now: Timestamp) -> StoreResult<bool> {
        Ok(self
            .with_view(aci, &[], |v| v.clear(now))
            .await?
            .unwrap_or(false))
    }

    async fn account_by_username_hash(&self, hash: &[u8]) -> StoreResult<Option<Aci>> {
        let owner: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT aci FROM username_claims WHERE hash = ? AND kind = 'confirmed'",
        )
        .bind(hash)
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        owner.map(|o| uuid_of(&o).map(Aci)).transpose()
    }

    async fn set_username_link(
        &self,
        aci: Aci,
        encrypted_username: &[u8],
        keep_handle: bool,
        new_handle: Uuid,
    ) -> StoreResult<LinkOutcome> {
        Ok(self
            .with_view(aci, &[], |v| {
                v.set_link(encrypted_username, keep_handle, new_handle)
            })
            .await?
            .unwrap_or(LinkOutcome::NoAccount))
    }

    async fn clear_username_link(&self, aci: Aci) -> StoreResult<bool> {
        Ok(self
            .with_view(aci, &[], |v| v.clear_link())
            .await?
            .is_some())
    }

    async fn username_link(&self, handle: Uuid) -> StoreResult<Option<Vec<u8>>> {
        let blob: Option<Option<Vec<u8>>> = sqlx::query_scalar(
            "SELECT username_link_blob FROM accounts WHERE username_link_handle = ?",
        )
        .bind(handle.as_bytes().to_vec())
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        Ok(blob.flatten())
    }

    async fn hold_username_for_reclaim(&self, aci: Aci, now: Timestamp) -> StoreResult<bool> {
        Ok(self
            .with_view(aci, &[], |v| v.hold_for_reclaim(now))
            .await?
            .unwrap_or(false))
    }

    async fn username_claim(&self, hash: &[u8]) -> StoreResult<Option<UsernameClaim>> {
        sqlx::query("SELECT * FROM username_claims WHERE hash = ?")
            .bind(hash)
            .fetch_optional(&self.reader)
            .await
            .map_err(db)?
            .as_ref()
            .map(claim_from_row)
            .transpose()
    }

    async fn username_claims_of(&self, aci: Aci) -> StoreResult<Vec<UsernameClaim>> {
        sqlx::query("SELECT * FROM username_claims WHERE aci = ? ORDER BY hash")
            .bind(aci.as_bytes().to_vec())
            .fetch_all(&self.reader)
            .await
            .map_err(db)?
            .iter()
            .map(claim_from_row)
            .collect()
    }

    async fn account_username_state(&self, aci: Aci) -> StoreResult<Option<AccountUsernameState>> {
        let key = aci.as_bytes().to_vec();
        let mut conn = self.reader.acquire().await.map_err(db)?;
        let Some(row) = sqlx::query(
            "SELECT reserved_username_hash, username_link_blob FROM accounts WHERE aci = ?",
        )
        .bind(&key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?
        else {
            return Ok(None);
        };
        Ok(Some(AccountUsernameState {
            reserved: get(&row, "reserved_username_hash")?,
            holds: holds_of(&mut conn, &key).await?,
            link_blob: get(&row, "username_link_blob")?,
        }))
    }
}
