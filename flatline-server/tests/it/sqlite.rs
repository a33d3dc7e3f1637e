//! The SQLite store passes the store conformance suite, and its migrations behave.

use std::sync::Arc;

use flatline_core::store::Store;
use flatline_server::store::sqlite::{MIGRATIONS, SqliteStore};

use crate::support::{sqlite_store, sqlite_url};

async fn fresh() -> Arc<dyn Store> {
    sqlite_store().await
}

flatline_testkit::conformance_suite!(fresh);

#[tokio::test]
async fn migrations_are_idempotent_and_refuse_newer_schemas() {
    let url = sqlite_url();
    let store = SqliteStore::open(&url, 2, 10_000).await.unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    let newest = MIGRATIONS.last().map(|m| m.version).unwrap();
    assert_eq!(store.schema_version().await.unwrap(), newest);

    // A database touched by a newer server is refused rather than misread.
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'future', 0)",
    )
    .bind(newest + 1)
    .execute(&mut conn)
    .await
    .unwrap();
    let err = store.migrate().await.unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
}

/// F-14: two processes on one SQLite file (the server and the operator CLI) never fail a write with "database is
/// locked" or a busy snapshot: writers take the lock before reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_do_not_fail_writes() {
    use flatline_core::ratelimit::BucketConfig;
    use flatline_core::store::RateLimitStore as _;
    use flatline_core::time::Timestamp;
    let url = sqlite_url();
    let a = Arc::new(SqliteStore::open(&url, 2, 10_000).await.unwrap());
    a.migrate().await.unwrap();
    let b = Arc::new(SqliteStore::open(&url, 2, 10_000).await.unwrap());
    let cfg = BucketConfig::new(1_000_000, std::time::Duration::from_secs(1));
    let mut tasks = vec![];
    for store in [a, b] {
        for t in 0..2 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut failures = vec![];
                for i in 0..150 {
                    let bucket = format!("shared::{}", i % 3);
                    if let Err(e) = store.acquire(&bucket, &cfg, 1, Timestamp(i + t)).await {
                        failures.push(e.to_string());
                    }
                }
                failures
            }));
        }
    }
    let mut failures = vec![];
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failures, e.g. {:?}",
        failures.len(),
        failures.first()
    );
}

/// A locked SQLite file (another process holds the write lock past the busy timeout) answers 503 with
/// `Retry-After`, writes nothing, and serves again as soon as the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_answers_503_and_recovers() {
    use flatline_testkit::UsernameForm;
    use sqlx::Connection as _;
    let url = sqlite_url();
    let store = SqliteStore::open(&url, 2, 50).await.unwrap();
    store.migrate().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let app = crate::support::TestApp::assemble(
        flatline_server::config::Config::default(),
        store.clone(),
        Arc::new(flatline_testkit::MockClock::default()),
        Arc::new(flatline_testkit::SeededRng::new(4)),
        vec![],
    )
    .await;
    let alice = app.seed("alice").await;
    let auth = alice.basic_auth(UsernameForm::Aci);
    let attrs = |id: u32| serde_json::json!({"fetchesMessages": true, "registrationId": id});
    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let r = app
        .put_json("/v1/accounts/attributes", &auth, &attrs(11))
        .await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.code(), "store_unavailable");
    assert!(r.headers.contains_key("retry-after"));
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let r = app
        .put_json("/v1/accounts/attributes", &auth, &attrs(12))
        .await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    let account = store.account(alice.aci).await.unwrap().unwrap();
    assert_eq!(
        account
            .device(flatline_core::ids::DeviceId::PRIMARY)
            .unwrap()
            .settings
            .registration_id,
        12
    );
}

/// Writes queued behind a locked database (another process holds the write lock) answer 503 once they have waited
/// `acquire_timeout` for the single writer connection, before the request timeout would answer 408 without
/// `Retry-After`; and the store serves again when the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_queued_behind_a_lock_answer_503_not_408() {
    use flatline_testkit::UsernameForm;
    use sqlx::Connection as _;
    let url = sqlite_url();
    let store = SqliteStore::open_with(&url, 2, 300, std::time::Duration::from_millis(500))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let mut config = flatline_server::config::Config::default();
    config.server.request_timeout_seconds = 2;
    let app = Arc::new(
        crate::support::TestApp::assemble(
            config,
            store.clone(),
            Arc::new(flatline_testkit::MockClock::default()),
            Arc::new(flatline_testkit::SeededRng::new(5)),
            vec![],
        )
        .await,
    );
    let alice = app.seed("alice").await;
    let auth = alice.basic_auth(UsernameForm::Aci);
    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    // 20 writes at once: the one at the head waits 300 ms for the lock, the rest wait for the writer; together
    // far longer than the 2 s request timeout.
    let writes: Vec<_> = (0..20u32)
        .map(|i| {
            let (app, auth) = (app.clone(), auth.clone());
            tokio::spawn(async move {
                let body = serde_json::json!({"fetchesMessages": true, "registrationId": 100 + i});
                let r = app.put_json("/v1/accounts/attributes", &auth, &body).await;
                (
                    r.status.as_u16(),
                    r.code(),
                    r.headers.contains_key("retry-after"),
                )
            })
        })
        .collect();
    for w in writes {
        let (status, code, retry_after) = w.await.unwrap();
        assert_eq!(
            (status, code.as_str(), retry_after),
            (503, "store_unavailable", true)
        );
    }
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let body = serde_json::json!({"fetchesMessages": true, "registrationId": 77});
    let r = app.put_json("/v1/accounts/attributes", &auth, &body).await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
}
