//! `flatline-server dev`: the server on embedded defaults with an **INSECURE** built-in identity provider mounted at
//! `/dev-idp`, so a newcomer can register an account with nothing but curl (docs/DEVELOPMENT.md).
//!
//! The development IdP logs anyone in as whatever `login_hint` names (default `dev-user`), with a fixed, public
//! client secret. It exists only behind the `dev` subcommand: no configuration key can mount it, and the `dev`
//! subcommand listens on loopback addresses only.
//!
//! It is the test kit's OpenID provider ([`flatline_testkit::idp`], the same one the tests' fake IdP runs), set up
//! with a login page: discovery, PAR with client authentication, PKCE S256, single-use codes that expire,
//! EdDSA-signed ID tokens and a JWKS. The server talks to it over loopback HTTP like to any other provider
//! (discovery and the JWKS are fetched on first use, once the listener serves). Its signing key is derived from the
//! principal secret, so a restart keeps the JWKS the server pinned valid. This module is the `dev` glue: the
//! rewritten configuration, the warnings and the mount.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use flatline_core::manifest::IdentityProvider;
use flatline_core::random::SecureRandom;
use flatline_core::store::Store;
use flatline_core::time::Clock;
use flatline_testkit::idp::{Idp, IdpOptions, Login};
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

/// How long a pushed request and a code stay usable.
const REQUEST_TTL: std::time::Duration = std::time::Duration::from_secs(120);

/// The signing seed: a domain-separated hash of the principal secret, so it is stable across restarts of the same
/// data directory and unrelated to anything else derived from that secret.
fn signing_seed(principal_secret: &[u8]) -> zeroize::Zeroizing<[u8; 32]> {
    zeroize::Zeroizing::new(
        Sha256::new()
            .chain_update(b"flatline dev-idp Ed25519 signing seed v1\0")
            .chain_update(principal_secret)
            .finalize()
            .into(),
    )
}

/// The development IdP with issuer `issuer` (its mount URL) accepting `redirect_uris`, signing with a key derived
/// from `principal_secret`. Serve [`Idp::router`] nested at [`MOUNT`].
pub fn development_idp(
    issuer: String,
    redirect_uris: Vec<String>,
    principal_secret: &[u8],
    clock: Arc<dyn Clock>,
    rng: Arc<dyn SecureRandom>,
) -> Idp {
    let seed = signing_seed(principal_secret);
    let public = flatline_testkit::idp::ed25519_public_key(&seed);
    let kid = format!("dev-{}", &hex::encode(Sha256::digest(public))[..12]);
    let options = IdpOptions {
        issuer,
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        signing_seed: seed,
        kid,
        es256: false,
        redirect_uris: Some(redirect_uris),
        login: Login::Hint {
            default: DEFAULT_LOGIN.into(),
        },
        request_ttl: Some(REQUEST_TTL),
        email_domain: "dev.invalid".into(),
        sid_prefix: "dev-sid-".into(),
        profile_claims: true,
    };
    Idp::new(options, clock, rng)
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
    pub idp: Idp,
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
    let idp = development_idp(issuer, redirect_uris, &principal_secret, clock, rng);
    let router = crate::http::app(state.clone()).merge(Router::new().nest(MOUNT, idp.router()));
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
