//! A test harness around the real router: in-memory, SQLite or PostgreSQL store, mock clock, seeded RNG, `oneshot`
//! requests.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use flatline_core::store::Store;
use flatline_server::config::Config;
use flatline_server::config::ProviderConfig;
use flatline_server::http::OidcParts;
use flatline_server::http::{AppState, app};
use flatline_server::oidc::{HttpOidcClient, JoseVerifier, ProviderRuntime, provider_view};
use flatline_server::store::postgres::{PgStore, PoolSettings};
use flatline_server::store::sqlite::SqliteStore;
use flatline_testkit::fake_idp::{CLIENT_ID, CLIENT_SECRET, FakeIdp};
use flatline_testkit::{MemoryStore, MockClock, SeededRng, SimClient};
use http_body_util::BodyExt;
use serde_json::Value;
use std::time::Duration;
use tower::ServiceExt;
use zeroize::Zeroizing;

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sqlite,
    /// The server at `TEST_POSTGRES_URL`, one fresh schema per store.
    Postgres,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Memory, Backend::Sqlite, Backend::Postgres];
}

/// A fresh SQLite database file under cargo's per-target scratch directory (`target/tmp`).
pub fn sqlite_url() -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sqlite");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    format!(
        "sqlite://{}",
        dir.join(format!("{}.db", uuid::Uuid::new_v4())).display()
    )
}

/// A fresh, migrated SQLite store.
pub async fn sqlite_store() -> Arc<SqliteStore> {
    let store = SqliteStore::open(&sqlite_url(), 4, 10_000)
        .await
        .expect("open sqlite");
    store.migrate().await.expect("migrate");
    Arc::new(store)
}

/// The PostgreSQL server tests use (`TEST_POSTGRES_URL`; default a local server with trust auth).
pub fn pg_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Schemas of earlier runs older than this are dropped by the first test that needs PostgreSQL.
const STALE_SCHEMA_SECS: u64 = 3600;
static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Creates a fresh, empty schema `flatline_t_<created unix secs>_<uuid>` and returns connect options whose
/// `search_path` is that schema, so each test sees a database of its own. Schemas left by runs more than an hour old
/// are swept once per test process (the creation time in the name tells their age).
pub async fn pg_schema() -> sqlx::postgres::PgConnectOptions {
    use sqlx::Connection;
    let url = pg_url();
    let options: sqlx::postgres::PgConnectOptions = url
        .parse()
        .unwrap_or_else(|e| panic!("TEST_POSTGRES_URL: {e}"));
    let mut admin = sqlx::PgConnection::connect_with(&options)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {} is needed for these tests (set TEST_POSTGRES_URL): {e}",
                flatline_server::store::redact_url(&url)
            )
        });
    if !SWEPT.swap(true, std::sync::atomic::Ordering::SeqCst) {
        let names: Vec<String> = sqlx::query_scalar(
            r"SELECT nspname::TEXT FROM pg_namespace WHERE nspname LIKE 'flatline\_t\_%'",
        )
        .fetch_all(&mut admin)
        .await
        .expect("list test schemas");
        let cutoff = unix_secs().saturating_sub(STALE_SCHEMA_SECS);
        for name in names {
            let created = name
                .strip_prefix("flatline_t_")
                .and_then(|rest| rest.split('_').next())
                .and_then(|secs| secs.parse::<u64>().ok());
            if created.is_some_and(|c| c < cutoff) {
                // Another process may be sweeping too; losing that race is fine.
                let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .execute(&mut admin)
                    .await;
            }
        }
    }
    let schema = format!(
        "flatline_t_{}_{}",
        unix_secs(),
        uuid::Uuid::new_v4().simple()
    );
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .expect("create test schema");
    admin.close().await.ok();
    options.options([("search_path", schema)])
}

/// Pool settings for tests: few connections (many tests share one server), generous waits (the machine is busy).
/// `[database]` defaults with this URL, validated: what a test that opens a store directly passes to `store::open`.
pub fn database(url: &str) -> flatline_server::config::DatabaseSettings {
    flatline_server::config::DatabaseConfig {
        url: url.to_owned(),
        ..Default::default()
    }
    .settings()
    .expect("valid database settings")
}

pub fn pg_test_settings() -> PoolSettings {
    PoolSettings {
        max_connections: 4,
        acquire_timeout: std::time::Duration::from_secs(120),
        idle_timeout: None,
        statement_timeout_ms: 60_000,
        auth_cache: std::time::Duration::from_secs(30),
    }
}

/// A fresh, migrated PostgreSQL store in its own schema.
pub async fn pg_store() -> Arc<PgStore> {
    let store = PgStore::connect_with(pg_schema().await, &pg_test_settings())
        .await
        .expect("connect to PostgreSQL");
    store.migrate().await.expect("migrate");
    Arc::new(store)
}

pub struct TestApp {
    pub state: AppState,
    pub clock: Arc<MockClock>,
    pub rng: Arc<SeededRng>,
    router: Router,
    /// Whether [`TestApp::send`] goes through the chat socket (see [`via_socket`]).
    via_socket: bool,
    /// The loopback listener serving this app, once started.
    listener: tokio::sync::OnceCell<SocketAddr>,
}

thread_local! {
    /// Set by [`via_socket`]: apps created on this thread send every request through a chat socket.
    static VIA_SOCKET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Requests sent through a chat socket on this thread.
    static SOCKET_REQUESTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Runs an HTTP API test (a `#[tokio::test]` function, whose runtime runs on this thread) a second time with
/// every request of its apps sent through the chat socket instead: an authenticated socket for a request with a
/// device's Basic credentials (the frame then carries no `Authorization`; when the upgrade is refused with 403, an
/// unauthenticated socket with the header in the frame, as a client would see it), an unauthenticated one otherwise.
pub fn via_socket(test: fn()) {
    VIA_SOCKET.with(|v| v.set(true));
    let before = SOCKET_REQUESTS.with(|c| c.get());
    test();
    VIA_SOCKET.with(|v| v.set(false));
    let sent = SOCKET_REQUESTS.with(|c| c.get()) - before;
    assert!(sent > 0, "no request went through the socket");
}

pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
}

impl TestApp {
    pub async fn new(backend: Backend) -> Self {
        Self::with_config(backend, Config::default()).await
    }

    pub async fn with_config(backend: Backend, config: Config) -> Self {
        let store: Arc<dyn Store> = match backend {
            Backend::Memory => Arc::new(MemoryStore::new()),
            Backend::Sqlite => sqlite_store().await,
            Backend::Postgres => pg_store().await,
        };
        let clock = Arc::new(MockClock::default());
        let rng = Arc::new(SeededRng::new(1));
        Self::assemble(config, store, clock, rng, vec![]).await
    }

    /// Builds the app with `providers` served by real HTTP clients.
    pub async fn assemble(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<MockClock>,
        rng: Arc<SeededRng>,
        providers: Vec<ProviderRuntime>,
    ) -> Self {
        let views = providers.iter().map(|p| provider_view(&p.config)).collect();
        let client =
            Arc::new(HttpOidcClient::new(providers, Duration::from_secs(5)).expect("http client"));
        let oidc = OidcParts {
            providers: views,
            client,
            verifier: Arc::new(JoseVerifier),
            principal_secret: Zeroizing::new(vec![7; 32]),
        };
        let state = AppState::with_oidc(
            config.validate().expect("valid config"),
            store,
            clock.clone(),
            rng.clone(),
            oidc,
        )
        .expect("state builds");
        TestApp {
            router: app(state.clone()),
            state,
            clock,
            rng,
            via_socket: VIA_SOCKET.with(|v| v.get()),
            listener: tokio::sync::OnceCell::new(),
        }
    }

    /// An app whose only provider is a fresh [`FakeIdp`] (id `fake`), configured by `tweak`.
    pub async fn with_fake_idp(
        backend: Backend,
        tweak: impl FnOnce(&mut Config, &mut ProviderConfig),
    ) -> (Self, FakeIdp) {
        let store: Arc<dyn Store> = match backend {
            Backend::Memory => Arc::new(MemoryStore::new()),
            Backend::Sqlite => sqlite_store().await,
            Backend::Postgres => pg_store().await,
        };
        let clock = Arc::new(MockClock::at(flatline_core::time::Timestamp::from_secs(
            1_800_000_000,
        )));
        let rng = Arc::new(SeededRng::new(2));
        let idp = FakeIdp::start(clock.clone(), rng.clone()).await;
        let mut provider = fake_provider_config(&idp.issuer());
        let mut config = Config::default();
        tweak(&mut config, &mut provider);
        config.providers = vec![provider.clone()];
        let runtime = ProviderRuntime {
            config: provider,
            secret: Zeroizing::new(CLIENT_SECRET.to_owned()),
        };
        (
            Self::assemble(config, store, clock, rng, vec![runtime]).await,
            idp,
        )
    }

    /// A harness around an already built state (for example one with trust material attached).
    pub fn with_state(state: AppState, clock: Arc<MockClock>, rng: Arc<SeededRng>) -> Self {
        TestApp {
            router: app(state.clone()),
            state,
            clock,
            rng,
            via_socket: VIA_SOCKET.with(|v| v.get()),
            listener: tokio::sync::OnceCell::new(),
        }
    }

    /// Serves this app over plain HTTP on a loopback port (once; later calls return the same address), through the
    /// server's own accept loop, until the test's runtime ends.
    pub async fn listen(&self) -> SocketAddr {
        *self
            .listener
            .get_or_init(|| async { self.serve(None).await })
            .await
    }

    /// Serves this app on a new loopback port, over TLS when `tls` is given.
    pub async fn serve(&self, tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let limits =
            flatline_server::serve::ConnectionLimits::from_config(&self.state.config.server);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        // Never stopped: the server lives as long as the test's runtime.
        std::mem::forget(stop);
        tokio::spawn(flatline_server::serve::serve_connections(
            listener,
            self.router.clone(),
            tls,
            limits,
            stopped,
        ));
        addr
    }

    /// A registered account with real keys, seeded directly into the store.
    pub async fn seed(&self, principal: &str) -> SimClient {
        let client = SimClient::new(self.rng.as_ref());
        let new = client.new_account(
            principal,
            self.rng.as_ref(),
            flatline_core::time::Clock::now(self.clock.as_ref()),
        );
        self.state
            .store
            .create_account(new)
            .await
            .expect("seed account");
        client
    }

    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response {
        if self.via_socket {
            SOCKET_REQUESTS.with(|c| c.set(c.get() + 1));
            return self.send_via_socket(method, uri, headers, body).await;
        }
        self.send_from(
            SocketAddr::from(([192, 0, 2, 1], 40000)),
            method,
            uri,
            headers,
            body,
        )
        .await
    }

    /// Like [`TestApp::send`] from the socket peer `peer`.
    pub async fn send_from(
        &self,
        peer: SocketAddr,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response {
        let mut builder = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        if body.is_some()
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            builder = builder.header("content-type", "application/json");
        }
        let mut request = builder
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
            .expect("request");
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        Response {
            status,
            headers,
            body,
        }
    }

    /// Like [`TestApp::send`] with a binary body (no content type added).
    pub async fn send_bytes(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Response {
        let mut builder = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let mut request = builder.body(Body::from(body)).expect("request");
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 1], 40000))));
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        Response {
            status,
            headers,
            body,
        }
    }

    /// [`TestApp::send`] through a fresh chat socket (see [`via_socket`]).
    pub async fn send_via_socket(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response {
        use crate::socket::WsClient;
        let addr = self.listen().await;
        let authorization = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| *v)
            .filter(|v| flatline_core::credentials::DeviceCredentials::from_header(v).is_ok());
        let mut frame_headers: Vec<(String, String)> = headers
            .iter()
            .filter(|(k, _)| authorization.is_none() || !k.eq_ignore_ascii_case("authorization"))
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        if body.is_some()
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            frame_headers.push(("content-type".into(), "application/json".into()));
        }
        let mut client = match authorization {
            // Stories too: a socket that does not ask for them drops the stories its delivery loop reaches, which
            // would change what the test's REST fetches see. (The harness never acknowledges pushes, so nothing
            // else the loop pushes is lost.)
            Some(auth) => match WsClient::open(
                &format!("ws://{addr}/v1/websocket/"),
                &[
                    ("authorization", auth),
                    ("x-signal-receive-stories", "true"),
                ],
                None,
            )
            .await
            .map_err(|e| match e {
                tokio_tungstenite::tungstenite::Error::Http(r) => r.status().as_u16(),
                e => panic!("connect: {e}"),
            }) {
                Ok(c) => c,
                Err(status) => {
                    assert_eq!(status, 403, "upgrade refused with {status}");
                    frame_headers.push(("authorization".into(), auth.to_owned()));
                    WsClient::connect(addr, None)
                        .await
                        .expect("unauthenticated socket")
                }
            },
            None => WsClient::connect(addr, None)
                .await
                .expect("unauthenticated socket"),
        };
        // The upgrade's `X-Signal-Receive-Stories: true` would apply to every request of the socket; a request
        // without its own says false, which the server treats as absent.
        if !frame_headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("x-signal-receive-stories"))
        {
            frame_headers.push(("x-signal-receive-stories".into(), "false".into()));
        }
        let header_refs: Vec<(&str, &str)> = frame_headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let r = client
            .request(
                method.as_str(),
                uri,
                &header_refs,
                body.unwrap_or("").as_bytes(),
            )
            .await;
        client.close().await;
        let mut headers = HeaderMap::new();
        for (name, value) in &r.headers {
            if let (Ok(n), Ok(v)) = (
                axum::http::HeaderName::from_bytes(name.as_bytes()),
                axum::http::HeaderValue::from_str(value),
            ) {
                headers.append(n, v);
            }
        }
        Response {
            status: StatusCode::from_u16(u16::try_from(r.status).expect("status")).expect("status"),
            headers,
            body: r.body,
        }
    }

    pub async fn get(&self, uri: &str, auth: Option<&str>) -> Response {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        self.send(Method::GET, uri, &headers, None).await
    }

    pub async fn put_json(&self, uri: &str, auth: &str, body: &Value) -> Response {
        self.send(
            Method::PUT,
            uri,
            &[("authorization", auth)],
            Some(&body.to_string()),
        )
        .await
    }
}

/// The redirect URI tests use.
pub const REDIRECT: &str = "flatline://oidc/callback";

/// A provider entry for the fake IdP (opaque principals, discovery on).
pub fn fake_provider_config(issuer: &str) -> ProviderConfig {
    ProviderConfig {
        id: "fake".into(),
        name: "Fake IdP".into(),
        issuer: issuer.to_owned(),
        discovery: true,
        authorization_endpoint: None,
        token_endpoint: None,
        par_endpoint: None,
        end_session_endpoint: None,
        jwks_uri: None,
        client_id: CLIENT_ID.into(),
        client_secret_file: None,
        client_secret_env: Some("UNUSED_IN_TESTS".into()),
        client_auth: Default::default(),
        scopes: vec!["openid".into(), "email".into()],
        principal_claim: None,
        redirect_uris: vec![REDIRECT.into()],
        allowed_algs: vec!["EdDSA".into(), "ES256".into()],
        trusted_audiences: vec![],
        invite_required: false,
        logout: flatline_core::registration::oidc::LogoutEffect::Lock,
    }
}
