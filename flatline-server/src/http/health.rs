//! `/healthz` and `/metrics`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use flatline_core::ids::Aci;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

/// Routes of this group.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(metrics))
}

/// Health check.
///
/// 200 when the database answers within 2 s, 503 otherwise. Served on the admin listener instead when `server.admin_listen`
/// is set.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "The database answers", content_type = "text/plain", body = String,
            example = "ok"),
        (status = 503, description = "The database does not answer (within 2 s)", content_type = "text/plain", body = String,
            example = "store unavailable"),
    )
)]
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    // A lookup of a nil id exercises the read path without touching data. Bounded: while PostgreSQL is down the
    // pool keeps reconnecting for `database.acquire_timeout_seconds` (10 s) before it gives up, and a readiness
    // probe that hangs that long reports nothing (and probes give up long before).
    match tokio::time::timeout(HEALTH_TIMEOUT, state.store.account(Aci(uuid::Uuid::nil()))).await {
        Ok(Ok(_)) => (StatusCode::OK, "ok"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
        }
        Err(_) => {
            tracing::warn!(
                timeout_ms = HEALTH_TIMEOUT.as_millis() as u64,
                "health check: the database did not answer in time"
            );
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
        }
    }
}

/// How long `/healthz` waits for the database before it answers 503.
pub const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Prometheus metrics.
///
/// The OpenMetrics text format. Served on the admin listener instead when `server.admin_listen` is set.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Metrics",
            content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
    )
)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
