//! Contact shortcodes in SQLite. Every writing method is one transaction on the single writer (so creations pick
//! nameplates one at a time and attempts on one code apply one after the other), deciding with the pure rules of
//! `flatline_core::shortcodes` on rows read inside that transaction; a right guess creates its grant with the
//! contact graph's own helpers in the same transaction.

use async_trait::async_trait;
use flatline_core::contacts::{self, FloodConfig, Grant, Via};
use flatline_core::ids::Aci;
use flatline_core::shortcodes::{
    self, AttemptPlan, ContactShortcode, CreateShortcode, SALT_BYTES, Shortcode, ShortcodeId,
    ShortcodeRedemption, ShortcodeStatus, ShortcodeStore,
};
use flatline_core::store::{StoreError, StoreResult};
use flatline_core::time::Timestamp;
use sqlx::SqliteConnection;
use sqlx::sqlite::SqliteRow;

use super::contacts::{accounts_exist, grant_of, insert_grant, invite_only, recent};
use super::{SqliteStore, db, get, uuid_of};

const COLUMNS: &str =
    "id, owner, nameplate, salt, mac, failed_guesses, status, created_at, expires_at";

fn code_id(i: ShortcodeId) -> Vec<u8> {
    i.0.as_bytes().to_vec()
}

fn small(v: i64, what: &str) -> StoreResult<u32> {
    u32::try_from(v).map_err(|_| StoreError::corrupt(format!("shortcode {what} out of range")))
}

fn code_from_row(r: &SqliteRow) -> StoreResult<ContactShortcode> {
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

/// The code holding `nameplate` at `now` (at most one: see the migration).
async fn holder(
    conn: &mut SqliteConnection,
    nameplate: u32,
    now: Timestamp,
) -> StoreResult<Option<ContactShortcode>> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM contact_shortcodes WHERE nameplate = ? AND expires_at > ?
         ORDER BY created_at DESC LIMIT 1"
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
    conn: &mut SqliteConnection,
    id: ShortcodeId,
    status: ShortcodeStatus,
    failed_guesses: u32,
) -> StoreResult<()> {
    sqlx::query("UPDATE contact_shortcodes SET status = ?, failed_guesses = ? WHERE id = ?")
        .bind(status.as_str())
        .bind(i64::from(failed_guesses))
        .bind(code_id(id))
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(())
}

#[async_trait]
impl ShortcodeStore for SqliteStore {
    async fn create_contact_shortcode(
        &self,
        code: &ContactShortcode,
        now: Timestamp,
        max_live: u32,
        history: u32,
    ) -> StoreResult<CreateShortcode> {
        let mut tx = self.writer.begin().await.map_err(db)?;
        let owner = code.owner.as_bytes().to_vec();
        if !accounts_exist(&mut tx, &[code.owner]).await?
            || !invite_only(&mut tx, code.owner).await?
        {
            return Ok(CreateShortcode::NotInviteOnly);
        }
        let live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM contact_shortcodes WHERE owner = ? AND status = 'live' AND expires_at > ?",
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
            sqlx::query_scalar("SELECT nameplate FROM contact_shortcodes WHERE expires_at > ?")
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
            "DELETE FROM contact_shortcodes WHERE owner = ?1 AND expires_at <= ?2 AND id NOT IN
             (SELECT id FROM contact_shortcodes WHERE owner = ?1 AND expires_at <= ?2
              ORDER BY created_at DESC, id DESC LIMIT ?3)",
        )
        .bind(&owner)
        .bind(now.as_millis())
        .bind(i64::from(history))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(&format!(
            "INSERT INTO contact_shortcodes ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)"
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
            "SELECT {COLUMNS} FROM contact_shortcodes WHERE owner = ? ORDER BY created_at, id"
        ))
        .bind(owner.as_bytes().to_vec())
        .fetch_all(&self.reader)
        .await
        .map_err(db)?
        .iter()
        .map(code_from_row)
        .collect()
    }

    async fn revoke_contact_shortcode(&self, owner: Aci, id: ShortcodeId) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE contact_shortcodes SET status = CASE status WHEN 'live' THEN 'revoked' ELSE status END
             WHERE id = ? AND owner = ?",
        )
        .bind(code_id(id))
        .bind(owner.as_bytes().to_vec())
        .execute(&self.writer)
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
        let mut tx = self.writer.begin().await.map_err(db)?;
        if !accounts_exist(&mut tx, &[redeemer]).await? {
            return Ok(ShortcodeRedemption::Invalid);
        }
        let code = holder(&mut tx, guess.nameplate(), now).await?;
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
