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
use flatline_server::config::{DatabaseConfig, DatabaseSettings};
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
    let settings = config.settings().unwrap();
    let store = flatline_server::store::open(&settings).await.unwrap();
    // Migrated: the store works.
    let cfg = BucketConfig::new(1, Duration::from_secs(1));
    assert_eq!(
        store.acquire("open::k", &cfg, 1, T0).await.unwrap(),
        Admission::Allowed
    );
    // Every pooled connection carries the statement timeout.
    let DatabaseSettings::Postgres { pool, .. } = &settings else {
        panic!("a postgres:// URL gives PostgreSQL settings: {settings:?}");
    };
    let direct = PgStore::open(&config.url, pool).await.unwrap();
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
    let err = flatline_server::store::open(&config.settings().unwrap())
        .await
        .err()
        .expect("port 1 refuses");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("sup3rsecret"), "{text}");
    assert!(text.contains("flatline:***@127.0.0.1:1"), "{text}");
}

fn session_for(
    rng: &SeededRng,
    invite: Option<flatline_core::invites::CodeHash>,
) -> flatline_core::registration::VerificationSession {
    use flatline_core::registration::{SessionId, VerificationSession};
    VerificationSession {
        id: SessionId::generate(rng),
        provider_id: "idp".into(),
        state: "state".into(),
        nonce: "nonce".into(),
        redirect_uri: "app://cb".into(),
        request_uri: "urn:x".into(),
        request_uri_lifetime: 60,
        invite_code: invite,
        created_at: T0,
        expires_at: T0.plus(Duration::from_secs(600)),
        verified: None,
        reserved_invite: None,
    }
}

fn identity_for(sub: &str) -> flatline_core::registration::VerifiedIdentity {
    use flatline_core::registration::{Subject, VerifiedIdentity};
    let mut subject_hash = [0u8; 32];
    subject_hash[..sub.len().min(32)].copy_from_slice(&sub.as_bytes()[..sub.len().min(32)]);
    VerifiedIdentity {
        subject: Subject {
            provider: "idp".into(),
            sub: sub.into(),
        },
        subject_hash,
        principal: flatline_core::ids::Principal::parse(&format!("{sub}@example.org")).unwrap(),
        principal_opaque: false,
        sid: None,
    }
}

/// Verifies (reserving an invite use when `invite` is set) and registers session `id` for `sub`; None when the
/// invite was unavailable.
async fn verify_and_register(
    store: Arc<PgStore>,
    rng: Arc<SeededRng>,
    id: flatline_core::registration::SessionId,
    sub: String,
    invite: bool,
) -> Option<flatline_core::registration::RegistrationOutcome> {
    use flatline_core::registration::{RegistrationStore, VerifyOutcome};
    let outcome = store
        .verify_session(
            &id,
            &identity_for(&sub),
            invite,
            T0.plus(Duration::from_secs(600)),
            T0,
        )
        .await
        .unwrap();
    if outcome != VerifyOutcome::Verified {
        assert_eq!(outcome, VerifyOutcome::InviteUnavailable);
        return None;
    }
    Some(
        store
            .register(flatline_testkit::fixtures::registration_commit(
                rng.as_ref(),
                &id,
                T0,
            ))
            .await
            .unwrap(),
    )
}

/// Two processes racing for a 5-use invite register exactly 5 accounts; two sessions of one subject registering at
/// once in two processes end in one account (created once, then re-registered), not in an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_racing_registrations_respect_invites_and_subjects() {
    use flatline_core::invites::{InviteCode, InviteId, InviteOwner, InviteStore, NewInvite};
    use flatline_core::registration::{RegistrationOutcome, RegistrationStore};
    let (_, stores) = stores_sharing_one_schema(2).await;
    let rng = Arc::new(SeededRng::new(14));
    let code = InviteCode::generate(rng.as_ref());
    let invite = InviteId::random(rng.as_ref());
    stores[0]
        .create_invite(&NewInvite {
            id: invite,
            code_hash: code.hash(),
            owner: InviteOwner::Operator,
            max_uses: 5,
            expires_at: None,
            note: None,
            created_at: T0,
        })
        .await
        .unwrap();
    let mut tasks = vec![];
    for i in 0..60 {
        let s = session_for(&rng, Some(code.hash()));
        stores[0].create_session(&s).await.unwrap();
        tasks.push(tokio::spawn(verify_and_register(
            stores[i % 2].clone(),
            rng.clone(),
            s.id,
            format!("racer{i}"),
            true,
        )));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            Some(RegistrationOutcome::Created { .. }) => created += 1,
            None => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created, 5);
    let i = stores[1].invite(invite, T0).await.unwrap().unwrap();
    assert_eq!((i.uses, i.pending), (5, 0));

    for round in 0..5 {
        let sub = format!("twice{round}");
        let mut tasks = vec![];
        for (n, store) in stores.iter().enumerate() {
            let s = session_for(&rng, None);
            store.create_session(&s).await.unwrap();
            tasks.push(tokio::spawn(verify_and_register(
                stores[(n + 1) % 2].clone(),
                rng.clone(),
                s.id,
                sub.clone(),
                false,
            )));
        }
        let mut acis = vec![];
        let mut created = 0;
        for t in tasks {
            match t.await.unwrap() {
                Some(RegistrationOutcome::Created { aci, .. }) => {
                    created += 1;
                    acis.push(aci)
                }
                Some(RegistrationOutcome::Reregistered { aci, .. }) => acis.push(aci),
                other => panic!("{sub}: unexpected {other:?}"),
            }
        }
        assert_eq!(created, 1, "{sub}");
        assert_eq!(acis[0], acis[1], "{sub}: one account");
    }
}

/// Forty accounts in two processes reserve and confirm one username hash at once: exactly one owns it (three
/// rounds, each on a fresh hash and fresh accounts, to make a lost race likely to show).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_racing_for_one_username_have_one_owner() {
    use flatline_core::usernames::{ConfirmOutcome, ReserveOutcome, UsernameStore};
    let (_, stores) = stores_sharing_one_schema(2).await;
    let rng = SeededRng::new(15);
    for round in 0..3u8 {
        let mut acis = vec![];
        for i in 0..40 {
            let new = new_account(&rng, &format!("u{round}-{i}"), "pw", T0);
            acis.push(new.account.aci);
            stores[0].create_account(new).await.unwrap();
        }
        let hash = vec![round + 7; 32];
        let tasks: Vec<_> = acis
            .iter()
            .enumerate()
            .map(|(i, &aci)| {
                let (store, hash) = (stores[i % 2].clone(), hash.clone());
                tokio::spawn(async move {
                    let reserved = store
                        .reserve_username_hash(aci, std::slice::from_ref(&hash), T0)
                        .await
                        .unwrap();
                    let handle = uuid::Uuid::from_u128(u128::from(round) << 8 | i as u128);
                    let confirmed = store
                        .confirm_username_hash(aci, &hash, Some(b"blob"), handle, T0)
                        .await
                        .unwrap();
                    (reserved, confirmed)
                })
            })
            .collect();
        let (mut reservers, mut winners) = (0, 0);
        for t in tasks {
            let (reserved, confirmed) = t.await.unwrap();
            reservers += usize::from(matches!(reserved, ReserveOutcome::Reserved(_)));
            winners += usize::from(matches!(confirmed, ConfirmOutcome::Confirmed { .. }));
        }
        // A live reservation blocks every other reserver, so only the eventual owner ever held one.
        assert_eq!((reservers, winners), (1, 1), "round {round}");
        let owner = stores[1]
            .account_by_username_hash(&hash)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            stores[1]
                .account(owner)
                .await
                .unwrap()
                .unwrap()
                .username_hash,
            Some(hash)
        );
        assert_eq!(stores[0].username_claims_of(owner).await.unwrap().len(), 1);
    }
}

/// With `sslmode=require` the store talks TLS to a server that offers it (managed PostgreSQL services demand it);
/// against a server without TLS the same setting is refused rather than silently sent in the clear.
#[tokio::test]
async fn sslmode_require_uses_tls_or_refuses() {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&pg_url())
        .await
        .unwrap();
    let offered: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    // A fresh schema of its own, like every other test here; only the TLS mode differs.
    let options = pg_schema()
        .await
        .ssl_mode(sqlx::postgres::PgSslMode::Require);
    match PgStore::connect_with(options.clone(), &pg_test_settings()).await {
        Ok(store) => {
            assert_eq!(
                offered, "on",
                "a TLS-only connection to a server without TLS"
            );
            store.migrate().await.unwrap();
            let mut tls = <sqlx::PgConnection as sqlx::Connection>::connect_with(&options)
                .await
                .unwrap();
            let encrypted: bool =
                sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                    .fetch_one(&mut tls)
                    .await
                    .unwrap();
            assert!(encrypted, "the connection is not encrypted");
        }
        Err(e) => {
            assert_eq!(
                offered, "off",
                "TLS failed although the server offers it: {e}"
            );
            assert!(!e.to_string().contains("built without TLS"), "{e}");
        }
    }
}

/// A TCP proxy in front of PostgreSQL that the test can cut (every open connection is dropped and new ones are
/// closed at once) and restore, to play "the database went away" without touching the shared server.
struct CuttableProxy {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

impl CuttableProxy {
    async fn start(target: String) -> CuttableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if *watch.borrow() {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        CuttableProxy { port, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// The database going away while serving: requests that need it answer 503 with `Retry-After` (not 500),
/// `/healthz` is not ready, nothing answered 2xx before is lost, and service resumes without a restart when the
/// database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_answers_503_and_recovers() {
    use axum::http::Method;
    use flatline_testkit::UsernameForm;

    let options = pg_schema().await;
    let target = format!(
        "{}:{}",
        options.get_host().trim_start_matches('/'),
        options.get_port()
    );
    let proxy = CuttableProxy::start(target).await;
    let settings = PoolSettings {
        max_connections: 2,
        acquire_timeout: Duration::from_secs(3),
        idle_timeout: None,
        statement_timeout_ms: 10_000,
        auth_cache: Duration::from_secs(30),
    };
    let store = PgStore::connect_with(
        options.clone().host("127.0.0.1").port(proxy.port),
        &settings,
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let app = crate::support::TestApp::assemble(
        flatline_server::config::Config::default(),
        store.clone(),
        Arc::new(flatline_testkit::MockClock::default()),
        Arc::new(SeededRng::new(9)),
        vec![],
    )
    .await;
    let alice = app.seed("alice").await;
    let auth = alice.basic_auth(UsernameForm::Aci);
    let attrs = |id: u32| serde_json::json!({"fetchesMessages": true, "registrationId": id});
    assert_eq!(
        app.put_json("/v1/accounts/attributes", &auth, &attrs(4242))
            .await
            .status,
        204
    );

    proxy.set_cut(true);
    for _ in 0..3 {
        let r = app.get("/v1/accounts/whoami", Some(&auth)).await;
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
        assert!(r.headers.contains_key("retry-after"));
        assert_eq!(r.code(), "store_unavailable");
        let r = app
            .put_json("/v1/accounts/attributes", &auth, &attrs(7))
            .await;
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(app.get("/healthz", None).await.status, 503);
        let r = app
            .send(
                Method::POST,
                "/v1/invites/validity",
                &[],
                Some(r#"{"code": "0000-0000-0000-0000"}"#),
            )
            .await;
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    }

    proxy.set_cut(false);
    assert_eq!(app.get("/healthz", None).await.status, 200);
    let r = app.get("/v1/accounts/whoami", Some(&auth)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let account = store.account(alice.aci).await.unwrap().unwrap();
    assert_eq!(
        account
            .device(DeviceId::PRIMARY)
            .unwrap()
            .settings
            .registration_id,
        4242,
        "the write answered 204 before the outage is there; the refused one is not"
    );
}

/// Start-up: an unreachable database is retried (with backoff, logged); any other failure is not.
#[tokio::test]
async fn startup_retries_only_an_unreachable_database() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let waits = [Duration::from_millis(1); 3];
    let calls = AtomicUsize::new(0);
    let got =
        flatline_server::store::retry_unavailable("postgres://u:secret@db/x", &waits, || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(StoreError::backend(sqlx::Error::PoolTimedOut))
            } else {
                Ok(7)
            }
        })
        .await;
    assert_eq!((got.unwrap(), calls.load(Ordering::SeqCst)), (7, 3));
    calls.store(0, Ordering::SeqCst);
    let got: Result<(), StoreError> =
        flatline_server::store::retry_unavailable("postgres://db/x", &waits, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::corrupt("bad row"))
        })
        .await;
    assert!(got.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    calls.store(0, Ordering::SeqCst);
    let got: Result<(), StoreError> =
        flatline_server::store::retry_unavailable("postgres://db/x", &waits, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::backend(sqlx::Error::PoolClosed))
        })
        .await;
    assert!(got.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 4, "one try and three retries");
}

/// A committed message insert on one process is announced to a listener on another (LISTEN/NOTIFY), naming each
/// queue once; a refused insert announces nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn committed_messages_are_announced_to_other_processes() {
    use flatline_core::messages::MessageGuid;
    use flatline_core::messages::store::{InsertOutcome, NewMessage};
    use flatline_core::store::MessageStore;
    use flatline_server::store::postgres::parse_notification;

    let (_, stores) = stores_sharing_one_schema(2).await;
    let mut listener = stores[0].listen_messages().await.unwrap();
    let rng = SeededRng::new(12);
    let (a, b) = (Aci::random(&rng), Aci::random(&rng));
    let msg = |aci, d: u8, size: usize| NewMessage {
        aci,
        device: DeviceId::new(d).unwrap(),
        guid: MessageGuid(uuid::Uuid::new_v4()),
        envelope: vec![1; size],
        server_timestamp: T0,
        expires_at: Timestamp(T0.0 + 1_000),
        story: false,
        source: None,
        gated: false,
        shared: None,
    };
    // Refused (the bound is 10 bytes): nothing is announced.
    assert_eq!(
        stores[1]
            .insert_messages(&[msg(a, 1, 5), msg(b, 1, 11)], 10)
            .await
            .unwrap(),
        InsertOutcome::QueueFull {
            aci: b,
            device: DeviceId::new(1).unwrap()
        }
    );
    assert_eq!(
        stores[1]
            .insert_messages(&[msg(a, 1, 5), msg(a, 1, 5), msg(b, 2, 3)], 10)
            .await
            .unwrap(),
        InsertOutcome::Stored
    );
    let n = tokio::time::timeout(Duration::from_secs(60), listener.recv())
        .await
        .expect("a notification")
        .unwrap();
    assert_eq!(
        n.channel(),
        flatline_server::store::postgres::MESSAGES_CHANNEL
    );
    let mut got = parse_notification(n.payload());
    got.sort();
    let mut want = vec![
        (a, DeviceId::new(1).unwrap()),
        (b, DeviceId::new(2).unwrap()),
    ];
    want.sort();
    assert_eq!(got, want);
}

/// The authentication cache of one store serves repeated loads, never misses this store's own writes, and drops an
/// account another store (another process) changed once that change is notified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_cache_follows_local_writes_and_other_processes() {
    let (_, stores) = stores_sharing_one_schema(2).await;
    let (a, b) = (stores[0].clone(), stores[1].clone());
    let rng = SeededRng::new(41);
    let new = new_account(&rng, "cache@example.org", "password-0123456789", T0);
    let aci = new.account.aci;
    a.create_account(new).await.unwrap();

    // The listener connects in the background; until then nothing is cached.
    let cached = || async { a.account_for_auth(aci).await.unwrap().unwrap().cached };
    let mut warm = false;
    for _ in 0..500 {
        if cached().await {
            warm = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(warm, "repeated loads are served from the cache");

    // A write through the same store is seen by the very next load.
    a.lock_credentials(aci).await.unwrap();
    let found = a.account_for_auth(aci).await.unwrap().unwrap();
    assert!(!found.cached, "a local write drops the entry");
    assert!(found.account.devices[0].credential.is_locked());

    // Re-warm, then change the account through the other store: the notification drops the entry.
    for _ in 0..500 {
        if cached().await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(cached().await, "cached again");
    b.touch_device(aci, DeviceId::PRIMARY, Timestamp(T0.0 + 86_400_000))
        .await
        .unwrap();
    let mut dropped = false;
    for _ in 0..300 {
        let found = a.account_for_auth(aci).await.unwrap().unwrap();
        if found.account.devices[0].last_seen == Timestamp(T0.0 + 86_400_000) {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // 3 s against a 30 s time to live: only the notification can explain it.
    assert!(dropped, "another process's change reached this cache");
    // The plain load never comes from the cache.
    b.delete_account(aci, T0).await.unwrap();
    assert!(a.account(aci).await.unwrap().is_none());
}
