//! `/v1/accounts/username_hash*`, `/v1/accounts/username_link*` and principal discovery, with Signal's shapes,
//! status codes and check order. Byte fields are URL-safe base64, unpadded on output, any padding on input.
//!
//! Error codes: `validation_failed` (422: sizes, counts, encodings), `invalid_proof` (422), `username_unavailable`
//! (409: every hash taken), `no_reservation` (409), `username_taken` (410: the reservation lapsed and someone else
//! took the hash), `no_username` (409: a link needs a username), `authenticated_lookup` (400: lookups must be
//! anonymous), `not_found`, `rate_limited`.

use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use flatline_core::ids::Aci;
use flatline_core::usernames::UsernamesError;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ErrorBody, Json, Path};
use super::extract::{Authenticated, ClientNetwork};
use super::openapi::{BODY_TOO_LARGE, INTERNAL, INVALID_JSON, RATE_LIMITED, UNAUTHORIZED};
use super::wire;

/// Routes of this group.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(reserve))
        .routes(routes!(confirm))
        .routes(routes!(delete_username))
        .routes(routes!(lookup))
        .routes(routes!(set_link, delete_link))
        .routes(routes!(get_link))
        .routes(routes!(discover))
}

/// Status table of this group.
fn error(e: UsernamesError) -> ApiError {
    let conflict = |code, msg| ApiError::new(StatusCode::CONFLICT, code, msg);
    match e {
        UsernamesError::Invalid(m) => ApiError::unprocessable(m),
        UsernamesError::BadProof => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_proof",
            "failed to verify proof",
        ),
        UsernamesError::Unavailable => conflict(
            "username_unavailable",
            "none of the username hashes is available",
        ),
        UsernamesError::NoReservation => {
            conflict("no_reservation", "no matching username reservation")
        }
        UsernamesError::Taken => ApiError::new(
            StatusCode::GONE,
            "username_taken",
            "the reservation lapsed and the username hash was taken",
        ),
        UsernamesError::NoUsername => conflict("no_username", "the account has no username"),
        UsernamesError::NotFound => ApiError::not_found("not found"),
        UsernamesError::Gone => ApiError::unauthorized(),
        UsernamesError::RateLimited(r) => r.into(),
        UsernamesError::Store(s) => ApiError::internal(&s),
    }
}

/// Lookups must be anonymous (Signal's `requireNotAuthenticated`): any `Authorization` header is 400.
fn require_anonymous(headers: &HeaderMap) -> Result<(), ApiError> {
    if headers.contains_key(AUTHORIZATION) {
        Err(ApiError::bad_request(
            "authenticated_lookup",
            "this lookup must not be authenticated",
        ))
    } else {
        Ok(())
    }
}

/// An optional URL-safe base64 field (absent or null = `None`); undecodable text is 400 like any bad JSON value.
fn opt_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| wire::decode_url(&s).map_err(serde::de::Error::custom))
        .transpose()
}

/// An optional list of URL-safe base64 values.
fn opt_url_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Vec<u8>>>, D::Error> {
    Option::<Vec<String>>::deserialize(d)?
        .map(|v| {
            v.iter()
                .map(|s| wire::decode_url(s).map_err(serde::de::Error::custom))
                .collect()
        })
        .transpose()
}

fn url_bytes<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&wire::url::encode(bytes))
}

/// `ReserveUsernameHashRequest`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ReserveDto {
    /// 1..=20 username hashes of 32 bytes each, URL-safe base64, in order of preference.
    #[serde(deserialize_with = "opt_url_list")]
    #[schema(value_type = Option<Vec<String>>)]
    pub username_hashes: Option<Vec<Vec<u8>>>,
}

/// `ReserveUsernameHashResponse` (also the hash part of the confirm response).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservedDto {
    /// The reserved hash, URL-safe base64 without padding.
    #[serde(serialize_with = "url_bytes")]
    #[schema(value_type = String, pattern = "^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}(?:==)?|[A-Za-z0-9_-]{3}=?)?$")]
    pub username_hash: Vec<u8>,
}

/// Reserves the first available of the given username hashes for the caller (for a few minutes).
#[utoipa::path(
    put,
    path = "/v1/accounts/username_hash/reserve",
    tag = "usernames",
    security(("basicAuth" = [])),
    request_body = ReserveDto,
    responses(
        (status = 200, description = "The reserved hash", body = ReservedDto),
        (status = 400, description = INVALID_JSON, body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 409, description = "`username_unavailable`: every hash is taken", body = ErrorBody),
        (status = 413, description = BODY_TOO_LARGE, body = ErrorBody),
        (status = 422, description = "`validation_failed`: not 1..=20 hashes, or one is not 32 bytes", body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn reserve(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Json(body): Json<ReserveDto>,
) -> Result<axum::Json<ReservedDto>, ApiError> {
    let hashes = body.username_hashes.unwrap_or_default();
    let username_hash = state
        .usernames
        .reserve(&caller, &hashes)
        .await
        .map_err(error)?;
    Ok(axum::Json(ReservedDto { username_hash }))
}

/// `ConfirmUsernameHashRequest`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ConfirmDto {
    /// The reserved hash (32 bytes), URL-safe base64.
    #[serde(deserialize_with = "opt_url")]
    #[schema(value_type = Option<String>, pattern = "^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}(?:==)?|[A-Za-z0-9_-]{3}=?)?$")]
    pub username_hash: Option<Vec<u8>>,
    /// The 128-byte username proof, URL-safe base64.
    #[serde(deserialize_with = "opt_url")]
    #[schema(value_type = Option<String>, pattern = "^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}(?:==)?|[A-Za-z0-9_-]{3}=?)?$")]
    pub zk_proof: Option<Vec<u8>>,
    /// Optional 1..=128-byte encrypted username for the link, URL-safe base64.
    #[serde(deserialize_with = "opt_url")]
    #[schema(value_type = Option<String>, pattern = "^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}(?:==)?|[A-Za-z0-9_-]{3}=?)?$")]
    pub encrypted_username: Option<Vec<u8>>,
}

/// `UsernameHashResponse`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfirmedDto {
    /// The confirmed hash, URL-safe base64 without padding.
    #[serde(serialize_with = "url_bytes")]
    #[schema(value_type = String, pattern = "^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}(?:==)?|[A-Za-z0-9_-]{3}=?)?$")]
    pub username_hash: Vec<u8>,
    /// The link handle, or null.
    pub username_link_handle: Option<Uuid>,
}

/// Confirms the caller's reserved username hash with a zero-knowledge proof of the username behind it.
#[utoipa::path(
    put,
    path = "/v1/accounts/username_hash/confirm",
    tag = "usernames",
    security(("basicAuth" = [])),
    request_body = ConfirmDto,
    responses(
        (status = 200, description = "The confirmed hash and the link handle", body = ConfirmedDto),
        (status = 400, description = INVALID_JSON, body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 409, description = "`no_reservation`: the caller holds no reservation of this hash", body = ErrorBody),
        (status = 410, description = "`username_taken`: the reservation lapsed and someone else took the hash", body = ErrorBody),
        (status = 413, description = BODY_TOO_LARGE, body = ErrorBody),
        (status = 422, description = "`validation_failed` (sizes) or `invalid_proof`", body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn confirm(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Json(body): Json<ConfirmDto>,
) -> Result<axum::Json<ConfirmedDto>, ApiError> {
    let confirmed = state
        .usernames
        .confirm(
            &caller,
            body.username_hash.as_deref().unwrap_or_default(),
            body.zk_proof.as_deref().unwrap_or_default(),
            body.encrypted_username.as_deref(),
        )
        .await
        .map_err(error)?;
    Ok(axum::Json(ConfirmedDto {
        username_hash: confirmed.hash,
        username_link_handle: confirmed.link_handle,
    }))
}

/// Deletes the caller's username (and its link); a no-op without one.
#[utoipa::path(
    delete,
    path = "/v1/accounts/username_hash",
    tag = "usernames",
    security(("basicAuth" = [])),
    responses(
        (status = 204, description = "No username any more"),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn delete_username(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<StatusCode, ApiError> {
    state.usernames.delete(&caller).await.map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `AccountIdentifierResponse`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UuidDto {
    /// The ACI.
    #[schema(value_type = Uuid)]
    pub uuid: Aci,
}

/// The account holding a confirmed username hash. Must be anonymous.
#[utoipa::path(
    get,
    path = "/v1/accounts/username_hash/{hash}",
    tag = "usernames",
    params(("hash" = String, Path, description = "The 32-byte username hash, URL-safe base64",
        pattern = "^[A-Za-z0-9_-]{43}=?$")),
    responses(
        (status = 200, description = "The owner", body = UuidDto),
        (status = 400, description = "`authenticated_lookup` (an Authorization header was sent) or `invalid_path`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`validation_failed`: not base64, or not 32 bytes", body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn lookup(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientNetwork(network): ClientNetwork,
    Path(hash): Path<String>,
) -> Result<axum::Json<UuidDto>, ApiError> {
    require_anonymous(&headers)?;
    let decoded = wire::decode_url(&hash).ok();
    let uuid = state
        .usernames
        .lookup(&network, decoded.as_deref())
        .await
        .map_err(error)?;
    Ok(axum::Json(UuidDto { uuid }))
}

/// `EncryptedUsername` as sent.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct LinkDto {
    /// The encrypted username (1..=128 bytes), URL-safe base64.
    #[serde(deserialize_with = "opt_url")]
    #[schema(value_type = Option<String>, pattern = "^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}(?:==)?|[A-Za-z0-9_-]{3}=?)?$")]
    pub username_link_encrypted_value: Option<Vec<u8>>,
    /// Keep the existing handle.
    pub keep_link_handle: bool,
}

/// `UsernameLinkHandle`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkHandleDto {
    /// The handle.
    pub username_link_handle: Uuid,
}

/// `EncryptedUsername` as returned (Signal's record carries `keepLinkHandle`, always false here).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkValueDto {
    /// The blob, URL-safe base64 without padding.
    #[serde(serialize_with = "url_bytes")]
    #[schema(value_type = String, pattern = "^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}(?:==)?|[A-Za-z0-9_-]{3}=?)?$")]
    pub username_link_encrypted_value: Vec<u8>,
    /// Always false.
    pub keep_link_handle: bool,
}

/// Sets the caller's username link blob; a new handle unless `keepLinkHandle`.
#[utoipa::path(
    put,
    path = "/v1/accounts/username_link",
    tag = "usernames",
    security(("basicAuth" = [])),
    request_body = LinkDto,
    responses(
        (status = 200, description = "The link handle", body = LinkHandleDto),
        (status = 400, description = INVALID_JSON, body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 409, description = "`no_username`: a link needs a username", body = ErrorBody),
        (status = 413, description = BODY_TOO_LARGE, body = ErrorBody),
        (status = 422, description = "`validation_failed`: the blob is not 1..=128 bytes", body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn set_link(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Json(body): Json<LinkDto>,
) -> Result<axum::Json<LinkHandleDto>, ApiError> {
    let handle = state
        .usernames
        .set_link(
            &caller,
            body.username_link_encrypted_value
                .as_deref()
                .unwrap_or_default(),
            body.keep_link_handle,
        )
        .await
        .map_err(error)?;
    Ok(axum::Json(LinkHandleDto {
        username_link_handle: handle,
    }))
}

/// Removes the caller's username link.
#[utoipa::path(
    delete,
    path = "/v1/accounts/username_link",
    tag = "usernames",
    security(("basicAuth" = [])),
    responses(
        (status = 204, description = "No link any more"),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn delete_link(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<StatusCode, ApiError> {
    state.usernames.delete_link(&caller).await.map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The encrypted username behind a link handle. Must be anonymous.
#[utoipa::path(
    get,
    path = "/v1/accounts/username_link/{handle}",
    tag = "usernames",
    params(("handle" = uuid::Uuid, Path, description = "The link handle")),
    responses(
        (status = 200, description = "The blob", body = LinkValueDto),
        (status = 400, description = "`authenticated_lookup` (an Authorization header was sent) or `invalid_path`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`validation_failed`: not a UUID", body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn get_link(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientNetwork(network): ClientNetwork,
    Path(handle): Path<String>,
) -> Result<axum::Json<LinkValueDto>, ApiError> {
    require_anonymous(&headers)?;
    let blob = state
        .usernames
        .link(&network, Uuid::parse_str(&handle).ok())
        .await
        .map_err(error)?;
    Ok(axum::Json(LinkValueDto {
        username_link_encrypted_value: blob,
        keep_link_handle: false,
    }))
}

/// Principal discovery.
///
/// The ACI holding exactly this principal, only when that account opted in (`discoverableByPrincipal`) and its
/// principal is not opaque; everything else is 404.
#[utoipa::path(
    get,
    path = "/v1/accounts/principal/{principal}",
    tag = "usernames",
    security(("basicAuth" = [])),
    params(("principal" = String, Path, description = "The principal, e.g. an e-mail address")),
    responses(
        (status = 200, description = "The ACI", body = UuidDto),
        (status = 400, description = "`invalid_path`: a path segment does not decode", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn discover(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(principal): Path<String>,
) -> Result<axum::Json<UuidDto>, ApiError> {
    let uuid = state
        .usernames
        .discover_principal(&caller, &principal)
        .await
        .map_err(error)?;
    Ok(axum::Json(UuidDto { uuid }))
}
