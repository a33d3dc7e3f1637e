//! Contact policies, invites and grants on PostgreSQL: [`crate::store::shared::contacts`].

// The shared body imports the rest (`Aci`, `GrantState`, `Transaction`, `db`, `id`...).
use sqlx::Postgres;

crate::store::shared::contacts::contact_store!(super::PgStore);

/// Sets the state of `owner`'s grants to `grantees` in one statement, the grantees bound as one array.
async fn set_grant_states(
    tx: &mut Transaction<'_, Postgres>,
    owner: Aci,
    grantees: &[Aci],
    state: GrantState,
) -> StoreResult<()> {
    let grantees: Vec<Vec<u8>> = grantees.iter().map(|a| id(*a)).collect();
    sqlx::query(
        "UPDATE contact_grants SET state = $1 WHERE owner = $2 AND grantee = ANY($3::bytea[])",
    )
    .bind(state.as_str())
    .bind(id(owner))
    .bind(grantees)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}
