//! Running the server: listeners, background housekeeping, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flatline_core::store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::http::{AppState, admin_app, app};
use crate::system::{OsRandom, SystemClock};

/// A failure to start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The store could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] flatline_core::store::StoreError),
    /// The instance keys or manifest could not be set up (including a key that does not match the database).
    #[error(transparent)]
    Trust(#[from] crate::trust::TrustError),
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
    let trust = crate::trust::Trust::bootstrap(
        &config,
        store.as_ref(),
        rng.as_ref(),
        &[],
        flatline_core::time::Clock::now(clock.as_ref()),
    )
    .await?;
    Ok(AppState::new(config, store, clock, rng)?.with_trust(Arc::new(trust)))
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
        app(state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
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
        match state.store.purge_full_buckets(state.clock.now()).await {
            Ok(n) if n > 0 => tracing::debug!(removed = n, "purged full rate-limit buckets"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "rate-limit bucket purge failed"),
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
