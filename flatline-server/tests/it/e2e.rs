//! End to end against the real npm `oidc-provider` (flatline-testkit/idp/idp.mjs): our server on a real socket with
//! the real HTTP client and JOSE verifier, the OP in a `node` child process, and the front channel driven by a
//! scripted browser (cookie jar, redirects followed up to the redirect URI).
//!
//! These tests need `node` and `npm ci --prefix flatline-testkit/idp` (`.ci/run` does both). Without them they fail
//! with a message saying so; `TESTS_SKIP_NODE=1` skips them on purpose.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use flatline_core::ids::Aci;
use flatline_core::store::Store;
use flatline_server::config::{ClientAuth, Config, ProviderConfig};
use flatline_server::http::AppState;
use flatline_server::system::{OsRandom, SystemClock};
use flatline_testkit::SimClient;
use flatline_testkit::remote::{Browser, Remote};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::oneshot;

use crate::support::sqlite_store;

/// The app's redirect URI at the OP. Never requested: the browser stops there.
const REDIRECT: &str = "http://127.0.0.1:9/callback";
/// How long one start of the OP may take to print its ready line on a loaded machine (it generates an RSA key
/// first; a normal start takes well under a second).
const OP_START_TIMEOUT: Duration = Duration::from_secs(20);
/// Starts tried before giving up (see [`NodeIdp::start`]).
const OP_START_ATTEMPTS: u32 = 3;

/// One OP client and the provider that uses it.
struct Client {
    provider: &'static str,
    client_id: &'static str,
    secret: &'static str,
    alg: &'static str,
    auth: ClientAuth,
    principal_claim: Option<&'static str>,
}

const CLIENTS: [Client; 3] = [
    Client {
        provider: "op-rs",
        client_id: "flatline-rs",
        secret: "flatline-rs-secret",
        alg: "RS256",
        auth: ClientAuth::ClientSecretBasic,
        principal_claim: None,
    },
    Client {
        provider: "op-es",
        client_id: "flatline-es",
        secret: "flatline-es-secret",
        alg: "ES256",
        auth: ClientAuth::ClientSecretBasic,
        principal_claim: Some("email"),
    },
    Client {
        provider: "op-ed",
        client_id: "flatline-ed",
        secret: "flatline-ed-secret",
        alg: "EdDSA",
        auth: ClientAuth::ClientSecretPost,
        principal_claim: None,
    },
];

fn client(provider: &str) -> &'static Client {
    CLIENTS
        .iter()
        .find(|c| c.provider == provider)
        .expect("known provider")
}

/// Whether to run: `None` skips (only with `TESTS_SKIP_NODE=1`); a missing `node` or missing npm packages fail.
fn node_idp_dir() -> Option<PathBuf> {
    if std::env::var("TESTS_SKIP_NODE").as_deref() == Ok("1") {
        eprintln!("TESTS_SKIP_NODE=1: skipping the end-to-end test against the real oidc-provider");
        return None;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../flatline-testkit/idp");
    let version = std::process::Command::new("node").arg("--version").output();
    match version {
        Ok(out) if out.status.success() => {}
        _ => panic!(
            "the end-to-end tests need Node.js (`node` on PATH) to run the test IdP in {}; install it, or set \
             TESTS_SKIP_NODE=1 to skip these tests",
            dir.display()
        ),
    }
    assert!(
        dir.join("node_modules/oidc-provider").is_dir(),
        "the test IdP's packages are missing: run `npm ci --prefix flatline-testkit/idp` (or set TESTS_SKIP_NODE=1)"
    );
    Some(dir)
}

/// The OP child process; killed on drop.
struct NodeIdp {
    child: tokio::process::Child,
    issuer: String,
    state_dir: PathBuf,
    stderr_file: PathBuf,
}

impl NodeIdp {
    /// Starts the OP. A start that prints no ready line within [`OP_START_TIMEOUT`] is killed and retried: on this
    /// machine `node` has been seen (about one start in a few hundred under the parallel test run) to stall in a futex
    /// wait before it listens, with no CPU used and nothing on stderr; a fresh process starts normally.
    async fn start(idp_dir: &Path, work: &Path, clients_file: &Path) -> NodeIdp {
        let state_dir = work.join("op-state");
        std::fs::create_dir_all(&state_dir).unwrap();
        let stderr_file = work.join("op.stderr");
        for attempt in 1..=OP_START_ATTEMPTS {
            let stderr = std::fs::File::create(&stderr_file).unwrap();
            let mut child = tokio::process::Command::new("node")
                .arg(idp_dir.join("idp.mjs"))
                .env("OP_PORT", "0")
                .env("OP_AUTO_LOGIN", "1")
                .env("OP_STATE_DIR", &state_dir)
                .env("OP_CLIENTS", clients_file)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(stderr))
                .kill_on_drop(true)
                .spawn()
                .expect("spawn node");
            let stdout = child.stdout.take().expect("stdout");
            let mut lines = BufReader::new(stdout).lines();
            let line = match tokio::time::timeout(OP_START_TIMEOUT, lines.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Err(_elapsed) if attempt < OP_START_ATTEMPTS => {
                    eprintln!(
                        "the test IdP printed no ready line within {OP_START_TIMEOUT:?} (attempt {attempt}); \
                         restarting it"
                    );
                    let _ = child.kill().await;
                    continue;
                }
                other => panic!(
                    "the test IdP did not print its ready line ({other:?}, attempt {attempt}); its stderr:\n{}",
                    std::fs::read_to_string(&stderr_file).unwrap_or_default()
                ),
            };
            let issuer = line
                .strip_prefix("OP listening on ")
                .unwrap_or_else(|| panic!("unexpected ready line {line:?}"))
                .trim()
                .to_owned();
            return NodeIdp {
                child,
                issuer,
                state_dir,
                stderr_file,
            };
        }
        unreachable!("the last attempt returns or panics")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_file).unwrap_or_default()
    }
}

impl Drop for NodeIdp {
    fn drop(&mut self) {
        // kill_on_drop also does this; starting it here makes the order explicit.
        let _ = self.child.start_kill();
    }
}

/// Our server on a real socket, wired to the OP.
struct E2e {
    remote: Remote,
    state: AppState,
    idp: NodeIdp,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _work: tempfile::TempDir,
}

impl Drop for E2e {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

impl E2e {
    async fn start() -> Option<E2e> {
        let idp_dir = node_idp_dir()?;
        let work = tempfile::tempdir().unwrap();

        // (a) Our listener first: the OP's clients need its port for back-channel logout.
        let mut config = Config::default();
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.server.request_timeout_seconds = 120;
        config.registration.idp_timeout_seconds = 60;
        config.registration.principal_secret_file = work.path().join("principal.key");
        let listeners = flatline_server::serve::bind(&config.validate().unwrap())
            .await
            .unwrap();
        let port = listeners.main.local_addr().unwrap().port();
        let base = format!("http://127.0.0.1:{port}");

        // (b) The OP's clients.
        let clients: Vec<Value> = CLIENTS
            .iter()
            .map(|c| {
                json!({
                    "client_id": c.client_id, "client_secret": c.secret,
                    "token_endpoint_auth_method": match c.auth {
                        ClientAuth::ClientSecretBasic => "client_secret_basic",
                        ClientAuth::ClientSecretPost => "client_secret_post",
                    },
                    "id_token_signed_response_alg": c.alg,
                    "redirect_uris": [REDIRECT],
                    "backchannel_logout_uri": format!("{base}/v1/verification/providers/{}/backchannel-logout", c.provider),
                    "backchannel_logout_session_required": true,
                })
            })
            .collect();
        let clients_file = work.path().join("clients.json");
        std::fs::write(&clients_file, Value::from(clients).to_string()).unwrap();

        // (c) The OP.
        let idp = NodeIdp::start(&idp_dir, work.path(), &clients_file).await;

        // (d) The configuration: discovery, the pinned JWKS from the OP's file, secrets from files.
        for c in &CLIENTS {
            let secret_file = work.path().join(format!("{}.secret", c.provider));
            let mut f = std::fs::File::create(&secret_file).unwrap();
            writeln!(f, "{}", c.secret).unwrap();
            config.providers.push(ProviderConfig {
                id: c.provider.into(),
                name: format!("oidc-provider {}", c.alg),
                issuer: idp.issuer.clone(),
                discovery: true,
                authorization_endpoint: None,
                token_endpoint: None,
                par_endpoint: None,
                end_session_endpoint: None,
                jwks_uri: Some(format!(
                    "file://{}",
                    idp.state_dir.join("public-jwks.json").display()
                )),
                client_id: c.client_id.into(),
                client_secret_file: Some(secret_file),
                client_secret_env: None,
                client_auth: c.auth,
                scopes: vec!["openid".into(), "email".into()],
                principal_claim: c.principal_claim.map(str::to_owned),
                redirect_uris: vec![REDIRECT.into()],
                allowed_algs: vec![c.alg.into()],
                trusted_audiences: vec![],
                invite_required: false,
                logout: flatline_core::registration::oidc::LogoutEffect::Lock,
            });
        }
        let store: Arc<dyn Store> = sqlite_store().await;
        let state = AppState::new(
            config.validate().expect("valid configuration"),
            store,
            Arc::new(SystemClock),
            Arc::new(OsRandom),
        )
        .expect("state builds");
        let (stop, stopped) = oneshot::channel::<()>();
        let server_state = state.clone();
        let server = tokio::spawn(async move {
            flatline_server::serve::run(server_state, listeners, async {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
        });
        Some(E2e {
            remote: Remote::new(&base).unwrap(),
            state,
            idp,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            stop: Some(stop),
            server: Some(server),
            _work: work,
        })
    }

    /// The whole flow for `login_hint` on `provider`, with a fresh browser (new OP session).
    async fn register(&self, provider: &str, login_hint: &str) -> (SimClient, Value) {
        let browser = Browser::new(vec![REDIRECT.into()]).unwrap();
        self.remote
            .register_through(&browser, provider, REDIRECT, Some(login_hint), &OsRandom)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "registering {login_hint} on {provider}: {e}\nOP stderr:\n{}",
                    self.idp.stderr()
                )
            })
    }

    async fn whoami(&self, c: &SimClient) -> u16 {
        self.remote.whoami(c).await.unwrap().status
    }

    /// Asks the OP to send a back-channel logout for `sub` to `provider`'s client now; true when it was delivered
    /// (the OP answers 204 only when our endpoint accepted the token).
    async fn idp_logout(&self, provider: &str, sub: &str) -> (u16, String) {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/__test/backchannel-logout", self.idp.issuer),
            [("client_id", client(provider).client_id), ("sub", sub)],
        )
        .unwrap();
        let r = self.http.post(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }
}

fn aci(j: &Value) -> Aci {
    j["uuid"].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_through_the_real_idp_with_each_algorithm() {
    let Some(e2e) = E2e::start().await else {
        return;
    };
    let providers = e2e.remote.providers().await.unwrap();
    let mut ids: Vec<&str> = providers.iter().filter_map(|p| p["id"].as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["op-ed", "op-es", "op-rs"]);
    for p in &providers {
        assert_eq!(
            p["authorizationEndpoint"],
            json!(format!("{}/auth", e2e.idp.issuer)),
            "discovered"
        );
    }
    let mut acis = vec![];
    for c in &CLIENTS {
        let login = format!("user-{}", c.alg.to_lowercase());
        let (client, j) = e2e.register(c.provider, &login).await;
        assert_eq!(j["reregistration"], json!(false), "{}", c.alg);
        let principal = j["principal"].as_str().unwrap();
        match c.principal_claim {
            Some(_) => assert_eq!(principal, format!("{login}@example.test")),
            None => assert_eq!(principal.len(), 64, "opaque principal"),
        }
        let who = e2e.remote.whoami(&client).await.unwrap();
        assert_eq!(who.status, 200, "{}: {}", c.alg, who.body);
        assert_eq!(who.body["uuid"], j["uuid"]);
        assert!(
            e2e.state
                .store
                .pinned_jwks(c.provider)
                .await
                .unwrap()
                .is_some(),
            "JWKS pinned from the file"
        );
        acis.push(client.aci);
    }
    acis.sort();
    acis.dedup();
    assert_eq!(acis.len(), 3, "three accounts");

    // Re-registration of a known subject keeps the ACI and replaces the device.
    let (first, j1) = e2e.register("op-rs", "repeat").await;
    let (second, j2) = e2e.register("op-rs", "repeat").await;
    assert_eq!((aci(&j2), j2["pni"].clone()), (aci(&j1), j1["pni"].clone()));
    assert_eq!(j2["reregistration"], json!(true));
    assert_eq!(e2e.whoami(&first).await, 401, "old device replaced");
    assert_eq!(e2e.whoami(&second).await, 200);
    // The same login on another provider is another subject: another account.
    let (_, other) = e2e.register("op-ed", "repeat").await;
    assert_ne!(aci(&other), aci(&j1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principal_change_rotates_the_pni_and_conflicts_are_refused() {
    let Some(e2e) = E2e::start().await else {
        return;
    };
    let (_, j1) = e2e.register("op-es", "carol|carol@old.example").await;
    assert_eq!(j1["principal"], json!("carol@old.example"));
    let (client, j2) = e2e.register("op-es", "carol|carol@new.example").await;
    assert_eq!(aci(&j2), aci(&j1), "ACI kept");
    assert_ne!(j2["pni"], j1["pni"], "PNI rotated");
    assert_eq!(
        (j2["principal"].clone(), j2["reregistration"].clone()),
        (json!("carol@new.example"), json!(true))
    );
    let who = e2e.remote.whoami(&client).await.unwrap();
    assert_eq!(
        (who.status, who.body["principal"].clone()),
        (200, json!("carol@new.example"))
    );

    // Another subject presenting carol's current email is refused at verification.
    let browser = Browser::new(vec![REDIRECT.into()]).unwrap();
    let (started, attempt) = e2e
        .remote
        .start(
            "op-es",
            REDIRECT,
            Some("mallory|carol@new.example"),
            &OsRandom,
        )
        .await
        .unwrap();
    assert_eq!(started.status, 200, "{}", started.body);
    let callback = browser.authorize(&attempt.session, REDIRECT).await.unwrap();
    let v = e2e.remote.verify(&attempt, &callback).await.unwrap();
    assert_eq!(
        (v.status, v.code()),
        (403, "principal_conflict"),
        "{}",
        v.body
    );
    // carol keeps her account and principal.
    let who = e2e.remote.whoami(&client).await.unwrap();
    assert_eq!(
        (who.status, who.body["principal"].clone()),
        (200, json!("carol@new.example"))
    );
    // The old email is free for someone else now.
    let (_, jb) = e2e.register("op-es", "bob|carol@old.example").await;
    assert_ne!(aci(&jb), aci(&j1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backchannel_logout_from_the_idp_locks_until_reregistration() {
    let Some(e2e) = E2e::start().await else {
        return;
    };
    // RS256 with client_secret_basic, and EdDSA with client_secret_post: the OP signs logout tokens with the
    // client's ID-token algorithm.
    for provider in ["op-rs", "op-ed"] {
        let (dave, j) = e2e.register(provider, "dave").await;
        let (bystander, _) = e2e.register(provider, "erin").await;
        assert_eq!(e2e.whoami(&dave).await, 200);

        let (status, text) = e2e.idp_logout(provider, "dave").await;
        assert_eq!(
            status,
            204,
            "{provider}: the OP could not deliver the logout ({text}); OP stderr:\n{}",
            e2e.idp.stderr()
        );
        assert_eq!(e2e.whoami(&dave).await, 401, "{provider}: locked");
        assert_eq!(
            e2e.whoami(&bystander).await,
            200,
            "{provider}: others unaffected"
        );

        let (again, j2) = e2e.register(provider, "dave").await;
        assert_eq!(aci(&j2), aci(&j), "{provider}: same account");
        assert_eq!(e2e.whoami(&again).await, 200, "{provider}: access restored");
        assert_eq!(e2e.whoami(&dave).await, 401, "the old device stays out");
    }
}
