//! `/v1/accounts/*`: whoami, attributes, deletion.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use flatline_core::account::{Account, RawAccountAttributes};
use flatline_core::accounts::AccountError;
use flatline_core::ids::{Aci, Pni};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, Json};
use super::extract::Authenticated;
use super::wire;

/// Routes of this group.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/accounts/whoami", get(whoami))
        .route("/v1/accounts/attributes", put(set_attributes))
        .route("/v1/accounts/me", delete(delete_account))
}

/// Status table of this group.
fn error(e: AccountError) -> ApiError {
    match e {
        AccountError::Attributes(a) => ApiError::unprocessable(a.to_string()),
        AccountError::PrimaryRequired => ApiError::new(
            StatusCode::FORBIDDEN,
            "primary_device_required",
            "only the primary device may do this",
        ),
        AccountError::Gone => ApiError::unauthorized(),
        AccountError::Store(s) => ApiError::internal(&s),
    }
}

/// `AccountIdentityResponse` with Flatline's wire names.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountIdentity {
    /// The ACI.
    pub uuid: Aci,
    /// The principal.
    pub principal: String,
    /// The PNI.
    pub pni: Pni,
    /// URL-safe base64 of the confirmed username hash, or null.
    pub username_hash: Option<String>,
    /// The username link handle, or null.
    pub username_link_handle: Option<Uuid>,
    /// Whether a device uses the storage service.
    pub storage_capable: bool,
    /// Badges and backup entitlement (Flatline has none yet).
    pub entitlements: Entitlements,
}

/// Entitlements: always present, empty in Flatline.
#[derive(Debug, Serialize)]
pub struct Entitlements {
    /// Badges (none).
    pub badges: Vec<Badge>,
    /// Backup entitlement (none).
    pub backup: Option<Backup>,
}

/// A badge entitlement (shape kept for client compatibility).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Badge {
    /// Badge id.
    pub id: String,
    /// Expiry.
    pub expiration_seconds: i64,
    /// Shown on the profile.
    pub visible: bool,
}

/// A backup entitlement (shape kept for client compatibility).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backup {
    /// Level.
    pub backup_level: i64,
    /// Expiry.
    pub expiration_seconds: i64,
}

impl From<&Account> for AccountIdentity {
    fn from(a: &Account) -> Self {
        AccountIdentity {
            uuid: a.aci,
            principal: a.principal.as_str().to_owned(),
            pni: a.pni,
            username_hash: a.username_hash.as_deref().map(wire::url::encode),
            username_link_handle: a.username_link_handle,
            storage_capable: a.storage_capable(),
            entitlements: Entitlements {
                badges: vec![],
                backup: None,
            },
        }
    }
}

async fn whoami(Authenticated(caller): Authenticated) -> axum::Json<AccountIdentity> {
    axum::Json(AccountIdentity::from(&caller.account))
}

/// `AccountAttributes` as clients send it. Unknown fields are ignored; `registrationLock` and `recoveryPassword`
/// are accepted and ignored (Flatline has no PIN/SVR recovery).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AttributesDto {
    /// `fetchesMessages`.
    pub fetches_messages: Option<bool>,
    /// `registrationId` (1..=16383).
    pub registration_id: Option<i64>,
    /// `pniRegistrationId` (1..=16383).
    pub pni_registration_id: Option<i64>,
    /// Encrypted device name, std base64.
    #[serde(deserialize_with = "wire::opt_std")]
    pub name: Option<Vec<u8>>,
    /// 16-byte access key: base64 or an int array.
    #[serde(deserialize_with = "wire::access_key")]
    pub unidentified_access_key: Option<Vec<u8>>,
    /// `unrestrictedUnidentifiedAccess`.
    pub unrestricted_unidentified_access: Option<bool>,
    /// Capabilities; only `true` entries count.
    pub capabilities: Option<BTreeMap<String, bool>>,
    /// `discoverableByPrincipal` (upstream name accepted); default false.
    #[serde(alias = "discoverableByPhoneNumber")]
    pub discoverable_by_principal: Option<bool>,
}

impl From<AttributesDto> for RawAccountAttributes {
    fn from(d: AttributesDto) -> Self {
        RawAccountAttributes {
            fetches_messages: d.fetches_messages.unwrap_or(false),
            // Absent behaves like Java's primitive default 0, which fails the range check (422).
            registration_id: d.registration_id.unwrap_or(0),
            pni_registration_id: d.pni_registration_id,
            name: d.name,
            unidentified_access_key: d.unidentified_access_key,
            unrestricted_unidentified_access: d.unrestricted_unidentified_access.unwrap_or(false),
            discoverable_by_principal: d.discoverable_by_principal.unwrap_or(false),
            capabilities: d.capabilities.unwrap_or_default().into_iter().collect(),
        }
    }
}

async fn set_attributes(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Json(body): Json<AttributesDto>,
) -> Result<StatusCode, ApiError> {
    state
        .accounts
        .set_attributes(&caller, body.into())
        .await
        .map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes the account. When its identity provider offers RP-initiated logout, the answer carries the URL in
/// `Flatline-End-Session` for the app to open (so the user is also signed out at the IdP).
async fn delete_account(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Response, ApiError> {
    // Looked up first: deletion removes the (provider, sub) binding the URL is derived from.
    let end_session = state
        .registration
        .end_session_url(caller.account.aci)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no end-session URL");
            None
        });
    state.accounts.delete(&caller).await.map_err(error)?;
    tracing::info!(aci = %caller.account.aci, "account deleted");
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(url) = end_session.and_then(|u| axum::http::HeaderValue::from_str(&u).ok()) {
        response.headers_mut().insert("flatline-end-session", url);
    }
    Ok(response)
}
