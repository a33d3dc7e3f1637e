//! Running the server: listeners, background housekeeping, graceful shutdown.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use flatline_core::manifest::IdentityProvider;
use flatline_core::store::{FingerprintRecord, Store};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::config::Settings;
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
    /// The TLS certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The PostgreSQL event bus of the chat sockets could not start.
    #[error(transparent)]
    ChatBus(#[from] crate::chat::bus::BusError),
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
pub async fn production_state(config: Settings) -> Result<AppState, ServeError> {
    let store: Arc<dyn Store> = crate::store::open(&config.database).await?;
    let clock = Arc::new(SystemClock);
    let rng = Arc::new(OsRandom);
    let state = AppState::new(config, store, clock, rng)?;
    install_chat_bus(&state).await?;
    finish_state(state, None).await
}

/// With PostgreSQL, several processes may share the database: chat events (displacement, disconnects, new messages)
/// then travel over `LISTEN/NOTIFY`. With SQLite the in-process bus stays.
pub async fn install_chat_bus(state: &AppState) -> Result<(), ServeError> {
    let url = state.config.database.url();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let options = <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(url)
            .map_err(crate::chat::bus::BusError::from)?;
        let bus = crate::chat::bus::PgBus::start(options, &state.chat).await?;
        state.chat.set_bus(bus);
    }
    Ok(())
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
    /// The API listener (HTTPS when `[server.tls]` is set).
    pub main: TcpListener,
    /// The admin listener, when configured.
    pub admin: Option<TcpListener>,
    /// A second listener serving the API over TLS with its own certificate (`flatline-server dev --tls-listen`).
    pub extra_tls: Option<(TcpListener, TlsAcceptor)>,
}

/// Binds the configured addresses.
pub async fn bind(config: &Settings) -> Result<Listeners, ServeError> {
    let main = bind_addr(config.server.listen).await?;
    let admin = match config.server.admin_listen {
        Some(addr) => Some(bind_addr(addr).await?),
        None => None,
    };
    Ok(Listeners {
        main,
        admin,
        extra_tls: None,
    })
}

/// Binds one address.
pub async fn bind_addr(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, source })
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
    let Listeners {
        main,
        admin,
        extra_tls,
    } = listeners;
    let main_addr = main.local_addr().map_err(|source| ServeError::Listen {
        addr: config.server.listen,
        source,
    })?;
    let tls = match &config.server.tls {
        Some(t) => Some(crate::tls::acceptor(&t.cert_file, &t.key_file)?),
        None => None,
    };
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
    tracing::info!(addr = %main_addr, tls = tls.is_some(), "listening");
    let limits = ConnectionLimits::from_config(&config.server);
    let mut servers = JoinSet::new();
    servers.spawn(serve_connections(
        main,
        router.clone(),
        tls,
        limits.clone(),
        stop_rx.clone(),
    ));
    if let Some((listener, acceptor)) = extra_tls {
        tracing::info!(addr = ?listener.local_addr().ok(), "TLS listening");
        servers.spawn(serve_connections(
            listener,
            router,
            Some(acceptor),
            limits,
            stop_rx.clone(),
        ));
    }
    let admin_server = admin.map(|l| {
        tracing::info!(addr = ?l.local_addr().ok(), "admin listening");
        axum::serve(
            l,
            admin_app(state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stopped(stop_rx.clone()))
    });

    let grace = config.server.shutdown_grace;
    let serving = async {
        let main = async {
            while servers.join_next().await.is_some() {}
            Ok(())
        };
        let main_result = match admin_server {
            Some(admin) => tokio::try_join!(main, admin).map(|_| ()),
            None => main.await,
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

/// Connection limits of a listener (security review F-02). WebSockets leave these counts once upgraded; `[chat]`
/// counts them instead.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Time to finish the TLS handshake, to send a request head, and to stay idle between requests.
    pub header_read_timeout: Duration,
    /// Open connections of the listener.
    pub max_connections: usize,
    /// Open connections per peer address.
    pub max_per_ip: usize,
    /// Peers without a per-address cap: the trusted proxies, whose connections carry many clients.
    pub uncapped: Arc<[ipnet::IpNet]>,
}

impl ConnectionLimits {
    /// The limits of `[server]`.
    pub fn from_config(c: &crate::config::ServerSettings) -> Self {
        ConnectionLimits {
            header_read_timeout: c.header_read_timeout,
            max_connections: c.max_connections,
            max_per_ip: c.max_connections_per_ip,
            uncapped: c.trusted_proxies.clone(),
        }
    }
}

type PerIp = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One connection's place in the per-address count; released on drop.
struct IpSlot {
    counts: PerIp,
    ip: IpAddr,
}

impl IpSlot {
    fn take(counts: &PerIp, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// The accept loop: HTTP/1.1 (with upgrades, for the WebSockets) over plain TCP or TLS, with hyper's header-read
/// timer installed, and connection caps. Returns once `stop` is set and the open connections have finished.
pub async fn serve_connections(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let total = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip: PerIp = Arc::default();
    let mut connections = JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, usually: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        while connections.try_join_next().is_some() {}
        let Ok(permit) = total.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "connection limit reached; closing");
            continue;
        };
        let slot = if limits.uncapped.iter().any(|n| n.contains(&peer.ip())) {
            None
        } else {
            match IpSlot::take(&per_ip, peer.ip(), limits.max_per_ip) {
                Some(slot) => Some(slot),
                None => {
                    tracing::debug!(%peer, "per-address connection limit reached; closing");
                    continue;
                }
            }
        };
        let router = router.clone();
        let limits = limits.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let _held = (permit, slot);
            let _ = tcp.set_nodelay(true);
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp))
                        .await
                    {
                        Ok(Ok(stream)) => serve_one(stream, peer, router, limits, stop).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => serve_one(tcp, peer, router, limits, stop).await,
            }
        });
    }
    while connections.join_next().await.is_some() {}
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}

async fn serve_one<I>(
    io: I,
    peer: SocketAddr,
    router: axum::Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request.map(axum::body::Body::new))
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        r = connection.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        () = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
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
