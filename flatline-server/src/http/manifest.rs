//! `GET /.well-known/flatline/manifest`: the signed instance manifest (API.md §7).
//!
//! | status | code | when |
//! | --- | --- | --- |
//! | 200 | | the compact JWS, `application/jose` |
//! | 404 | `manifest_not_configured` | the process runs without trust material (embedded/test setups) |

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use flatline_core::manifest::{CONTENT_TYPE, WELL_KNOWN_PATH};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ErrorBody};

/// Routes of this group.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(manifest))
}

/// The signed instance manifest: a compact JWS signed with the instance key (docs/TRUST.md).
#[utoipa::path(
    get,
    path = WELL_KNOWN_PATH,
    tag = "trust",
    responses(
        (status = 200, description = "The manifest as a compact JWS", content_type = "application/jose",
            body = String, headers(("Cache-Control" = String, description = "`public, max-age=300`"))),
        (status = 404, description = "`manifest_not_configured`: this process runs without trust material",
            body = ErrorBody),
    )
)]
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
