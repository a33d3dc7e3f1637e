//! `GET /v1/certificate/delivery`: sender certificates for sealed sender (API.md §11, M§3.1).
//!
//! | status | code | when |
//! | --- | --- | --- |
//! | 200 | | `{"certificate": <std base64 SenderCertificate>}` for the authenticated device |
//! | 401 | `unauthorized` | missing or bad credentials |
//! | 404 | `sealed_sender_not_configured` | the process runs without trust material (embedded/test setups) |
//! | 500 | `internal_error` | the store failed, or a stored server certificate belongs to another trust root |
//!
//! The certificate names the caller's ACI (as a string), device and ACI identity key, expires
//! `[sealed_sender] certificate_lifetime_hours` from now, embeds the current server certificate, and carries no
//! phone number and never the principal. `includeE164` is accepted and ignored, whatever its value.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use flatline_core::crypto::PublicKey;
use flatline_core::sealed::SenderIdentity;
use flatline_core::sealed::service::{self, SealedError};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::Authenticated;
use super::openapi::{INTERNAL, UNAUTHORIZED};
use axum::http::StatusCode;

/// Routes of this group.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(delivery_certificate))
}

/// Status table of this group.
fn error(e: &SealedError) -> ApiError {
    ApiError::internal(e)
}

/// The answer of `GET /v1/certificate/delivery`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryCertificate {
    /// Standard base64 (padded) of the serialized `SenderCertificate`.
    #[schema(format = Byte)]
    pub certificate: String,
}

/// A sender certificate for the authenticated device, signed by the instance's current server certificate.
#[utoipa::path(
    get,
    path = "/v1/certificate/delivery",
    tag = "sealed_sender",
    security(("basicAuth" = [])),
    params(
        ("includeE164" = Option<String>, Query,
            description = "Accepted and ignored, whatever its value (clients send true or false): Flatline certificates never carry a phone number or principal"),
    ),
    responses(
        (status = 200, description = "The sender certificate", body = DeliveryCertificate),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`sealed_sender_not_configured`: this process runs without trust material",
            body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn delivery_certificate(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Response {
    let Some(trust) = &state.trust else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "sealed_sender_not_configured",
            "this server has no sealed-sender trust root",
        )
        .into_response();
    };
    // Stored identity keys were validated on upload; a bad one is corrupt data, not the caller's fault.
    let identity_key = match PublicKey::from_bytes(&caller.account.aci_identity_key) {
        Ok(k) => k,
        Err(e) => return ApiError::internal(&e).into_response(),
    };
    let now = state.clock.now();
    let root = &trust.sealed_sender().0.private_key;
    let signer =
        match service::current_signer(state.store.as_ref(), root, state.rng.as_ref(), now).await {
            Ok(s) => s,
            Err(e) => return error(&e).into_response(),
        };
    let sender = SenderIdentity {
        aci: caller.account.aci,
        device: caller.device_id,
        identity_key,
    };
    let certificate = service::sender_certificate(
        &signer,
        &sender,
        now,
        state.config.sealed_sender.certificate_lifetime,
        state.rng.as_ref(),
    );
    axum::Json(DeliveryCertificate {
        certificate: super::wire::std_padded::encode(certificate.serialized()),
    })
    .into_response()
}
