//! `/v1/verification*`: providers, verification sessions, back-channel logout.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use flatline_core::registration::oidc::TokenError;
use flatline_core::registration::{
    RegistrationError, StartRequest, VerificationSession, VerifyRequest,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ErrorBody, Json, Path};
use super::extract::ClientNetwork;
use super::openapi::{BODY_TOO_LARGE, INTERNAL, RATE_LIMITED};

/// Routes of this group.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(providers))
        .routes(routes!(start))
        .routes(routes!(session, verify))
        .routes(routes!(backchannel_logout))
}

/// Status table of registration errors (shared with `POST /v1/registration`).
pub fn error(state: &AppState, e: RegistrationError) -> ApiError {
    use RegistrationError as E;
    let (status, code) = match &e {
        E::UnknownProvider => (StatusCode::BAD_REQUEST, "unknown_provider"),
        E::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
        E::InviteInvalid => (StatusCode::FORBIDDEN, "invite_invalid"),
        E::InviteRequired => (StatusCode::FORBIDDEN, "invite_required"),
        E::Idp(idp) => {
            // The detail (URLs, the IdP's own error text, local paths) is for the operator only (F-11).
            tracing::warn!(error = ?idp.0, "identity provider failed");
            return ApiError::new(
                StatusCode::BAD_GATEWAY,
                "idp_error",
                "identity provider unavailable",
            );
        }
        E::SessionNotFound => (StatusCode::NOT_FOUND, "session_not_found"),
        E::AlreadyVerified => (StatusCode::CONFLICT, "already_verified"),
        E::StateMismatch => (StatusCode::BAD_REQUEST, "state_mismatch"),
        E::IssuerMismatch => (StatusCode::BAD_REQUEST, "issuer_mismatch"),
        E::CodeInvalid => (StatusCode::UNAUTHORIZED, "code_invalid"),
        E::IdToken(t) => {
            if let TokenError::UnknownKey(kid) = t {
                state.metrics.jwks_unknown_kid();
                tracing::warn!(
                    ?kid,
                    "ID token signed with a key that is not pinned; run `flatline-server jwks refresh` if the IdP rotated keys"
                );
            } else {
                tracing::info!(reason = ?t.to_string(), "ID token rejected");
            }
            (StatusCode::UNAUTHORIZED, "id_token_invalid")
        }
        E::PrincipalInvalid(_) => (StatusCode::UNAUTHORIZED, "principal_invalid"),
        E::PrincipalConflict => (StatusCode::FORBIDDEN, "principal_conflict"),
        E::PrincipalMismatch => (StatusCode::BAD_REQUEST, "principal_mismatch"),
        E::SessionUnverified => (StatusCode::UNAUTHORIZED, "session_unverified"),
        E::Credentials(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
        E::RateLimited(r) => return (*r).into(),
        E::Store(s) => return ApiError::internal(s),
    };
    ApiError::new(status, code, e.to_string())
}

/// An identity provider the app can register through.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ProviderDto {
    /// The provider id (`providerId` in requests).
    id: String,
    /// Display name.
    name: String,
    /// The OpenID issuer.
    issuer: String,
    /// Where the app sends the user's browser.
    authorization_endpoint: String,
    /// The ID-token claim that becomes the principal; null when principals are opaque.
    principal_claim: Option<String>,
    /// Whether registering through it needs a registration invite.
    invite_required: bool,
}

/// The providers whose discovery works right now.
#[derive(Serialize, ToSchema)]
struct ProvidersDto {
    providers: Vec<ProviderDto>,
}

/// The identity providers this server accepts (a provider whose discovery fails right now is left out).
#[utoipa::path(
    get,
    path = "/v1/verification",
    tag = "verification",
    responses((status = 200, description = "The providers", body = ProvidersDto))
)]
async fn providers(State(state): State<AppState>) -> axum::Json<ProvidersDto> {
    let mut providers = vec![];
    for p in state.registration.providers() {
        // A provider whose discovery fails right now is left out rather than failing the whole list.
        match state.registration.client().endpoints(p).await {
            Ok(endpoints) => providers.push(ProviderDto {
                id: p.id.clone(),
                name: p.name.clone(),
                issuer: p.issuer.clone(),
                authorization_endpoint: endpoints.authorization,
                principal_claim: p.principal_claim.clone(),
                invite_required: p.invite_required || state.config.invites.required,
            }),
            Err(e) => {
                tracing::warn!(provider = %p.id, error = %e, "provider unavailable; not listed")
            }
        }
    }
    axum::Json(ProvidersDto { providers })
}

/// Starts a verification: the server pushes an authorization request (PAR) to the provider.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct StartDto {
    /// The provider's `id`.
    provider_id: Option<String>,
    /// PKCE S256 challenge (43 characters of base64url).
    code_challenge: Option<String>,
    /// The app's OAuth `state`.
    state: Option<String>,
    /// One of the provider's configured redirect URIs.
    redirect_uri: Option<String>,
    /// Passed to the provider as `login_hint`.
    login_hint: Option<String>,
    /// A registration invite code, where the provider or the server requires one.
    invite_code: Option<String>,
}

/// A verification session as the app sees it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct SessionDto {
    /// Session id.
    id: String,
    /// Where to send the browser, with `client_id` and `request_uri`; null when discovery fails right now.
    authorization_endpoint: Option<String>,
    /// Our client id at the provider; null when the provider is no longer configured.
    client_id: Option<String>,
    /// The pushed request's URI.
    request_uri: String,
    /// Seconds the request URI stays usable.
    request_uri_lifetime: u64,
    /// Whether the session has been verified.
    verified: bool,
}

async fn session_dto(state: &AppState, s: &VerificationSession) -> SessionDto {
    let provider = state.registration.provider(&s.provider_id);
    let endpoint = match provider {
        Some(p) => state
            .registration
            .client()
            .endpoints(p)
            .await
            .ok()
            .map(|e| e.authorization),
        None => None,
    };
    SessionDto {
        id: s.id.as_str().to_owned(),
        authorization_endpoint: endpoint,
        client_id: provider.map(|p| p.client_id.clone()),
        request_uri: s.request_uri.clone(),
        request_uri_lifetime: s.request_uri_lifetime,
        verified: s.verified.is_some(),
    }
}

/// Starts a verification session with an identity provider.
#[utoipa::path(
    post,
    path = "/v1/verification/session",
    tag = "verification",
    request_body = StartDto,
    responses(
        (status = 200, description = "The new session", body = SessionDto),
        (status = 400, description = "`invalid_json`, or `unknown_provider`", body = ErrorBody),
        (status = 403, description = "`invite_required` or `invite_invalid`", body = ErrorBody),
        (status = 413, description = BODY_TOO_LARGE, body = ErrorBody),
        (status = 422, description = "`validation_failed`: challenge, state, redirect URI or login hint", body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 502, description = "`idp_error`: the identity provider failed", body = ErrorBody),
    )
)]
async fn start(
    State(state): State<AppState>,
    ClientNetwork(network): ClientNetwork,
    Json(body): Json<StartDto>,
) -> Result<axum::Json<SessionDto>, ApiError> {
    let req = StartRequest {
        provider_id: body
            .provider_id
            .ok_or_else(|| ApiError::bad_request("unknown_provider", "providerId is required"))?,
        code_challenge: body.code_challenge.unwrap_or_default(),
        state: body.state.unwrap_or_default(),
        redirect_uri: body.redirect_uri.unwrap_or_default(),
        login_hint: body.login_hint,
        invite_code: body.invite_code,
    };
    let started = state
        .registration
        .start(&network, req)
        .await
        .map_err(|e| error(&state, e))?;
    Ok(axum::Json(SessionDto {
        id: started.session.id.as_str().to_owned(),
        authorization_endpoint: Some(started.authorization_endpoint),
        client_id: Some(started.client_id),
        request_uri: started.session.request_uri,
        request_uri_lifetime: started.session.request_uri_lifetime,
        verified: false,
    }))
}

/// A verification session.
#[utoipa::path(
    get,
    path = "/v1/verification/session/{id}",
    tag = "verification",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 200, description = "The session", body = SessionDto),
        (status = 400, description = "`invalid_path`: a path segment does not decode", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<SessionDto>, ApiError> {
    let s = state
        .registration
        .session(&id)
        .await
        .map_err(|e| error(&state, e))?;
    Ok(axum::Json(session_dto(&state, &s).await))
}

/// What the provider sent to the redirect URI, and the PKCE verifier.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct VerifyDto {
    /// Authorization code.
    code: Option<String>,
    /// PKCE verifier.
    code_verifier: Option<String>,
    /// The `state` the provider echoed.
    state: Option<String>,
    /// RFC 9207 `iss`, when the provider sent it.
    iss: Option<String>,
}

/// A verified session.
#[derive(Serialize, ToSchema)]
struct VerifiedDto {
    /// Session id.
    id: String,
    /// The principal the ID token maps to.
    principal: String,
    /// Always true.
    verified: bool,
}

/// Finishes a verification: exchanges the code, checks the ID token and derives the principal.
#[utoipa::path(
    patch,
    path = "/v1/verification/session/{id}",
    tag = "verification",
    params(("id" = String, Path, description = "Session id")),
    request_body = VerifyDto,
    responses(
        (status = 200, description = "The session is verified", body = VerifiedDto),
        (status = 400, description = "`invalid_json`, `invalid_path`, `unknown_provider`, `state_mismatch` or `issuer_mismatch`", body = ErrorBody),
        (status = 401, description = "`code_invalid`, `id_token_invalid` or `principal_invalid`", body = ErrorBody),
        (status = 403, description = "`principal_conflict`, `invite_required` or `invite_invalid`", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 409, description = "`already_verified`", body = ErrorBody),
        (status = 413, description = BODY_TOO_LARGE, body = ErrorBody),
        (status = 422, description = "`validation_failed`", body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 502, description = "`idp_error`: the identity provider failed", body = ErrorBody),
    )
)]
async fn verify(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<VerifyDto>,
) -> Result<axum::Json<VerifiedDto>, ApiError> {
    let req = VerifyRequest {
        code: body.code.unwrap_or_default(),
        code_verifier: body.code_verifier.unwrap_or_default(),
        state: body.state.unwrap_or_default(),
        iss: body.iss,
    };
    let s = state
        .registration
        .verify(&id, req)
        .await
        .map_err(|e| error(&state, e))?;
    let principal = s
        .verified
        .map(|v| v.principal.as_str().to_owned())
        .unwrap_or_default();
    Ok(axum::Json(VerifiedDto {
        id: s.id.as_str().to_owned(),
        principal,
        verified: true,
    }))
}

/// OpenID Back-Channel Logout request body.
#[derive(Deserialize, ToSchema)]
struct LogoutForm {
    /// The logout token (a JWT signed by the provider).
    logout_token: Option<String>,
}

/// The OpenID Back-Channel Logout error body.
#[derive(Serialize, ToSchema)]
struct LogoutErrorDto {
    /// Always `invalid_request`.
    #[schema(example = "invalid_request")]
    error: String,
}

/// OpenID Back-Channel Logout 1.0, called by the identity provider: signs out the accounts of the token's subject.
#[utoipa::path(
    post,
    path = "/v1/verification/providers/{provider}/backchannel-logout",
    tag = "verification",
    params(("provider" = String, Path, description = "The provider id")),
    request_body(content = LogoutForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Logged out", headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "The logout token was rejected (or the body is not a form)", body = LogoutErrorDto,
            headers(("Cache-Control" = String, description = "`no-store`"))),
    )
)]
async fn backchannel_logout(
    State(state): State<AppState>,
    provider: Result<Path<String>, ApiError>,
    form: Result<axum::Form<LogoutForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let no_store = [(header::CACHE_CONTROL, "no-store")];
    // An undecodable provider segment names no provider: the same rejection as for an unknown one.
    let provider = provider.map(|Path(p)| p).unwrap_or_default();
    let token = form.ok().and_then(|f| f.0.logout_token).unwrap_or_default();
    match state
        .registration
        .backchannel_logout(&provider, &token)
        .await
    {
        Ok(accounts) => {
            tracing::info!(provider = ?provider, accounts = accounts.len(), "back-channel logout");
            // Locked credentials: the accounts' sockets must reauthenticate (and cannot).
            for aci in accounts {
                state
                    .chat
                    .publish(crate::chat::Event::Disconnect { aci, device: None });
            }
            (StatusCode::OK, no_store).into_response()
        }
        Err(e) => {
            // Debug formatting escapes control characters: the provider segment and a JWS `alg` are the
            // caller's text (F-15).
            tracing::info!(provider = ?provider, reason = ?e.to_string(), "logout token rejected");
            if let flatline_core::registration::LogoutError::Token(TokenError::UnknownKey(_)) = e {
                state.metrics.jwks_unknown_kid();
            }
            (
                StatusCode::BAD_REQUEST,
                no_store,
                axum::Json(LogoutErrorDto {
                    error: "invalid_request".to_owned(),
                }),
            )
                .into_response()
        }
    }
}
