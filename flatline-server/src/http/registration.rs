//! `POST /v1/registration`: create or re-register an account from a verified session.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use flatline_core::keys::RawKey;
use flatline_core::registration::RawRegistration;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::accounts::{AccountIdentity, AttributesDto};
use super::error::{ApiError, ErrorBody, Json};
use super::extract::ClientNetwork;
use super::keys::SignedKeyDto;
use super::openapi::{BODY_TOO_LARGE, INTERNAL, RATE_LIMITED};
use super::verification::error;
use super::wire;

/// Routes of this group.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(register))
}

/// Signal's `RegistrationRequest` with Flatline's wire names. Unknown fields are ignored.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct RegistrationDto {
    /// Verification session id.
    pub session_id: Option<String>,
    /// Unsupported (no SVR); present only to give a clear 422.
    #[schema(value_type = Option<Object>)]
    pub recovery_password: Option<serde_json::Value>,
    /// Account attributes.
    pub account_attributes: Option<AttributesDto>,
    /// Device transfer is not offered; accepted and ignored.
    pub skip_device_transfer: Option<bool>,
    /// ACI identity key (33 bytes), standard base64.
    #[serde(deserialize_with = "wire::opt_std")]
    #[schema(value_type = Option<String>, format = Byte, pattern = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$")]
    pub aci_identity_key: Option<Vec<u8>>,
    /// PNI identity key (33 bytes), standard base64.
    #[serde(deserialize_with = "wire::opt_std")]
    #[schema(value_type = Option<String>, format = Byte, pattern = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$")]
    pub pni_identity_key: Option<Vec<u8>>,
    /// ACI signed EC prekey.
    pub aci_signed_pre_key: Option<SignedKeyDto>,
    /// PNI signed EC prekey.
    pub pni_signed_pre_key: Option<SignedKeyDto>,
    /// ACI last-resort Kyber key.
    pub aci_pq_last_resort_pre_key: Option<SignedKeyDto>,
    /// PNI last-resort Kyber key.
    pub pni_pq_last_resort_pre_key: Option<SignedKeyDto>,
    /// APNs token (Flatline has no push; counted for the delivery-channel rule).
    #[schema(value_type = Option<Object>)]
    pub apn_token: Option<serde_json::Value>,
    /// FCM token (likewise).
    #[schema(value_type = Option<Object>)]
    pub gcm_token: Option<serde_json::Value>,
}

impl From<RegistrationDto> for RawRegistration {
    fn from(d: RegistrationDto) -> Self {
        let present = |v: &Option<serde_json::Value>| v.as_ref().is_some_and(|v| !v.is_null());
        RawRegistration {
            session_id: d.session_id,
            recovery_password: present(&d.recovery_password),
            attributes: d.account_attributes.map(Into::into),
            aci_identity_key: d.aci_identity_key,
            pni_identity_key: d.pni_identity_key,
            aci_signed_pre_key: d.aci_signed_pre_key.as_ref().map(RawKey::from),
            pni_signed_pre_key: d.pni_signed_pre_key.as_ref().map(RawKey::from),
            aci_pq_last_resort: d.aci_pq_last_resort_pre_key.as_ref().map(RawKey::from),
            pni_pq_last_resort: d.pni_pq_last_resort_pre_key.as_ref().map(RawKey::from),
            push_tokens: usize::from(present(&d.apn_token)) + usize::from(present(&d.gcm_token)),
        }
    }
}

/// `AccountCreationResponse`: the account, and whether it existed before.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct RegisteredDto {
    #[serde(flatten)]
    identity: AccountIdentity,
    /// True when the (provider, sub) already had an account, which keeps its ACI.
    reregistration: bool,
}

/// Creates an account from a verified session.
///
/// Or re-registers one, with a new primary device. The Basic credentials are the session's principal and the new
/// device's password.
#[utoipa::path(
    post,
    path = "/v1/registration",
    tag = "registration",
    security(("registrationAuth" = [])),
    request_body = RegistrationDto,
    responses(
        (status = 200, description = "Registered", body = RegisteredDto),
        (status = 400, description = "`invalid_json`, or `principal_mismatch` (Basic username is not the session's principal)", body = ErrorBody),
        (status = 401, description = "`unauthorized` (no or malformed Basic credentials, or a username that is not a well-formed principal) or `session_unverified`", body = ErrorBody),
        (status = 403, description = "`principal_conflict`, `invite_required` or `invite_invalid`", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 413, description = BODY_TOO_LARGE, body = ErrorBody),
        (status = 422, description = "`validation_failed`: attributes, keys, signatures, a device password shorter than 16 characters, or an unsupported recovery password", body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn register(
    State(state): State<AppState>,
    ClientNetwork(network): ClientNetwork,
    headers: HeaderMap,
    Json(body): Json<RegistrationDto>,
) -> Result<axum::Json<RegisteredDto>, ApiError> {
    let authorization = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(ApiError::unauthorized)?;
    let registered = state
        .registration
        .register(authorization, &network, body.into())
        .await
        .map_err(|e| error(&state, e))?;
    tracing::info!(aci = %registered.account.aci, reregistration = registered.reregistration, "registered");
    if registered.reregistration {
        // The old devices and the old primary password are gone: their sockets must reauthenticate.
        state.chat.publish(crate::chat::Event::Disconnect {
            aci: registered.account.aci,
            device: None,
        });
    }
    Ok(axum::Json(RegisteredDto {
        identity: AccountIdentity::from(&registered.account),
        reregistration: registered.reregistration,
    }))
}
