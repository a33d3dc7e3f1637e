//! `/v1/verification*`: providers, verification sessions, back-channel logout.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use flatline_core::registration::oidc::TokenError;
use flatline_core::registration::{
    RegistrationError, StartRequest, VerificationSession, VerifyRequest,
};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{ApiError, Json};
use super::extract::ClientIp;

/// Routes of this group.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/verification", get(providers))
        .route("/v1/verification/session", post(start))
        .route("/v1/verification/session/{id}", get(session).patch(verify))
        .route(
            "/v1/verification/providers/{provider}/backchannel-logout",
            post(backchannel_logout),
        )
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
            tracing::warn!(error = %idp, "identity provider failed");
            (StatusCode::BAD_GATEWAY, "idp_error")
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
                tracing::info!(reason = %t, "ID token rejected");
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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProviderDto {
    id: String,
    name: String,
    issuer: String,
    authorization_endpoint: String,
    principal_claim: Option<String>,
    invite_required: bool,
}

#[derive(Serialize)]
struct ProvidersDto {
    providers: Vec<ProviderDto>,
}

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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartDto {
    provider_id: Option<String>,
    code_challenge: Option<String>,
    state: Option<String>,
    redirect_uri: Option<String>,
    login_hint: Option<String>,
    invite_code: Option<String>,
}

/// A session as the app sees it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionDto {
    id: String,
    authorization_endpoint: Option<String>,
    client_id: Option<String>,
    request_uri: String,
    request_uri_lifetime: u64,
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

async fn start(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
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
        .start(&ip.to_string(), req)
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerifyDto {
    code: Option<String>,
    code_verifier: Option<String>,
    state: Option<String>,
    iss: Option<String>,
}

#[derive(Serialize)]
struct VerifiedDto {
    id: String,
    principal: String,
    verified: bool,
}

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

#[derive(Deserialize)]
struct LogoutForm {
    logout_token: Option<String>,
}

/// OpenID Back-Channel Logout 1.0: 200 with `Cache-Control: no-store`, or 400 `{"error":"invalid_request"}`.
async fn backchannel_logout(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    form: Result<axum::Form<LogoutForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let no_store = [(header::CACHE_CONTROL, "no-store")];
    let token = form.ok().and_then(|f| f.0.logout_token).unwrap_or_default();
    match state
        .registration
        .backchannel_logout(&provider, &token)
        .await
    {
        Ok(accounts) => {
            tracing::info!(provider = %provider, accounts = accounts.len(), "back-channel logout");
            (StatusCode::OK, no_store).into_response()
        }
        Err(e) => {
            tracing::info!(provider = %provider, reason = %e, "logout token rejected");
            if let flatline_core::registration::LogoutError::Token(TokenError::UnknownKey(_)) = e {
                state.metrics.jwks_unknown_kid();
            }
            (
                StatusCode::BAD_REQUEST,
                no_store,
                axum::Json(serde_json::json!({"error": "invalid_request"})),
            )
                .into_response()
        }
    }
}
