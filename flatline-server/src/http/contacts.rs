//! Contact gating (API §6): `/v1/accounts/contact_policy`, `/v1/contact_invites*`, `/v1/contacts/*`,
//! `/v1/introductions`.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use flatline_core::contacts::{
    ContactError, ContactInvite, ContactInviteId, ContactPolicy, Flood, Grant, GrantState,
    InviteCode, NewContactInvite, RequestFilter, Via,
};
use flatline_core::ids::Aci;
use flatline_core::time::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, Json};
use super::extract::Authenticated;

/// Routes of this group.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/accounts/contact_policy",
            get(get_policy).put(set_policy),
        )
        .route("/v1/contact_invites", post(create_invite).get(list_invites))
        .route("/v1/contact_invites/redeem", post(redeem))
        .route("/v1/contact_invites/{id}", delete(delete_invite))
        .route("/v1/contact_invites/{id}/rotate", post(rotate_invite))
        .route("/v1/contact_invites/{id}/resume", post(resume_invite))
        .route("/v1/contacts/requests", get(requests))
        .route("/v1/contacts/requests/decide", post(decide))
        .route("/v1/contacts/grants", get(grants))
        .route(
            "/v1/contacts/grants/{aci}",
            put(allow_grant).delete(block_grant),
        )
        .route("/v1/introductions", post(introduce))
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

#[derive(Serialize)]
struct PolicyDto {
    policy: &'static str,
    introductions: &'static str,
}

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

#[derive(Deserialize)]
struct SetPolicyDto {
    policy: Option<String>,
    introductions: Option<String>,
}

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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FloodDto {
    detected_at: i64,
    since: i64,
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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InviteDto {
    id: Uuid,
    /// Only in the create and rotate answers.
    code: Option<String>,
    link: Option<String>,
    label: Option<String>,
    max_uses: u32,
    uses: u32,
    expires_at: i64,
    created_at: i64,
    state: &'static str,
    paused_until: Option<i64>,
    flood: Option<FloodDto>,
}

fn invite_dto(
    state: &AppState,
    invite: ContactInvite,
    code: Option<&InviteCode>,
    now: Timestamp,
) -> InviteDto {
    let code = code.map(InviteCode::display);
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateInviteDto {
    max_uses: Option<i64>,
    expires_in_seconds: Option<i64>,
    label: Option<String>,
}

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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InvitesDto {
    contact_invites: Vec<InviteDto>,
}

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

#[derive(Deserialize)]
struct RedeemDto {
    code: String,
}

#[derive(Serialize)]
struct RedeemedDto {
    owner: Aci,
    state: &'static str,
}

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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ViaDto {
    kind: &'static str,
    invite_id: Option<Uuid>,
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
            introducer: match v {
                Via::Introduction(a) => Some(a),
                _ => None,
            },
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GrantDto {
    aci: Aci,
    state: &'static str,
    via: ViaDto,
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

#[derive(Deserialize)]
struct RequestsQuery {
    state: Option<String>,
}

#[derive(Serialize)]
struct RequestsDto {
    requests: Vec<GrantDto>,
}

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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DecideDto {
    #[serde(default)]
    approve: Vec<Aci>,
    #[serde(default)]
    deny: Vec<Aci>,
    deny_all_from_invite: Option<Uuid>,
}

async fn decide(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Json(body): Json<DecideDto>,
) -> Result<StatusCode, ApiError> {
    state
        .contacts
        .decide(
            caller.account.aci,
            &body.approve,
            &body.deny,
            body.deny_all_from_invite.map(ContactInviteId),
        )
        .await
        .map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct GrantsDto {
    grants: Vec<GrantDto>,
}

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

#[derive(Deserialize)]
struct IntroduceDto {
    introducee: Aci,
    recipient: Aci,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IntroducedDto {
    recipient: Aci,
    introducee: Aci,
    created_at: i64,
}

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
