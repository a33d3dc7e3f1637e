//! A fake OpenID provider on a real 127.0.0.1 socket: the test kit's [`Idp`] (PAR with client authentication and
//! PKCE S256, code exchange, JWKS, discovery, end-session) at the root of its own port, where the test approves
//! logins itself. Unlike a real IdP it can mint hostile tokens on request — wrong nonce or audience, `alg: none`,
//! HS256 keyed with a public key, an unknown `kid` — for negative tests.
//!
//! Time comes from the shared [`Clock`], so tokens line up with the server's mock clock.

use std::net::SocketAddr;
use std::sync::Arc;

use flatline_core::random::{SecureRandom, random_array};
use flatline_core::time::Clock;
use serde_json::Value;

use crate::idp::{Idp, IdpOptions, Login};
pub use crate::idp::{Signing, TokenKnobs};

/// Our client registration at the fake.
pub const CLIENT_ID: &str = "flatline-test";
/// Its secret.
pub const CLIENT_SECRET: &str = "test-secret";

/// A running fake IdP.
pub struct FakeIdp {
    idp: Idp,
    /// Its address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeIdp {
    /// Starts on a random 127.0.0.1 port: EdDSA key `ed-1` and ES256 key `ec-1` published, any redirect URI,
    /// requests and codes usable until spent (tests move the mock clock freely).
    pub async fn start(clock: Arc<dyn Clock>, rng: Arc<dyn SecureRandom>) -> FakeIdp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake IdP");
        let addr = listener.local_addr().expect("local addr");
        let options = IdpOptions {
            issuer: format!("http://{addr}"),
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            signing_seed: zeroize::Zeroizing::new(random_array(rng.as_ref())),
            kid: "ed-1".into(),
            es256: true,
            redirect_uris: None,
            login: Login::Approve,
            request_ttl: None,
            email_domain: "example.test".into(),
            sid_prefix: "sid-".into(),
            profile_claims: false,
        };
        let idp = Idp::new(options, clock, rng);
        let app = idp.router();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeIdp { idp, addr, task }
    }

    /// The issuer URL.
    pub fn issuer(&self) -> String {
        self.idp.issuer().to_owned()
    }

    /// The published JWKS.
    pub fn jwks(&self) -> String {
        self.idp.jwks().to_string()
    }

    /// Extra claims for a login (e.g. `email`, `email_verified`); merged into every token for it.
    pub fn set_user_claims(&self, login: &str, claims: Value) {
        self.idp.set_user_claims(login, claims);
    }

    /// Tweaks for the next ID token.
    pub fn next_token(&self, knobs: TokenKnobs) {
        self.idp.next_token(knobs);
    }

    /// Make the PAR or token endpoint fail with 500.
    pub fn fail(&self, par: bool, token: bool) {
        self.idp.fail(par, token);
    }

    /// What the browser would do: log in as `login` and return the callback's `(code, state, iss)`.
    pub fn approve(&self, request_uri: &str, login: &str) -> Option<(String, String, String)> {
        self.idp.approve(request_uri, login)
    }

    /// Signs arbitrary claims with the published EdDSA key and the given `typ` (for logout tokens).
    pub fn sign(&self, claims: &Value, typ: Option<&str>, signing: Signing) -> String {
        self.idp.sign(claims, typ, signing)
    }

    /// A well-formed logout token for `sub`/`sid` with a fresh `jti`.
    pub fn logout_claims(&self, sub: Option<&str>, sid: Option<&str>) -> Value {
        self.idp.logout_claims(sub, sid)
    }
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
