//! Usernames on both dialects. Each writing method is one transaction: it loads the account's [`UsernameView`]
//! (account columns, holds, and the claims it owns or names), runs the core's rule and writes the changes back, so
//! the rules are exactly those of every other backend. On SQLite the single writer makes that atomic. On
//! PostgreSQL the load first locks the account row and takes an advisory lock per username hash the rule may touch
//! (in a fixed order, so two accounts racing for overlapping hashes cannot deadlock), so a hash is decided by one
//! transaction at a time across processes.
//!
//! [`UsernameView`]: flatline_core::usernames::UsernameView

/// Implements [`flatline_core::usernames::UsernameStore`] for `$store` (see [the module docs](super)).
macro_rules! username_store {
    ($store:ty) => {
        use async_trait::async_trait;
        use flatline_core::ids::Aci;
        use flatline_core::store::{StoreError, StoreResult};
        use flatline_core::time::Timestamp;
        use flatline_core::usernames::{
            AccountUsernameState, ClaimKind, ConfirmOutcome, LinkOutcome, ReserveOutcome, UsernameClaim,
            UsernameHold, UsernameStore, UsernameView,
        };
        use sqlx::Transaction;
        use uuid::Uuid;

        use super::{db, get, uuid_of};
        use $crate::store::shared::{Dialect, lock_key};

        type Db = <$store as Dialect>::Db;
        type Conn = <Db as sqlx::Database>::Connection;
        type Row = <Db as sqlx::Database>::Row;

        /// Advisory lock class for one username hash, held while a claim on it is decided: "funm".
        const USERNAME_LOCK_CLASS: i32 = 0x6675_6e6d;

        fn claim_from_row(row: &Row) -> StoreResult<UsernameClaim> {
            let kind: String = get(row, "kind")?;
            let expires: Option<i64> = get(row, "expires_at")?;
            let owner: Vec<u8> = get(row, "aci")?;
            Ok(UsernameClaim {
                hash: get(row, "hash")?,
                owner: Aci(uuid_of(&owner)?),
                kind: ClaimKind::parse(&kind)
                    .ok_or_else(|| StoreError::corrupt(format!("username claim kind {kind}")))?,
                expires_at: expires.map(Timestamp),
            })
        }

        async fn holds_of(conn: &mut Conn, aci: &[u8]) -> StoreResult<Vec<UsernameHold>> {
            sqlx::query("SELECT hash, expires_at FROM username_holds WHERE aci = $1 ORDER BY position")
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

        /// Loads the view of `aci` (None when the account does not exist) with the claims it owns and those on
        /// `hashes`. On PostgreSQL it first locks the account row and every hash the account has a stake in or
        /// names in `hashes`, in a fixed order; the locks last until the caller's transaction ends.
        pub(super) async fn load_view(
            tx: &mut Transaction<'_, Db>,
            aci: Aci,
            hashes: &[Vec<u8>],
        ) -> StoreResult<Option<UsernameView>> {
            let key = aci.as_bytes().to_vec();
            let Some(row) = sqlx::query(&format!(
                "SELECT username_hash, username_link_handle, reserved_username_hash, username_link_blob
                 FROM accounts WHERE aci = $1{}",
                <$store as Dialect>::FOR_UPDATE
            ))
            .bind(&key)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?
            else {
                return Ok(None);
            };
            if !<$store as Dialect>::SERIALIZED {
                // Claims this account owns can only be added by its own transactions (serialized by the row lock
                // above), so this list is complete; another account may take over a lapsed one meanwhile, which
                // the re-read below sees.
                let mut stakes: Vec<Vec<u8>> = sqlx::query_scalar(
                    "SELECT hash FROM username_claims WHERE aci = $1
                     UNION SELECT hash FROM username_holds WHERE aci = $1",
                )
                .bind(&key)
                .fetch_all(&mut **tx)
                .await
                .map_err(db)?;
                stakes.extend(hashes.iter().cloned());
                stakes.extend(get::<Option<Vec<u8>>>(&row, "reserved_username_hash")?);
                stakes.extend(get::<Option<Vec<u8>>>(&row, "username_hash")?);
                let mut keys: Vec<i32> = stakes.iter().map(|h| lock_key(h)).collect();
                keys.sort_unstable();
                keys.dedup();
                for k in keys {
                    <$store as Dialect>::advisory_lock(tx, USERNAME_LOCK_CLASS, k).await?;
                }
            }
            let handle: Option<Vec<u8>> = get(&row, "username_link_handle")?;
            let state = AccountUsernameState {
                reserved: get(&row, "reserved_username_hash")?,
                holds: holds_of(&mut **tx, &key).await?,
                link_blob: get(&row, "username_link_blob")?,
            };
            let mut claims = Vec::new();
            for r in sqlx::query("SELECT * FROM username_claims WHERE aci = $1")
                .bind(&key)
                .fetch_all(&mut **tx)
                .await
                .map_err(db)?
            {
                claims.push(claim_from_row(&r)?);
            }
            for h in hashes {
                if let Some(r) = sqlx::query("SELECT * FROM username_claims WHERE hash = $1")
                    .bind(h)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(db)?
                {
                    let claim = claim_from_row(&r)?;
                    // Already loaded when this account owns it (the view expects each claim once).
                    if claim.owner != aci {
                        claims.push(claim);
                    }
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
            tx: &mut Transaction<'_, Db>,
            view: &UsernameView,
        ) -> StoreResult<()> {
            let key = view.aci.as_bytes().to_vec();
            let writes = view.claim_writes();
            for (hash, _) in writes.iter().filter(|(_, c)| c.is_none()) {
                sqlx::query("DELETE FROM username_claims WHERE hash = $1")
                    .bind(hash)
                    .execute(&mut **tx)
                    .await
                    .map_err(db)?;
            }
            for c in writes.iter().filter_map(|(_, c)| c.as_ref()) {
                sqlx::query(
                    "INSERT INTO username_claims (hash, aci, kind, expires_at) VALUES ($1, $2, $3, $4)
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
                "UPDATE accounts SET username_hash = $1, username_link_handle = $2, reserved_username_hash = $3,
                 username_link_blob = $4 WHERE aci = $5",
            )
            .bind(&view.username_hash)
            .bind(view.link_handle.map(|h| h.as_bytes().to_vec()))
            .bind(&view.state.reserved)
            .bind(&view.state.link_blob)
            .bind(&key)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
            sqlx::query("DELETE FROM username_holds WHERE aci = $1")
                .bind(&key)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
            for (position, hold) in view.state.holds.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO username_holds (aci, position, hash, expires_at) VALUES ($1, $2, $3, $4)",
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

        impl $store {
            /// One transaction: (lock and) load the view, apply `f`, store the view. `None` when the account does
            /// not exist.
            async fn with_view<R: Send>(
                &self,
                aci: Aci,
                hashes: &[Vec<u8>],
                f: impl FnOnce(&mut UsernameView) -> R + Send,
            ) -> StoreResult<Option<R>> {
                let mut tx = self.begin_write().await?;
                let Some(mut view) = load_view(&mut tx, aci, hashes).await? else {
                    return Ok(None);
                };
                let result = f(&mut view);
                store_view(&mut tx, &view).await?;
                tx.commit().await.map_err(db)?;
                self.account_changed(aci);
                Ok(Some(result))
            }
        }

        #[async_trait]
        impl UsernameStore for $store {
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
                    "SELECT aci FROM username_claims WHERE hash = $1 AND kind = 'confirmed'",
                )
                .bind(hash)
                .fetch_optional(self.reader())
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
                    "SELECT username_link_blob FROM accounts WHERE username_link_handle = $1",
                )
                .bind(handle.as_bytes().to_vec())
                .fetch_optional(self.reader())
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
                sqlx::query("SELECT * FROM username_claims WHERE hash = $1")
                    .bind(hash)
                    .fetch_optional(self.reader())
                    .await
                    .map_err(db)?
                    .as_ref()
                    .map(claim_from_row)
                    .transpose()
            }

            async fn username_claims_of(&self, aci: Aci) -> StoreResult<Vec<UsernameClaim>> {
                sqlx::query("SELECT * FROM username_claims WHERE aci = $1 ORDER BY hash")
                    .bind(aci.as_bytes().to_vec())
                    .fetch_all(self.reader())
                    .await
                    .map_err(db)?
                    .iter()
                    .map(claim_from_row)
                    .collect()
            }

            async fn account_username_state(&self, aci: Aci) -> StoreResult<Option<AccountUsernameState>> {
                let key = aci.as_bytes().to_vec();
                // One transaction so the account columns and the holds come from one consistent read.
                let mut tx = self.begin_snapshot().await?;
                let Some(row) = sqlx::query(
                    "SELECT reserved_username_hash, username_link_blob FROM accounts WHERE aci = $1",
                )
                .bind(&key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
                else {
                    return Ok(None);
                };
                let state = AccountUsernameState {
                    reserved: get(&row, "reserved_username_hash")?,
                    holds: holds_of(&mut *tx, &key).await?,
                    link_blob: get(&row, "username_link_blob")?,
                };
                tx.commit().await.map_err(db)?;
                Ok(Some(state))
            }
        }
    };
}
pub(crate) use username_store;
