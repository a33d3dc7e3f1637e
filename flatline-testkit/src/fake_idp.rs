//! A fake OpenID provider on a real 127.0.0.1 socket: PAR (client authentication, PKCE S256), code exchange,
//! JWKS, discovery, end-session. Unlike a real IdP it can mint hostile tokens on request — wrong nonce or
//! audience, `alg: none`, HS256 keyed with a public key, an unknown `kid` — for negative tests.
//!
//! Time comes from the shared [`Clock`], so tokens line up with the server's mock clock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use flatline_core::random::{SecureRandom, random_array};
use flatline_core::time::Clock;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// Our client registration at the fake.
pub const CLIENT_ID: &str = "flatline-test";
/// Its secret.
pub const CLIENT_SECRET: &str = "test-secret";

/// How the next ID token's signature is produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Signing {
    /// EdDSA with the published key `ed-1`.
    #[default]
    EdDsa,
    /// ES256 with the published key `ec-1`.
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
    kid: &'static str,
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
    issuer: String,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn SecureRandom>,
    ed: Key,
    ec: Key,
    rogue: Key,
    inner: Mutex<Inner>,
}

/// A running fake IdP.
pub struct FakeIdp {
    shared: Arc<Shared>,
    /// Its address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn ed25519_key(kid: &'static str, seed: [u8; 32]) -> Key {
    // PKCS#8 v1 for Ed25519 is a fixed 16-byte prefix followed by the seed.
    let mut der = hex::decode("302e020100300506032b657004220420").unwrap_or_default();
    der.extend_from_slice(&seed);
    let public = ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes();
    Key {
        kid,
        alg: Algorithm::EdDSA,
        encoding: EncodingKey::from_ed_der(&der),
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(public), "kid": kid, "alg": "EdDSA", "use": "sig"}),
    }
}

fn p256_key(kid: &'static str) -> Key {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .expect("P-256 key generation");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        .expect("own key parses");
    let point = pair.public_key().as_ref().to_vec();
    Key {
        kid,
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]), "kid": kid, "alg": "ES256", "use": "sig"}),
    }
}

impl FakeIdp {
    /// Starts on a random 127.0.0.1 port.
    pub async fn start(clock: Arc<dyn Clock>, rng: Arc<dyn SecureRandom>) -> FakeIdp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake IdP");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            issuer: format!("http://{addr}"),
            ed: ed25519_key("ed-1", random_array(rng.as_ref())),
            ec: p256_key("ec-1"),
            rogue: ed25519_key("rogue", random_array(rng.as_ref())),
            clock,
            rng,
            inner: Mutex::new(Inner::default()),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/par", post(par))
            .route("/token", post(token))
            .route("/end-session", get(|| async { "signed out" }))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeIdp { shared, addr, task }
    }

    /// The issuer URL.
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    /// The published JWKS.
    pub fn jwks(&self) -> String {
        json!({"keys": [self.shared.ed.jwk, self.shared.ec.jwk]}).to_string()
    }

    /// Extra claims for a login (e.g. `email`, `email_verified`); merged into every token for it.
    pub fn set_user_claims(&self, login: &str, claims: Value) {
        if let Value::Object(m) = claims {
            self.lock().claims.insert(login.to_owned(), m);
        }
    }

    /// Tweaks for the next ID token.
    pub fn next_token(&self, knobs: TokenKnobs) {
        self.lock().knobs = Some(knobs);
    }

    /// Make the PAR or token endpoint fail with 500.
    pub fn fail(&self, par: bool, token: bool) {
        let mut i = self.lock();
        i.fail_par = par;
        i.fail_token = token;
    }

    /// What the browser would do: log in as `login` and return the callback's `(code, state, iss)`.
    pub fn approve(&self, request_uri: &str, login: &str) -> Option<(String, String, String)> {
        let mut i = self.lock();
        let mut pending = i.requests.remove(request_uri)?;
        pending.login = login.to_owned();
        let code = URL_SAFE_NO_PAD.encode(random_array::<16>(self.shared.rng.as_ref()));
        let state = pending.state.clone();
        i.codes.insert(code.clone(), pending);
        Some((code, state, self.shared.issuer.clone()))
    }

    /// Signs arbitrary claims with the published EdDSA key and the given `typ` (for logout tokens).
    pub fn sign(&self, claims: &Value, typ: Option<&str>, signing: Signing) -> String {
        sign(&self.shared, claims, typ, signing)
    }

    /// A well-formed logout token for `sub`/`sid` with a fresh `jti`.
    pub fn logout_claims(&self, sub: Option<&str>, sid: Option<&str>) -> Value {
        let now = self.shared.clock.now().as_secs();
        let mut c = json!({
            "iss": self.shared.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 120,
            "jti": URL_SAFE_NO_PAD.encode(random_array::<12>(self.shared.rng.as_ref())),
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn sign(shared: &Shared, claims: &Value, typ: Option<&str>, signing: Signing) -> String {
    let header_for = |key: &Key| {
        let mut h = Header::new(key.alg);
        h.kid = Some(key.kid.to_owned());
        h.typ = typ.map(str::to_owned);
        h
    };
    let encode = |key: &Key| {
        jsonwebtoken::encode(&header_for(key), claims, &key.encoding).unwrap_or_default()
    };
    match signing {
        Signing::EdDsa => encode(&shared.ed),
        Signing::Es256 => encode(&shared.ec),
        Signing::UnknownKid => encode(&shared.rogue),
        Signing::None => {
            let header = json!({"alg": "none", "kid": "ed-1", "typ": typ});
            format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            )
        }
        Signing::Hs256WithPublicKey => {
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some("ed-1".into());
            h.typ = typ.map(str::to_owned);
            let public = shared.ed.jwk["x"].as_str().unwrap_or_default().to_owned();
            jsonwebtoken::encode(&h, claims, &EncodingKey::from_secret(public.as_bytes()))
                .unwrap_or_default()
        }
    }
}

async fn discovery(State(s): State<Arc<Shared>>) -> Json<Value> {
    let i = &s.issuer;
    Json(json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "pushed_authorization_request_endpoint": format!("{i}/par"),
        "end_session_endpoint": format!("{i}/end-session"),
        "jwks_uri": format!("{i}/jwks"),
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
    }))
}

async fn jwks(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({"keys": [s.ed.jwk, s.ec.jwk]}))
}

fn client_ok(headers: &HeaderMap, form: &HashMap<String, String>) -> bool {
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .is_some_and(|d| d == format!("{CLIENT_ID}:{CLIENT_SECRET}").as_bytes());
    let post = form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET);
    basic || post
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({"error": error}))).into_response()
}

async fn par(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if s.inner.lock().unwrap_or_else(|e| e.into_inner()).fail_par {
        return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    }
    if !client_ok(&headers, &form) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    if get("code_challenge_method") != "S256"
        || get("code_challenge").len() != 43
        || get("nonce").is_empty()
        || get("state").is_empty()
    {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let request_uri = format!(
        "urn:ietf:params:oauth:request_uri:{}",
        URL_SAFE_NO_PAD.encode(random_array::<16>(s.rng.as_ref()))
    );
    let pending = Pending {
        redirect_uri: get("redirect_uri"),
        state: get("state"),
        nonce: get("nonce"),
        challenge: get("code_challenge"),
        login: get("login_hint"),
    };
    s.inner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .requests
        .insert(request_uri.clone(), pending);
    (
        StatusCode::CREATED,
        Json(json!({"request_uri": request_uri, "expires_in": 60})),
    )
        .into_response()
}

async fn token(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let (pending, knobs, extra) = {
        let mut i = s.inner.lock().unwrap_or_else(|e| e.into_inner());
        if i.fail_token {
            return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
        }
        if !client_ok(&headers, &form) {
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
        }
        // Single use: a replayed code finds nothing.
        let Some(pending) = form.get("code").and_then(|c| i.codes.remove(c)) else {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
        };
        let verifier = form.get("code_verifier").cloned().unwrap_or_default();
        if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != pending.challenge
            || form.get("redirect_uri") != Some(&pending.redirect_uri)
        {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
        }
        let extra = i.claims.get(&pending.login).cloned().unwrap_or_default();
        (pending, i.knobs.take().unwrap_or_default(), extra)
    };
    let now = s.clock.now().as_secs();
    let mut claims = json!({
        "iss": s.issuer, "sub": pending.login, "aud": CLIENT_ID, "iat": now, "exp": now + 300,
        "nonce": pending.nonce, "sid": format!("sid-{}", pending.login),
        "email": format!("{}@example.test", pending.login), "email_verified": true,
    });
    if let Value::Object(m) = &mut claims {
        m.extend(extra);
        m.extend(knobs.set);
        for k in &knobs.remove {
            m.remove(k);
        }
    }
    let id_token = sign(&s, &claims, None, knobs.signing);
    Json(json!({"access_token": "unused", "token_type": "Bearer", "expires_in": 300, "id_token": id_token})).into_response()
}

/// The configuration file of a `flatline-server` process that trusts a [`FakeIdp`] (provider id `fake`), for tests
/// and benchmarks that run real server processes. Several processes given the same `dir` and database share their
/// secret and key files, as the processes of one instance must. Every rate limit is raised out of the way: such
/// runs measure or race the rules, not the limiters.
#[derive(Debug, Clone)]
pub struct ServerProcessConfig<'a> {
    /// Where the shared secret and key files live; `client.secret` there must hold [`CLIENT_SECRET`].
    pub dir: &'a std::path::Path,
    /// The loopback port to listen on.
    pub port: u16,
    /// `database.url`.
    pub database_url: &'a str,
    /// `database.max_connections`.
    pub max_connections: u32,
    /// The fake IdP's issuer.
    pub issuer: &'a str,
    /// `invites.required`.
    pub invites_required: bool,
    /// The redirect URI clients use.
    pub redirect_uri: &'a str,
}

impl ServerProcessConfig<'_> {
    /// The TOML text.
    pub fn to_toml(&self) -> String {
        let d = self.dir.display();
        let mut limits = String::new();
        for l in flatline_core::ratelimit::Limiter::ALL {
            limits.push_str(&format!(
                "[limits.{}]\nbucket_size = 1000000\npermit_regeneration_seconds = 0.001\n",
                l.name()
            ));
        }
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
shutdown_grace_seconds = 1
[database]
url = "{db}"
max_connections = {connections}
[registration]
principal_secret_file = "{d}/principal.key"
[invites]
required = {invites}
[instance]
signing_key_file = "{d}/signing.key"
sealed_sender_key_file = "{d}/sealed-sender.key"
zk_params_file = "{d}/zkgroup.key"
[log]
filter = "warn"
{limits}
[[providers]]
id = "fake"
name = "Fake"
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret_file = "{d}/client.secret"
redirect_uris = ["{redirect}"]
allowed_algs = ["EdDSA", "ES256"]
"#,
            port = self.port,
            db = self.database_url,
            connections = self.max_connections,
            invites = self.invites_required,
            issuer = self.issuer,
            redirect = self.redirect_uri,
        )
    }
}
