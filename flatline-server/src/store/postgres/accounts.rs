//! Accounts and devices on PostgreSQL: [`crate::store::shared::accounts`], with the accounts read to authenticate
//! requests answered from the cache ([`super::auth_cache`]) and a multi-recipient lookup in one query.

use flatline_core::store::AuthAccount;

crate::store::shared::accounts::account_store!(super::PgStore, {
    async fn account_for_auth(&self, aci: Aci) -> StoreResult<Option<AuthAccount>> {
        if let Some(account) = self.auth_cache.get(aci) {
            return Ok(Some(AuthAccount {
                account,
                cached: true,
            }));
        }
        let epoch = self.auth_cache.epoch();
        let loaded = self.account(aci).await?;
        if let Some(account) = &loaded {
            self.auth_cache.put(epoch, account);
        }
        Ok(loaded.map(|account| AuthAccount {
            account,
            cached: false,
        }))
    }

    async fn accounts_of(&self, ids: &[ServiceId]) -> StoreResult<Vec<Option<Account>>> {
        // One query for all (a multi-recipient send names up to thousands), grouped back per account.
        let (mut acis, mut pnis) = (vec![], vec![]);
        for id in ids {
            match id {
                ServiceId::Aci(a) => acis.push(a.as_bytes().to_vec()),
                ServiceId::Pni(p) => pnis.push(p.as_bytes().to_vec()),
            }
        }
        let rows = sqlx::query(&format!(
            "{ACCOUNT_SELECT} WHERE a.aci = ANY($1) OR a.pni = ANY($2) ORDER BY a.aci, d.device_id"
        ))
        .bind(acis)
        .bind(pnis)
        .fetch_all(self.reader())
        .await
        .map_err(db)?;
        let mut accounts: Vec<Account> = vec![];
        for group in
            rows.chunk_by(|a, b| get::<Vec<u8>>(a, "aci").ok() == get::<Vec<u8>>(b, "aci").ok())
        {
            if let Some(first) = group.first() {
                accounts.push(account_from_rows(first, group)?);
            }
        }
        Ok(ids
            .iter()
            .map(|id| {
                accounts
                    .iter()
                    .find(|a| match id {
                        ServiceId::Aci(aci) => a.aci == *aci,
                        ServiceId::Pni(pni) => a.pni == *pni,
                    })
                    .cloned()
            })
            .collect())
    }
});
