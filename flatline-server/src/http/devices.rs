//! Linked devices and the provisioning relay (API.md §12, M§5, Signal-Server's `DeviceController` and
//! `ProvisioningController`).
//!
//! | operation | status | code | when |
//! | --- | --- | --- | --- |
//! | `GET /v1/devices` | 200 | | `{devices: [DeviceInfo]}` |
//! | `DELETE /v1/devices/{id}` | 204 | | removed (or no such device); its sockets close 4401 on every process |
//! | | 401 | `unauthorized` | bad credentials, or a linked device naming another device |
//! | | 403 | `primary_device` | id 1 |
//! | `GET /v1/devices/provisioning/code` | 200 | | `{verificationCode, tokenIdentifier}` |
//! | | 401 | `unauthorized` | not the primary device |
//! | | 411 | `too_many_devices` | the account has `[devices] max_per_account` devices |
//! | | 429 | `rate_limited` | `allocateDevice` |
//! | `PUT /v1/devices/link` | 200 | | `{uuid, pni, deviceId}` |
//! | | 401 | `unauthorized` | no Basic credentials (only their password counts: the new device's) |
//! | | 403 | `invalid_link_token` | bad, expired or used token |
//! | | 411 | `too_many_devices` | |
//! | | 422 | `validation_failed` | attributes, keys, signatures, a password under 16 characters |
//! | | 429 | `rate_limited` | `verifyDevice` |
//! | `PUT /v1/devices/capabilities` | 204 | | |
//! | `GET /v1/devices/wait_for_linked_device/{id}` | 200 | | the `DeviceInfo` linked with that token (also if linked before the wait) |
//! | | 204 | | nothing linked within `timeout` seconds (1..=3600, default 30) |
//! | | 400 | `invalid_request` | a malformed identifier or timeout |
//! | `PUT /v1/provisioning/{address}` | 204 | | delivered to the provisioning socket, on whichever process holds it |
//! | | 400 | `invalid_request` | body not `{"body": base64}` or over 256 KiB |
//! | | 404 | `no_listener` | no open provisioning socket has that address |
//! | | 429 | `rate_limited` | `messages`, per sender |

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use flatline_core::account::Device;
use flatline_core::devices::{DeviceError, LinkRequest, parse_token_identifier};
use flatline_core::ids::DeviceId;
use flatline_core::keys::RawKey;
use flatline_core::ratelimit::Limiter;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::accounts::AttributesDto;
use super::error::{ApiError, ErrorBody, Json, Path, Query};
use super::extract::Authenticated;
use super::keys::SignedKeyDto;
use super::openapi::{INTERNAL, RATE_LIMITED, UNAUTHORIZED};
use super::wire;
use crate::chat::Event;

/// Largest `body` string of `PUT /v1/provisioning/{address}` (Signal-Server: 256 KiB).
pub const MAX_PROVISIONING_BODY: usize = 256 * 1024;
/// Longest wait of `wait_for_linked_device`, in seconds.
pub const MAX_WAIT_SECONDS: u64 = 3600;
/// While waiting, the store is read again at least this often (a cluster notification may be lost).
const WAIT_RECHECK: Duration = Duration::from_secs(5);

/// Routes of this group.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_devices))
        .routes(routes!(remove_device))
        .routes(routes!(provisioning_code))
        .routes(routes!(link_device))
        .routes(routes!(set_capabilities))
        .routes(routes!(wait_for_linked_device))
        .routes(routes!(send_provisioning_message))
}

/// Status table of this group.
fn error(e: DeviceError) -> ApiError {
    match e {
        DeviceError::Unauthorized => ApiError::unauthorized(),
        DeviceError::BadToken => ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_link_token",
            "the link token is invalid, expired or used",
        ),
        DeviceError::PrimaryRemoval => ApiError::new(
            StatusCode::FORBIDDEN,
            "primary_device",
            "the primary device cannot be removed",
        ),
        DeviceError::TooManyDevices(max) => ApiError::new(
            StatusCode::LENGTH_REQUIRED,
            "too_many_devices",
            format!("the account already has its maximum of {max} devices"),
        ),
        DeviceError::Invalid(m) => ApiError::unprocessable(m),
        DeviceError::RateLimited(r) => r.into(),
        DeviceError::Store(s) => ApiError::internal(&s),
    }
}

/// Signal's `DeviceInfo`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfoDto {
    /// Device id.
    pub id: u8,
    /// Encrypted device name, standard base64 (padded), if set.
    #[schema(format = Byte)]
    pub name: Option<String>,
    /// Last authenticated use, epoch milliseconds rounded down to a day.
    pub last_seen: i64,
    /// When the device was linked, epoch milliseconds (Signal's deprecated `created`; Flatline sends no
    /// `createdAtCiphertext`).
    pub created: i64,
    /// The device's ACI registration id.
    pub registration_id: u16,
}

impl From<&Device> for DeviceInfoDto {
    fn from(d: &Device) -> Self {
        DeviceInfoDto {
            id: d.id.get(),
            name: d.settings.name.as_deref().map(wire::std_padded::encode),
            last_seen: d.last_seen.as_millis(),
            created: d.created_at.as_millis(),
            registration_id: d.settings.registration_id,
        }
    }
}

/// `{devices: [...]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceListDto {
    /// The account's devices, primary first.
    pub devices: Vec<DeviceInfoDto>,
}

/// The account's devices.
#[utoipa::path(
    get,
    path = "/v1/devices",
    tag = "devices",
    security(("basicAuth" = [])),
    responses(
        (status = 200, description = "The devices", body = DeviceListDto),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn list_devices(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<axum::Json<DeviceListDto>, ApiError> {
    let devices = state
        .devices
        .devices(caller.account.aci)
        .await
        .map_err(error)?;
    Ok(axum::Json(DeviceListDto {
        devices: devices.iter().map(DeviceInfoDto::from).collect(),
    }))
}

/// Removes a linked device.
///
/// Its queue and keys are deleted and its sockets close with 4401 on every process.
#[utoipa::path(
    delete,
    path = "/v1/devices/{device_id}",
    tag = "devices",
    security(("basicAuth" = [])),
    params(("device_id" = u8, Path, description = "The device to remove (2..=127)")),
    responses(
        (status = 204, description = "Removed, or there was no such device"),
        (status = 401, description = "`unauthorized`: bad credentials, or a linked device naming another device", body = ErrorBody),
        (status = 403, description = "`primary_device`: the primary cannot be removed", body = ErrorBody),
        (status = 404, description = "`not_found`: not a device id", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn remove_device(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(device_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    // Like a JAX-RS `byte` path parameter: anything that is not a device id matches no resource.
    let target = device_id
        .parse::<u8>()
        .ok()
        .and_then(|d| DeviceId::new(d).ok())
        .ok_or_else(|| ApiError::not_found("no such device"))?;
    let removed = state.devices.remove(&caller, target).await.map_err(error)?;
    if removed {
        tracing::info!(aci = %caller.account.aci, device = target.get(), "device removed");
        state.chat.publish(Event::Disconnect {
            aci: caller.account.aci,
            device: Some(target),
        });
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `LinkDeviceToken`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkTokenDto {
    /// The token to put in the provisioning message (single use, 10 minutes).
    pub verification_code: String,
    /// What `wait_for_linked_device` takes: base64url (unpadded) SHA-256 of the token.
    pub token_identifier: String,
}

/// A link token for a new device (primary device only).
#[utoipa::path(
    get,
    path = "/v1/devices/provisioning/code",
    tag = "devices",
    security(("basicAuth" = [])),
    responses(
        (status = 200, description = "The token", body = LinkTokenDto),
        (status = 401, description = "`unauthorized`: bad credentials, or not the primary device", body = ErrorBody),
        (status = 411, description = "`too_many_devices`", body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn provisioning_code(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<axum::Json<LinkTokenDto>, ApiError> {
    let issued = state
        .devices
        .provisioning_code(&caller)
        .await
        .map_err(error)?;
    Ok(axum::Json(LinkTokenDto {
        verification_code: issued.token.clone(),
        token_identifier: issued.identifier.clone(),
    }))
}

/// Signal's `LinkDeviceRequest` (with `DeviceActivationRequest` unwrapped). Unknown fields are ignored.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct LinkDeviceDto {
    /// The link token from the provisioning message.
    pub verification_code: String,
    /// The new device's attributes (the device-level part and capabilities count).
    pub account_attributes: Option<AttributesDto>,
    /// ACI signed EC prekey, signed by the account's ACI identity key.
    pub aci_signed_pre_key: Option<SignedKeyDto>,
    /// PNI signed EC prekey, signed by the PNI identity key.
    pub pni_signed_pre_key: Option<SignedKeyDto>,
    /// ACI last-resort Kyber key.
    pub aci_pq_last_resort_pre_key: Option<SignedKeyDto>,
    /// PNI last-resort Kyber key.
    pub pni_pq_last_resort_pre_key: Option<SignedKeyDto>,
    /// APNs token (accepted and ignored: Flatline has no push).
    #[schema(value_type = Option<Object>)]
    pub apn_token: Option<serde_json::Value>,
    /// FCM token (likewise).
    #[schema(value_type = Option<Object>)]
    pub gcm_token: Option<serde_json::Value>,
}

/// `LinkDeviceResponse`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkedDto {
    /// The account's ACI.
    pub uuid: String,
    /// Its PNI (`PNI:`-less UUID string, as Signal-Server).
    pub pni: String,
    /// The new device's id.
    pub device_id: u8,
}

/// Links a new device with a token from the primary's provisioning message.
///
/// The Basic password becomes the new device's password (the username is not read).
#[utoipa::path(
    put,
    path = "/v1/devices/link",
    tag = "devices",
    security(("basicAuth" = [])),
    request_body = LinkDeviceDto,
    responses(
        (status = 200, description = "Linked", body = LinkedDto),
        (status = 400, description = "`invalid_json`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no Basic credentials", body = ErrorBody),
        (status = 403, description = "`invalid_link_token`: bad, expired or used token", body = ErrorBody),
        (status = 411, description = "`too_many_devices`", body = ErrorBody),
        (status = 422, description = "`validation_failed`: attributes, keys, signatures, or a password under 16 characters", body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn link_device(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<LinkDeviceDto>,
) -> Result<axum::Json<LinkedDto>, ApiError> {
    let authorization = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let request = LinkRequest {
        verification_code: body.verification_code,
        attributes: body.account_attributes.map(Into::into),
        aci_signed_pre_key: body.aci_signed_pre_key.as_ref().map(RawKey::from),
        pni_signed_pre_key: body.pni_signed_pre_key.as_ref().map(RawKey::from),
        aci_pq_last_resort_pre_key: body.aci_pq_last_resort_pre_key.as_ref().map(RawKey::from),
        pni_pq_last_resort_pre_key: body.pni_pq_last_resort_pre_key.as_ref().map(RawKey::from),
    };
    let linked = state
        .devices
        .link(authorization, request)
        .await
        .map_err(error)?;
    tracing::info!(aci = %linked.aci, device = linked.device_id.get(), "device linked");
    // Waiters on any process look the device up again.
    state.chat.publish(Event::DeviceLinked {
        aci: linked.aci,
        token_identifier: flatline_core::devices::token_identifier(&linked.token_hash),
    });
    Ok(axum::Json(LinkedDto {
        uuid: linked.aci.to_string(),
        pni: linked.pni.0.to_string(),
        device_id: linked.device_id.get(),
    }))
}

/// Replaces the calling device's capabilities (`{name: bool}`; only `true` entries are kept).
#[utoipa::path(
    put,
    path = "/v1/devices/capabilities",
    tag = "devices",
    security(("basicAuth" = [])),
    request_body = BTreeMap<String, bool>,
    responses(
        (status = 204, description = "Stored"),
        (status = 400, description = "`invalid_json`", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 422, description = "`validation_failed`: a capability name", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn set_capabilities(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Json(capabilities): Json<BTreeMap<String, bool>>,
) -> Result<StatusCode, ApiError> {
    state
        .devices
        .set_capabilities(&caller, capabilities.into_iter().collect())
        .await
        .map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `wait_for_linked_device`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Seconds to wait (1..=3600, default 30).
    pub timeout: Option<String>,
}

/// Waits until a device is linked with the token of `tokenIdentifier`.
///
/// Answers at once if it already was, on any process.
#[utoipa::path(
    get,
    path = "/v1/devices/wait_for_linked_device/{tokenIdentifier}",
    tag = "devices",
    security(("basicAuth" = [])),
    params(
        ("tokenIdentifier" = String, Path, description = "From `GET /v1/devices/provisioning/code`"),
        WaitQuery,
    ),
    responses(
        (status = 200, description = "The linked device", body = DeviceInfoDto),
        (status = 204, description = "Nothing was linked within the timeout"),
        (status = 400, description = "`invalid_request`: a malformed identifier or timeout", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn wait_for_linked_device(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(token_identifier): Path<String>,
    Query(query): Query<WaitQuery>,
) -> Result<Response, ApiError> {
    let bad = |m: &str| ApiError::bad_request("invalid_request", m.to_owned());
    let hash = parse_token_identifier(&token_identifier)
        .ok_or_else(|| bad("tokenIdentifier must be base64url of 32 bytes"))?;
    let timeout = match query.timeout.as_deref() {
        None => 30,
        Some(t) => t
            .parse::<u64>()
            .ok()
            .filter(|t| (1..=MAX_WAIT_SECONDS).contains(t))
            .ok_or_else(|| bad("timeout must be between 1 and 3600"))?,
    };
    let aci = caller.account.aci;
    state.devices.start_waiting(aci).await.map_err(error)?;
    // Subscribe before the first look, so that a link between the look and the wait is not missed.
    let mut linked = state.chat.subscribe_links();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        if let Some(device) = state.devices.linked_with(aci, &hash).await.map_err(error)? {
            return Ok(axum::Json(DeviceInfoDto::from(&device)).into_response());
        }
        let recheck = (tokio::time::Instant::now() + WAIT_RECHECK).min(deadline);
        tokio::select! {
            () = tokio::time::sleep_until(recheck) => {
                if tokio::time::Instant::now() >= deadline {
                    return Ok(StatusCode::NO_CONTENT.into_response());
                }
            }
            event = linked.recv() => {
                // Lagged or closed: look again all the same.
                if let Ok((event_aci, event_hash)) = event
                    && (event_aci != aci || event_hash != hash)
                {
                    continue;
                }
            }
        }
    }
}

/// `ProvisioningMessage`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ProvisioningMessageDto {
    /// The `ProvisionEnvelope`, standard base64 (MIME line breaks tolerated), at most 256 KiB of text.
    pub body: String,
}

/// Relays a provisioning message to the socket listed under `destination`.
///
/// The socket may be on any process of the instance.
#[utoipa::path(
    put,
    path = "/v1/provisioning/{destination}",
    tag = "devices",
    security(("basicAuth" = [])),
    params(("destination" = String, Path, description = "The address the new device received in `PUT /v1/address`")),
    request_body = ProvisioningMessageDto,
    responses(
        (status = 204, description = "Delivered to the socket"),
        (status = 400, description = "`invalid_request` or `invalid_json`: not base64, or over 256 KiB", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`no_listener`: no provisioning socket has that address", body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn send_provisioning_message(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(destination): Path<String>,
    Json(message): Json<ProvisioningMessageDto>,
) -> Result<StatusCode, ApiError> {
    if message.body.len() > MAX_PROVISIONING_BODY {
        return Err(ApiError::bad_request(
            "invalid_request",
            "body must be at most 256 KiB",
        ));
    }
    let compact: String = message
        .body
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let envelope = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| ApiError::bad_request("invalid_request", "body must be standard base64"))?;
    state
        .limiters
        .check(Limiter::Messages, &caller.account.aci.to_string())
        .await?;
    let delivered = state
        .chat
        .relay_provisioning(&destination, envelope)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    if delivered {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_listener",
            "no provisioning socket has that address",
        ))
    }
}
