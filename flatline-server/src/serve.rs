//! Running the server: listeners, background housekeeping, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flatline_core::manifest::IdentityProvider;
use flatline_core::store::{FingerprintRecord, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::http::{AppState, admin_app, app};
use crate::system::{OsRandom, SystemClock};

/// A failure to start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The server could not be assembled.
    #[error(transparent)]
    Setup(#[from] crate::http::SetupError),
    /// The store could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] flatline_core::store::StoreError),
    /// The instance keys or manifest could not be set up (including a key that does not match the database).
    #[error(transparent)]
    Trust(#[from] crate::trust::TrustError),
    /// A secret file differs from the one the database was set up with.
    #[error(
        "the secret in {0} does not match the fingerprint recorded in the database; restore the original file"
    )]
    SecretMismatch(String),
    /// A provider's client secret differs from the one the other processes of this instance were started with.
    #[error(
        "the client secret of provider {provider} does not match the fingerprint recorded in the database (another \
         process of this instance uses a different one). If you rotated it on purpose, give every process the new \
         secret and run `flatline-server keys forget {name}` once; refusing to start"
    )]
    ClientSecretMismatch {
        /// The provider id.
        provider: String,
        /// The fingerprint's name in the database.
        name: String,
    },
    /// A provider's client secret could not be read.
    #[error("provider {provider}: {source}")]
    ClientSecret {
        /// The provider id.
        provider: String,
        /// Why.
        source: crate::secrets::SecretError,
    },
    /// A listener could not be bound or failed.
    #[error("listener {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Builds the production state: the configured store, the system clock, the OS random source, and the instance
/// trust material (refusing to start when a key file does not match the database).
pub async fn production_state(config: Config) -> Result<AppState, ServeError> {
    let store: Arc<dyn Store> = crate::store::open(&config.database).await?;
    let clock = Arc::new(SystemClock);
    let rng = Arc::new(OsRandom);
    let state = AppState::new(config, store, clock, rng)?;
    finish_state(state, None).await
}

/// Checks the principal secret against the database and attaches the instance trust material. The manifest lists
/// `manifest_providers` when given; otherwise each provider's authorization endpoint is discovered now (the
/// development IdP passes its own, as it cannot answer discovery before the server runs).
pub async fn finish_state(
    state: AppState,
    manifest_providers: Option<Vec<IdentityProvider>>,
) -> Result<AppState, ServeError> {
    let principal_secret = check_principal_secret(&state).await?;
    check_client_secrets(&state, &principal_secret).await?;
    let providers = match manifest_providers {
        Some(p) => p,
        None => discover_manifest_providers(&state).await,
    };
    let now = state.clock.now();
    let trust = crate::trust::Trust::bootstrap(
        &state.config,
        state.store.as_ref(),
        state.rng.as_ref(),
        &providers,
        now,
    )
    .await?;
    Ok(state.with_trust(Arc::new(trust)))
}

/// The manifest lists each provider with its authorization endpoint. A provider whose discovery fails now is
/// left out (and logged); configure `authorization_endpoint` explicitly for a manifest that never depends on it.
async fn discover_manifest_providers(state: &AppState) -> Vec<IdentityProvider> {
    let mut providers = vec![];
    for p in state.registration.providers() {
        match state.registration.client().endpoints(p).await {
            Ok(e) => providers.push(IdentityProvider {
                id: p.id.clone(),
                name: p.name.clone(),
                issuer: p.issuer.clone(),
                authorization_endpoint: e.authorization,
            }),
            Err(e) => {
                tracing::error!(provider = %p.id, error = %e, "provider discovery failed; left out of the manifest")
            }
        }
    }
    providers
}

/// Name under which the principal secret's fingerprint is recorded.
pub const PRINCIPAL_SECRET_NAME: &str = "principal-secret";

/// Prefix of the names under which providers' client-secret fingerprints are recorded.
pub const CLIENT_SECRET_NAME_PREFIX: &str = "oidc-client-secret:";

/// Records the principal secret's fingerprint on first start and refuses a different secret afterwards: every
/// process sharing the database must derive the same opaque principals and tombstone keys. Returns the secret.
async fn check_principal_secret(
    state: &AppState,
) -> Result<zeroize::Zeroizing<Vec<u8>>, ServeError> {
    use sha2::Digest as _;
    let secret = crate::secrets::load_or_create_hex(
        &state.config.registration.principal_secret_file,
        32,
        state.rng.as_ref(),
    )
    .map_err(crate::http::SetupError::from)?;
    let fingerprint = hex::encode(sha2::Sha256::digest(&*secret));
    match state
        .store
        .record_key_fingerprint(PRINCIPAL_SECRET_NAME, &fingerprint, state.clock.now())
        .await?
    {
        FingerprintRecord::Recorded => Ok(secret),
        FingerprintRecord::Existing(recorded) if recorded == fingerprint => Ok(secret),
        FingerprintRecord::Existing(_) => Err(ServeError::SecretMismatch(
            state
                .config
                .registration
                .principal_secret_file
                .display()
                .to_string(),
        )),
    }
}

/// Records each provider's client-secret fingerprint on first start and refuses a process whose secret differs:
/// processes behind one load balancer must present the same client to the IdP, or logins fail at random. Client
/// secrets may be short, so the fingerprint is keyed with the (random, 32-byte) principal secret instead of a
/// plain hash that could be brute-forced from a database dump.
async fn check_client_secrets(state: &AppState, principal_secret: &[u8]) -> Result<(), ServeError> {
    use sha2::Digest as _;
    for p in &state.config.providers {
        let secret = crate::secrets::read_secret(
            p.client_secret_file.as_deref(),
            p.client_secret_env.as_deref(),
        )
        .map_err(|source| ServeError::ClientSecret {
            provider: p.id.clone(),
            source,
        })?;
        let mut hash = sha2::Sha256::new();
        hash.update(b"flatline client-secret fingerprint\0");
        hash.update(principal_secret);
        hash.update(secret.as_bytes());
        let fingerprint = hex::encode(hash.finalize());
        let name = format!("{CLIENT_SECRET_NAME_PREFIX}{}", p.id);
        match state
            .store
            .record_key_fingerprint(&name, &fingerprint, state.clock.now())
            .await?
        {
            FingerprintRecord::Recorded => {
                tracing::info!(provider = %p.id, "recorded the client secret's fingerprint")
            }
            FingerprintRecord::Existing(recorded) if recorded == fingerprint => {}
            FingerprintRecord::Existing(_) => {
                return Err(ServeError::ClientSecretMismatch {
                    provider: p.id.clone(),
                    name,
                });
            }
        }
    }
    Ok(())
}

/// The bound sockets of a server.
pub struct Listeners {
    /// The API listener.
    pub main: TcpListener,
    /// The admin listener, when configured.
    pub admin: Option<TcpListener>,
}

/// Binds the configured addresses.
pub async fn bind(config: &Config) -> Result<Listeners, ServeError> {
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Listen { addr, source })
    };
    let main = bind(config.server.listen).await?;
    let admin = match config.server.admin_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    Ok(Listeners { main, admin })
}

/// Serves on `listeners` until `shutdown` resolves, then lets in-flight requests finish within the configured
/// grace period.
pub async fn run(
    state: AppState,
    listeners: Listeners,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let router = app(state.clone());
    run_router(state, router, listeners, shutdown).await
}

/// Like [`run`], serving `router` (the API plus extra routes, such as the development IdP) on the main listener.
pub async fn run_router(
    state: AppState,
    router: axum::Router,
    listeners: Listeners,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let config = state.config.clone();
    let Listeners { main, admin } = listeners;
    let main_addr = main.local_addr().map_err(|source| ServeError::Listen {
        addr: config.server.listen,
        source,
    })?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutdown requested; draining");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };

    let housekeeping = tokio::spawn(housekeeping(state.clone(), stop_rx.clone()));
    tracing::info!(addr = %main_addr, "listening");
    let main_server = axum::serve(
        main,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stopped(stop_rx.clone()));
    let admin_server = admin.map(|l| {
        tracing::info!(addr = ?l.local_addr().ok(), "admin listening");
        axum::serve(
            l,
            admin_app(state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stopped(stop_rx.clone()))
    });

    let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
    let serving = async {
        let main_result = match admin_server {
            Some(admin) => tokio::try_join!(main_server, admin).map(|_| ()),
            None => main_server.await,
        };
        main_result.map_err(|source| ServeError::Listen {
            addr: main_addr,
            source,
        })
    };
    tokio::pin!(serving);
    let mut rx = stop_rx.clone();
    tokio::select! {
        r = &mut serving => r?,
        () = async { let _ = rx.wait_for(|v| *v).await; } => {
            if tokio::time::timeout(grace, &mut serving).await.is_err() {
                tracing::warn!(seconds = grace.as_secs(), "grace period over; dropping remaining connections");
            }
        }
    }
    housekeeping.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Periodic cleanup of shared state that would otherwise only grow.
async fn housekeeping(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = state.clock.now();
        match state.store.purge_full_buckets(now).await {
            Ok(n) if n > 0 => tracing::debug!(removed = n, "purged full rate-limit buckets"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "rate-limit bucket purge failed"),
        }
        // Expired sessions already free their invite reservations when they expire; this only reclaims space.
        match state.store.purge_expired_registrations(now).await {
            Ok(n) if n > 0 => tracing::debug!(
                removed = n,
                "purged expired sessions, tombstones and token ids"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "registration purge failed"),
        }
        // Unfinished uploads past their expiry, attachments past retention (at most once per cleanup interval).
        match state.storage.cleanup(now).await {
            Ok(n) if n > 0 => {
                tracing::debug!(removed = n, "removed expired uploads and attachments")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "storage cleanup failed"),
        }
        // Unacknowledged messages past `messages.ttl_days`.
        match state.messages.expire().await {
            Ok(n) if n > 0 => tracing::info!(removed = n, "expired undelivered messages"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "message expiry failed"),
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
