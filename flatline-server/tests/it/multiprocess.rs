//! Several `flatline-server` processes on one database (PostgreSQL by default), driven over real HTTP: the
//! concurrency rules of keys, usernames, registration invites and contact invites hold across processes, and a
//! process killed with SIGKILL in the middle of a mixed load leaves no broken state behind.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flatline_core::ids::{Aci, DeviceId, IdentityType, ServiceId};
use flatline_core::invites::{InviteCode, InviteId, InviteOwner, NewInvite};
use flatline_core::keys::KeyUpload;
use flatline_core::registration::Subject;
use flatline_core::store::Store;
use flatline_core::time::Clock;
use flatline_server::system::{OsRandom, SystemClock};
use flatline_testkit::client::pkce;
use flatline_testkit::fake_idp::{CLIENT_SECRET, FakeIdp, ServerProcessConfig};
use flatline_testkit::usernames::SimUsername;
use flatline_testkit::{SeededRng, SimClient, UsernameForm};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const REDIRECT: &str = "flatline://oidc/callback";

/// A fresh, empty database: a new PostgreSQL database `flatline_mp_<unix secs>_<uuid>` next to
/// `TEST_POSTGRES_URL`. Databases of runs more than an hour old are dropped first (the name tells their age), so
/// repeated runs do not pile them up on a shared server.
pub(crate) async fn fresh_database() -> String {
    let admin = crate::support::pg_url();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let name = format!("flatline_mp_{now}_{}", uuid::Uuid::new_v4().simple());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .expect("PostgreSQL for the multi-process tests");
    let existing: Vec<String> = sqlx::query_scalar(
        r"SELECT datname::TEXT FROM pg_database WHERE datname LIKE 'flatline\_mp\_%'",
    )
    .fetch_all(&mut conn)
    .await
    .expect("list databases");
    for old in existing {
        let created = old
            .strip_prefix("flatline_mp_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        // Unparseable names are from older runs too; a database still in use is refused and left alone.
        if created.is_none_or(|c| c + 3600 < now) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {old}"))
                .execute(&mut conn)
                .await;
        }
    }
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    let (base, _) = admin.rsplit_once('/').expect("database URL with a path");
    format!("{base}/{name}")
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Process {
    child: Child,
    port: u16,
    config: PathBuf,
}

/// Three (or more) servers on one database, sharing secret and key files, and a fake IdP on the real clock.
struct Cluster {
    dir: tempfile::TempDir,
    idp: FakeIdp,
    /// Children, behind a lock so one can be killed and restarted while load runs.
    procs: tokio::sync::Mutex<Vec<Process>>,
    /// Their ports (a restarted process gets the same one).
    ports: Vec<u16>,
    http: reqwest::Client,
    store: Arc<dyn Store>,
}

fn config_text(dir: &Path, port: u16, db: &str, issuer: &str) -> String {
    ServerProcessConfig {
        dir,
        port,
        database_url: db,
        max_connections: 6,
        issuer,
        invites_required: true,
        redirect_uri: REDIRECT,
    }
    .to_toml()
}

async fn spawn(config: &Path, port: u16, log: &Path) -> Process {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_flatline-server"))
        .args(["--config", config.to_str().expect("utf-8 path"), "serve"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("start flatline-server");
    Process {
        child,
        port,
        config: config.to_owned(),
    }
}

async fn healthy(http: &reqwest::Client, port: u16) -> bool {
    // Generous: a loaded 2-core CI machine can take a while to start a process and migrate.
    for _ in 0..2400 {
        let url = format!("http://127.0.0.1:{port}/healthz");
        if http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

impl Cluster {
    async fn start(n: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = fresh_database().await;
        let idp = FakeIdp::start(Arc::new(SystemClock), Arc::new(OsRandom)).await;
        std::fs::write(dir.path().join("client.secret"), CLIENT_SECRET).expect("client secret");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let mut procs = vec![];
        for i in 0..n {
            let port = free_port();
            let config = dir.path().join(format!("server{i}.toml"));
            std::fs::write(&config, config_text(dir.path(), port, &db, &idp.issuer()))
                .expect("config");
            // All start at once on the fresh database: they race to create the shared key and secret files and
            // to record their fingerprints, and every one must come up.
            procs.push(spawn(&config, port, &dir.path().join(format!("server{i}.log"))).await);
        }
        let ports: Vec<u16> = procs.iter().map(|p| p.port).collect();
        for (i, port) in ports.iter().enumerate() {
            let log = std::fs::read_to_string(dir.path().join(format!("server{i}.log")))
                .unwrap_or_default();
            assert!(
                healthy(&http, *port).await,
                "server {i} did not become healthy:\n{log}"
            );
        }
        let store = flatline_server::store::open(&crate::support::database(&db))
            .await
            .expect("open store");
        Cluster {
            dir,
            idp,
            procs: tokio::sync::Mutex::new(procs),
            ports,
            http,
            store,
        }
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}{path}",
            self.ports[i % self.ports.len()]
        )
    }

    /// SIGKILL: no graceful shutdown, no flush, connections cut mid-request.
    async fn kill(&self, i: usize) {
        let mut procs = self.procs.lock().await;
        let _ = procs[i].child.start_kill();
        let _ = procs[i].child.wait().await;
    }

    async fn restart(&self, i: usize) {
        let mut procs = self.procs.lock().await;
        let (config, port) = (procs[i].config.clone(), procs[i].port);
        let log = self.dir.path().join(format!("server{i}.log"));
        procs[i] = spawn(&config, port, &log).await;
        drop(procs);
        assert!(
            healthy(&self.http, port).await,
            "restarted server {i} did not become healthy:\n{}",
            self.logs()
        );
    }

    fn logs(&self) -> String {
        (0..self.ports.len())
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("server{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    async fn invite(&self, max_uses: u32) -> (InviteId, String) {
        let rng = OsRandom;
        let code = InviteCode::generate(&rng);
        let id = InviteId::random(&rng);
        let invite = NewInvite {
            id,
            code_hash: code.hash(),
            owner: InviteOwner::Operator,
            max_uses,
            expires_at: None,
            note: None,
            created_at: SystemClock.now(),
        };
        self.store
            .create_invite(&invite)
            .await
            .expect("create invite");
        (id, code.display())
    }

    /// A seeded account with real keys, written directly to the shared database.
    async fn seed(&self, principal: &str) -> SimClient {
        let rng = SeededRng::new(principal.len() as u64 ^ 0x5eed);
        let client = SimClient::new(&OsRandom);
        self.store
            .create_account(client.new_account(principal, &rng, SystemClock.now()))
            .await
            .expect("seed");
        client
    }

    async fn send(
        &self,
        i: usize,
        method: reqwest::Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut req = self.http.request(method, self.url(i, path));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Registration of `login` with `code`, each step on a different process. `None` when refused.
    async fn register(
        &self,
        first: usize,
        login: &str,
        code: &str,
    ) -> Result<Option<Aci>, reqwest::Error> {
        Ok(self
            .register_client(first, login, code)
            .await?
            .map(|(aci, _)| aci))
    }

    /// [`Cluster::register`], also handing out the registered client (its password).
    async fn register_client(
        &self,
        first: usize,
        login: &str,
        code: &str,
    ) -> Result<Option<(Aci, SimClient)>, reqwest::Error> {
        let (verifier, challenge) = pkce(&OsRandom);
        let body = json!({"providerId": "fake", "codeChallenge": challenge, "state": "st", "redirectUri": REDIRECT, "loginHint": login, "inviteCode": code});
        let (status, session) = self
            .send(
                first,
                reqwest::Method::POST,
                "/v1/verification/session",
                None,
                Some(body),
            )
            .await?;
        if status != 200 {
            return Ok(None);
        }
        let Some((auth_code, state, _)) = self
            .idp
            .approve(session["requestUri"].as_str().unwrap_or_default(), login)
        else {
            return Ok(None);
        };
        let id = session["id"].as_str().unwrap_or_default().to_owned();
        let body = json!({"code": auth_code, "codeVerifier": verifier, "state": state});
        let (status, verified) = self
            .send(
                first + 1,
                reqwest::Method::PATCH,
                &format!("/v1/verification/session/{id}"),
                None,
                Some(body),
            )
            .await?;
        if status != 200 {
            return Ok(None);
        }
        let mut client = SimClient::new(&OsRandom);
        let principal = verified["principal"].as_str().unwrap_or_default();
        let auth = client.registration_auth(principal);
        let (status, registered) = self
            .send(
                first + 2,
                reqwest::Method::POST,
                "/v1/registration",
                Some(&auth),
                Some(client.registration_body(&id, &OsRandom)),
            )
            .await?;
        assert!(
            status == 200 || status == 401 || status == 404,
            "registration answered {status}: {registered}"
        );
        Ok((status == 200).then(|| {
            let aci = registered["uuid"]
                .as_str()
                .unwrap_or_default()
                .parse()
                .expect("aci");
            client.aci = aci;
            (aci, client)
        }))
    }

    /// Every account admitted through invites is whole: primary device, keys of both identities, subject binding.
    async fn assert_no_half_written_accounts(&self, logins: &[String]) {
        for login in logins {
            let subject = Subject {
                provider: "fake".into(),
                sub: login.clone(),
            };
            let Some(aci) = self
                .store
                .account_of_subject(&subject)
                .await
                .expect("lookup")
            else {
                continue;
            };
            let account = self
                .store
                .account(aci)
                .await
                .expect("load")
                .expect("bound subject has an account");
            assert_eq!(account.devices.len(), 1, "{login}: one primary device");
            for owner in [ServiceId::Aci(account.aci), ServiceId::Pni(account.pni)] {
                assert!(
                    self.store
                        .signed_pre_key(owner, DeviceId::PRIMARY)
                        .await
                        .expect("key")
                        .is_some(),
                    "{login}: signed key"
                );
                assert!(
                    self.store
                        .last_resort_key(owner, DeviceId::PRIMARY)
                        .await
                        .expect("key")
                        .is_some(),
                    "{login}: last resort"
                );
            }
            assert!(
                self.store
                    .redemption_of(aci)
                    .await
                    .expect("redemption")
                    .is_some(),
                "{login}: admitted without consuming an invite"
            );
        }
    }
}

/// Keys, usernames, registration invites and contact invites, each raced across three processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_rules_hold_across_processes() {
    let cluster = Arc::new(Cluster::start(3).await);

    // 500 one-time keys, 1000 concurrent fetches spread over the processes.
    let bob = cluster.seed("bob@example.org").await;
    let uak = [9u8; 16];
    let attrs = json!({"registrationId": 11, "unidentifiedAccessKey": STANDARD.encode(uak)});
    assert_eq!(
        cluster
            .send(
                0,
                reqwest::Method::PUT,
                "/v1/accounts/attributes",
                Some(&bob.basic_auth(UsernameForm::Aci)),
                Some(attrs)
            )
            .await
            .unwrap()
            .0,
        204
    );
    let upload = KeyUpload {
        ec: Some((0..500).map(|i| bob.one_time_ec(i, &OsRandom)).collect()),
        kem: Some(
            (0..500)
                .map(|i| bob.kem(IdentityType::Aci, i, &OsRandom))
                .collect(),
        ),
        ..Default::default()
    };
    cluster
        .store
        .store_keys(ServiceId::Aci(bob.aci), DeviceId::PRIMARY, &upload)
        .await
        .unwrap();
    let key = STANDARD.encode(uak);
    let fetches: Vec<_> = (0..1000)
        .map(|i| {
            let (c, key, aci) = (cluster.clone(), key.clone(), bob.aci);
            tokio::spawn(async move {
                let r = c
                    .http
                    .get(c.url(i, &format!("/v2/keys/{aci}/1")))
                    .header("unidentified-access-key", key)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let j: Value = r.json().await.unwrap();
                j["devices"][0]["preKey"]["keyId"].as_u64()
            })
        })
        .collect();
    let mut ids = vec![];
    for f in fetches {
        ids.extend(f.await.unwrap());
    }
    assert_eq!(ids.len(), 500, "every one-time key handed out");
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        500,
        "no key handed out twice"
    );

    // 50 accounts reserve and confirm one username hash.
    let name = SimUsername::pick("racer", &OsRandom);
    let mut racers = vec![];
    for i in 0..50 {
        racers.push(cluster.seed(&format!("u{i}@example.org")).await);
    }
    let tasks: Vec<_> = racers
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let (c, name) = (cluster.clone(), name.hash_b64());
            tokio::spawn(async move {
                let auth = client.basic_auth(UsernameForm::Aci);
                let (s, _) = c
                    .send(
                        i,
                        reqwest::Method::PUT,
                        "/v1/accounts/username_hash/reserve",
                        Some(&auth),
                        Some(json!({"usernameHashes": [name]})),
                    )
                    .await
                    .unwrap();
                (s, client)
            })
        })
        .collect();
    let mut reserved = vec![];
    for t in tasks {
        let (s, client) = t.await.unwrap();
        assert!(s == 200 || s == 409, "reserve answered {s}");
        if s == 200 {
            reserved.push(client);
        }
    }
    assert_eq!(reserved.len(), 1, "one reservation of a live hash");
    let (s, _) = cluster
        .send(
            1,
            reqwest::Method::PUT,
            "/v1/accounts/username_hash/confirm",
            Some(&reserved[0].basic_auth(UsernameForm::Aci)),
            Some(name.confirm_body(&OsRandom, false)),
        )
        .await
        .unwrap();
    assert_eq!(s, 200);
    let (s, owner) = cluster
        .send(
            2,
            reqwest::Method::GET,
            &format!("/v1/accounts/username_hash/{}", name.hash_b64()),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (s, owner["uuid"].as_str()),
        (200, Some(reserved[0].aci.to_string().as_str()))
    );

    // 200 new subjects race for an invite with 5 uses.
    let (invite, code) = cluster.invite(5).await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (c, code) = (cluster.clone(), code.clone());
            tokio::spawn(async move { c.register(i, &format!("racer{i}"), &code).await.unwrap() })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.unwrap().is_some());
    }
    let i = cluster
        .store
        .invite(invite, SystemClock.now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((admitted, i.uses), (5, 5), "{}", cluster.logs());

    // A one-use contact invite redeemed by 20 accounts at once: exactly one grant.
    let owner = cluster.seed("owner@example.org").await;
    let owner_auth = owner.basic_auth(UsernameForm::Aci);
    assert_eq!(
        cluster
            .send(
                0,
                reqwest::Method::PUT,
                "/v1/accounts/contact_policy",
                Some(&owner_auth),
                Some(json!({"policy": "invite_only", "introductions": "ask"}))
            )
            .await
            .unwrap()
            .0,
        204
    );
    let (s, created) = cluster
        .send(
            1,
            reqwest::Method::POST,
            "/v1/contact_invites",
            Some(&owner_auth),
            Some(json!({"maxUses": 1})),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{created}");
    let contact_code = created["code"].as_str().unwrap().to_owned();
    let mut redeemers = vec![];
    for i in 0..20 {
        redeemers.push(cluster.seed(&format!("r{i}@example.org")).await);
    }
    let tasks: Vec<_> = redeemers
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let (c, code) = (cluster.clone(), contact_code.clone());
            tokio::spawn(async move {
                c.send(
                    i,
                    reqwest::Method::POST,
                    "/v1/contact_invites/redeem",
                    Some(&client.basic_auth(UsernameForm::Aci)),
                    Some(json!({"code": code})),
                )
                .await
                .unwrap()
                .0
            })
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        let s = t.await.unwrap();
        assert!(s == 200 || s == 404 || s == 409, "redeem answered {s}");
        granted += usize::from(s == 200);
    }
    assert_eq!(granted, 1);
    assert_eq!(
        cluster.store.contact_grants(owner.aci).await.unwrap().len(),
        1
    );

    // A contact shortcode said to four accounts on three processes: exactly one grant. Then five wrong guesses
    // at once on another one: each counted once, burned at exactly the third. (Nine attempts from 127.0.0.1:
    // within the shortcodeAttempt bucket of ten per address.)
    let create_shortcode = || async {
        let (s, created) = cluster
            .send(
                0,
                reqwest::Method::POST,
                "/v1/contact_shortcodes",
                Some(&owner_auth),
                Some(json!({})),
            )
            .await
            .unwrap();
        assert_eq!(s, 201, "{created}");
        created
    };
    let attempt = |i: usize, auth: String, shortcode: String| {
        let c = cluster.clone();
        tokio::spawn(async move {
            c.send(
                i,
                reqwest::Method::POST,
                "/v1/contact_shortcodes/redeem",
                Some(&auth),
                Some(json!({"shortcode": shortcode})),
            )
            .await
            .unwrap()
            .0
        })
    };
    let said = create_shortcode().await["shortcode"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut tasks = vec![];
    for i in 0..4 {
        let who = cluster.seed(&format!("s{i}@example.org")).await;
        tasks.push(attempt(
            i,
            who.basic_auth(UsernameForm::Aci),
            said.to_uppercase().replace('-', " "),
        ));
    }
    let mut granted = 0;
    for t in tasks {
        let s = t.await.unwrap();
        assert!(s == 200 || s == 404, "shortcode redeem answered {s}");
        granted += usize::from(s == 200);
    }
    assert_eq!(granted, 1, "{}", cluster.logs());
    assert_eq!(
        cluster.store.contact_grants(owner.aci).await.unwrap().len(),
        2
    );
    let target = create_shortcode().await;
    let code =
        flatline_core::shortcodes::Shortcode::parse(target["shortcode"].as_str().unwrap()).unwrap();
    let guesser = cluster
        .seed("guesser@example.org")
        .await
        .basic_auth(UsernameForm::Aci);
    let tasks: Vec<_> = (0..5u16)
        .map(|n| {
            let [a, b] = code.words();
            let wrong = flatline_core::shortcodes::Shortcode::new(
                code.nameplate(),
                [(a + 1 + n) % 2048, b],
            )
            .unwrap()
            .render();
            attempt(usize::from(n), guesser.clone(), wrong)
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 404);
    }
    let stored = cluster
        .store
        .contact_shortcodes(owner.aci)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.id.0.to_string() == target["id"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        (stored.failed_guesses, stored.status),
        (3, flatline_core::shortcodes::ShortcodeStatus::Burned)
    );
}

/// Kill -9 one process in the middle of a mixed load (key uploads, bundle fetches, registrations, invite
/// redemptions), five times in a row; after a restart no one-time key was handed out twice, no invite exceeded its
/// uses, and no account is half written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_in_the_middle_of_a_mixed_load() {
    for run in 0..5 {
        let cluster = Arc::new(Cluster::start(3).await);
        let bob = cluster.seed("bob@example.org").await;
        let uak = [7u8; 16];
        let attrs = json!({"registrationId": 11, "unidentifiedAccessKey": STANDARD.encode(uak)});
        assert_eq!(
            cluster
                .send(
                    0,
                    reqwest::Method::PUT,
                    "/v1/accounts/attributes",
                    Some(&bob.basic_auth(UsernameForm::Aci)),
                    Some(attrs)
                )
                .await
                .unwrap()
                .0,
            204
        );
        let upload = KeyUpload {
            ec: Some((0..300).map(|i| bob.one_time_ec(i, &OsRandom)).collect()),
            ..Default::default()
        };
        cluster
            .store
            .store_keys(ServiceId::Aci(bob.aci), DeviceId::PRIMARY, &upload)
            .await
            .unwrap();
        let (invite, code) = cluster.invite(4).await;
        let mut uploaders = vec![];
        for i in 0..10 {
            uploaders.push(cluster.seed(&format!("up{i}@example.org")).await);
        }
        let logins: Vec<String> = (0..24).map(|i| format!("run{run}-subject{i}")).collect();

        let mut tasks = vec![];
        let key = STANDARD.encode(uak);
        for i in 0..300 {
            let (c, key, aci) = (cluster.clone(), key.clone(), bob.aci);
            tasks.push(tokio::spawn(async move {
                // Spread the fetches out so the kill lands in the middle of them.
                tokio::time::sleep(Duration::from_millis((i % 60) * 10)).await;
                let r = c
                    .http
                    .get(c.url(i as usize, &format!("/v2/keys/{aci}/1")))
                    .header("unidentified-access-key", key)
                    .send()
                    .await
                    .ok()?;
                if r.status() != 200 {
                    return None;
                }
                let j: Value = r.json().await.ok()?;
                Some(Load::Key(j["devices"][0]["preKey"]["keyId"].as_u64()?))
            }));
        }
        for (i, login) in logins.iter().enumerate() {
            let (c, code, login) = (cluster.clone(), code.clone(), login.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis((i as u64 % 12) * 40)).await;
                c.register(i, &login, &code)
                    .await
                    .ok()
                    .flatten()
                    .map(|_| Load::Registered)
            }));
        }
        for (i, client) in uploaders.into_iter().enumerate() {
            let c = cluster.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0..5u32 {
                    let body =
                        client.set_keys_body(IdentityType::Aci, round * 1000, 50, 20, &OsRandom);
                    let _ = c
                        .send(
                            i + round as usize,
                            reqwest::Method::PUT,
                            "/v2/keys",
                            Some(&client.basic_auth(UsernameForm::Aci)),
                            Some(body),
                        )
                        .await;
                }
                None
            }));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        cluster.kill(1).await;
        let mut handed_out = vec![];
        let mut registered = 0;
        for t in tasks {
            match t.await.unwrap() {
                Some(Load::Key(id)) => handed_out.push(id),
                Some(Load::Registered) => registered += 1,
                None => {}
            }
        }
        cluster.restart(1).await;

        let unique: HashSet<_> = handed_out.iter().collect();
        assert_eq!(
            unique.len(),
            handed_out.len(),
            "run {run}: a one-time key was handed out twice"
        );
        let left: HashSet<u64> = cluster
            .store
            .one_time_ec_keys(ServiceId::Aci(bob.aci), DeviceId::PRIMARY)
            .await
            .unwrap()
            .iter()
            .map(|k| u64::from(k.key_id.get()))
            .collect();
        assert!(
            unique.iter().all(|id| !left.contains(id)),
            "run {run}: a handed-out key is still stored"
        );
        let i = cluster
            .store
            .invite(invite, SystemClock.now())
            .await
            .unwrap()
            .unwrap();
        let redemptions = cluster
            .store
            .redemptions_by(InviteOwner::Operator)
            .await
            .unwrap();
        assert!(
            i.uses <= 4 && i.uses + i.pending <= 4,
            "run {run}: invite over its uses: {i:?}"
        );
        assert_eq!(
            redemptions.len(),
            i.uses as usize,
            "run {run}: every use logged once"
        );
        assert!(
            registered <= i.uses as usize,
            "run {run}: more registrations answered than uses"
        );
        cluster.assert_no_half_written_accounts(&logins).await;
        // The restarted process serves normally.
        let (s, _) = cluster
            .send(
                1,
                reqwest::Method::GET,
                "/v1/accounts/whoami",
                Some(&bob.basic_auth(UsernameForm::Aci)),
                None,
            )
            .await
            .unwrap();
        assert_eq!(s, 200, "run {run}: {}", cluster.logs());
    }
}

enum Load {
    Key(u64),
    Registered,
}

/// A password changed through one process (a re-registration, which gives the device a new password) is refused
/// by another process that had the account cached for authentication, within the notification's delay, well
/// inside the cache's 30 s lifetime; the new password works there at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_password_is_refused_by_the_other_processes_at_once() {
    let cluster = Cluster::start(2).await;
    let (_, code) = cluster.invite(2).await;
    let login = "cache-change@example.org";
    let (aci, old) = cluster
        .register_client(1, login, &code)
        .await
        .unwrap()
        .expect("registered");
    let old_auth = old.basic_auth(UsernameForm::Dot);
    // Process 1 authenticates the device a few times: its account is now cached there.
    for _ in 0..5 {
        let (status, _) = cluster
            .send(
                1,
                reqwest::Method::GET,
                "/v1/accounts/whoami",
                Some(&old_auth),
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, 200);
    }
    // Re-registration, committed by process 0 (the steps run on 0, 1, 0).
    let (again, new) = cluster
        .register_client(0, login, &code)
        .await
        .unwrap()
        .expect("re-registered");
    assert_eq!(again, aci, "re-registration keeps the ACI");
    let new_auth = new.basic_auth(UsernameForm::Dot);
    let (status, _) = cluster
        .send(
            1,
            reqwest::Method::GET,
            "/v1/accounts/whoami",
            Some(&new_auth),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "the new password is accepted at once");
    let started = std::time::Instant::now();
    let mut refused = false;
    while started.elapsed() < Duration::from_secs(3) {
        let (status, _) = cluster
            .send(
                1,
                reqwest::Method::GET,
                "/v1/accounts/whoami",
                Some(&old_auth),
                None,
            )
            .await
            .unwrap();
        if status == 401 {
            refused = true;
            break;
        }
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        refused,
        "the old password is still accepted:\n{}",
        cluster.logs()
    );
}
