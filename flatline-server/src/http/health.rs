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
    let store = state.store.clone();
    let healthy = state.health.run(|| probe(store)).await;
    if healthy {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
    }
}

/// One database round trip: a lookup of a nil id exercises the read path without touching data. Bounded: while
/// PostgreSQL is down the pool keeps reconnecting for `database.acquire_timeout_seconds` (10 s) before it gives up,
/// and a readiness probe that hangs that long reports nothing (and probes give up long before).
async fn probe(store: std::sync::Arc<dyn flatline_core::store::Store>) -> bool {
    match tokio::time::timeout(HEALTH_TIMEOUT, store.account(Aci(uuid::Uuid::nil()))).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check failed");
            false
        }
        Err(_) => {
            tracing::warn!(
                timeout_ms = HEALTH_TIMEOUT.as_millis() as u64,
                "health check: the database did not answer in time"
            );
            false
        }
    }
}

/// At most one `/healthz` database probe at a time (security review F-18: `/healthz` is unauthenticated and, unless
/// `server.admin_listen` is set, public). A request that arrives while a probe runs waits for it and takes its
/// answer; one that arrives after the last probe finished starts a new one. So a flood of health checks costs
/// the database one query at a time, and no answer is older than its request.
#[derive(Default)]
pub struct HealthCheck {
    /// When the last probe finished, and what it found.
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, bool)>>,
}

impl HealthCheck {
    /// The answer of a probe that finished after this call began: the running one's, or a new one's.
    pub async fn run<F>(&self, probe: impl FnOnce() -> F) -> bool
    where
        F: std::future::Future<Output = bool>,
    {
        let arrived = tokio::time::Instant::now();
        let mut last = self.last.lock().await;
        if let Some((finished, healthy)) = *last
            && finished >= arrived
        {
            return healthy;
        }
        let healthy = probe().await;
        *last = Some((tokio::time::Instant::now(), healthy));
        healthy
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::HealthCheck;

    /// Concurrent health checks share the probe that is running; a check after it finished probes again.
    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_checks_share_one_probe() {
        let check = Arc::new(HealthCheck::default());
        let probes = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let call = |healthy: bool| {
            let (check, probes, gate) = (check.clone(), probes.clone(), gate.clone());
            tokio::spawn(async move {
                check
                    .run(|| async move {
                        probes.fetch_add(1, Ordering::SeqCst);
                        let _open = gate.acquire().await.expect("gate");
                        healthy
                    })
                    .await
            })
        };
        let first = call(false);
        // Let the first call start its probe and the others arrive and queue behind it (one thread: each yield
        // runs every spawned task until it waits).
        tokio::task::yield_now().await;
        let others: Vec<_> = (0..20).map(|_| call(true)).collect();
        tokio::task::yield_now().await;
        assert_eq!(probes.load(Ordering::SeqCst), 1);
        gate.add_permits(100);
        assert!(!first.await.expect("first"));
        for other in others {
            assert!(
                !other.await.expect("other"),
                "takes the running probe's answer"
            );
        }
        assert_eq!(probes.load(Ordering::SeqCst), 1, "one probe for 21 checks");
        assert!(
            call(true).await.expect("later"),
            "a later check probes again"
        );
        assert_eq!(probes.load(Ordering::SeqCst), 2);
    }
}
