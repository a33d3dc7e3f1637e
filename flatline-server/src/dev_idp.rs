//! `flatline-server dev`: the server on embedded defaults with an **INSECURE** built-in identity provider mounted at
//! `/dev-idp`, so a newcomer can register an account with nothing but curl (docs/DEVELOPMENT.md).
//!
//! The development IdP logs anyone in as whatever `login_hint` names (default `dev-user`), with a fixed, public
//! client secret. It exists only behind the `dev` subcommand: no configuration key can mount it, and the `dev`
//! subcommand listens on loopback addresses only.
//!
//! It is still a real OpenID provider on the wire: discovery, PAR with client authentication, PKCE S256,
//! single-use codes, EdDSA-signed ID tokens and a JWKS. The server talks to it over loopback HTTP like to any other
//! provider (discovery and the JWKS are fetched on first use, once the listener serves). Its signing key is derived
//! from the principal secret, so a restart keeps the JWKS the server pinned valid.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use flatline_core::manifest::IdentityProvider;
use flatline_core::random::{SecureRandom, random_array};
use flatline_core::registration::percent_encode;
use flatline_core::store::Store;
use flatline_core::time::{Clock, Timestamp};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::{ClientAuth, ProviderConfig, Settings};
use crate::http::AppState;
use crate::serve::{Listeners, ServeError};

/// Where the development IdP is mounted.
pub const MOUNT: &str = "/dev-idp";
/// The provider id it is registered under.
pub const PROVIDER_ID: &str = "dev";
/// Its display name (shown to apps: it must say what it is).
pub const PROVIDER_NAME: &str = "INSECURE development login";
/// Our client id at it.
pub const CLIENT_ID: &str = "flatline-dev";
/// The fixed client secret. Public on purpose: this IdP is for development only.
pub const CLIENT_SECRET: &str = "flatline-dev-insecure-client-secret";
/// Who logs in when the app sends no `login_hint`.
pub const DEFAULT_LOGIN: &str = "dev-user";
/// The default listener of `flatline-server dev`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default TLS listener of `flatline-server dev`.
pub const DEFAULT_TLS_LISTEN: &str = "127.0.0.1:8443";
/// The database file name in the data directory.
pub const DB_FILE: &str = "flatline-dev.db";

/// Seconds a pushed request and a code stay usable.
const REQUEST_TTL_SECS: i64 = 120;
const REQUEST_TTL: std::time::Duration = std::time::Duration::from_secs(REQUEST_TTL_SECS as u64);
/// Seconds an ID token is valid.
const TOKEN_TTL_SECS: i64 = 300;
/// Pending requests and codes kept at most (a development toy must not grow without bound).
const MAX_PENDING: usize = 10_000;

struct Pending {
    redirect_uri: String,
    state: String,
    nonce: String,
    challenge: String,
    login: String,
    expires: Timestamp,
}

#[derive(Default)]
struct Inner {
    requests: HashMap<String, Pending>,
    codes: HashMap<String, Pending>,
}

struct Shared {
    issuer: String,
    redirect_uris: Vec<String>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn SecureRandom>,
    kid: String,
    key: EncodingKey,
    jwk: Value,
    inner: Mutex<Inner>,
}

/// The development identity provider.
#[derive(Clone)]
pub struct DevIdp {
    shared: Arc<Shared>,
}

/// The signing seed: a domain-separated hash of the principal secret, so it is stable across restarts of the same
/// data directory and unrelated to anything else derived from that secret.
fn signing_seed(principal_secret: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"flatline dev-idp Ed25519 signing seed v1\0")
        .chain_update(principal_secret)
        .finalize()
        .into()
}

impl DevIdp {
    /// An IdP with issuer `issuer` (its mount URL) accepting `redirect_uris`, signing with a key derived from
    /// `principal_secret`.
    pub fn new(
        issuer: String,
        redirect_uris: Vec<String>,
        principal_secret: &[u8],
        clock: Arc<dyn Clock>,
        rng: Arc<dyn SecureRandom>,
    ) -> Self {
        let seed = zeroize::Zeroizing::new(signing_seed(principal_secret));
        // PKCS#8 v1 for Ed25519 is a fixed 16-byte prefix followed by the 32-byte seed (RFC 8410).
        let mut der = zeroize::Zeroizing::new(vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ]);
        der.extend_from_slice(&*seed);
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        let kid = format!("dev-{}", &hex::encode(Sha256::digest(public))[..12]);
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(public),
            "kid": kid, "alg": "EdDSA", "use": "sig"});
        DevIdp {
            shared: Arc::new(Shared {
                issuer,
                redirect_uris,
                clock,
                rng,
                kid,
                key: EncodingKey::from_ed_der(&der),
                jwk,
                inner: Mutex::new(Inner::default()),
            }),
        }
    }

    /// The issuer URL.
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// The public JWKS.
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.shared.jwk]})
    }

    /// The routes, mounted at [`MOUNT`].
    pub fn router(&self) -> Router {
        let routes = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/par", post(par))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/end-session", get(end_session))
            .route("/callback", get(callback))
            .with_state(self.shared.clone());
        Router::new().nest(MOUNT, routes)
    }
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, "no-store".parse().expect("static"));
    r
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    no_store(
        (
            status,
            axum::Json(json!({"error": error, "error_description": description})),
        )
            .into_response(),
    )
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    s.inner.lock().unwrap_or_else(|e| e.into_inner())
}

/// Client authentication: `client_secret_basic` or `client_secret_post` with the fixed development secret.
/// Digests are compared so the comparison does not depend on where the strings differ.
fn client_ok(headers: &HeaderMap, form: &HashMap<String, String>) -> bool {
    let expected = Sha256::digest(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .is_some_and(|d| Sha256::digest(d) == expected);
    let post = match (form.get("client_id"), form.get("client_secret")) {
        (Some(id), Some(secret)) => Sha256::digest(format!("{id}:{secret}")) == expected,
        _ => false,
    };
    basic || post
}

/// A login name the development IdP accepts: it becomes the subject and the local part of the email.
fn valid_login(login: &str) -> bool {
    (1..=64).contains(&login.len())
        && login
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

async fn discovery(State(s): State<Arc<Shared>>) -> axum::Json<Value> {
    let i = &s.issuer;
    axum::Json(json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "pushed_authorization_request_endpoint": format!("{i}/par"),
        "require_pushed_authorization_requests": true,
        "end_session_endpoint": format!("{i}/end-session"),
        "jwks_uri": format!("{i}/jwks"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        "scopes_supported": ["openid", "email"],
        "claims_supported": ["sub", "email", "email_verified", "name", "sid"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "authorization_response_iss_parameter_supported": true,
    }))
}

async fn jwks(State(s): State<Arc<Shared>>) -> axum::Json<Value> {
    axum::Json(json!({"keys": [s.jwk]}))
}

async fn par(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !client_ok(&headers, &form) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    if get("response_type") != "code" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_response_type",
            "response_type must be code",
        );
    }
    if get("code_challenge_method") != "S256" || get("code_challenge").len() != 43 {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "PKCE with S256 is required",
        );
    }
    if !s.redirect_uris.contains(&get("redirect_uri")) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "redirect_uri is not registered",
        );
    }
    if get("nonce").is_empty() || get("state").is_empty() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "nonce and state are required",
        );
    }
    let login = form
        .get("login_hint")
        .filter(|h| !h.is_empty())
        .cloned()
        .unwrap_or_else(|| DEFAULT_LOGIN.to_owned());
    if !valid_login(&login) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "login_hint must be 1-64 characters of [A-Za-z0-9._-]",
        );
    }
    let now = s.clock.now();
    let request_uri = format!(
        "urn:ietf:params:oauth:request_uri:{}",
        URL_SAFE_NO_PAD.encode(random_array::<16>(s.rng.as_ref()))
    );
    {
        let mut i = lock(&s);
        i.requests.retain(|_, p| p.expires > now);
        if i.requests.len() >= MAX_PENDING {
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "too many pending requests",
            );
        }
        i.requests.insert(
            request_uri.clone(),
            Pending {
                redirect_uri: get("redirect_uri"),
                state: get("state"),
                nonce: get("nonce"),
                challenge: get("code_challenge"),
                login,
                expires: now.plus(REQUEST_TTL),
            },
        );
    }
    no_store(
        (
            StatusCode::CREATED,
            axum::Json(json!({"request_uri": request_uri, "expires_in": REQUEST_TTL_SECS})),
        )
            .into_response(),
    )
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head><body>\
         <p style=\"background:#b00;color:#fff;padding:.5em;font-weight:bold\">INSECURE development login \
         (flatline-server dev): anyone can log in as anyone. Never expose this server.</p>\
         <h1>{title}</h1>{body}</body></html>",
        title = escape(title)
    );
    no_store((status, Html(html)).into_response())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

async fn authorize(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if q.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return page(
            StatusCode::BAD_REQUEST,
            "Unknown client",
            "<p>client_id must be the server's client id.</p>",
        );
    }
    let now = s.clock.now();
    let code = URL_SAFE_NO_PAD.encode(random_array::<24>(s.rng.as_ref()));
    let pending = {
        let mut i = lock(&s);
        // Single use: the request is consumed whatever happens next.
        let Some(p) = q
            .get("request_uri")
            .and_then(|r| i.requests.remove(r))
            .filter(|p| p.expires > now)
        else {
            return page(
                StatusCode::BAD_REQUEST,
                "Unknown or expired request",
                "<p>Start a new verification session; a request_uri works once and for two minutes.</p>",
            );
        };
        i.codes.retain(|_, c| c.expires > now);
        if i.codes.len() >= MAX_PENDING {
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy",
                "<p>Too many unused codes.</p>",
            );
        }
        let location = format!(
            "{}{}code={}&state={}&iss={}",
            p.redirect_uri,
            if p.redirect_uri.contains('?') {
                '&'
            } else {
                '?'
            },
            percent_encode(&code),
            percent_encode(&p.state),
            percent_encode(&s.issuer)
        );
        tracing::warn!(login = %p.login, "development IdP: logged in without any check");
        i.codes.insert(
            code,
            Pending {
                expires: now.plus(REQUEST_TTL),
                ..p
            },
        );
        location
    };
    no_store((StatusCode::SEE_OTHER, [(header::LOCATION, pending)]).into_response())
}

async fn token(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !client_ok(&headers, &form) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only authorization_code",
        );
    }
    let now = s.clock.now();
    // Single use: a replayed code finds nothing.
    let Some(p) = form
        .get("code")
        .and_then(|c| lock(&s).codes.remove(c))
        .filter(|p| p.expires > now)
    else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown, used or expired code",
        );
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != p.challenge {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "code_verifier does not match the challenge",
        );
    }
    if form.get("redirect_uri") != Some(&p.redirect_uri) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "redirect_uri differs",
        );
    }
    let iat = now.as_secs();
    let claims = json!({
        "iss": s.issuer, "sub": p.login, "aud": CLIENT_ID, "azp": CLIENT_ID,
        "iat": iat, "exp": iat + TOKEN_TTL_SECS, "nonce": p.nonce, "sid": format!("dev-sid-{}", p.login),
        "email": format!("{}@dev.invalid", p.login), "email_verified": true,
        "name": format!("Development user {}", p.login),
    });
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some(s.kid.clone());
    let id_token = match jsonwebtoken::encode(&h, &claims, &s.key) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "development IdP could not sign");
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "signing failed",
            );
        }
    };
    let access_token = URL_SAFE_NO_PAD.encode(random_array::<24>(s.rng.as_ref()));
    no_store(
        axum::Json(json!({"access_token": access_token, "token_type": "Bearer",
            "expires_in": TOKEN_TTL_SECS, "id_token": id_token}))
        .into_response(),
    )
}

async fn end_session(Query(q): Query<HashMap<String, String>>) -> Response {
    let _ = q;
    page(
        StatusCode::OK,
        "Signed out",
        "<p>The development IdP keeps no login sessions, so there is nothing to end.</p>",
    )
}

/// The redirect target for humans: shows the values the app would send in `PATCH /v1/verification/session/{id}`.
async fn callback(Query(q): Query<HashMap<String, String>>) -> Response {
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
    if !get("error").is_empty() {
        return page(
            StatusCode::OK,
            "Login failed",
            &format!(
                "<p>error: <code>{}</code></p><p>{}</p>",
                escape(get("error")),
                escape(get("error_description"))
            ),
        );
    }
    let body = format!(
        "<p>Copy these into <code>PATCH /v1/verification/session/&lt;id&gt;</code> \
         together with your PKCE <code>codeVerifier</code>:</p><pre id=\"values\">\n\
         code={code}\nstate={state}\niss={iss}\n</pre>\
         <pre id=\"json\">{{\"code\": \"{code}\", \"state\": \"{state}\", \"iss\": \"{iss}\", \
         \"codeVerifier\": \"&lt;your verifier&gt;\"}}</pre>",
        code = escape(get("code")),
        state = escape(get("state")),
        iss = escape(get("iss")),
    );
    page(StatusCode::OK, "Development login done", &body)
}

/// Options of `flatline-server dev`.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Where the database, keys and secrets live (created if missing).
    pub data_dir: PathBuf,
    /// The listener; loopback only. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// A second, TLS listener with a self-signed `localhost` certificate kept in the data directory (libsignal-net
    /// connects only over TLS); loopback only. `None`: no TLS listener.
    pub tls_listen: Option<SocketAddr>,
}

/// A development server ready to run.
pub struct DevServer {
    /// The state (store, services, trust).
    pub state: AppState,
    /// The bound listeners.
    pub listeners: Listeners,
    /// The API with the development IdP mounted.
    pub router: Router,
    /// The bound main address.
    pub addr: SocketAddr,
    /// The development IdP.
    pub idp: DevIdp,
    /// The bound TLS address, when a TLS listener was asked for.
    pub tls_addr: Option<SocketAddr>,
    /// Its certificate.
    pub certificate: Option<crate::tls::DevCertificate>,
}

impl DevServer {
    /// Serves until `shutdown` resolves.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        crate::serve::run_router(self.state, self.router, self.listeners, shutdown).await
    }
}

/// The provider configuration of the development IdP at `issuer`.
pub fn provider_config(
    issuer: &str,
    redirect_uris: Vec<String>,
    secret_file: &Path,
) -> ProviderConfig {
    ProviderConfig {
        id: PROVIDER_ID.into(),
        name: PROVIDER_NAME.into(),
        issuer: issuer.into(),
        discovery: true,
        authorization_endpoint: None,
        token_endpoint: None,
        par_endpoint: None,
        end_session_endpoint: None,
        jwks_uri: None,
        client_id: CLIENT_ID.into(),
        client_secret_file: Some(secret_file.to_owned()),
        client_secret_env: None,
        client_auth: ClientAuth::ClientSecretBasic,
        scopes: vec!["openid".into(), "email".into()],
        principal_claim: Some("email".into()),
        redirect_uris,
        allowed_algs: vec!["EdDSA".into()],
        trusted_audiences: vec![],
        invite_required: false,
        logout: flatline_core::registration::oidc::LogoutEffect::Lock,
    }
}

/// Binds the listener and assembles the development server over `base` (the loaded configuration: limits and
/// other settings apply; the listener, database, secrets and key files are replaced by the development ones, and
/// the development provider is added).
pub async fn prepare(base: Settings, opts: &DevOptions) -> Result<DevServer, DevError> {
    if !opts.listen.ip().is_loopback() {
        return Err(DevError::NotLoopback(opts.listen));
    }
    if let Some(addr) = opts.tls_listen
        && !addr.ip().is_loopback()
    {
        return Err(DevError::NotLoopback(addr));
    }
    std::fs::create_dir_all(&opts.data_dir).map_err(|e| DevError::DataDir {
        path: opts.data_dir.clone(),
        source: e,
    })?;
    let dir = &opts.data_dir;
    let secret_file = dir.join("dev-idp-client.secret");
    std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).map_err(|e| DevError::DataDir {
        path: secret_file.clone(),
        source: e,
    })?;

    // The loaded file, rewritten below and validated again (defaults that follow the rewritten keys, such as the
    // manifest endpoints at `server.public_url`, are resolved then).
    let mut config = base.source().clone();
    config.server.listen = opts.listen;
    // The development server's own TLS listener; `[server.tls]` of the loaded file does not apply.
    config.server.tls = None;
    let mut listeners = crate::serve::bind(&validate(&config)?).await?;
    let mut certificate = None;
    let mut tls_addr = None;
    if let Some(addr) = opts.tls_listen {
        let cert = crate::tls::dev_certificate(dir).map_err(ServeError::from)?;
        let acceptor =
            crate::tls::acceptor(&cert.cert_file, &cert.key_file).map_err(ServeError::from)?;
        let listener = crate::serve::bind_addr(addr).await?;
        let bound = listener
            .local_addr()
            .map_err(|source| ServeError::Listen { addr, source })?;
        tracing::warn!(
            "TLS on https://localhost:{} with the self-signed certificate {} (SHA-256 {})",
            bound.port(),
            cert.cert_file.display(),
            cert.sha256
        );
        listeners.extra_tls = Some((listener, acceptor));
        tls_addr = Some(bound);
        certificate = Some(cert);
    }
    let addr = listeners
        .main
        .local_addr()
        .map_err(|source| ServeError::Listen {
            addr: opts.listen,
            source,
        })?;
    let base = format!("http://{addr}");
    let issuer = format!("{base}{MOUNT}");
    config.server.listen = addr;
    config.server.public_url = base.clone();
    config.database.url = format!("sqlite://{}", dir.join(DB_FILE).display());
    config.registration.principal_secret_file = dir.join("flatline-principal.key");
    config.instance.signing_key_file = Some(dir.join("flatline-signing.key"));
    config.instance.sealed_sender_key_file = Some(dir.join("flatline-sealed-sender.key"));
    config.instance.zk_params_file = Some(dir.join("flatline-zkgroup.key"));
    let mut redirect_uris = vec![format!("{base}{MOUNT}/callback")];
    let default_callback = format!("http://{DEFAULT_LISTEN}{MOUNT}/callback");
    if !redirect_uris.contains(&default_callback) {
        redirect_uris.push(default_callback);
    }
    config.providers.push(provider_config(
        &issuer,
        redirect_uris.clone(),
        &secret_file,
    ));

    let config = validate(&config)?;
    let store: Arc<dyn Store> = crate::store::open(&config.database).await?;
    let clock: Arc<dyn Clock> = Arc::new(crate::system::SystemClock);
    let rng: Arc<dyn SecureRandom> = Arc::new(crate::system::OsRandom);
    let state =
        AppState::new(config, store, clock.clone(), rng.clone()).map_err(ServeError::from)?;
    // The manifest cannot discover the development IdP now (the listener does not serve yet); its endpoints are
    // known anyway.
    let mut manifest_providers = vec![IdentityProvider {
        id: PROVIDER_ID.into(),
        name: PROVIDER_NAME.into(),
        issuer: issuer.clone(),
        authorization_endpoint: format!("{issuer}/authorize"),
    }];
    for p in state
        .registration
        .providers()
        .filter(|p| p.id != PROVIDER_ID)
    {
        match state.registration.client().endpoints(p).await {
            Ok(e) => manifest_providers.push(IdentityProvider {
                id: p.id.clone(),
                name: p.name.clone(),
                issuer: p.issuer.clone(),
                authorization_endpoint: e.authorization,
            }),
            Err(e) => tracing::error!(provider = %p.id, error = %e, "provider discovery failed"),
        }
    }
    let state = crate::serve::finish_state(state, Some(manifest_providers)).await?;
    let principal_secret = crate::secrets::load_or_create_hex(
        &state.config.registration.principal_secret_file,
        32,
        state.rng.as_ref(),
    )
    .map_err(|e| ServeError::Setup(e.into()))?;
    let idp = DevIdp::new(issuer, redirect_uris, &principal_secret, clock, rng);
    let router = crate::http::app(state.clone()).merge(idp.router());
    Ok(DevServer {
        state,
        listeners,
        router,
        addr,
        idp,
        tls_addr,
        certificate,
    })
}

fn validate(config: &crate::config::Config) -> Result<Settings, DevError> {
    config
        .validate()
        .map_err(|e| DevError::Serve(ServeError::Setup(e.into())))
}

/// Logs the warning `flatline-server dev` starts with.
pub fn warn_insecure(opts: &DevOptions) {
    let line = "*".repeat(78);
    tracing::warn!("{line}");
    tracing::warn!("INSECURE DEVELOPMENT MODE (flatline-server dev)");
    tracing::warn!(
        "The identity provider at http://{}{MOUNT} logs ANYONE in as ANY user, with a",
        opts.listen
    );
    tracing::warn!("public client secret. Never expose this server or use its data for real.");
    tracing::warn!("Data directory: {}", opts.data_dir.display());
    tracing::warn!("{line}");
}

/// Why the development server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// A non-loopback address was asked for.
    #[error(
        "dev mode listens on loopback addresses only (asked for {0}); its login accepts anyone"
    )]
    NotLoopback(SocketAddr),
    /// The data directory is not usable.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The server could not be assembled.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

impl From<flatline_core::store::StoreError> for DevError {
    fn from(e: flatline_core::store::StoreError) -> Self {
        DevError::Serve(e.into())
    }
}
