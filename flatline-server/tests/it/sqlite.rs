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
