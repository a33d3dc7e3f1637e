//! The one OpenID provider of development and tests: discovery, PAR with client authentication and PKCE S256,
//! single-use codes, EdDSA (and optionally ES256) ID tokens, a JWKS and end-session, served by an axum [`Router`].
//!
//! Two front ends use it: [`crate::fake_idp::FakeIdp`] (its own 127.0.0.1 socket; the test approves logins with
//! [`Idp::approve`] and can ask for hostile tokens — wrong claims, `alg: none`, HS256 keyed with the public key, an
//! unknown `kid` — or failing endpoints), and `flatline-server dev`, which mounts it at `/dev-idp` with an
//! **INSECURE** login page ([`Login::Hint`]) and a key derived from its principal secret.
//!
//! Time comes from the given [`Clock`], so tokens line up with a server's mock clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use flatline_core::random::{SecureRandom, random_array};
use flatline_core::registration::percent_encode;
use flatline_core::time::{Clock, Timestamp};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// Seconds an ID token is valid.
const TOKEN_TTL_SECS: i64 = 300;
/// What PAR answers as `expires_in` when requests never expire.
const UNBOUNDED_REQUEST_SECS: u64 = 60;
/// Pending requests and codes kept at most (a development toy must not grow without bound).
const MAX_PENDING: usize = 10_000;

/// How the provider is set up.
#[derive(Clone)]
pub struct IdpOptions {
    /// The issuer: the URL its routes are served under (with the mount path, if nested).
    pub issuer: String,
    /// The one client it knows.
    pub client_id: String,
    /// That client's secret (`client_secret_basic` or `client_secret_post`).
    pub client_secret: String,
    /// Seed of the published Ed25519 signing key.
    pub signing_seed: zeroize::Zeroizing<[u8; 32]>,
    /// That key's `kid`.
    pub kid: String,
    /// Also publish an ES256 key (`ec-1`), used by [`Signing::Es256`].
    pub es256: bool,
    /// Redirect URIs PAR accepts; `None` accepts any.
    pub redirect_uris: Option<Vec<String>>,
    /// Who logs in, and how.
    pub login: Login,
    /// How long a pushed request and a code stay usable; `None`: until used.
    pub request_ttl: Option<Duration>,
    /// The domain of the `email` claim (`<login>@<domain>`).
    pub email_domain: String,
    /// The `sid` claim is this prefix followed by the login.
    pub sid_prefix: String,
    /// Add `azp` (the client id) and `name` claims.
    pub profile_claims: bool,
}

/// Who logs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// The test decides: [`Idp::approve`] logs a pushed request in and hands back the callback values.
    Approve,
    /// **INSECURE**: `/authorize` logs anyone in as the PAR's `login_hint` (1–64 of `[A-Za-z0-9._-]`), or as
    /// `default` without one, with no check at all; `/callback` shows the values an app would send.
    Hint {
        /// Who logs in without a `login_hint`.
        default: String,
    },
}

/// How the next ID token's signature is produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Signing {
    /// EdDSA with the published Ed25519 key.
    #[default]
    EdDsa,
    /// ES256 with the published key `ec-1` (when [`IdpOptions::es256`]).
    Es256,
    /// `alg: none`, empty signature.
    None,
    /// HS256 keyed with the published Ed25519 public key (the classic key-confusion attack).
    Hs256WithPublicKey,
    /// EdDSA with a key that is not published (`kid` `rogue`).
    UnknownKid,
}

/// Tweaks applied to the next ID token only.
#[derive(Debug, Clone, Default)]
pub struct TokenKnobs {
    /// Claims to set (overriding the normal ones).
    pub set: Map<String, Value>,
    /// Claims to leave out.
    pub remove: Vec<String>,
    /// Signature.
    pub signing: Signing,
}

struct Key {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

struct Pending {
    redirect_uri: String,
    state: String,
    nonce: String,
    challenge: String,
    login: String,
    expires: Option<Timestamp>,
}

#[derive(Default)]
struct Inner {
    requests: HashMap<String, Pending>,
    codes: HashMap<String, Pending>,
    knobs: Option<TokenKnobs>,
    claims: HashMap<String, Map<String, Value>>,
    fail_par: bool,
    fail_token: bool,
}

struct Shared {
    options: IdpOptions,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn SecureRandom>,
    ed: Key,
    ec: Option<Key>,
    rogue: Key,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When a request or code made now stops being usable.
    fn expiry(&self, now: Timestamp) -> Option<Timestamp> {
        self.options.request_ttl.map(|ttl| now.plus(ttl))
    }
}

fn usable(p: &Pending, now: Timestamp) -> bool {
    p.expires.is_none_or(|e| e > now)
}

/// The public half of an Ed25519 seed.
pub fn ed25519_public_key(seed: &[u8; 32]) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(seed)
        .verifying_key()
        .to_bytes()
}

fn ed25519_key(kid: String, seed: &[u8; 32]) -> Key {
    // PKCS#8 v1 for Ed25519 is a fixed 16-byte prefix followed by the 32-byte seed (RFC 8410).
    let mut der = zeroize::Zeroizing::new(vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ]);
    der.extend_from_slice(seed);
    let public = ed25519_public_key(seed);
    Key {
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(public), "kid": kid,
            "alg": "EdDSA", "use": "sig"}),
        kid,
        alg: Algorithm::EdDSA,
        encoding: EncodingKey::from_ed_der(&der),
    }
}

fn p256_key(kid: &str) -> Key {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .expect("P-256 key generation");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        .expect("own key parses");
    let point = pair.public_key().as_ref().to_vec();
    Key {
        kid: kid.to_owned(),
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]), "kid": kid, "alg": "ES256", "use": "sig"}),
    }
}

/// The provider: cheap to clone, every clone the same provider.
#[derive(Clone)]
pub struct Idp {
    shared: Arc<Shared>,
}

impl Idp {
    /// A provider set up by `options`.
    pub fn new(options: IdpOptions, clock: Arc<dyn Clock>, rng: Arc<dyn SecureRandom>) -> Idp {
        let ed = ed25519_key(options.kid.clone(), &options.signing_seed);
        let ec = options.es256.then(|| p256_key("ec-1"));
        let rogue_seed = zeroize::Zeroizing::new(random_array::<32>(rng.as_ref()));
        let rogue = ed25519_key("rogue".into(), &rogue_seed);
        Idp {
            shared: Arc::new(Shared {
                options,
                clock,
                rng,
                ed,
                ec,
                rogue,
                inner: Mutex::new(Inner::default()),
            }),
        }
    }

    /// The issuer URL.
    pub fn issuer(&self) -> &str {
        &self.shared.options.issuer
    }

    /// The published JWKS.
    pub fn jwks(&self) -> Value {
        jwks_of(&self.shared)
    }

    /// The routes, relative to the issuer (nest them under its path when it has one).
    pub fn router(&self) -> Router {
        let mut routes = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/par", post(par))
            .route("/token", post(token))
            .route("/end-session", get(end_session));
        if matches!(self.shared.options.login, Login::Hint { .. }) {
            routes = routes
                .route("/authorize", get(authorize))
                .route("/callback", get(callback));
        }
        routes.with_state(self.shared.clone())
    }

    /// Extra claims for a login (e.g. `email`, `email_verified`); merged into every token for it.
    pub fn set_user_claims(&self, login: &str, claims: Value) {
        if let Value::Object(m) = claims {
            self.shared.lock().claims.insert(login.to_owned(), m);
        }
    }

    /// Tweaks for the next ID token.
    pub fn next_token(&self, knobs: TokenKnobs) {
        self.shared.lock().knobs = Some(knobs);
    }

    /// Make the PAR or token endpoint fail with 500.
    pub fn fail(&self, par: bool, token: bool) {
        let mut i = self.shared.lock();
        i.fail_par = par;
        i.fail_token = token;
    }

    /// What the browser would do: log in as `login` and return the callback's `(code, state, iss)`.
    pub fn approve(&self, request_uri: &str, login: &str) -> Option<(String, String, String)> {
        let s = &self.shared;
        let now = s.clock.now();
        let mut i = s.lock();
        let mut pending = i.requests.remove(request_uri).filter(|p| usable(p, now))?;
        pending.login = login.to_owned();
        pending.expires = s.expiry(now);
        let code = URL_SAFE_NO_PAD.encode(random_array::<16>(s.rng.as_ref()));
        let state = pending.state.clone();
        i.codes.insert(code.clone(), pending);
        Some((code, state, s.options.issuer.clone()))
    }

    /// Signs arbitrary claims with the published EdDSA key and the given `typ` (for logout tokens).
    pub fn sign(&self, claims: &Value, typ: Option<&str>, signing: Signing) -> String {
        sign(&self.shared, claims, typ, signing)
    }

    /// A well-formed logout token for `sub`/`sid` with a fresh `jti`.
    pub fn logout_claims(&self, sub: Option<&str>, sid: Option<&str>) -> Value {
        let s = &self.shared;
        let now = s.clock.now().as_secs();
        let mut c = json!({
            "iss": s.options.issuer, "aud": s.options.client_id, "iat": now, "exp": now + 120,
            "jti": URL_SAFE_NO_PAD.encode(random_array::<12>(s.rng.as_ref())),
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        });
        if let Some(sub) = sub {
            c["sub"] = json!(sub);
        }
        if let Some(sid) = sid {
            c["sid"] = json!(sid);
        }
        c
    }
}

fn jwks_of(s: &Shared) -> Value {
    let mut keys = vec![s.ed.jwk.clone()];
    keys.extend(s.ec.as_ref().map(|k| k.jwk.clone()));
    json!({ "keys": keys })
}

fn sign(s: &Shared, claims: &Value, typ: Option<&str>, signing: Signing) -> String {
    let header_for = |key: &Key| {
        let mut h = Header::new(key.alg);
        h.kid = Some(key.kid.clone());
        h.typ = typ.map(str::to_owned);
        h
    };
    let encode = |key: &Key| {
        jsonwebtoken::encode(&header_for(key), claims, &key.encoding).unwrap_or_default()
    };
    match signing {
        Signing::EdDsa => encode(&s.ed),
        Signing::Es256 => encode(s.ec.as_ref().unwrap_or(&s.ed)),
        Signing::UnknownKid => encode(&s.rogue),
        Signing::None => {
            let header = json!({"alg": "none", "kid": s.ed.kid, "typ": typ});
            format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            )
        }
        Signing::Hs256WithPublicKey => {
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some(s.ed.kid.clone());
            h.typ = typ.map(str::to_owned);
            let public = s.ed.jwk["x"].as_str().unwrap_or_default().to_owned();
            jsonwebtoken::encode(&h, claims, &EncodingKey::from_secret(public.as_bytes()))
                .unwrap_or_default()
        }
    }
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
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

/// Client authentication: `client_secret_basic` or `client_secret_post`. Digests are compared so the comparison
/// does not depend on where the strings differ.
fn client_ok(s: &Shared, headers: &HeaderMap, form: &HashMap<String, String>) -> bool {
    let o = &s.options;
    let expected = Sha256::digest(format!("{}:{}", o.client_id, o.client_secret));
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

/// A login name the login page accepts: it becomes the subject and the local part of the email.
fn valid_login(login: &str) -> bool {
    (1..=64).contains(&login.len())
        && login
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

async fn discovery(State(s): State<Arc<Shared>>) -> axum::Json<Value> {
    let i = &s.options.issuer;
    let mut algs = vec!["EdDSA"];
    if s.ec.is_some() {
        algs.push("ES256");
    }
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
        "id_token_signing_alg_values_supported": algs,
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "authorization_response_iss_parameter_supported": true,
    }))
}

async fn jwks(State(s): State<Arc<Shared>>) -> axum::Json<Value> {
    axum::Json(jwks_of(&s))
}

async fn par(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if s.lock().fail_par {
        return oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "PAR fails on request",
        );
    }
    if !client_ok(&s, &headers, &form) {
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
    if let Some(allowed) = &s.options.redirect_uris
        && !allowed.contains(&get("redirect_uri"))
    {
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
    let login = match &s.options.login {
        // The test names the login when it approves.
        Login::Approve => get("login_hint"),
        Login::Hint { default } => {
            let login = form
                .get("login_hint")
                .filter(|h| !h.is_empty())
                .cloned()
                .unwrap_or_else(|| default.clone());
            if !valid_login(&login) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "login_hint must be 1-64 characters of [A-Za-z0-9._-]",
                );
            }
            login
        }
    };
    let now = s.clock.now();
    let request_uri = format!(
        "urn:ietf:params:oauth:request_uri:{}",
        URL_SAFE_NO_PAD.encode(random_array::<16>(s.rng.as_ref()))
    );
    {
        let mut i = s.lock();
        i.requests.retain(|_, p| usable(p, now));
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
                expires: s.expiry(now),
            },
        );
    }
    let expires_in = s
        .options
        .request_ttl
        .map_or(UNBOUNDED_REQUEST_SECS, |t| t.as_secs());
    no_store(
        (
            StatusCode::CREATED,
            axum::Json(json!({"request_uri": request_uri, "expires_in": expires_in})),
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
    if q.get("client_id") != Some(&s.options.client_id) {
        return page(
            StatusCode::BAD_REQUEST,
            "Unknown client",
            "<p>client_id must be the server's client id.</p>",
        );
    }
    let now = s.clock.now();
    let code = URL_SAFE_NO_PAD.encode(random_array::<24>(s.rng.as_ref()));
    let location = {
        let mut i = s.lock();
        // Single use: the request is consumed whatever happens next.
        let Some(p) = q
            .get("request_uri")
            .and_then(|r| i.requests.remove(r))
            .filter(|p| usable(p, now))
        else {
            return page(
                StatusCode::BAD_REQUEST,
                "Unknown or expired request",
                "<p>Start a new verification session; a request_uri works once and for two minutes.</p>",
            );
        };
        i.codes.retain(|_, c| usable(c, now));
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
            percent_encode(&s.options.issuer)
        );
        tracing::warn!(login = %p.login, "development IdP: logged in without any check");
        i.codes.insert(
            code,
            Pending {
                expires: s.expiry(now),
                ..p
            },
        );
        location
    };
    no_store((StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response())
}

async fn token(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if s.lock().fail_token {
        return oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the token endpoint fails on request",
        );
    }
    if !client_ok(&s, &headers, &form) {
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
    let (p, knobs, extra) = {
        let mut i = s.lock();
        // Single use: a replayed code finds nothing.
        let Some(p) = form
            .get("code")
            .and_then(|c| i.codes.remove(c))
            .filter(|p| usable(p, now))
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
        let extra = i.claims.get(&p.login).cloned().unwrap_or_default();
        (p, i.knobs.take().unwrap_or_default(), extra)
    };
    let o = &s.options;
    let iat = now.as_secs();
    let mut claims = json!({
        "iss": o.issuer, "sub": p.login, "aud": o.client_id, "iat": iat, "exp": iat + TOKEN_TTL_SECS,
        "nonce": p.nonce, "sid": format!("{}{}", o.sid_prefix, p.login),
        "email": format!("{}@{}", p.login, o.email_domain), "email_verified": true,
    });
    if let Value::Object(m) = &mut claims {
        if o.profile_claims {
            m.insert("azp".into(), json!(o.client_id));
            m.insert(
                "name".into(),
                json!(format!("Development user {}", p.login)),
            );
        }
        m.extend(extra);
        m.extend(knobs.set);
        for k in &knobs.remove {
            m.remove(k);
        }
    }
    let id_token = sign(&s, &claims, None, knobs.signing);
    if id_token.is_empty() {
        tracing::error!("the IdP could not sign");
        return oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "signing failed",
        );
    }
    let access_token = URL_SAFE_NO_PAD.encode(random_array::<24>(s.rng.as_ref()));
    no_store(
        axum::Json(json!({"access_token": access_token, "token_type": "Bearer",
            "expires_in": TOKEN_TTL_SECS, "id_token": id_token}))
        .into_response(),
    )
}

async fn end_session(State(s): State<Arc<Shared>>) -> Response {
    match s.options.login {
        Login::Approve => "signed out".into_response(),
        Login::Hint { .. } => page(
            StatusCode::OK,
            "Signed out",
            "<p>The development IdP keeps no login sessions, so there is nothing to end.</p>",
        ),
    }
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
