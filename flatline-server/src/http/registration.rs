//! `POST /v1/registration`: create or re-register an account from a verified session.

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::routing::post;
use flatline_core::keys::RawKey;
use flatline_core::registration::RawRegistration;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::accounts::{AccountIdentity, AttributesDto};
use super::error::{ApiError, Json};
use super::keys::SignedKeyDto;
use super::verification::error;
use super::wire;

/// Routes of this group.
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/registration", post(register))
}

/// Signal's `RegistrationRequest` with Flatline's wire names. Unknown fields are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RegistrationDto {
    /// Verification session id.
    pub session_id: Option<String>,
    /// Unsupported (no SVR); present only to give a clear 422.
    pub recovery_password: Option<serde_json::Value>,
    /// Account attributes.
    pub account_attributes: Option<AttributesDto>,
    /// Device transfer is not offered; accepted and ignored.
    pub skip_device_transfer: Option<bool>,
    /// ACI identity key, std base64.
    #[serde(deserialize_with = "wire::opt_std")]
    pub aci_identity_key: Option<Vec<u8>>,
    /// PNI identity key, std base64.
    #[serde(deserialize_with = "wire::opt_std")]
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
    pub apn_token: Option<serde_json::Value>,
    /// FCM token (likewise).
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

/// `AccountCreationResponse`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RegisteredDto {
    #[serde(flatten)]
    identity: AccountIdentity,
    reregistration: bool,
}

async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<RegistrationDto>,
) -> Result<axum::Json<RegisteredDto>, ApiError> {
    let authorization = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(ApiError::unauthorized)?;
    let registered = state
        .registration
        .register(authorization, body.into())
        .await
        .map_err(|e| error(&state, e))?;
    tracing::info!(aci = %registered.account.aci, reregistration = registered.reregistration, "registered");
    Ok(axum::Json(RegisteredDto {
        identity: AccountIdentity::from(&registered.account),
        reregistration: registered.reregistration,
    }))
}
