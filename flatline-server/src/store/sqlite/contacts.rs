//! Contact policies, invites and grants on SQLite: [`crate::store::shared::contacts`].

// The shared body imports the rest (`Aci`, `GrantState`, `Transaction`, `db`, `id`...).
use sqlx::Sqlite;

crate::store::shared::contacts::contact_store!(super::SqliteStore);

/// Sets the state of `owner`'s grants to `grantees`, one statement each (SQLite binds no arrays).
async fn set_grant_states(
    tx: &mut Transaction<'_, Sqlite>,
    owner: Aci,
    grantees: &[Aci],
    state: GrantState,
) -> StoreResult<()> {
    for grantee in grantees {
        sqlx::query("UPDATE contact_grants SET state = $1 WHERE owner = $2 AND grantee = $3")
            .bind(state.as_str())
            .bind(id(owner))
            .bind(id(*grantee))
            .execute(&mut **tx)
            .await
            .map_err(db)?;
    }
    Ok(())
}
