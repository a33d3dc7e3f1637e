//! `/v1/accounts/username_hash*`, `/v1/accounts/username_link*` and principal discovery, with Signal's shapes,
//! status codes and check order. Byte fields are URL-safe base64, unpadded on output, any padding on input.
//!
//! Error codes: `validation_failed` (422: sizes, counts, encodings), `invalid_proof` (422), `username_unavailable`
//! (409: every hash taken), `no_reservation` (409), `username_taken` (410: the reservation lapsed and someone else
//! took the hash), `no_username` (409: a link needs a username), `authenticated_lookup` (400: lookups must be
//! anonymous), `not_found`, `rate_limited`.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, put};
use flatline_core::ids::Aci;
use flatline_core::usernames::UsernamesError;
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, Json};
use super::extract::{Authenticated, ClientIp};
use super::wire;

/// Routes of this group.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/accounts/username_hash/reserve", put(reserve))
        .route("/v1/accounts/username_hash/confirm", put(confirm))
        .route("/v1/accounts/username_hash", delete(delete_username))
        .route("/v1/accounts/username_hash/{hash}", get(lookup))
        .route(
            "/v1/accounts/username_link",
            put(set_link).delete(delete_link),
        )
        .route("/v1/accounts/username_link/{handle}", get(get_link))
        .route("/v1/accounts/principal/{principal}", get(discover))
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
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReserveDto {
    /// 1..20 hashes of 32 bytes.
    #[serde(deserialize_with = "opt_url_list")]
    pub username_hashes: Option<Vec<Vec<u8>>>,
}

/// `ReserveUsernameHashResponse` (also the hash part of the confirm response).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReservedDto {
    /// The reserved hash.
    #[serde(serialize_with = "url_bytes")]
    pub username_hash: Vec<u8>,
}

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
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConfirmDto {
    /// The reserved hash.
    #[serde(deserialize_with = "opt_url")]
    pub username_hash: Option<Vec<u8>>,
    /// The 128-byte proof.
    #[serde(deserialize_with = "opt_url")]
    pub zk_proof: Option<Vec<u8>>,
    /// Optional 1..128-byte encrypted username for the link.
    #[serde(deserialize_with = "opt_url")]
    pub encrypted_username: Option<Vec<u8>>,
}

/// `UsernameHashResponse`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfirmedDto {
    /// The confirmed hash.
    #[serde(serialize_with = "url_bytes")]
    pub username_hash: Vec<u8>,
    /// The link handle, or null.
    pub username_link_handle: Option<Uuid>,
}

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

async fn delete_username(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<StatusCode, ApiError> {
    state.usernames.delete(&caller).await.map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `AccountIdentifierResponse`.
#[derive(Debug, Serialize)]
pub struct UuidDto {
    /// The ACI.
    pub uuid: Aci,
}

async fn lookup(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientIp(ip): ClientIp,
    Path(hash): Path<String>,
) -> Result<axum::Json<UuidDto>, ApiError> {
    require_anonymous(&headers)?;
    let decoded = wire::decode_url(&hash).ok();
    let uuid = state
        .usernames
        .lookup(&ip.to_string(), decoded.as_deref())
        .await
        .map_err(error)?;
    Ok(axum::Json(UuidDto { uuid }))
}

/// `EncryptedUsername` as sent.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LinkDto {
    /// 1..128 bytes.
    #[serde(deserialize_with = "opt_url")]
    pub username_link_encrypted_value: Option<Vec<u8>>,
    /// Keep the existing handle.
    pub keep_link_handle: bool,
}

/// `UsernameLinkHandle`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkHandleDto {
    /// The handle.
    pub username_link_handle: Uuid,
}

/// `EncryptedUsername` as returned (Signal's record carries `keepLinkHandle`, always false here).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkValueDto {
    /// The blob.
    #[serde(serialize_with = "url_bytes")]
    pub username_link_encrypted_value: Vec<u8>,
    /// Always false.
    pub keep_link_handle: bool,
}

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

async fn delete_link(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<StatusCode, ApiError> {
    state.usernames.delete_link(&caller).await.map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_link(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientIp(ip): ClientIp,
    Path(handle): Path<String>,
) -> Result<axum::Json<LinkValueDto>, ApiError> {
    require_anonymous(&headers)?;
    let blob = state
        .usernames
        .link(&ip.to_string(), Uuid::parse_str(&handle).ok())
        .await
        .map_err(error)?;
    Ok(axum::Json(LinkValueDto {
        username_link_encrypted_value: blob,
        keep_link_handle: false,
    }))
}

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
