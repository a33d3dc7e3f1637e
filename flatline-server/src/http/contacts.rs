//! Contact gating (API §6): `/v1/accounts/contact_policy`, `/v1/contact_invites*`, `/v1/contacts/*`,
//! `/v1/introductions`.

use axum::extract::State;
use axum::http::StatusCode;
use flatline_core::contacts::{
    ContactCode, ContactError, ContactInvite, ContactInviteId, ContactPolicy, Decisions, Flood,
    Grant, GrantRoute, GrantState, NewContactInvite, RequestFilter, Via,
};
use flatline_core::ids::Aci;
use flatline_core::time::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ErrorBody, Json, Path, Query};
use super::extract::Authenticated;
use super::openapi::{self, BODY_TOO_LARGE, INTERNAL, INVALID_JSON, RATE_LIMITED, UNAUTHORIZED};

/// Routes of this group.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_policy, set_policy))
        .routes(routes!(create_invite, list_invites))
        .routes(routes!(redeem))
        .routes(routes!(delete_invite))
        .routes(routes!(rotate_invite))
        .routes(routes!(resume_invite))
        .routes(routes!(requests))
        .routes(routes!(decide))
        .routes(routes!(grants))
        .routes(routes!(allow_grant, block_grant))
        .routes(routes!(introduce))
}

/// Status table of this group.
fn error(e: ContactError) -> ApiError {
    match e {
        ContactError::InviteInvalid => ApiError::new(
            StatusCode::NOT_FOUND,
            "invite_invalid",
            "this invite code cannot be used",
        ),
        ContactError::InvitePaused | ContactError::FloodTripped => ApiError::new(
            StatusCode::CONFLICT,
            "invite_paused",
            "this invite is paused; ask its owner",
        ),
        ContactError::NotFound => ApiError::not_found("no such contact invite"),
        ContactError::UnknownAccount => ApiError::not_found("no such account"),
        ContactError::NotInviteOnly => ApiError::new(
            StatusCode::CONFLICT,
            "contacts_not_invite_only",
            "set the contact policy to invite_only first",
        ),
        ContactError::IntroductionsOff => ApiError::new(
            StatusCode::FORBIDDEN,
            "introductions_off",
            "the recipient does not accept introductions",
        ),
        ContactError::NotAllowed => ApiError::new(
            StatusCode::FORBIDDEN,
            "contact_not_allowed",
            "you are not an allowed contact of the recipient",
        ),
        ContactError::QuotaExceeded => ApiError::new(
            StatusCode::FORBIDDEN,
            "quota_exceeded",
            "too many contact invites; delete some first",
        ),
        ContactError::Invalid(m) => ApiError::unprocessable(m),
        ContactError::RateLimited(r) => r.into(),
        ContactError::Store(s) => ApiError::internal(&s),
    }
}

fn secs(t: Timestamp) -> i64 {
    t.as_secs()
}

// ---- policy ----

/// Who may fetch the account's prekeys, and how introductions are handled.
#[derive(Serialize, ToSchema)]
struct PolicyDto {
    /// `open` or `invite_only`.
    #[schema(schema_with = openapi::contact_policy_schema)]
    policy: &'static str,
    /// `ask`, `auto` or `off`.
    #[schema(schema_with = openapi::introductions_schema)]
    introductions: &'static str,
}

/// The caller's contact policy (the default when never set).
#[utoipa::path(
    get,
    path = "/v1/accounts/contact_policy",
    tag = "contacts",
    security(("basicAuth" = [])),
    responses(
        (status = 200, description = "The policy", body = PolicyDto),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn get_policy(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<axum::Json<PolicyDto>, ApiError> {
    let p = state
        .contacts
        .policy(caller.account.aci)
        .await
        .map_err(error)?;
    Ok(axum::Json(PolicyDto {
        policy: p.mode.as_str(),
        introductions: p.introductions.as_str(),
    }))
}

/// A policy change; an absent field keeps its current value.
#[derive(Deserialize, ToSchema)]
struct SetPolicyDto {
    /// `open` or `invite_only`. Switching to `open` deletes the contact graph.
    policy: Option<String>,
    /// `ask`, `auto` or `off`.
    introductions: Option<String>,
}

/// Sets the caller's contact policy.
#[utoipa::path(
    put,
    path = "/v1/accounts/contact_policy",
    tag = "contacts",
    security(("basicAuth" = [])),
    request_body = SetPolicyDto,
    responses(
        (status = 204, description = "Policy stored"),
        (status = 400, description = INVALID_JSON, body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 413, description = BODY_TOO_LARGE, body = ErrorBody),
        (status = 422, description = "`validation_failed`: an unknown policy or introductions value", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn set_policy(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Json(body): Json<SetPolicyDto>,
) -> Result<StatusCode, ApiError> {
    let aci = caller.account.aci;
    // An absent field keeps its current value.
    let current = state.contacts.policy(aci).await.map_err(error)?;
    let policy = ContactPolicy {
        mode: match body.policy.as_deref() {
            None => current.mode,
            Some(p) => p
                .parse()
                .map_err(|_| ApiError::unprocessable("policy must be open or invite_only"))?,
        },
        introductions: match body.introductions.as_deref() {
            None => current.introductions,
            Some(i) => i
                .parse()
                .map_err(|_| ApiError::unprocessable("introductions must be ask, auto or off"))?,
        },
    };
    state
        .contacts
        .set_policy(aci, policy)
        .await
        .map_err(|e| match e {
            // The caller's own account vanished mid-request: its credentials no longer exist.
            ContactError::UnknownAccount => ApiError::unauthorized(),
            e => error(e),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- contact invites ----

/// A flood the breaker detected on an invite.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct FloodDto {
    /// When the flood was detected.
    detected_at: i64,
    /// Redemptions since this time were quarantined.
    since: i64,
    /// How many.
    quarantined: u32,
}

impl From<Flood> for FloodDto {
    fn from(f: Flood) -> Self {
        FloodDto {
            detected_at: secs(f.detected_at),
            since: secs(f.since),
            quarantined: f.quarantined,
        }
    }
}

/// A contact invite.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct InviteDto {
    /// Invite id.
    id: Uuid,
    /// The code: only in the create and rotate answers, null otherwise.
    code: Option<String>,
    /// A shareable link with the code in its fragment; null when `code` is.
    link: Option<String>,
    /// The owner's label.
    label: Option<String>,
    /// Redemptions allowed.
    max_uses: u32,
    /// Redemptions so far.
    uses: u32,
    /// Expiry.
    expires_at: i64,
    /// Creation time.
    created_at: i64,
    /// `active`, `paused`, `exhausted` or `expired`.
    #[schema(schema_with = openapi::contact_invite_state_schema)]
    state: &'static str,
    /// End of the current pause, or null.
    paused_until: Option<i64>,
    /// The flood that paused it, or null.
    flood: Option<FloodDto>,
}

fn invite_dto(
    state: &AppState,
    invite: ContactInvite,
    code: Option<&ContactCode>,
    now: Timestamp,
) -> InviteDto {
    let code = code.map(ContactCode::display);
    InviteDto {
        id: invite.id.0,
        // The code travels in the fragment, which browsers never send to the server.
        link: code.as_ref().map(|c| {
            format!(
                "{}/contact#{c}",
                state.config.server.public_url.trim_end_matches('/')
            )
        }),
        code,
        state: invite.state(now).as_str(),
        paused_until: invite
            .paused_until
            .filter(|_| invite.is_paused(now))
            .map(secs),
        flood: invite.visible_flood(now).map(FloodDto::from),
        label: invite.label,
        max_uses: invite.max_uses,
        uses: invite.uses,
        expires_at: secs(invite.expires_at),
        created_at: secs(invite.created_at),
    }
}

/// A new contact invite; absent fields take the server's defaults.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct CreateInviteDto {
    /// Redemptions allowed (default 1).
    max_uses: Option<i64>,
    /// Lifetime in seconds.
    expires_in_seconds: Option<i64>,
    /// A label only the owner sees.
    label: Option<String>,
}

/// Creates a contact invite (the account must be `invite_only`). The answer is the only one with the code.
#[utoipa::path(
    post,
    path = "/v1/contact_invites",
    tag = "contacts",
    security(("basicAuth" = [])),
    request_body = CreateInviteDto,
    responses(
        (status = 201, description = "The invite, with its code and link", body = InviteDto),
        (status = 400, description = INVALID_JSON, body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "`quota_exceeded`: too many contact invites", body = ErrorBody),
        (status = 409, description = "`contacts_not_invite_only`: set the policy to invite_only first", body = ErrorBody),
        (status = 413, description = BODY_TOO_LARGE, body = ErrorBody),
        (status = 422, description = "`validation_failed`: maxUses, expiresInSeconds or label out of bounds", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn create_invite(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Json(body): Json<CreateInviteDto>,
) -> Result<(StatusCode, axum::Json<InviteDto>), ApiError> {
    let (invite, code) = state
        .contacts
        .create_invite(
            &caller,
            NewContactInvite {
                max_uses: body.max_uses,
                expires_in_seconds: body.expires_in_seconds,
                label: body.label,
            },
        )
        .await
        .map_err(error)?;
    let now = state.clock.now();
    Ok((
        StatusCode::CREATED,
        axum::Json(invite_dto(&state, invite, Some(&code), now)),
    ))
}

/// The caller's contact invites.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct InvitesDto {
    contact_invites: Vec<InviteDto>,
}

/// The caller's contact invites (without codes).
#[utoipa::path(
    get,
    path = "/v1/contact_invites",
    tag = "contacts",
    security(("basicAuth" = [])),
    responses(
        (status = 200, description = "The invites", body = InvitesDto),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn list_invites(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<axum::Json<InvitesDto>, ApiError> {
    let invites = state
        .contacts
        .invites(caller.account.aci)
        .await
        .map_err(error)?;
    let now = state.clock.now();
    Ok(axum::Json(InvitesDto {
        contact_invites: invites
            .into_iter()
            .map(|i| invite_dto(&state, i, None, now))
            .collect(),
    }))
}

/// An invite id from the path; one that cannot be an id names no invite (404).
fn invite_id(s: &str) -> Result<ContactInviteId, ApiError> {
    s.parse().map_err(|_| error(ContactError::NotFound))
}

/// Deletes one of the caller's contact invites (grants made through it stay).
#[utoipa::path(
    delete,
    path = "/v1/contact_invites/{id}",
    tag = "contacts",
    security(("basicAuth" = [])),
    params(("id" = uuid::Uuid, Path, description = "Invite id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`invalid_path`: a path segment does not decode", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`not_found`: no such invite of the caller", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn delete_invite(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .contacts
        .delete_invite(caller.account.aci, invite_id(&id)?)
        .await
        .map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Gives one of the caller's contact invites a new code; the old code stops working.
#[utoipa::path(
    post,
    path = "/v1/contact_invites/{id}/rotate",
    tag = "contacts",
    security(("basicAuth" = [])),
    params(("id" = uuid::Uuid, Path, description = "Invite id")),
    responses(
        (status = 200, description = "The invite with its new code", body = InviteDto),
        (status = 400, description = "`invalid_path`: a path segment does not decode", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`not_found`: no such invite of the caller", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn rotate_invite(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<axum::Json<InviteDto>, ApiError> {
    let (invite, code) = state
        .contacts
        .rotate_invite(caller.account.aci, invite_id(&id)?)
        .await
        .map_err(error)?;
    let now = state.clock.now();
    Ok(axum::Json(invite_dto(&state, invite, Some(&code), now)))
}

/// Ends the pause of one of the caller's contact invites.
#[utoipa::path(
    post,
    path = "/v1/contact_invites/{id}/resume",
    tag = "contacts",
    security(("basicAuth" = [])),
    params(("id" = uuid::Uuid, Path, description = "Invite id")),
    responses(
        (status = 204, description = "Resumed"),
        (status = 400, description = "`invalid_path`: a path segment does not decode", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`not_found`: no such invite of the caller", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn resume_invite(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .contacts
        .resume_invite(caller.account.aci, invite_id(&id)?)
        .await
        .map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A contact invite code to redeem.
#[derive(Deserialize, ToSchema)]
struct RedeemDto {
    /// The code, as shown (dashes and case do not matter).
    code: String,
}

/// The invite's owner and the state of the caller's grant.
#[derive(Serialize, ToSchema)]
struct RedeemedDto {
    /// The owner's ACI.
    #[schema(value_type = Uuid)]
    owner: Aci,
    /// `active`, `pending` or `quarantined`.
    #[schema(schema_with = openapi::grant_state_schema)]
    state: &'static str,
}

/// Redeems a contact invite code: the caller becomes an allowed (or pending) contact of its owner.
#[utoipa::path(
    post,
    path = "/v1/contact_invites/redeem",
    tag = "contacts",
    security(("basicAuth" = [])),
    request_body = RedeemDto,
    responses(
        (status = 200, description = "Redeemed", body = RedeemedDto),
        (status = 400, description = INVALID_JSON, body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`invite_invalid`: the code cannot be used", body = ErrorBody),
        (status = 409, description = "`invite_paused`: the invite is paused", body = ErrorBody),
        (status = 413, description = BODY_TOO_LARGE, body = ErrorBody),
        (status = 422, description = "`validation_failed`: the caller's own invite", body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn redeem(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Json(body): Json<RedeemDto>,
) -> Result<axum::Json<RedeemedDto>, ApiError> {
    match state.contacts.redeem(caller.account.aci, &body.code).await {
        Ok((owner, grant)) => Ok(axum::Json(RedeemedDto {
            owner,
            state: grant.as_str(),
        })),
        Err(e) => {
            if matches!(e, ContactError::FloodTripped) {
                // Never log the code; the redeemer is enough to find the invite in the store.
                tracing::warn!(redeemer = %caller.account.aci, "contact invite flood: invite paused");
            }
            Err(error(e))
        }
    }
}

// ---- requests, decisions, grants ----

/// How a grant came about.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ViaDto {
    /// `invite`, `introduction`, `direct` or `shortcode`.
    #[schema(schema_with = openapi::grant_via_schema)]
    kind: &'static str,
    /// The invite, for `invite`; null otherwise.
    invite_id: Option<Uuid>,
    /// The contact shortcode, for `shortcode`; null otherwise.
    shortcode_id: Option<Uuid>,
    /// The introducer, for `introduction`; null otherwise.
    #[schema(value_type = Option<Uuid>)]
    introducer: Option<Aci>,
}

impl From<Via> for ViaDto {
    fn from(v: Via) -> Self {
        ViaDto {
            kind: v.kind(),
            invite_id: match v {
                Via::Invite(i) => Some(i.0),
                _ => None,
            },
            shortcode_id: match v {
                Via::Shortcode(s) => Some(s.0),
                _ => None,
            },
            introducer: match v {
                Via::Introduction(a) => Some(a),
                _ => None,
            },
        }
    }
}

/// A contact grant the caller gave.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct GrantDto {
    /// The grantee.
    #[schema(value_type = Uuid)]
    aci: Aci,
    /// `active`, `pending`, `quarantined` or `denied`.
    #[schema(schema_with = openapi::grant_state_schema)]
    state: &'static str,
    /// Its origin.
    via: ViaDto,
    /// Creation time.
    created_at: i64,
}

impl From<Grant> for GrantDto {
    fn from(g: Grant) -> Self {
        GrantDto {
            aci: g.grantee,
            state: g.state.as_str(),
            via: g.via.into(),
            created_at: secs(g.created_at),
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RequestsQuery {
    /// `quarantined` or `pending`; both when absent.
    state: Option<String>,
}

/// Grants waiting for the caller's decision.
#[derive(Serialize, ToSchema)]
struct RequestsDto {
    requests: Vec<GrantDto>,
}

/// Contact requests: the caller's grants in quarantine or pending.
#[utoipa::path(
    get,
    path = "/v1/contacts/requests",
    tag = "contacts",
    security(("basicAuth" = [])),
    params(RequestsQuery),
    responses(
        (status = 200, description = "The requests", body = RequestsDto),
        (status = 400, description = "`invalid_query`: the query string does not parse", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 422, description = "`validation_failed`: state is neither quarantined nor pending", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn requests(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<RequestsQuery>,
) -> Result<axum::Json<RequestsDto>, ApiError> {
    let filter = match q.state.as_deref() {
        None => RequestFilter::All,
        Some("quarantined") => RequestFilter::Quarantined,
        Some("pending") => RequestFilter::Pending,
        Some(_) => {
            return Err(ApiError::unprocessable(
                "state must be quarantined or pending",
            ));
        }
    };
    let list = state
        .contacts
        .requests(caller.account.aci, filter)
        .await
        .map_err(error)?;
    Ok(axum::Json(RequestsDto {
        requests: list.into_iter().map(GrantDto::from).collect(),
    }))
}

/// A route grants come through, in the shape of a grant's `via` (a client may send a grant's `via` back).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct RouteDto {
    /// `invite`, `shortcode` or `introduction` (`direct` grants have no route).
    kind: String,
    /// The contact invite, for `invite` (else absent or null).
    #[serde(default)]
    invite_id: Option<Uuid>,
    /// The contact shortcode, for `shortcode` (else absent or null).
    #[serde(default)]
    shortcode_id: Option<Uuid>,
    /// The introducer, for `introduction` (else absent or null).
    #[serde(default)]
    #[schema(value_type = Option<Uuid>)]
    introducer: Option<Aci>,
}

/// Bulk decisions on contact requests (at most 1000 accounts and 100 routes), applied atomically.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct DecideDto {
    /// ACIs to allow. Approval wins over every denial in the same call.
    #[serde(default)]
    #[schema(value_type = Vec<Uuid>)]
    approve: Vec<Aci>,
    /// ACIs to deny.
    #[serde(default)]
    #[schema(value_type = Vec<Uuid>)]
    deny: Vec<Aci>,
    /// Deny every pending or quarantined request that came through this invite (active grants stay).
    deny_all_from_invite: Option<Uuid>,
    /// Deny **every** grant (active, pending or quarantined) that came through any of these routes: one contact
    /// invite, one contact shortcode, or one introducer's introductions. Routes that match nothing are no-ops.
    #[serde(default)]
    deny_all_via: Vec<RouteDto>,
}

/// Approves or denies contact requests.
///
/// Denied accounts lose access and cannot redeem the caller's invites again; their queued, undelivered messages
/// to the caller (identified sends; every device) are deleted in the same transaction.
#[utoipa::path(
    post,
    path = "/v1/contacts/requests/decide",
    tag = "contacts",
    security(("basicAuth" = [])),
    request_body = DecideDto,
    responses(
        (status = 204, description = "Applied"),
        (status = 400, description = INVALID_JSON, body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 409, description = "`contacts_not_invite_only`", body = ErrorBody),
        (status = 413, description = BODY_TOO_LARGE, body = ErrorBody),
        (status = 422, description = "`validation_failed`: too many accounts or routes, an ACI both approved and \
            denied, or a route that is not `invite` + `inviteId`, `shortcode` + `shortcodeId` or `introduction` + \
            `introducer`", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn decide(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Json(body): Json<DecideDto>,
) -> Result<StatusCode, ApiError> {
    let deny_all_via = body
        .deny_all_via
        .iter()
        .map(|r| GrantRoute::from_parts(&r.kind, r.invite_id, r.shortcode_id, r.introducer))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::unprocessable)?;
    let decisions = Decisions {
        approve: body.approve,
        deny: body.deny,
        deny_requests_from_invite: body.deny_all_from_invite.map(ContactInviteId),
        deny_all_via,
    };
    state
        .contacts
        .decide(caller.account.aci, &decisions)
        .await
        .map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every grant the caller gave.
#[derive(Serialize, ToSchema)]
struct GrantsDto {
    grants: Vec<GrantDto>,
}

/// Every contact grant the caller gave.
#[utoipa::path(
    get,
    path = "/v1/contacts/grants",
    tag = "contacts",
    security(("basicAuth" = [])),
    responses(
        (status = 200, description = "The grants", body = GrantsDto),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn grants(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<axum::Json<GrantsDto>, ApiError> {
    let list = state
        .contacts
        .grants(caller.account.aci)
        .await
        .map_err(error)?;
    Ok(axum::Json(GrantsDto {
        grants: list.into_iter().map(GrantDto::from).collect(),
    }))
}

fn aci_of(s: &str) -> Result<Aci, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request("invalid_identifier", "not an ACI"))
}

/// Allows `aci` to fetch the caller's keys (an active grant).
#[utoipa::path(
    put,
    path = "/v1/contacts/grants/{aci}",
    tag = "contacts",
    security(("basicAuth" = [])),
    params(("aci" = uuid::Uuid, Path, description = "The grantee's ACI")),
    responses(
        (status = 204, description = "Stored"),
        (status = 400, description = "`invalid_identifier` (not an ACI) or `invalid_path`", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`not_found`: no such account", body = ErrorBody),
        (status = 409, description = "`contacts_not_invite_only`", body = ErrorBody),
        (status = 422, description = "`validation_failed`: the caller's own ACI", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn allow_grant(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(aci): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .contacts
        .set_grant(caller.account.aci, aci_of(&aci)?, GrantState::Active)
        .await
        .map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Blocks `aci` (a denied grant); blocking an unknown account is a no-op.
#[utoipa::path(
    delete,
    path = "/v1/contacts/grants/{aci}",
    tag = "contacts",
    security(("basicAuth" = [])),
    params(("aci" = uuid::Uuid, Path, description = "The grantee's ACI")),
    responses(
        (status = 204, description = "Stored (also for an unknown account, which is blocked already)"),
        (status = 400, description = "`invalid_identifier` (not an ACI) or `invalid_path`", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 409, description = "`contacts_not_invite_only`", body = ErrorBody),
        (status = 422, description = "`validation_failed`: the caller's own ACI", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn block_grant(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(aci): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .contacts
        .set_grant(caller.account.aci, aci_of(&aci)?, GrantState::Denied)
        .await
        .map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- introductions ----

/// Introduces `introducee` to `recipient`.
#[derive(Deserialize, ToSchema)]
struct IntroduceDto {
    /// Who is introduced.
    #[schema(value_type = Uuid)]
    introducee: Aci,
    /// To whom.
    #[schema(value_type = Uuid)]
    recipient: Aci,
}

/// The recorded introduction.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct IntroducedDto {
    /// To whom.
    #[schema(value_type = Uuid)]
    recipient: Aci,
    /// Who was introduced.
    #[schema(value_type = Uuid)]
    introducee: Aci,
    /// When.
    created_at: i64,
}

/// Introduces one of the caller's contacts to another account that allows the caller.
#[utoipa::path(
    post,
    path = "/v1/introductions",
    tag = "contacts",
    security(("basicAuth" = [])),
    request_body = IntroduceDto,
    responses(
        (status = 201, description = "Recorded", body = IntroducedDto),
        (status = 400, description = INVALID_JSON, body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "`introductions_off` or `contact_not_allowed`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such account", body = ErrorBody),
        (status = 413, description = BODY_TOO_LARGE, body = ErrorBody),
        (status = 422, description = "`validation_failed`: introducee equals recipient, or the recipient is the caller", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn introduce(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Json(body): Json<IntroduceDto>,
) -> Result<(StatusCode, axum::Json<IntroducedDto>), ApiError> {
    let r = state
        .contacts
        .introduce(caller.account.aci, body.introducee, body.recipient)
        .await
        .map_err(error)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(IntroducedDto {
            recipient: r.recipient,
            introducee: r.introducee,
            created_at: secs(r.created_at),
        }),
    ))
}
