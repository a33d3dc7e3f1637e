//! The HTTP API: one module per endpoint group, each with its own error enum and status table.
//!
//! Handlers extract and validate wire data, call one core service, and map the result to a wire DTO. Only this
//! module knows HTTP and JSON shapes.

pub mod accounts;
pub mod attachments;
pub mod certificates;
pub mod chat;
pub mod contacts;
pub mod devices;
pub mod error;
pub mod extract;
pub mod health;
pub mod invites;
pub mod keys;
pub mod manifest;
pub mod messages;
pub mod multi_recipient;
pub mod openapi;
pub mod profiles;
pub mod registration;
pub mod shortcodes;
pub mod usernames;
pub mod verification;
pub mod wire;
pub mod zk;

use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Settings;
use error::ApiError;

pub use crate::state::{AppState, OidcParts, Services, SetupError};

/// The whole application as one `Router`, ready for `axum::serve` or `tower::ServiceExt::oneshot`, serving its own
/// OpenAPI description at `/openapi.json`. Requests inside chat sockets are dispatched into this same router (the
/// [`crate::chat::socket::Tunnel`] extension), so they meet the same routes, limits and middleware as HTTP.
pub fn app(state: AppState) -> Router {
    let router = routes(state);
    router
        .clone()
        .layer(Extension(crate::chat::socket::Tunnel(router)))
}

fn routes(state: AppState) -> Router {
    let (router, api) = api_router(&state.config).split_for_parts();
    router
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(Extension(openapi::Document::new(&api)))
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            signal_timestamp,
        ))
        .with_state(state)
}

/// Every route of the main listener, each registered together with its OpenAPI operation (see [`openapi`]).
pub fn api_router(config: &Settings) -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(accounts::routes())
        .merge(keys::routes())
        .merge(verification::routes())
        .merge(registration::routes())
        .merge(usernames::routes())
        .merge(contacts::routes())
        .merge(shortcodes::routes())
        .merge(invites::routes())
        .merge(profiles::routes())
        .merge(attachments::routes())
        .merge(messages::routes(config))
        .merge(multi_recipient::routes())
        .merge(manifest::routes())
        .merge(zk::routes())
        .merge(certificates::routes())
        .merge(chat::routes())
        .merge(devices::routes())
        .merge(openapi::routes());
    if config.server.admin_listen.is_none() {
        router = router.merge(health::routes());
    }
    router
}

/// The OpenAPI description of the main listener for `config` (what `/openapi.json` serves).
pub fn openapi_document(config: &Settings) -> utoipa::openapi::OpenApi {
    api_router(config).into_openapi()
}

/// The admin listener's router (`/healthz`, `/metrics`), when it is separate.
pub fn admin_app(state: AppState) -> Router {
    Router::from(health::routes()).with_state(state)
}

/// `X-Signal-Timestamp: <epoch ms>` on every response (M§1.1): libsignal only counts an upgrade error as the
/// server's answer when it carries this header, and reports the 101's value as the server time.
async fn signal_timestamp(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let now = state.clock.now().as_millis();
    response
        .headers_mut()
        .insert("x-signal-timestamp", axum::http::HeaderValue::from(now));
    response
}

/// The method as a metric label and log field: one of a closed set, so that arbitrary extension methods cannot
/// create unbounded label values or long log lines (security review F-01).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Routes that wait on purpose longer than `server.request_timeout_seconds`.
const LONG_POLL_ROUTES: &[&str] = &["/v1/devices/wait_for_linked_device/{tokenIdentifier}"];
/// TUS uploads (creation-with-upload and appends) read a body of up to `[storage] max_attachment_bytes` from clients on
/// slow links; an interrupted one is resumed from its offset, so a cut-off upload loses nothing.
const UPLOAD_ROUTES: &[(&str, &str)] = &[("POST", "/attachments"), ("PATCH", "/attachments/{key}")];
/// How long an upload request may take.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(3600);

/// Times out slow requests, and records metrics and a log line for every request.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let mut timeout = state.config.server.request_timeout;
    if LONG_POLL_ROUTES.contains(&route.as_str()) {
        // A long poll bounds its own wait (its `timeout` parameter).
        timeout += Duration::from_secs(devices::MAX_WAIT_SECONDS);
    }
    if UPLOAD_ROUTES.contains(&(method, route.as_str())) {
        timeout = timeout.max(UPLOAD_TIMEOUT);
    }
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
        .request(method, &route, status, elapsed.as_secs_f64());
    if status == 429 {
        state.metrics.rate_limited(&route);
    }
    tracing::info!(target: "flatline::http", %method, %route, status, ms = elapsed.as_millis() as u64, "request");
    response
}
