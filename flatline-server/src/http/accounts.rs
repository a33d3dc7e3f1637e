//! `/v1/accounts/*`: whoami, attributes, deletion.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flatline_core::account::AccountError;
use flatline_core::account::{Account, RawAccountAttributes};
use flatline_core::ids::{Aci, Pni};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ErrorBody, Json};
use super::extract::Authenticated;
use super::openapi::{BODY_TOO_LARGE, INTERNAL, INVALID_JSON, UNAUTHORIZED};
use super::wire;

/// Routes of this group.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(whoami))
        .routes(routes!(set_attributes))
        .routes(routes!(delete_account))
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
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountIdentity {
    /// The ACI.
    #[schema(value_type = Uuid)]
    pub uuid: Aci,
    /// The principal.
    pub principal: String,
    /// The PNI.
    #[schema(value_type = Uuid)]
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
#[derive(Debug, Serialize, ToSchema)]
pub struct Entitlements {
    /// Badges (none).
    pub badges: Vec<Badge>,
    /// Backup entitlement (none).
    pub backup: Option<Backup>,
}

/// A badge entitlement (shape kept for client compatibility).
#[derive(Debug, Serialize, ToSchema)]
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
#[derive(Debug, Serialize, ToSchema)]
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

/// The caller's account.
#[utoipa::path(
    get,
    path = "/v1/accounts/whoami",
    tag = "accounts",
    security(("basicAuth" = [])),
    responses(
        (status = 200, description = "The caller's account", body = AccountIdentity),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn whoami(Authenticated(caller): Authenticated) -> axum::Json<AccountIdentity> {
    axum::Json(AccountIdentity::from(&caller.account))
}

/// `AccountAttributes` as clients send it. Unknown fields are ignored; `registrationLock` and `recoveryPassword`
/// are accepted and ignored (Flatline has no PIN/SVR recovery).
// `Serialize` only lets the OpenAPI derive render the (all-null) defaults that `#[serde(default)]` implies.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct AttributesDto {
    /// `fetchesMessages`.
    pub fetches_messages: Option<bool>,
    /// `registrationId` (1..=16383; absent counts as 0 and fails validation).
    pub registration_id: Option<i64>,
    /// `pniRegistrationId` (1..=16383).
    pub pni_registration_id: Option<i64>,
    /// Encrypted device name, standard base64.
    #[serde(deserialize_with = "wire::opt_std")]
    #[schema(value_type = Option<String>, format = Byte, pattern = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$")]
    pub name: Option<Vec<u8>>,
    /// 16-byte unidentified-access key: standard base64, or an array of byte values (-128..=255).
    #[serde(deserialize_with = "wire::access_key")]
    #[schema(schema_with = wire::access_key_schema)]
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

/// Sets the calling device's account attributes.
///
/// `registrationLock` and `recoveryPassword` are accepted and ignored; unknown fields are ignored.
#[utoipa::path(
    put,
    path = "/v1/accounts/attributes",
    tag = "accounts",
    security(("basicAuth" = [])),
    request_body = AttributesDto,
    responses(
        (status = 204, description = "Attributes stored"),
        (status = 400, description = INVALID_JSON, body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "`primary_device_required`: only the primary device may change this", body = ErrorBody),
        (status = 413, description = BODY_TOO_LARGE, body = ErrorBody),
        (status = 422, description = "`validation_failed`: an attribute is out of range", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
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

/// Deletes the account.
///
/// When its identity provider offers RP-initiated logout, the answer carries the URL in `Flatline-End-Session` for
/// the app to open (so the user is also signed out at the IdP).
#[utoipa::path(
    delete,
    path = "/v1/accounts/me",
    tag = "accounts",
    security(("basicAuth" = [])),
    responses(
        (status = 204, description = "The account, its devices, keys, username and contact grants are gone",
            headers(("Flatline-End-Session" = String,
                description = "RP-initiated logout URL at the account's identity provider, when it has one"))),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "`primary_device_required`: only the primary device may delete the account", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
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
    state.chat.publish(crate::chat::Event::Disconnect {
        aci: caller.account.aci,
        device: None,
    });
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(url) = end_session.and_then(|u| axum::http::HeaderValue::from_str(&u).ok()) {
        response.headers_mut().insert("flatline-end-session", url);
    }
    Ok(response)
}
