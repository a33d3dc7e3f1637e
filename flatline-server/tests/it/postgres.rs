//! The PostgreSQL store passes the store conformance suite, its migrations behave (also when several processes
//! start at once), and two stores with separate pools, standing in for two server processes, keep every invariant
//! when they race on one database.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use flatline_core::ids::{Aci, DeviceId, ServiceId};
use flatline_core::keys::{KeyCounts, KeyUpload};
use flatline_core::ratelimit::{Admission, BucketConfig};
use flatline_core::store::{AccountStore, Conflict, KeyStore, RateLimitStore, Store, StoreError};
use flatline_core::time::Timestamp;
use flatline_server::config::DatabaseConfig;
use flatline_server::store::postgres::{MIGRATIONS, PgStore, PoolSettings};
use flatline_testkit::SeededRng;
use flatline_testkit::fixtures::{fake_ec, fake_kem, new_account};
use sqlx::postgres::PgConnectOptions;

use crate::support::{pg_schema, pg_store, pg_test_settings, pg_url};

async fn fresh() -> Arc<dyn Store> {
    pg_store().await
}

flatline_testkit::conformance_suite!(fresh);

const T0: Timestamp = Timestamp(1_767_225_600_000);

/// `n` stores on one fresh schema, each with its own pool (as separate processes would have), migrated.
async fn stores_sharing_one_schema(n: usize) -> (PgConnectOptions, Vec<Arc<PgStore>>) {
    let options = pg_schema().await;
    let mut stores = vec![];
    for _ in 0..n {
        stores.push(Arc::new(
            PgStore::connect_with(options.clone(), &pg_test_settings())
                .await
                .unwrap(),
        ));
    }
    stores[0].migrate().await.unwrap();
    (options, stores)
}

#[tokio::test]
async fn migrations_are_idempotent_and_refuse_newer_schemas() {
    let store = PgStore::connect_with(pg_schema().await, &pg_test_settings())
        .await
        .unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 0);
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    let newest = MIGRATIONS.last().map(|m| m.version).unwrap();
    assert_eq!(store.schema_version().await.unwrap(), newest);

    // A database touched by a newer server is refused rather than misread.
    sqlx::query(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, 'future', 0)",
    )
    .bind(newest + 1)
    .execute(store.pool())
    .await
    .unwrap();
    let err = store.migrate().await.unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
}

/// Processes starting together on an empty database: every one succeeds and each migration is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_apply_once() {
    let options = pg_schema().await;
    let mut stores = vec![];
    for _ in 0..4 {
        stores.push(
            PgStore::connect_with(options.clone(), &pg_test_settings())
                .await
                .unwrap(),
        );
    }
    let tasks: Vec<_> = stores
        .iter()
        .cloned()
        .map(|s| tokio::spawn(async move { s.migrate().await }))
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(stores[0].pool())
            .await
            .unwrap();
    let want: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(applied, want);
}

/// As many concurrent takers as keys, split over two processes: every taker gets a key (none comes back
/// empty-handed while keys remain), no key is handed out twice, and nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_take_each_key_once_and_miss_none() {
    let (_, stores) = stores_sharing_one_schema(2).await;
    let rng = SeededRng::new(11);
    let owner = ServiceId::Aci(Aci::random(&rng));
    let d = DeviceId::PRIMARY;
    const N: u32 = 200;
    let upload = KeyUpload {
        ec: Some((0..N).map(|i| fake_ec(&rng, i)).collect()),
        kem: Some((0..N).map(|i| fake_kem(&rng, i)).collect()),
        ..Default::default()
    };
    stores[0].store_keys(owner, d, &upload).await.unwrap();
    let tasks: Vec<_> = (0..N as usize)
        .map(|i| {
            let store = stores[i % 2].clone();
            tokio::spawn(async move { store.take_one_time_keys(owner, d).await })
        })
        .collect();
    let (mut ec, mut kem) = (vec![], vec![]);
    for t in tasks {
        let taken = t.await.unwrap().unwrap();
        ec.push(taken.ec.map(|k| k.key_id.get()));
        kem.push(taken.kem.map(|k| k.key_id.get()));
    }
    for (kind, ids) in [("ec", ec), ("kem", kem)] {
        let got: Vec<u32> = ids.iter().flatten().copied().collect();
        assert_eq!(got.len(), N as usize, "{kind}: a taker came back empty");
        assert_eq!(
            got.iter().collect::<HashSet<_>>().len(),
            N as usize,
            "{kind}: a key was handed out twice"
        );
    }
    for s in &stores {
        assert_eq!(s.key_counts(owner, d).await.unwrap(), KeyCounts::default());
    }
}

/// Two processes drawing from one bucket admit exactly its size between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_share_rate_limit_buckets() {
    let (_, stores) = stores_sharing_one_schema(2).await;
    let cfg = BucketConfig::new(25, Duration::from_secs(3600));
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let store = stores[i % 2].clone();
            tokio::spawn(async move { store.acquire("race::shared", &cfg, 1, T0).await })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        if t.await.unwrap().unwrap() == Admission::Allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 25);
    // Either process sees the drained bucket, with the same Retry-After.
    for s in &stores {
        assert_eq!(
            s.acquire("race::shared", &cfg, 1, T0).await.unwrap(),
            Admission::Denied {
                retry_after: Duration::from_secs(3600)
            }
        );
    }
}

/// Registrations of one principal racing in two processes: exactly one account, the others get a principal
/// conflict and leave no trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_racing_on_one_principal_create_one_account() {
    let (_, stores) = stores_sharing_one_schema(2).await;
    let rng = SeededRng::new(12);
    let attempts: Vec<_> = (0..20)
        .map(|_| new_account(&rng, "contested@example.org", "pw", T0))
        .collect();
    let tasks: Vec<_> = attempts
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, new)| {
            let store = stores[i % 2].clone();
            tokio::spawn(async move { store.create_account(new).await })
        })
        .collect();
    let mut winners = vec![];
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(()) => winners.push(i),
            Err(StoreError::Conflict(Conflict::Principal)) => {}
            Err(e) => panic!("attempt {i}: {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let winner = &attempts[winners[0]].account;
    let stored = stores[1]
        .account_by_principal(&winner.principal)
        .await
        .unwrap();
    assert_eq!(stored.as_ref(), Some(winner));
    for (i, a) in attempts
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != winners[0])
    {
        assert!(
            stores[0].account(a.account.aci).await.unwrap().is_none(),
            "{i}"
        );
        assert!(
            stores[0]
                .signed_pre_key(ServiceId::Aci(a.account.aci), DeviceId::PRIMARY)
                .await
                .unwrap()
                .is_none(),
            "{i}: keys written"
        );
    }
}

/// "Replace" uploads to one device racing in two processes: the result is exactly one upload's list, never a mix.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_racing_uploads_leave_one_whole_list() {
    let (_, stores) = stores_sharing_one_schema(2).await;
    let rng = SeededRng::new(13);
    let owner = ServiceId::Aci(Aci::random(&rng));
    let d = DeviceId::PRIMARY;
    let uploads: Vec<Vec<u32>> = (0..16u32)
        .map(|u| (u * 10..u * 10 + 10).collect())
        .collect();
    let tasks: Vec<_> = uploads
        .iter()
        .enumerate()
        .map(|(i, ids)| {
            let store = stores[i % 2].clone();
            let upload = KeyUpload {
                ec: Some(ids.iter().map(|id| fake_ec(&rng, *id)).collect()),
                kem: Some(ids.iter().map(|id| fake_kem(&rng, *id)).collect()),
                ..Default::default()
            };
            tokio::spawn(async move { store.store_keys(owner, d, &upload).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let ec: Vec<u32> = stores[0]
        .one_time_ec_keys(owner, d)
        .await
        .unwrap()
        .iter()
        .map(|k| k.key_id.get())
        .collect();
    assert!(uploads.contains(&ec), "mixed EC list: {ec:?}");
    assert_eq!(
        stores[1].key_counts(owner, d).await.unwrap(),
        KeyCounts { ec: 10, kem: 10 }
    );
}

/// `store::open` honours a `postgres://` URL and the pool settings, migrates, and never reveals the password.
#[tokio::test]
async fn open_from_config_applies_settings_and_hides_password() {
    let options = pg_schema().await;
    let schema = options
        .get_options()
        .and_then(|o| o.strip_prefix("-c search_path="))
        .unwrap()
        .to_owned();
    let base = pg_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let config = DatabaseConfig {
        url: format!("{base}{sep}options=-c%20search_path%3D{schema}"),
        max_connections: 2,
        statement_timeout_ms: 1234,
        ..DatabaseConfig::default()
    };
    let store = flatline_server::store::open(&config).await.unwrap();
    // Migrated: the store works.
    let cfg = BucketConfig::new(1, Duration::from_secs(1));
    assert_eq!(
        store.acquire("open::k", &cfg, 1, T0).await.unwrap(),
        Admission::Allowed
    );
    // Every pooled connection carries the statement timeout.
    let direct = PgStore::open(&config.url, &PoolSettings::from(&config))
        .await
        .unwrap();
    let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(direct.pool())
        .await
        .unwrap();
    assert_eq!(timeout, "1234ms");
    assert_eq!(
        direct.schema_version().await.unwrap(),
        MIGRATIONS.last().unwrap().version
    );

    // An unreachable server: the error names the database without its password.
    let config = DatabaseConfig {
        url: "postgres://flatline:sup3rsecret@127.0.0.1:1/flatline".into(),
        acquire_timeout_seconds: 1,
        ..DatabaseConfig::default()
    };
    let err = flatline_server::store::open(&config)
        .await
        .err()
        .expect("port 1 refuses");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("sup3rsecret"), "{text}");
    assert!(text.contains("flatline:***@127.0.0.1:1"), "{text}");
}
