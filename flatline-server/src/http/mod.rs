//! The HTTP API: one module per endpoint group, each with its own error enum and status table.
//!
//! Handlers extract and validate wire data, call one core service, and map the result to a wire DTO. Only this
//! module knows HTTP and JSON shapes.

pub mod accounts;
pub mod error;
pub mod extract;
pub mod health;
pub mod keys;
pub mod manifest;
pub mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use flatline_core::accounts::Accounts;
use flatline_core::auth::Authenticator;
use flatline_core::keys::KeyService;
use flatline_core::random::SecureRandom;
use flatline_core::ratelimit::RateLimiters;
use flatline_core::store::Store;
use flatline_core::time::Clock;
use ipnet::IpNet;

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use error::ApiError;

/// Everything a handler may use. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Every aggregate's store.
    pub store: Arc<dyn Store>,
    /// The time source.
    pub clock: Arc<dyn Clock>,
    /// The randomness source.
    pub rng: Arc<dyn SecureRandom>,
    /// Named rate limiters over the shared buckets.
    pub limiters: RateLimiters,
    /// Device credential checks.
    pub auth: Authenticator,
    /// Account operations.
    pub accounts: Accounts,
    /// Prekey operations.
    pub keys: KeyService,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<[IpNet]>,
    /// The configuration the server runs with.
    pub config: Arc<Config>,
    /// Instance keys and the signed manifest; `None` until [`AppState::with_trust`] (tests that do not need it).
    pub trust: Option<Arc<crate::trust::Trust>>,
}

impl AppState {
    /// Wires services over `store`, `clock` and `rng` according to `config`.
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn SecureRandom>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let limiters = RateLimiters::new(store.clone(), clock.clone(), config.limits.to_limits()?);
        Ok(AppState {
            auth: Authenticator::new(store.clone(), clock.clone()),
            accounts: Accounts::new(store.clone()),
            keys: KeyService::new(store.clone(), limiters.clone()),
            trusted_proxies: config.trusted_proxies()?.into(),
            metrics: Arc::new(Metrics::new()),
            limiters,
            store,
            clock,
            rng,
            config: Arc::new(config),
            trust: None,
        })
    }

    /// Adds the instance trust material (see [`crate::trust::Trust::bootstrap`]).
    pub fn with_trust(mut self, trust: Arc<crate::trust::Trust>) -> Self {
        self.trust = Some(trust);
        self
    }
}

/// The whole application as one `Router`, ready for `axum::serve` or `tower::ServiceExt::oneshot`.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .merge(accounts::routes())
        .merge(keys::routes())
        .merge(manifest::routes());
    let mut router = api;
    if state.config.server.admin_listen.is_none() {
        router = router.merge(health::routes());
    }
    router
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The admin listener's router (`/healthz`, `/metrics`), when it is separate.
pub fn admin_app(state: AppState) -> Router {
    health::routes().with_state(state)
}

/// Times out slow requests, and records metrics and a log line for every request.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let timeout = Duration::from_secs(state.config.server.request_timeout_seconds);
    let response = match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "request took too long",
        )
        .into_response(),
    };
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state
        .metrics
        .request(&method, &route, status, elapsed.as_secs_f64());
    if status == 429 {
        state.metrics.rate_limited(&route);
    }
    tracing::info!(target: "flatline::http", %method, %route, status, ms = elapsed.as_millis() as u64, "request");
    response
}
