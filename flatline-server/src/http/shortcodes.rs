//! Contact shortcodes (API §15): `/v1/contact_shortcodes*`.
//!
//! Every unusable shortcode — malformed, never issued, expired, used, burned, revoked, or said by an account the
//! owner denied — gets the same 404 `invite_invalid` body, after the same work: both `shortcodeAttempt` permits,
//! one store transaction and one HMAC comparison (see `flatline_core::shortcodes`).

use std::net::IpAddr;

use axum::extract::State;
use axum::http::StatusCode;
use flatline_core::ids::Aci;
use flatline_core::shortcodes::{
    ContactShortcode, NewShortcodeRequest, ShortcodeError, ShortcodeId,
};
use flatline_core::time::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ErrorBody, Json, Path};
use super::extract::{Authenticated, ClientIp};
use super::openapi::{self, BODY_TOO_LARGE, INTERNAL, INVALID_JSON, RATE_LIMITED, UNAUTHORIZED};

/// Routes of this group.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_shortcode, list_shortcodes))
        .routes(routes!(redeem_shortcode))
        .routes(routes!(revoke_shortcode))
}

/// The one answer to every unusable shortcode.
fn invalid() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invite_invalid",
        "this shortcode cannot be used",
    )
}

/// Status table of this group.
fn error(e: ShortcodeError) -> ApiError {
    match e {
        ShortcodeError::Invalid | ShortcodeError::Burned => invalid(),
        ShortcodeError::NotFound => ApiError::not_found("no such contact shortcode"),
        ShortcodeError::NotInviteOnly => ApiError::new(
            StatusCode::CONFLICT,
            "contacts_not_invite_only",
            "set the contact policy to invite_only first",
        ),
        ShortcodeError::QuotaExceeded => ApiError::new(
            StatusCode::FORBIDDEN,
            "quota_exceeded",
            "too many live contact shortcodes; delete some first",
        ),
        ShortcodeError::Validation(m) => ApiError::unprocessable(m),
        ShortcodeError::RateLimited(r) => r.into(),
        ShortcodeError::Store(s) => ApiError::internal(&s),
    }
}

/// The `shortcodeAttempt` bucket key of a client address: an IPv4 address as it is, an IPv6 address by its /64
/// (one subscriber usually holds a whole /64, so per-address buckets would be free to multiply). IPv4-mapped IPv6
/// addresses count as their IPv4 address.
///
/// Kept minimal and local to this limiter on purpose: a general /64 keying of every per-IP limiter is being added
/// elsewhere, and this function should give way to it then.
pub fn network_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

fn secs(t: Timestamp) -> i64 {
    t.as_secs()
}

/// A new shortcode; an absent lifetime is 600 s.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct CreateDto {
    /// Lifetime in seconds, 1..=86400 (default 600).
    expires_in_seconds: Option<i64>,
}

/// A new shortcode, with its words: the only answer that has them.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct CreatedDto {
    /// Shortcode id.
    id: Uuid,
    /// The code to say aloud, e.g. `42-velvet-harbor`.
    shortcode: String,
    /// Expiry.
    expires_at: i64,
}

/// Creates a contact shortcode (the account must be `invite_only`) on the smallest free nameplate.
#[utoipa::path(
    post,
    path = "/v1/contact_shortcodes",
    tag = "contacts",
    security(("basicAuth" = [])),
    request_body = CreateDto,
    responses(
        (status = 201, description = "The shortcode", body = CreatedDto),
        (status = 400, description = INVALID_JSON, body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "`quota_exceeded`: too many live shortcodes", body = ErrorBody),
        (status = 409, description = "`contacts_not_invite_only`: set the policy to invite_only first", body = ErrorBody),
        (status = 413, description = BODY_TOO_LARGE, body = ErrorBody),
        (status = 422, description = "`validation_failed`: expiresInSeconds out of bounds", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn create_shortcode(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Json(body): Json<CreateDto>,
) -> Result<(StatusCode, axum::Json<CreatedDto>), ApiError> {
    let (code, shortcode) = state
        .shortcodes
        .create(
            caller.account.aci,
            NewShortcodeRequest {
                expires_in_seconds: body.expires_in_seconds,
            },
        )
        .await
        .map_err(error)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedDto {
            id: code.id.0,
            shortcode: shortcode.render(),
            expires_at: secs(code.expires_at),
        }),
    ))
}

/// One of the caller's shortcodes (never its words).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ShortcodeDto {
    /// Shortcode id.
    id: Uuid,
    /// `live`, `used`, `burned`, `expired` or `revoked`.
    #[schema(schema_with = openapi::shortcode_state_schema)]
    state: &'static str,
    /// Expiry.
    expires_at: i64,
    /// Creation time.
    created_at: i64,
}

fn dto(code: &ContactShortcode, now: Timestamp) -> ShortcodeDto {
    ShortcodeDto {
        id: code.id.0,
        state: code.state(now).as_str(),
        expires_at: secs(code.expires_at),
        created_at: secs(code.created_at),
    }
}

/// The caller's shortcodes.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ShortcodesDto {
    contact_shortcodes: Vec<ShortcodeDto>,
}

/// The caller's contact shortcodes, oldest first (live ones and the most recent ended ones).
#[utoipa::path(
    get,
    path = "/v1/contact_shortcodes",
    tag = "contacts",
    security(("basicAuth" = [])),
    responses(
        (status = 200, description = "The shortcodes", body = ShortcodesDto),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn list_shortcodes(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<axum::Json<ShortcodesDto>, ApiError> {
    let codes = state
        .shortcodes
        .list(caller.account.aci)
        .await
        .map_err(error)?;
    let now = state.clock.now();
    Ok(axum::Json(ShortcodesDto {
        contact_shortcodes: codes.iter().map(|c| dto(c, now)).collect(),
    }))
}

/// Revokes one of the caller's shortcodes (it stops working at once).
#[utoipa::path(
    delete,
    path = "/v1/contact_shortcodes/{id}",
    tag = "contacts",
    security(("basicAuth" = [])),
    params(("id" = uuid::Uuid, Path, description = "Shortcode id")),
    responses(
        (status = 204, description = "Revoked (also when it had ended already)"),
        (status = 400, description = "`invalid_path`: a path segment does not decode", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`not_found`: no such shortcode of the caller", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn revoke_shortcode(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: ShortcodeId = id.parse().map_err(|_| error(ShortcodeError::NotFound))?;
    state
        .shortcodes
        .revoke(caller.account.aci, id)
        .await
        .map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A shortcode to redeem.
#[derive(Deserialize, ToSchema)]
struct RedeemDto {
    /// The code as heard: case and `-`, `_` or space separators do not matter.
    shortcode: String,
}

/// The shortcode's owner and the state of the caller's grant.
#[derive(Serialize, ToSchema)]
struct RedeemedDto {
    /// The owner's ACI.
    #[schema(value_type = Uuid)]
    owner: Aci,
    /// `active`, `pending` or `quarantined`.
    #[schema(schema_with = openapi::grant_state_schema)]
    state: &'static str,
}

/// Redeems a contact shortcode: the caller becomes an allowed (or quarantined) contact of its owner.
#[utoipa::path(
    post,
    path = "/v1/contact_shortcodes/redeem",
    tag = "contacts",
    security(("basicAuth" = [])),
    request_body = RedeemDto,
    responses(
        (status = 200, description = "Redeemed", body = RedeemedDto),
        (status = 400, description = INVALID_JSON, body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`invite_invalid`: the shortcode cannot be used (one body for every reason)", body = ErrorBody),
        (status = 413, description = BODY_TOO_LARGE, body = ErrorBody),
        (status = 422, description = "`validation_failed`: the caller's own shortcode", body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn redeem_shortcode(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ClientIp(ip): ClientIp,
    Json(body): Json<RedeemDto>,
) -> Result<axum::Json<RedeemedDto>, ApiError> {
    match state
        .shortcodes
        .redeem(caller.account.aci, &network_key(ip), &body.shortcode)
        .await
    {
        Ok((owner, grant)) => Ok(axum::Json(RedeemedDto {
            owner,
            state: grant.as_str(),
        })),
        Err(e) => {
            if matches!(e, ShortcodeError::Burned) {
                // Never log the guess; the guesser is what an operator needs.
                tracing::warn!(guesser = %caller.account.aci, "contact shortcode burned by a third failed guess");
            }
            Err(error(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_keys_group_ipv6_by_64() {
        let key = |s: &str| network_key(s.parse().unwrap());
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2::ffff"), key("2001:db8:1:2:aaaa::1"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }
}
