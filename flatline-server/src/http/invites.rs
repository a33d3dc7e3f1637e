//! Registration invites (API §5): `/v1/invites`, `/v1/invites/{id}`, `/v1/invites/validity`, and the `/invite`
//! landing page.
//!
//! | status | code | when |
//! | --- | --- | --- |
//! | 201 | | invite created (the only answer that carries the code) |
//! | 403 | `quota_exceeded` | too young, earned quota spent, or too many open invites; body adds `availableAt` |
//! | 403 | `invites_disabled` | accounts may not invite, or this account is suspended |
//! | 403 | `tree_limit` | the account's invite tree is full |
//! | 403 | `chain_limit` | the account is at the end of a fast invite chain; body adds `availableAt` |
//! | 404 | `not_found` | no such invite, or not the caller's |
//! | 422 | `validation_failed` | `maxUses`, `expiresInSeconds` or `note` out of bounds |
//! | 429 | `rate_limited` | validity checks per IP |

use std::sync::LazyLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flatline_core::invites::{
    Invite, InviteCode, InviteError, InviteId, InviteState, NewInviteRequest,
};
use flatline_core::manifest::Descriptor;
use flatline_core::registration::percent_encode;
use flatline_core::time::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ErrorBody, Json, Path};
use super::extract::{Authenticated, ClientNetwork};
use super::openapi::{self, BODY_TOO_LARGE, INTERNAL, INVALID_JSON, RATE_LIMITED, UNAUTHORIZED};

/// Routes of this group.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(validity))
        .routes(routes!(revoke))
        .routes(routes!(landing))
}

/// The shareable link for `code`: `flatline://invite?url=…&fp=sha256:…&code=…` when the instance has a manifest
/// descriptor, else the landing page `<public_url>/invite#<code>` (the code in the fragment never reaches a server).
pub fn invite_link(descriptor: Option<&Descriptor>, public_url: &str, code: &InviteCode) -> String {
    match descriptor {
        Some(d) => format!(
            "flatline://invite?url={}&fp={}&code={}",
            percent_encode(&d.manifest_url),
            d.fingerprint.with_hash_name(),
            code.display()
        ),
        None => format!(
            "{}/invite#{}",
            public_url.trim_end_matches('/'),
            code.display()
        ),
    }
}

/// A 403 refusal: the usual error body, plus `availableAt` for `quota_exceeded` and `chain_limit`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct InviteRefusal {
    /// `quota_exceeded`, `chain_limit`, `invites_disabled` or `tree_limit`.
    #[schema(example = "quota_exceeded")]
    code: &'static str,
    /// Human text.
    message: String,
    /// When the account may invite again, if known (absent for `invites_disabled` and `tree_limit`).
    available_at: Option<i64>,
}

fn refusal(code: &'static str, message: &str, available_at: Option<Timestamp>) -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(InviteRefusal {
            code,
            message: message.to_owned(),
            available_at: available_at.map(Timestamp::as_secs),
        }),
    )
        .into_response()
}

/// Status table of this group.
fn error(e: InviteError) -> Response {
    match e {
        InviteError::QuotaExceeded { available_at } => refusal(
            "quota_exceeded",
            "no invite available to this account now",
            available_at,
        ),
        InviteError::ChainLimit { available_at } => refusal(
            "chain_limit",
            "this account joined through a fast invite chain and cannot invite yet",
            Some(available_at),
        ),
        InviteError::Disabled => ApiError::new(
            StatusCode::FORBIDDEN,
            "invites_disabled",
            "this account may not create invites",
        )
        .into_response(),
        InviteError::TreeLimit => ApiError::new(
            StatusCode::FORBIDDEN,
            "tree_limit",
            "the invite tree of this account is full",
        )
        .into_response(),
        InviteError::Invalid(m) => ApiError::unprocessable(m).into_response(),
        InviteError::NotFound => ApiError::not_found("no such invite").into_response(),
        InviteError::RateLimited(r) => ApiError::from(r).into_response(),
        InviteError::Store(s) => ApiError::internal(&s).into_response(),
    }
}

/// A registration invite.
#[derive(Serialize, ToSchema)]
#[schema(as = RegistrationInvite)]
#[serde(rename_all = "camelCase")]
struct InviteDto {
    /// Invite id.
    id: Uuid,
    /// The code: only in the creation answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    /// The shareable link: only in the creation answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<String>,
    /// Registrations allowed.
    max_uses: u32,
    /// Registrations so far.
    uses: u32,
    /// Reservations by verified sessions that have not registered yet.
    pending: u32,
    /// Expiry, or null.
    expires_at: Option<i64>,
    /// Creation time.
    created_at: i64,
    /// Last registration through it, or null.
    last_used_at: Option<i64>,
    /// Revocation time, or null.
    revoked_at: Option<i64>,
    /// The owner's note.
    note: Option<String>,
    /// `active`, `exhausted`, `expired`, `revoked` or `owner_suspended`.
    #[schema(schema_with = openapi::registration_invite_state_schema)]
    state: &'static str,
}

fn dto(invite: Invite, state: InviteState, code: Option<(String, String)>) -> InviteDto {
    let (code, link) = code.unzip();
    InviteDto {
        id: invite.id.0,
        code,
        link,
        max_uses: invite.max_uses,
        uses: invite.uses,
        pending: invite.pending,
        expires_at: invite.expires_at.map(Timestamp::as_secs),
        created_at: invite.created_at.as_secs(),
        last_used_at: invite.last_used_at.map(Timestamp::as_secs),
        revoked_at: invite.revoked_at.map(Timestamp::as_secs),
        note: invite.note,
        state: state.as_str(),
    }
}

/// A new registration invite; absent fields take the server's defaults.
#[derive(Deserialize, ToSchema)]
#[schema(as = CreateRegistrationInvite)]
#[serde(rename_all = "camelCase")]
struct CreateDto {
    /// Registrations allowed.
    max_uses: Option<u32>,
    /// Lifetime in seconds.
    expires_in_seconds: Option<u64>,
    /// A note only the owner sees.
    note: Option<String>,
}

/// Creates a registration invite. The answer is the only one that carries the code.
#[utoipa::path(
    post,
    path = "/v1/invites",
    tag = "invites",
    security(("basicAuth" = [])),
    request_body = CreateDto,
    responses(
        (status = 201, description = "The invite, with its code and link", body = InviteDto),
        (status = 400, description = INVALID_JSON, body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "`quota_exceeded`, `chain_limit` (both with `availableAt`), `invites_disabled` or `tree_limit`", body = InviteRefusal),
        (status = 413, description = BODY_TOO_LARGE, body = ErrorBody),
        (status = 422, description = "`validation_failed`: maxUses, expiresInSeconds or note out of bounds", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Json(body): Json<CreateDto>,
) -> Result<(StatusCode, axum::Json<InviteDto>), Response> {
    let req = NewInviteRequest {
        max_uses: body.max_uses,
        expires_in: body.expires_in_seconds.map(Duration::from_secs),
        note: body.note,
    };
    let (invite, code) = state
        .invites
        .create(&caller.account, req)
        .await
        .map_err(error)?;
    let link = invite_link(
        state.trust.as_deref().map(|t| t.descriptor()),
        &state.config.server.public_url,
        &code,
    );
    tracing::info!(invite = %invite.id, owner = %caller.account.aci, "invite created");
    let now = state.clock.now();
    let s = invite.state(now, false);
    Ok((
        StatusCode::CREATED,
        axum::Json(dto(invite, s, Some((code.display(), link)))),
    ))
}

/// The caller's registration invites.
#[derive(Serialize, ToSchema)]
#[schema(as = RegistrationInvites)]
struct ListDto {
    invites: Vec<InviteDto>,
}

/// The caller's registration invites (without codes).
#[utoipa::path(
    get,
    path = "/v1/invites",
    tag = "invites",
    security(("basicAuth" = [])),
    responses(
        (status = 200, description = "The invites", body = ListDto),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<axum::Json<ListDto>, Response> {
    let invites = state
        .invites
        .list_own(caller.account.aci)
        .await
        .map_err(error)?;
    Ok(axum::Json(ListDto {
        invites: invites.into_iter().map(|(i, s)| dto(i, s, None)).collect(),
    }))
}

/// Revokes one of the caller's registration invites.
#[utoipa::path(
    delete,
    path = "/v1/invites/{id}",
    tag = "invites",
    security(("basicAuth" = [])),
    params(("id" = uuid::Uuid, Path, description = "Invite id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "`invalid_path`: a path segment does not decode", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`not_found`: no such invite of the caller", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn revoke(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, Response> {
    let id = Uuid::parse_str(&id)
        .map(InviteId)
        .map_err(|_| error(InviteError::NotFound))?;
    state
        .invites
        .revoke_own(caller.account.aci, id)
        .await
        .map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A registration invite code to check.
#[derive(Deserialize, ToSchema)]
#[schema(as = InviteValidityRequest)]
struct ValidityDto {
    /// The code, as shown.
    code: String,
}

/// Whether the code can be used now.
#[derive(Serialize, ToSchema)]
#[schema(as = InviteValidity)]
struct ValidDto {
    /// True when the code names an usable invite.
    valid: bool,
}

/// Checks a registration invite code before registering (anonymous, limited per client IP).
#[utoipa::path(
    post,
    path = "/v1/invites/validity",
    tag = "invites",
    request_body = ValidityDto,
    responses(
        (status = 200, description = "The answer", body = ValidDto),
        (status = 400, description = INVALID_JSON, body = ErrorBody),
        (status = 413, description = BODY_TOO_LARGE, body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn validity(
    State(state): State<AppState>,
    ClientNetwork(network): ClientNetwork,
    Json(body): Json<ValidityDto>,
) -> Result<axum::Json<ValidDto>, Response> {
    let valid = state
        .invites
        .validity(&body.code, &network)
        .await
        .map_err(error)?;
    Ok(axum::Json(ValidDto { valid }))
}

// ---- landing page ----

/// Reads the code from the fragment (never sent to the server), shows it, and builds the app deep link.
const SCRIPT: &str = r#"(function () {
  var code = decodeURIComponent(location.hash.slice(1)).toUpperCase();
  var box = document.getElementById("code");
  var link = document.getElementById("open");
  if (!/^[0-9A-Z-]{16,24}$/.test(code)) { box.textContent = "(no invite code in this link)"; return; }
  box.textContent = code;
  var d = document.body.dataset;
  var href = "flatline://invite?code=" + encodeURIComponent(code);
  if (d.url) { href = "flatline://invite?url=" + encodeURIComponent(d.url) + "&fp=" + encodeURIComponent(d.fp) + "&code=" + encodeURIComponent(code); }
  link.setAttribute("href", href);
  link.hidden = false;
})();"#;

const STYLE: &str = "body{font-family:sans-serif;max-width:32em;margin:3em auto;padding:0 1em}\
#code{font-family:monospace;font-size:1.5em;letter-spacing:.1em}";

fn csp_hash(text: &str) -> String {
    format!(
        "'sha256-{}'",
        STANDARD.encode(Sha256::digest(text.as_bytes()))
    )
}

/// Only the hashed inline script and style may run; nothing may be loaded, framed or submitted.
static CSP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src {}; style-src {}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        csp_hash(SCRIPT),
        csp_hash(STYLE)
    )
});

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// The invite landing page for browsers: reads the code from the URL fragment and offers the app deep link.
#[utoipa::path(
    get,
    path = "/invite",
    tag = "invites",
    responses(
        (status = 200, description = "An HTML page (the code stays in the fragment, which never reaches a server)",
            content_type = "text/html; charset=utf-8", body = String),
    )
)]
async fn landing(State(state): State<AppState>) -> Response {
    let data = match state.trust.as_deref().map(|t| t.descriptor()) {
        Some(d) => format!(
            " data-url=\"{}\" data-fp=\"{}\"",
            escape(&d.manifest_url),
            escape(&d.fingerprint.with_hash_name())
        ),
        None => String::new(),
    };
    let name = escape(&state.config.instance.name);
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta name=\"referrer\" content=\"no-referrer\"><title>Invitation to {name}</title>\
<style>{STYLE}</style></head><body{data}>\
<h1>You are invited to {name}</h1>\
<p>Your invite code:</p><p id=\"code\"></p>\
<p><a id=\"open\" hidden>Open in the Flatline app</a></p>\
<p>Or install a Flatline app, add this server, and enter the code when you register.</p>\
<script>{SCRIPT}</script></body></html>"
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP.as_str()),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        html,
    )
        .into_response()
}
