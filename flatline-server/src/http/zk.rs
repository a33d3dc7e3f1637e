//! `GET /v1/certificate/auth/group`: zkgroup auth credentials for groups v2 and call links (API.md §14, M§3.6).
//!
//! | status | code | when |
//! | --- | --- | --- |
//! | 200 | | one `AuthCredentialWithPniResponse` (zkc) and one `CallLinkAuthCredentialResponse` per day of the range |
//! | 400 | `invalid_query` | `redemptionStartSeconds`/`redemptionEndSeconds` missing or not integers |
//! | 400 | `invalid_redemption_range` | not day-aligned, start after end, start before today, end more than 7 days after today |
//! | 401 | `unauthorized` | missing or invalid credentials |
//! | 404 | `zk_not_configured` | the process runs without trust material (embedded/test setups) |

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flatline_core::ids::Pni;
use flatline_core::zk::service::{DayCredential, GroupCredentialError, issue_group_credentials};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ErrorBody, Query};
use super::extract::Authenticated;
use super::openapi::{INTERNAL, UNAUTHORIZED};

/// Routes of this group.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(group_auth_credentials))
}

/// Status table of this group.
fn error(e: GroupCredentialError) -> ApiError {
    match e {
        GroupCredentialError::InvalidRange(m) => {
            ApiError::bad_request("invalid_redemption_range", m)
        }
        GroupCredentialError::Zk(z) => ApiError::internal(&z),
    }
}

fn not_configured() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "zk_not_configured",
        "this server has no zkgroup parameters",
    )
}

/// The redemption range. Other parameters (Desktop's `zkcCredential=true`) are ignored.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
struct RangeQuery {
    /// First redemption day (epoch seconds, day-aligned, not before today).
    redemption_start_seconds: u64,
    /// Last redemption day (epoch seconds, day-aligned, at most 7 days after today; inclusive).
    redemption_end_seconds: u64,
}

/// One credential for one day.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Credential {
    /// Standard base64 of the serialized response.
    pub credential: String,
    /// The redemption day, epoch seconds.
    pub redemption_time: u64,
}

impl From<DayCredential> for Credential {
    fn from(d: DayCredential) -> Self {
        Credential {
            credential: STANDARD.encode(&d.credential),
            redemption_time: d.redemption_time,
        }
    }
}

/// Signal's `GroupCredentials` (the wire form of `flatline_core::zk::GroupCredentials`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = GroupCredentials)]
pub struct GroupCredentialsDto {
    /// `AuthCredentialWithPniResponse` (zkc, 425 bytes) per day.
    pub credentials: Vec<Credential>,
    /// `CallLinkAuthCredentialResponse` (361 bytes) per day.
    pub call_link_auth_credentials: Vec<Credential>,
    /// The caller's PNI.
    #[schema(value_type = uuid::Uuid)]
    pub pni: Pni,
}

/// Group auth and call-link auth credentials, one of each per day of the range.
///
/// Clients check them against the manifest's `trustRoots.zkParams` / `trustRoots.genericZkParams`.
#[utoipa::path(
    get,
    path = "/v1/certificate/auth/group",
    tag = "zkgroup",
    security(("basicAuth" = [])),
    params(RangeQuery),
    responses(
        (status = 200, description = "One credential of each kind per day", body = GroupCredentialsDto),
        (status = 400, description = "`invalid_query` (missing or non-integer times) or `invalid_redemption_range` \
            (not day-aligned, start after end, start before today, end more than 7 days after today)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`zk_not_configured`: this process runs without trust material", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn group_auth_credentials(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<RangeQuery>,
) -> Response {
    let Some(trust) = state.trust.clone() else {
        return not_configured().into_response();
    };
    let now = u64::try_from(state.clock.now().as_secs()).unwrap_or(0);
    let (aci, pni) = (caller.account.aci, caller.account.pni);
    let rng = state.rng.clone();
    // Up to 16 issuances with proofs: keep them off the async workers.
    let issued = tokio::task::spawn_blocking(move || {
        issue_group_credentials(
            trust.zk(),
            aci,
            pni,
            q.redemption_start_seconds,
            q.redemption_end_seconds,
            now,
            rng.as_ref(),
        )
    })
    .await;
    match issued {
        Ok(Ok(c)) => axum::Json(GroupCredentialsDto {
            credentials: c.credentials.into_iter().map(Credential::from).collect(),
            call_link_auth_credentials: c
                .call_link_auth_credentials
                .into_iter()
                .map(Credential::from)
                .collect(),
            pni,
        })
        .into_response(),
        Ok(Err(e)) => error(e).into_response(),
        Err(join) => ApiError::internal(&join).into_response(),
    }
}
