//! `PUT /v1/messages/multi_recipient`: the Sealed Sender v2 multi-recipient send (M§2.5, API.md §10), answered as
//! Signal-Server does.
//!
//! Status table: 200 `{"uuids404"}`; 400 `invalid_query` / `invalid_message` (a malformed SentMessage, no
//! recipient, a device twice, `ts` out of range) / `ambiguous_credentials` (both a key and a token, or a token on a
//! story); 401 `unauthorized` (neither credential, a wrong combined key, a Group-Send-Token that does not parse
//! or does not verify); 404 `not_found` (an unknown recipient of a key send); 409
//! `[{uuid, devices:{missingDevices, extraDevices}}]`; 410 `[{uuid, devices:{staleDevices}}]`; 413
//! `message_too_large` / `body_too_large`; 415 `unsupported_media_type`; 429 `rate_limited` / `queue_full`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flatline_core::ids::DeviceId;
use flatline_core::messages::service::{
    MultiRecipientAuth, MultiRecipientError, MultiRecipientRequest,
};
use flatline_core::messages::{
    MAX_CONTENT_BYTES, PresentedCredentials, check_credential_combination,
};
use flatline_core::zk::service::parse_group_send_token;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ErrorBody, Query};
use super::openapi::INTERNAL;
use super::wire;

/// The body's content type (exact match, as Signal-Server's body reader).
pub const MRM_CONTENT_TYPE: &str = "application/vnd.signal-messenger.mrm";

/// Largest body Signal-Server reads: `32 + 256 KiB + 5000 × 100`.
pub const MRM_BODY_LIMIT: usize = 32 + MAX_CONTENT_BYTES + 5000 * 100;

/// Routes of this group.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send_multi_recipient))
        .layer(DefaultBodyLimit::max(MRM_BODY_LIMIT))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct MultiRecipientQuery {
    /// Client timestamp in ms (0..=8640000000000000); 0 or absent means the server's time.
    ts: Option<i64>,
    /// Ephemeral: delivered only to devices connected now, never stored. Default false.
    online: Option<bool>,
    /// Push priority, copied into the envelopes. Default true.
    urgent: Option<bool>,
    /// A story: no credentials checked; unknown recipients and invite_only recipients are skipped silently.
    story: Option<bool>,
}

/// 200 body.
#[derive(Serialize, ToSchema)]
struct MultiRecipientResponseDto {
    /// Recipients without an account (Group-Send-Token sends only; `[]` otherwise).
    uuids404: Vec<String>,
}

/// 409 devices of one recipient.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct MismatchedDevices {
    /// Devices of the account the message does not address.
    missing_devices: Vec<u8>,
    /// Addressed devices the account does not have.
    extra_devices: Vec<u8>,
}

/// One 409 entry.
#[derive(Serialize, ToSchema)]
struct RecipientMismatchedDevicesDto {
    /// The recipient's service id.
    uuid: String,
    /// Its mismatch.
    devices: MismatchedDevices,
}

/// 410 devices of one recipient.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct StaleDevices {
    /// Devices whose registration id changed.
    stale_devices: Vec<u8>,
}

/// One 410 entry.
#[derive(Serialize, ToSchema)]
struct RecipientStaleDevicesDto {
    /// The recipient's service id.
    uuid: String,
    /// Its stale devices.
    devices: StaleDevices,
}

/// 409 body: one entry per recipient with missing or extra devices.
#[derive(Serialize, ToSchema)]
#[serde(transparent)]
struct MismatchedRecipientsDto(Vec<RecipientMismatchedDevicesDto>);

/// 410 body: one entry per recipient with stale devices.
#[derive(Serialize, ToSchema)]
#[serde(transparent)]
struct StaleRecipientsDto(Vec<RecipientStaleDevicesDto>);

fn ids(devices: Vec<DeviceId>) -> Vec<u8> {
    devices.into_iter().map(DeviceId::get).collect()
}

/// Status table of a multi-recipient send.
fn error(e: MultiRecipientError) -> Response {
    match e {
        MultiRecipientError::BadRequest(m) => {
            ApiError::bad_request("invalid_message", m).into_response()
        }
        MultiRecipientError::Unauthorized => ApiError::unauthorized().into_response(),
        MultiRecipientError::NotFound => {
            ApiError::not_found("a recipient has no account").into_response()
        }
        MultiRecipientError::MismatchedDevices(m) => (
            StatusCode::CONFLICT,
            axum::Json(MismatchedRecipientsDto(
                m.into_iter()
                    .map(|r| RecipientMismatchedDevicesDto {
                        uuid: r.service_id.to_string(),
                        devices: MismatchedDevices {
                            missing_devices: ids(r.missing),
                            extra_devices: ids(r.extra),
                        },
                    })
                    .collect(),
            )),
        )
            .into_response(),
        MultiRecipientError::StaleDevices(s) => (
            StatusCode::GONE,
            axum::Json(StaleRecipientsDto(
                s.into_iter()
                    .map(|(id, stale)| RecipientStaleDevicesDto {
                        uuid: id.to_string(),
                        devices: StaleDevices {
                            stale_devices: ids(stale),
                        },
                    })
                    .collect(),
            )),
        )
            .into_response(),
        MultiRecipientError::TooLarge => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "message_too_large",
            "the per-recipient message exceeds 256 KiB",
        )
        .into_response(),
        MultiRecipientError::RateLimited(r) => ApiError::from(r).into_response(),
        MultiRecipientError::QueueFull(r) => ApiError {
            code: "queue_full",
            message: "a destination device's message queue is full".into(),
            ..ApiError::from(r)
        }
        .into_response(),
        MultiRecipientError::Store(s) => ApiError::internal(&s).into_response(),
    }
}

/// A 401 for missing or unverifiable credentials, after the body checks that come first (M§2.5 steps 1-2 → 400).
fn unauthorized_after_parse(body: &[u8]) -> Response {
    let checked = flatline_core::sealed::multi_recipient::parse(body)
        .map_err(|e| e.to_string())
        .and_then(|m| m.check_recipients().map_err(|e| e.to_string()));
    match checked {
        Ok(()) => ApiError::unauthorized().into_response(),
        Err(m) => ApiError::bad_request("invalid_message", m).into_response(),
    }
}

/// Sends one Sealed Sender v2 SentMessage to several accounts (every listed device of each).
///
/// Authorized by `Unidentified-Access-Key` (the XOR of the recipients' keys; unrestricted accounts left out,
/// except invite_only ones, whose real key is always needed) or `Group-Send-Token` (verified for exactly the
/// recipients with devices), or `story=true` (no credentials). Each device gets a type-6 envelope whose content
/// is its recipient's ReceivedMessage (`0x22 ‖ C ‖ AT ‖ e_pub ‖ ciphertext`).
#[utoipa::path(
    put,
    path = "/v1/messages/multi_recipient",
    tag = "messages",
    security(("unidentifiedAccessKey" = []), ()),
    params(
        MultiRecipientQuery,
        ("Group-Send-Token" = Option<String>, Header, description = "A serialized GroupSendFullToken, standard base64"),
    ),
    request_body(content = Vec<u8>, content_type = "application/vnd.signal-messenger.mrm",
        description = "The SSv2 SentMessage of `sealedSenderMultiRecipientEncrypt` (version 0x22 or 0x23)"),
    responses(
        (status = 200, description = "Stored for every device of every resolved recipient (stories to unknown or \
            invite_only recipients are skipped silently)", body = MultiRecipientResponseDto),
        (status = 400, description = "`invalid_query`, `invalid_message` (malformed SentMessage, no recipient, a \
            device twice, `ts` out of range) or `ambiguous_credentials` (key and token, or a token on a story)",
            body = ErrorBody),
        (status = 401, description = "`unauthorized`: no credentials, a wrong combined key (or a PNI recipient, \
            or a recipient without a key), a token that does not parse, has expired or does not cover exactly the \
            recipients", body = ErrorBody),
        (status = 404, description = "`not_found`: a recipient of a key send has no account", body = ErrorBody),
        (status = 409, description = "Recipients with missing or extra devices (wins over 410)",
            body = MismatchedRecipientsDto),
        (status = 410, description = "Recipients with stale devices", body = StaleRecipientsDto),
        (status = 413, description = "`message_too_large` (a recipient's payload over 256 KiB) or \
            `body_too_large` (over 32 + 256 KiB + 500 000 bytes)", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not application/vnd.signal-messenger.mrm", body = ErrorBody),
        (status = 429, description = "`rate_limited` (the `stories` limiter) or `queue_full` (nothing was stored)",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn send_multi_recipient(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<MultiRecipientQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.eq_ignore_ascii_case(MRM_CONTENT_TYPE) {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be application/vnd.signal-messenger.mrm",
        )
        .into_response();
    }
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "request body too large",
            )
            .into_response();
        }
        Err(e) => return ApiError::bad_request("invalid_message", e.body_text()).into_response(),
    };
    let story = q.story.unwrap_or(false);
    let access_key = headers.get("unidentified-access-key").map(|v| {
        v.to_str()
            .ok()
            .and_then(|s| wire::decode_std(s).ok())
            .unwrap_or_default()
    });
    // Signal-Server converts the header before anything else: one that does not parse is a 401.
    let token = match headers.get("group-send-token") {
        None => None,
        Some(v) => match v.to_str().ok().map(parse_group_send_token) {
            Some(Ok(t)) => Some(t),
            _ => return ApiError::unauthorized().into_response(),
        },
    };
    let presented = PresentedCredentials {
        authenticated: false,
        access_key: access_key.is_some(),
        group_send_token: token.is_some(),
        story,
    };
    if let Err(e) = check_credential_combination(presented) {
        return ApiError::bad_request("ambiguous_credentials", e.to_string()).into_response();
    }
    let trust = state.trust.clone();
    let auth = match (&access_key, &token, story) {
        (_, _, true) => MultiRecipientAuth::Story,
        (Some(k), None, false) => MultiRecipientAuth::AccessKey(k),
        (None, Some(t), false) => match trust.as_deref() {
            Some(trust) => MultiRecipientAuth::GroupSendToken {
                token: t,
                params: &trust.zk().server,
            },
            // Without zkgroup params no token can verify.
            None => return unauthorized_after_parse(&body),
        },
        _ => return unauthorized_after_parse(&body),
    };
    let request = MultiRecipientRequest {
        body: &body,
        timestamp: q.ts.unwrap_or(0),
        online: q.online.unwrap_or(false),
        urgent: q.urgent.unwrap_or(true),
        story,
    };
    match state.messages.send_multi_recipient(auth, request).await {
        Ok(outcome) => {
            if !outcome.online.is_empty() {
                state.notifier.deliver_online(outcome.online).await;
            }
            axum::Json(MultiRecipientResponseDto {
                uuids404: outcome.uuids404.iter().map(ToString::to_string).collect(),
            })
            .into_response()
        }
        Err(e) => error(e),
    }
}
