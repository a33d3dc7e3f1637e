//! The operator CLI for invites and accounts, run as the real binary against a SQLite database that a test app
//! (with the fake IdP) shares: a 3-level invite tree printed as inviter → invitee edges, listing without codes,
//! suspension, revocation and un-revocation seen by registrations.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::Method;
use flatline_core::store::Store;
use flatline_core::time::Timestamp;
use flatline_server::config::Config;
use flatline_server::oidc::ProviderRuntime;
use flatline_server::store::sqlite::SqliteStore;
use flatline_testkit::fake_idp::{CLIENT_SECRET, FakeIdp};
use flatline_testkit::{MockClock, SeededRng, SimClient, UsernameForm};
use serde_json::json;
use zeroize::Zeroizing;

use crate::invites::register_with;
use crate::support::{REDIRECT, TestApp, fake_provider_config};

fn scratch_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("invites-cli")
        .join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the binary; returns (success, stdout, stderr).
fn cli(dir: &Path, config: &Config, args: &[&str]) -> (bool, String, String) {
    let path = dir.join("config.toml");
    std::fs::write(&path, toml::to_string(config).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flatline-server"))
        .env_clear()
        .arg("--config")
        .arg(&path)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(dir: &Path, config: &Config, args: &[&str]) -> String {
    let (success, out, err) = cli(dir, config, args);
    assert!(success, "{args:?}: {err}");
    out
}

fn field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {out}"))
}

async fn starts(app: &TestApp, code: &str) -> (u16, String) {
    let (_, challenge) = flatline_testkit::client::pkce(app.rng.as_ref());
    let body = json!({"providerId": "fake", "codeChallenge": challenge, "state": "s", "redirectUri": REDIRECT, "inviteCode": code});
    let r = app
        .send(
            Method::POST,
            "/v1/verification/session",
            &[],
            Some(&body.to_string()),
        )
        .await;
    (r.status.as_u16(), r.code())
}

async fn user_code(app: &TestApp, c: &SimClient, max_uses: u32) -> (String, String) {
    let r = app
        .send(
            Method::POST,
            "/v1/invites",
            &[("authorization", &c.basic_auth(UsernameForm::Aci))],
            Some(&json!({"maxUses": max_uses}).to_string()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    (
        j["id"].as_str().unwrap().to_owned(),
        j["code"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn operator_cli_tree_list_suspend_and_revoke() {
    let dir = scratch_dir();
    let url = format!("sqlite://{}?mode=rwc", dir.join("db.sqlite").display());
    let mut cli_config = Config::default();
    cli_config.database.url = url.clone();
    cli_config.server.public_url = "https://chat.example.org".into();
    cli_config.registration.principal_secret_file = dir.join("principal.key");

    // The operator creates the root invite; code and link are printed once.
    let out = ok(
        &dir,
        &cli_config,
        &[
            "invites",
            "create",
            "--max-uses",
            "2",
            "--expires-days",
            "0",
            "--note",
            "root",
        ],
    );
    let code = field(&out, "code:").to_owned();
    let root_invite = field(&out, "id:").to_owned();
    assert_eq!(
        field(&out, "link:"),
        format!("https://chat.example.org/invite#{code}")
    );

    // A server on the same database, with the real clock's time so both sides agree on expiries.
    let store = SqliteStore::open(&url, 4, 10_000).await.unwrap();
    store.migrate().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let clock = Arc::new(MockClock::at(Timestamp(now_ms)));
    let rng = Arc::new(SeededRng::new(5));
    let idp = FakeIdp::start(clock.clone(), rng.clone()).await;
    let provider = fake_provider_config(&idp.issuer());
    let mut config = cli_config.clone();
    config.invites.required = true;
    config.invites.min_account_age_days = 0;
    // The tree is built within seconds: the fast-chain rule would stop it (tested in invites.rs).
    config.invites.chain_window_minutes = 0;
    for limiter in ["verificationAuthorization", "inviteAttempt"] {
        config.limits.0.insert(
            limiter.into(),
            flatline_server::config::LimiterConfig {
                bucket_size: 1000,
                permit_regeneration_seconds: 1.0,
            },
        );
    }
    config.providers = vec![provider.clone()];
    let runtime = ProviderRuntime {
        config: provider,
        secret: Zeroizing::new(CLIENT_SECRET.to_owned()),
    };
    let app = TestApp::assemble(config, store, clock.clone(), rng, vec![runtime]).await;

    let a = register_with(&app, &idp, "a", Some(&code)).await.unwrap();
    let (a_invite, a_code) = user_code(&app, &a, 2).await;
    let b = register_with(&app, &idp, "b", Some(&a_code)).await.unwrap();
    let (_, b_code) = user_code(&app, &b, 1).await;
    let c = register_with(&app, &idp, "c", Some(&b_code)).await.unwrap();
    let (_, c_code) = user_code(&app, &c, 1).await;
    let d = register_with(&app, &idp, "d", Some(&c_code)).await.unwrap();
    let codes = [&code, &a_code, &b_code, &c_code];

    // The whole tree from the operator: indented inviter → invitee edges with invite ids.
    let out = ok(&dir, &cli_config, &["invites", "tree", "--operator"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "operator", "{out}");
    let expect = [
        ("  ", "operator".to_owned(), a.aci),
        ("    ", a.aci.to_string(), b.aci),
        ("      ", b.aci.to_string(), c.aci),
        ("        ", c.aci.to_string(), d.aci),
    ];
    assert_eq!(lines.len(), 1 + expect.len(), "{out}");
    for (line, (indent, from, to)) in lines[1..].iter().zip(&expect) {
        let edge = format!("{indent}{from} → {to}  (invite ");
        assert!(line.starts_with(&edge), "{line:?} vs {edge:?}");
        assert!(line.ends_with("Z)"), "timestamped: {line}");
    }
    assert!(lines[1].contains(&root_invite) && lines[2].contains(&a_invite));

    // From one account: where it came from, then its subtree.
    let out = ok(&dir, &cli_config, &["invites", "tree", &a.aci.to_string()]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], a.aci.to_string());
    assert!(lines[1].starts_with(&format!("  (admitted by operator via invite {root_invite}")));
    assert!(lines[2].starts_with(&format!("  {} → {}", a.aci, b.aci)));
    assert!(lines[4].starts_with(&format!("      {} → {}", c.aci, d.aci)));

    // Listings never show codes.
    let all = ok(&dir, &cli_config, &["invites", "list"]);
    assert_eq!(all.lines().count(), 4, "{all}");
    let mine = ok(
        &dir,
        &cli_config,
        &["invites", "list", "--owner", &a.aci.to_string()],
    );
    assert_eq!(mine.lines().count(), 1);
    assert!(mine.contains(&a_invite) && mine.contains("state=active") && mine.contains("uses=1/2"));
    let operator = ok(&dir, &cli_config, &["invites", "list", "--operator"]);
    assert!(
        operator.contains(&root_invite)
            && operator.contains("expires=never")
            && operator.contains("note=\"root\"")
    );
    let exhausted = ok(
        &dir,
        &cli_config,
        &["invites", "list", "--state", "exhausted"],
    );
    assert_eq!(
        exhausted.lines().count(),
        2,
        "b's and c's single-use invites: {exhausted}"
    );
    for out in [&all, &mine, &operator, &exhausted] {
        for code in codes {
            assert!(!out.contains(code.as_str()) && !out.contains(&code.replace('-', "")));
        }
    }

    // Suspending the root stops its invites.
    assert_eq!(starts(&app, &a_code).await.0, 200);
    ok(
        &dir,
        &cli_config,
        &["accounts", "suspend", &a.aci.to_string()],
    );
    assert_eq!(starts(&app, &a_code).await, (403, "invite_invalid".into()));
    assert_eq!(
        register_with(&app, &idp, "e", Some(&a_code)).await.err(),
        Some((403, "invite_invalid".into()))
    );
    let suspended = ok(
        &dir,
        &cli_config,
        &["invites", "list", "--state", "owner_suspended"],
    );
    assert!(suspended.contains(&a_invite) && suspended.lines().count() == 1);
    ok(
        &dir,
        &cli_config,
        &["accounts", "unsuspend", &a.aci.to_string()],
    );
    assert_eq!(starts(&app, &a_code).await.0, 200);

    // Revoke, unrevoke, revoke all.
    ok(&dir, &cli_config, &["invites", "revoke", &a_invite]);
    assert_eq!(starts(&app, &a_code).await, (403, "invite_invalid".into()));
    ok(&dir, &cli_config, &["invites", "unrevoke", &a_invite]);
    assert_eq!(starts(&app, &a_code).await.0, 200);
    let out = ok(
        &dir,
        &cli_config,
        &["invites", "revoke-all", &a.aci.to_string()],
    );
    assert!(out.contains("revoked 1 invite(s)"), "{out}");
    assert_eq!(starts(&app, &a_code).await, (403, "invite_invalid".into()));

    // Bad input fails clearly and changes nothing.
    for args in [
        &["invites", "list", "--state", "bogus"][..],
        &["invites", "revoke", "not-an-id"],
        &["invites", "revoke", &uuid::Uuid::new_v4().to_string()],
        &["accounts", "suspend", &uuid::Uuid::new_v4().to_string()],
        &["invites", "create", "--max-uses", "0"],
    ] {
        let (success, _, err) = cli(&dir, &cli_config, args);
        assert!(
            !success && err.contains("flatline-server:"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        ok(&dir, &cli_config, &["invites", "list"]).lines().count(),
        4
    );
}

/// An operator suspension (API.md §15 operator side): the account's sends to others are refused with 403
/// `account_suspended` and store nothing, its own devices stay reachable, lifting it restores sending; on PostgreSQL
/// the CLI closes the account's sockets on a running server process with 4401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_account_sends_nothing_and_its_sockets_close() {
    use flatline_server::system::{OsRandom, SystemClock};
    let dir = scratch_dir();
    let db = crate::multiprocess::fresh_database().await;
    let server = crate::socket::start_process(&dir, "server", &db).await;
    let store = flatline_server::store::open(&crate::support::database(&db))
        .await
        .unwrap();
    let now = flatline_core::time::Clock::now(&SystemClock);
    let alice = SimClient::new(&OsRandom);
    let bob = SimClient::new(&OsRandom);
    store
        .create_account(alice.new_account("alice", &OsRandom, now))
        .await
        .unwrap();
    store
        .create_account(bob.new_account("bob", &OsRandom, now))
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", server.port);
    let http = reqwest::Client::new();
    let bob_reg = store.account(bob.aci).await.unwrap().unwrap().devices[0]
        .settings
        .registration_id;
    let send = |to: String, reg: u16| {
        let http = http.clone();
        let url = format!("{base}/v1/messages/{to}");
        let auth = alice.basic_auth(UsernameForm::Aci);
        async move {
            let body = serde_json::json!({
                "messages": [{"type": 1, "destinationDeviceId": 1, "destinationRegistrationId": reg,
                              "content": "aGVsbG8="}],
                "online": false, "urgent": true, "timestamp": 1,
            });
            let r = http
                .put(url)
                .header("authorization", auth)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(send(bob.aci.to_string(), bob_reg).await.0, 200);

    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let mut socket =
        crate::socket::WsClient::connect(addr, Some(&alice.basic_auth(UsernameForm::Dot)))
            .await
            .unwrap();
    assert_eq!(
        socket
            .request("GET", "/v1/keepalive", &[], b"")
            .await
            .status,
        200
    );

    let mut config = Config::default();
    config.database.url = db.clone();
    config.registration.principal_secret_file = dir.join("principal.key");
    let out = ok(
        &dir,
        &config,
        &["accounts", "suspend", &alice.aci.to_string()],
    );
    assert!(out.contains("told to close"), "{out}");
    assert_eq!(
        socket.closed().await,
        Some((4401, "Reauthentication required".into()))
    );

    let before = store
        .queue_size(bob.aci, flatline_core::ids::DeviceId::PRIMARY)
        .await
        .unwrap();
    let (status, body) = send(bob.aci.to_string(), bob_reg).await;
    assert_eq!(status, 403);
    assert!(body.contains("account_suspended"), "{body}");
    assert_eq!(
        store
            .queue_size(bob.aci, flatline_core::ids::DeviceId::PRIMARY)
            .await
            .unwrap(),
        before,
        "nothing stored"
    );
    // Lifted: sending works again.
    ok(
        &dir,
        &config,
        &["accounts", "unsuspend", &alice.aci.to_string()],
    );
    assert_eq!(send(bob.aci.to_string(), bob_reg).await.0, 200);
}
