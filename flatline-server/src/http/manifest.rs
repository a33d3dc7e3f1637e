//! `GET /.well-known/flatline/manifest`: the signed instance manifest (API.md §7).
//!
//! | status | code | when |
//! | --- | --- | --- |
//! | 200 | | the compact JWS, `application/jose` |
//! | 404 | `manifest_not_configured` | the process runs without trust material (embedded/test setups) |

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flatline_core::manifest::{CONTENT_TYPE, WELL_KNOWN_PATH};

use super::AppState;
use super::error::ApiError;

/// Routes of this group.
pub fn routes() -> Router<AppState> {
    Router::new().route(WELL_KNOWN_PATH, get(manifest))
}

async fn manifest(State(state): State<AppState>) -> Response {
    let Some(trust) = &state.trust else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "manifest_not_configured",
            "this server has no instance manifest",
        )
        .into_response();
    };
    let (_, jws) = trust.signed_manifest(state.clock.now());
    (
        [
            (header::CONTENT_TYPE, CONTENT_TYPE),
            // Short enough that a re-signature or a new version reaches clients quickly.
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        jws,
    )
        .into_response()
}
