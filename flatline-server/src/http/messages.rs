//! `/v1/messages*`: single-recipient sends (M§2.1), the Flatline fork's REST fetch and acknowledgement (M§2.8),
//! and spam reports, answered exactly as Signal-Server does.
//!
//! Status table of a send: 200 `{needsSync}`; 400 `invalid_json` / `invalid_query` / `invalid_destination` /
//! `ambiguous_credentials` (a Group-Send-Token with Authorization or an access key, or on a story); 401
//! `unauthorized` (also a Group-Send-Token that does not parse, is expired or does not cover exactly the
//! destination); 403 `own_pni` / `contact_not_allowed`; 404 `not_found` (identified, or a valid token); 409
//! `{missingDevices, extraDevices}`; 410 `{staleDevices}`; 413 `message_too_large` / `body_too_large`; 422
//! `validation_failed`; 429 `rate_limited` / `queue_full` with `Retry-After`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use flatline_core::ids::{Aci, DeviceId, ServiceId};
use flatline_core::messages::service::{SendCredentials, SendError, SendRequest, parse_guid};
use flatline_core::messages::store::QueuedMessage;
use flatline_core::messages::{
    Envelope, IncomingError, MAX_CONTENT_BYTES, PresentedCredentials, RawIncomingMessage,
    check_credential_combination, validate_messages,
};
use flatline_core::zk::service::parse_group_send_token;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ErrorBody, Json, Path, Query};
use super::extract::{Authenticated, MaybeAuthenticated};
use super::openapi::{BODY_TOO_LARGE, INTERNAL, UNAUTHORIZED};
use super::wire;
use crate::config::Settings;

/// Largest send body: six devices' worth of base64 content at the size limit, with room for the JSON around it.
pub const SEND_BODY_LIMIT: usize = 6 * (MAX_CONTENT_BYTES * 4 / 3 + 4) + 64 * 1024;

/// Routes of this group. A send may carry several devices' maximal messages, more than `server.max_body_bytes`.
pub fn routes(config: &Settings) -> OpenApiRouter<AppState> {
    let send_limit = SEND_BODY_LIMIT.max(config.server.max_body_bytes);
    OpenApiRouter::new()
        .routes(routes!(send_message))
        .layer(DefaultBodyLimit::max(send_limit))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(fetch_messages))
                .routes(routes!(acknowledge_message))
                .routes(routes!(report_spam)),
        )
}

/// 409 body: which devices the request missed and which it addressed in vain.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct MismatchedDevicesDto {
    /// Devices of the account the request did not address.
    missing_devices: Vec<u8>,
    /// Addressed devices that do not exist (or the sending device itself, for a sync message).
    extra_devices: Vec<u8>,
}

/// 410 body: devices whose registration id changed (fetch their keys again).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct StaleDevicesDto {
    /// The stale devices.
    stale_devices: Vec<u8>,
}

fn ids(devices: Vec<DeviceId>) -> Vec<u8> {
    devices.into_iter().map(DeviceId::get).collect()
}

/// Status table of a send.
fn send_error(e: SendError) -> Response {
    match e {
        SendError::Unauthorized => ApiError::unauthorized().into_response(),
        SendError::NotFound => ApiError::not_found("no such account").into_response(),
        SendError::OwnPni => ApiError::new(
            StatusCode::FORBIDDEN,
            "own_pni",
            "messages to one's own PNI are not allowed",
        )
        .into_response(),
        SendError::ContactNotAllowed => ApiError::new(
            StatusCode::FORBIDDEN,
            "contact_not_allowed",
            "this account accepts contacts by invite only",
        )
        .into_response(),
        SendError::Suspended => ApiError::new(
            StatusCode::FORBIDDEN,
            "account_suspended",
            "this account is suspended by the operator",
        )
        .into_response(),
        SendError::MismatchedDevices { missing, extra } => (
            StatusCode::CONFLICT,
            axum::Json(MismatchedDevicesDto {
                missing_devices: ids(missing),
                extra_devices: ids(extra),
            }),
        )
            .into_response(),
        SendError::StaleDevices { stale } => (
            StatusCode::GONE,
            axum::Json(StaleDevicesDto {
                stale_devices: ids(stale),
            }),
        )
            .into_response(),
        SendError::TooLarge => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "message_too_large",
            "a message's content exceeds 256 KiB",
        )
        .into_response(),
        SendError::Invalid(m) => ApiError::unprocessable(m).into_response(),
        SendError::RateLimited(r) => ApiError::from(r).into_response(),
        SendError::QueueFull(r) => ApiError {
            code: "queue_full",
            message: "a destination device's message queue is full".into(),
            ..ApiError::from(r)
        }
        .into_response(),
        SendError::Store(s) => ApiError::internal(&s).into_response(),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SendQuery {
    /// A story: no credentials are checked; stories to unknown accounts or from strangers answer 200 unstored.
    story: Option<bool>,
}

/// One message of a send: the ciphertext for one destination device.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct IncomingMessageDto {
    /// Envelope type: 1 ciphertext, 3 prekey bundle, 6 sealed sender, 8 plaintext content.
    #[schema(value_type = i32, example = 1)]
    r#type: i64,
    /// Destination device id (1..=127), each at most once.
    #[schema(minimum = 1, maximum = 127)]
    destination_device_id: i64,
    /// The device's registration id for the addressed identity (ACI or PNI).
    #[schema(minimum = 0, maximum = 4294967295_i64)]
    destination_registration_id: i64,
    /// The ciphertext, standard base64 (padding optional), 1 byte to 256 KiB decoded.
    content: String,
}

/// `IncomingMessageList`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct IncomingMessageListDto {
    /// One message per destination device (an empty list is a sync with no other device).
    messages: Option<Vec<IncomingMessageDto>>,
    /// Client timestamp in milliseconds (0..=8640000000000000); 0 or absent means the server's time.
    #[schema(minimum = 0, maximum = 8_640_000_000_000_000_i64)]
    timestamp: Option<i64>,
    /// Ephemeral: delivered only to devices connected now, never stored. Default false.
    online: Option<bool>,
    /// Push priority, copied into the envelope. Default true.
    urgent: Option<bool>,
}

/// 200 body of a send.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct SendResponseDto {
    /// The sender has other devices that should get a sync transcript.
    needs_sync: bool,
}

fn incoming_error(e: IncomingError) -> Response {
    ApiError::unprocessable(e.to_string()).into_response()
}

/// Sends one message per device to an account (identified, sealed, or a story).
///
/// Sealed sends carry the destination's access key or a group send token. A send to one's own ACI is a sync message (the sending device excluded). Contact gating of `invite_only`
/// accounts is decided before the device check, so a stranger learns nothing about the devices; a valid
/// Group-Send-Token (shared group membership) passes it.
#[utoipa::path(
    put,
    path = "/v1/messages/{destination}",
    tag = "messages",
    security(("basicAuth" = []), ("unidentifiedAccessKey" = []), ()),
    params(
        ("destination" = String, Path, description = "The destination: an ACI, or `PNI:` followed by a PNI",
            example = "9d0652a3-dcc3-4d11-975f-74d61598733f",
            pattern = "^(PNI:)?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"),
        SendQuery,
        ("Group-Send-Token" = Option<String>, Header, description = "A serialized GroupSendFullToken, standard \
            base64, covering exactly `{destination}` (sealed sends to a group member; never with Authorization or \
            Unidentified-Access-Key, never on a story)"),
    ),
    request_body = IncomingMessageListDto,
    responses(
        (status = 200, description = "Stored for every device (or dropped silently: a story to an unknown account \
            or from a non-grantee of an invite_only account)", body = SendResponseDto),
        (status = 400, description = "`invalid_json`, `invalid_query`, `invalid_destination`, or \
            `ambiguous_credentials` (a Group-Send-Token with other credentials or on a story)", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no credentials, bad credentials, or a wrong access key \
            (also for unknown accounts and PNI destinations of sealed sends), or a Group-Send-Token that does not \
            parse, has expired or does not cover exactly the destination", body = ErrorBody),
        (status = 403, description = "`own_pni` (to one's own PNI), `contact_not_allowed` (the destination \
            accepts contacts by invite only and the sender has no active grant) or `account_suspended` (the operator \
            suspended the sending account; its own devices stay reachable)", body = ErrorBody),
        (status = 404, description = "`not_found`: an identified send, or a send with a valid Group-Send-Token, \
            to an unknown account", body = ErrorBody),
        (status = 409, description = "Devices missing from or extra in the request", body = MismatchedDevicesDto),
        (status = 410, description = "Devices whose registration id changed", body = StaleDevicesDto),
        (status = 413, description = "`message_too_large` (a content over 256 KiB) or `body_too_large`", body = ErrorBody),
        (status = 422, description = "`validation_failed`: no messages list, an unknown envelope type, a bad \
            device id, undecodable or empty content, a repeated device, or a timestamp out of range", body = ErrorBody),
        (status = 429, description = "`rate_limited` (the `messages`, `stories` or `inboundMessageBytes` limiter) \
            or `queue_full` (a destination device queue is at `messages.max_queue_bytes`; nothing was stored)",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn send_message(
    State(state): State<AppState>,
    MaybeAuthenticated(caller): MaybeAuthenticated,
    headers: HeaderMap,
    Path(destination): Path<String>,
    Query(q): Query<SendQuery>,
    body: Result<Json<IncomingMessageListDto>, ApiError>,
) -> Response {
    let story = q.story.unwrap_or(false);
    let access_key = headers.get("unidentified-access-key");
    // Signal-Server converts the header before the body is read: one that does not parse is a 401.
    let token = match headers.get("group-send-token") {
        None => None,
        Some(v) => match v.to_str().ok().map(parse_group_send_token) {
            Some(Ok(t)) => Some(t),
            _ => return ApiError::unauthorized().into_response(),
        },
    };
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let presented = PresentedCredentials {
        authenticated: caller.is_some(),
        access_key: access_key.is_some(),
        group_send_token: token.is_some(),
        story,
    };
    if let Err(e) = check_credential_combination(presented) {
        return ApiError::bad_request("ambiguous_credentials", e.to_string()).into_response();
    }
    let trust = state.trust.clone();
    let credentials = match (caller, access_key, token) {
        // An authenticated request is identified; an access key beside it is ignored, as Signal does.
        (Some(device), _, _) => SendCredentials::Device(Box::new(device)),
        // A malformed access key is a wrong one: 401.
        (None, Some(v), _) => SendCredentials::AccessKey(
            v.to_str()
                .ok()
                .and_then(|s| wire::decode_std(s).ok())
                .unwrap_or_default(),
        ),
        (None, None, Some(token)) => SendCredentials::GroupSendToken {
            token,
            params: trust.as_deref().map(|t| &t.zk().server),
        },
        (None, None, None) => SendCredentials::None,
    };
    let Ok(destination) = destination.parse::<ServiceId>() else {
        return ApiError::bad_request("invalid_destination", "not an ACI or PNI:uuid")
            .into_response();
    };
    let Some(raw) = body.messages else {
        return ApiError::unprocessable("messages is required").into_response();
    };
    let raw: Option<Vec<RawIncomingMessage>> = raw
        .into_iter()
        .map(|m| {
            Some(RawIncomingMessage {
                r#type: i32::try_from(m.r#type).ok()?,
                destination_device_id: u32::try_from(m.destination_device_id).ok()?,
                destination_registration_id: u32::try_from(m.destination_registration_id).ok()?,
                content: m.content,
            })
        })
        .collect();
    let Some(raw) = raw else {
        return incoming_error(IncomingError::Malformed);
    };
    let messages = match validate_messages(&raw) {
        Ok(m) => m,
        Err(e) => return incoming_error(e),
    };
    let request = SendRequest {
        destination,
        messages,
        timestamp: body.timestamp.unwrap_or(0),
        online: body.online.unwrap_or(false),
        urgent: body.urgent.unwrap_or(true),
        story,
    };
    match state.messages.send(&credentials, request).await {
        Ok(outcome) => {
            if !outcome.online.is_empty() {
                state.notifier.deliver_online(outcome.online).await;
            }
            axum::Json(SendResponseDto {
                needs_sync: outcome.needs_sync,
            })
            .into_response()
        }
        Err(e) => send_error(e),
    }
}

/// `OutgoingMessageEntity`: one queued envelope.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct OutgoingMessageDto {
    /// The server guid (acknowledge with `DELETE /v1/messages/uuid/{guid}`).
    guid: String,
    /// Envelope type.
    r#type: i32,
    /// Client timestamp (ms).
    timestamp: u64,
    /// Sender service id; null for sealed-sender messages and stories.
    source_uuid: Option<String>,
    /// Sender device; 0 when there is no sender.
    source_device: u32,
    /// The addressed identity: an ACI, or `PNI:` followed by a PNI.
    destination_uuid: Option<String>,
    /// Always null (no number changes).
    updated_pni: Option<String>,
    /// The ciphertext, standard base64; null for server delivery receipts.
    content: Option<String>,
    /// Server receive time (ms).
    server_timestamp: u64,
    /// Push priority.
    urgent: bool,
    /// A story.
    story: bool,
    /// Reporting token, standard base64; null when none.
    report_spam_token: Option<String>,
}

fn outgoing(m: &QueuedMessage) -> Option<OutgoingMessageDto> {
    let e = Envelope::from_bytes(&m.envelope)?;
    Some(OutgoingMessageDto {
        guid: m.guid.0.hyphenated().to_string(),
        r#type: e.r#type.unwrap_or(0),
        timestamp: e.client_timestamp.unwrap_or(0),
        source_uuid: e.source_service_id,
        source_device: e.source_device.unwrap_or(0),
        destination_uuid: e.destination_service_id,
        updated_pni: e.updated_pni,
        content: e.content.map(|c| wire::std_padded::encode(c.as_slice())),
        server_timestamp: e.server_timestamp.unwrap_or(0),
        urgent: e.urgent.unwrap_or(true),
        story: e.story.unwrap_or(false),
        report_spam_token: e
            .report_spam_token
            .map(|t| wire::std_padded::encode(t.as_slice())),
    })
}

/// `OutgoingMessageEntityList`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct OutgoingMessageListDto {
    /// Up to 100 queued envelopes, oldest first.
    messages: Vec<OutgoingMessageDto>,
    /// More may be queued: fetch again after acknowledging these.
    more: bool,
}

/// The calling device's queued messages, oldest first (the Flatline fork's REST fetch).
///
/// Nothing is removed: acknowledge each with `DELETE /v1/messages/uuid/{guid}`. Stories are left out unless
/// `X-Signal-Receive-Stories: true`.
#[utoipa::path(
    get,
    path = "/v1/messages",
    tag = "messages",
    security(("basicAuth" = [])),
    params(
        ("X-Signal-Receive-Stories" = Option<String>, Header, description = "`true` to include stories"),
    ),
    responses(
        (status = 200, description = "Queued messages", body = OutgoingMessageListDto),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn fetch_messages(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
) -> Result<axum::Json<OutgoingMessageListDto>, ApiError> {
    let stories = headers
        .get("x-signal-receive-stories")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let (page, more) = state
        .messages
        .fetch(caller.account.aci, caller.device_id, stories)
        .await?;
    Ok(axum::Json(OutgoingMessageListDto {
        messages: page.iter().filter_map(outgoing).collect(),
        more,
    }))
}

/// Acknowledges (removes) one of the calling device's queued messages; idempotent.
///
/// Removing an identified message queues a server delivery receipt (type 5) for every device of its sender.
#[utoipa::path(
    delete,
    path = "/v1/messages/uuid/{guid}",
    tag = "messages",
    security(("basicAuth" = [])),
    params(("guid" = uuid::Uuid, Path, description = "The message's server guid")),
    responses(
        (status = 204, description = "Removed, or not (or no longer) queued"),
        (status = 400, description = "`invalid_guid`: not a UUID", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn acknowledge_message(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(guid): Path<String>,
) -> Result<StatusCode, ApiError> {
    let guid =
        parse_guid(&guid).ok_or_else(|| ApiError::bad_request("invalid_guid", "not a UUID"))?;
    state
        .messages
        .acknowledge(caller.account.aci, caller.device_id, guid)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Optional body of a spam report.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct SpamReportDto {
    /// The reporting token of the envelope, standard base64.
    token: Option<String>,
}

/// Reports a received message as spam, for the operator (`flatline-server messages reports`).
///
/// An optional JSON body `{"token": "<base64>"}` carries the envelope's reporting token.
#[utoipa::path(
    post,
    path = "/v1/messages/report/{aci}/{guid}",
    tag = "messages",
    security(("basicAuth" = [])),
    params(
        ("aci" = uuid::Uuid, Path, description = "The sender of the reported message"),
        ("guid" = uuid::Uuid, Path, description = "The reported message's server guid"),
    ),
    responses(
        (status = 202, description = "Recorded (a repeated report counts once)"),
        (status = 400, description = "`invalid_aci`, `invalid_guid`, or `invalid_json` (a body that is not \
            `{\"token\"}`)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 413, description = BODY_TOO_LARGE, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn report_spam(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((aci, guid)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "request body too large",
            )
        } else {
            ApiError::bad_request("invalid_json", e.body_text())
        }
    })?;
    let source: Aci = aci
        .parse()
        .map_err(|_| ApiError::bad_request("invalid_aci", "not an ACI"))?;
    let guid =
        parse_guid(&guid).ok_or_else(|| ApiError::bad_request("invalid_guid", "not a UUID"))?;
    let token = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let dto: SpamReportDto = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?;
        match dto.token {
            Some(t) => Some(
                wire::decode_std(&t)
                    .map_err(|_| ApiError::bad_request("invalid_json", "token is not base64"))?,
            ),
            None => None,
        }
    };
    state
        .messages
        .report_spam(caller.account.aci, source, guid, token)
        .await?;
    Ok(StatusCode::ACCEPTED)
}
