//! `/v1/profile*` (versioned profiles, M§4), the avatar upload form's POST and avatar downloads at the cdn0 base
//! URL, and `GET /v1/config`.
//!
//! Status table: 400 `invalid_json` / `invalid_commitment` / `invalid_identifier` / `invalid_credential_type` /
//! `invalid_credential_request` / `ambiguous_credentials`; 401 `unauthorized` (no credentials, wrong access key, or
//! with an access key any missing account; on the unversioned read also a Group-Send-Token that does not parse or
//! does not verify for exactly the target); 403 `policy_rejected` (avatar POST: bad signature, expired, other key);
//! 404 `not_found` (authenticated reads of a missing account, missing avatar); 422 `validation_failed` (sizes,
//! version); 429 `rate_limited`.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flatline_core::attachments::{AvatarFormError, avatar_form, is_avatar_key, verify_avatar_form};
use flatline_core::ids::{Aci, ServiceId};
use flatline_core::profiles::{
    BaseReadAuth, ProfileError, ProfileRequester, ProfileView, RawProfile, VersionedView,
    plan_base_read,
};
use flatline_core::zk::service::{
    ProfileCredentialError, issue_profile_key_credential, parse_group_send_token,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ErrorBody, Json, Path, Query};
use super::extract::{Authenticated, MaybeAuthenticated};
use super::openapi::{BODY_TOO_LARGE, INTERNAL, RATE_LIMITED, UNAUTHORIZED};
use super::wire;

/// Routes of this group.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(set_profile))
        .routes(routes!(get_profile))
        .routes(routes!(get_versioned_profile))
        .routes(routes!(get_profile_credential))
        .routes(routes!(remote_config))
        .routes(routes!(upload_avatar))
        .routes(routes!(download_avatar))
}

fn profile_error(e: ProfileError) -> ApiError {
    match e {
        ProfileError::Unauthorized => ApiError::unauthorized(),
        ProfileError::NotFound => ApiError::not_found("no such account"),
        ProfileError::BadCommitment => ApiError::bad_request(
            "invalid_commitment",
            "commitment is not a valid ProfileKeyCommitment",
        ),
        ProfileError::Invalid(m) => ApiError::unprocessable(m),
        ProfileError::RateLimited(r) => r.into(),
        ProfileError::Store(s) => ApiError::internal(&s),
    }
}

/// `CreateProfileRequest`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct CreateProfileDto {
    /// Serialized `ProfileKeyCommitment` (97 bytes), standard base64.
    #[serde(deserialize_with = "wire::opt_std")]
    #[schema(value_type = String, format = Byte)]
    pub commitment: Option<Vec<u8>>,
    /// The profile version: exactly 64 hex characters.
    #[schema(example = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9")]
    pub version: String,
    /// Encrypted name (81 or 285 bytes), standard base64.
    #[serde(deserialize_with = "wire::opt_std")]
    #[schema(value_type = String, format = Byte)]
    pub name: Option<Vec<u8>>,
    /// Encrypted about emoji (0 or 60 bytes).
    #[serde(deserialize_with = "wire::opt_std")]
    #[schema(value_type = Option<String>, format = Byte)]
    pub about_emoji: Option<Vec<u8>>,
    /// Encrypted about text (0, 156, 282 or 540 bytes).
    #[serde(deserialize_with = "wire::opt_std")]
    #[schema(value_type = Option<String>, format = Byte)]
    pub about: Option<Vec<u8>>,
    /// Encrypted payment address (0 or 582 bytes).
    #[serde(deserialize_with = "wire::opt_std")]
    #[schema(value_type = Option<String>, format = Byte)]
    pub payment_address: Option<Vec<u8>>,
    /// Encrypted phone-number-sharing flag (0 or 29 bytes).
    #[serde(deserialize_with = "wire::opt_std")]
    #[schema(value_type = Option<String>, format = Byte)]
    pub phone_number_sharing: Option<Vec<u8>>,
    /// The profile has an avatar.
    pub avatar: bool,
    /// Keep the avatar stored for this version (with `avatar`).
    pub same_avatar: bool,
    /// Badge ids to show (ignored: Flatline has no badges).
    pub badge_ids: Option<Vec<String>>,
}

/// `ProfileAvatarUploadAttributes`: the fields of the multipart POST to the cdn0 base URL (S3 POST-policy shaped).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct AvatarFormDto {
    /// Object key, `profiles/<base64url of 16 bytes>`.
    key: String,
    credential: String,
    /// Always `private`.
    acl: String,
    /// Always `AWS4-HMAC-SHA256`.
    algorithm: String,
    /// `yyyyMMdd'T'HHmmss'Z'`.
    date: String,
    /// Base64 JSON POST policy (expiry 30 minutes, exact key, 1..10 MiB).
    policy: String,
    /// Hex HMAC over `policy` by a server secret.
    signature: String,
}

/// Sets the caller's profile version and makes it current.
///
/// 200 with the avatar upload form when the avatar changed to a new one, else 200 with an empty body.
#[utoipa::path(
    put,
    path = "/v1/profile",
    tag = "profiles",
    security(("basicAuth" = [])),
    request_body = CreateProfileDto,
    responses(
        (status = 200, description = "Stored; the body is the avatar upload form when a new avatar is to be uploaded, else empty",
            body = AvatarFormDto),
        (status = 400, description = "`invalid_json`, or `invalid_commitment` (not a ProfileKeyCommitment)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 413, description = BODY_TOO_LARGE, body = ErrorBody),
        (status = 422, description = "`validation_failed`: version not 64 hex characters, or a field of the wrong size", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn set_profile(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Json(body): Json<CreateProfileDto>,
) -> Result<Response, ApiError> {
    let raw = RawProfile {
        commitment: body.commitment.unwrap_or_default(),
        version: body.version,
        name: body.name,
        about_emoji: body.about_emoji,
        about: body.about,
        payment_address: body.payment_address,
        phone_number_sharing: body.phone_number_sharing,
        avatar: body.avatar,
        same_avatar: body.same_avatar,
    };
    let new_avatar = state
        .profiles
        .set(&caller, &raw)
        .await
        .map_err(profile_error)?;
    Ok(match new_avatar {
        Some(key) => {
            let f = avatar_form(&state.storage.secret, &key, state.clock.now());
            axum::Json(AvatarFormDto {
                key: f.key,
                credential: f.credential,
                acl: f.acl,
                algorithm: f.algorithm,
                date: f.date,
                policy: f.policy,
                signature: f.signature,
            })
            .into_response()
        }
        None => StatusCode::OK.into_response(),
    })
}

/// `BaseProfileResponse`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct BaseProfileDto {
    /// The identity key of the identity read (ACI or PNI), standard base64.
    #[schema(value_type = String, format = Byte)]
    identity_key: String,
    /// `UnidentifiedAccessChecksum` (HMAC-SHA256 of 32 zero bytes keyed by the access key), standard base64; null
    /// for PNI reads or without an access key.
    #[schema(value_type = Option<String>, format = Byte)]
    unidentified_access: Option<String>,
    /// Whether sealed sender accepts any access key (always false for `invite_only` accounts).
    unrestricted_unidentified_access: bool,
    /// Capabilities by name.
    capabilities: BTreeMap<String, bool>,
    /// Always empty.
    #[schema(value_type = Vec<Object>)]
    badges: Vec<serde_json::Value>,
    /// The service id read (`<uuid>` or `PNI:<uuid>`).
    uuid: String,
}

impl From<ProfileView> for BaseProfileDto {
    fn from(v: ProfileView) -> Self {
        BaseProfileDto {
            identity_key: wire::std_padded::encode(&v.identity_key),
            unidentified_access: v.unidentified_access.map(|c| wire::std_padded::encode(&c)),
            unrestricted_unidentified_access: v.unrestricted_unidentified_access,
            capabilities: v
                .capabilities
                .into_iter()
                .map(|(n, b)| (n.to_owned(), b))
                .collect(),
            badges: vec![],
            uuid: v.service_id.to_string(),
        }
    }
}

/// `VersionedProfileResponse` (and, with `credential`, `ExpiringProfileKeyCredentialProfileResponse`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct VersionedProfileDto {
    #[serde(flatten)]
    base: BaseProfileDto,
    /// Encrypted name; null when the version does not exist or is not visible to the reader.
    #[schema(value_type = Option<String>, format = Byte)]
    name: Option<String>,
    #[schema(value_type = Option<String>, format = Byte)]
    about: Option<String>,
    #[schema(value_type = Option<String>, format = Byte)]
    about_emoji: Option<String>,
    /// Avatar object key (download at `{cdn0}/{avatar}`).
    avatar: Option<String>,
    #[schema(value_type = Option<String>, format = Byte)]
    payment_address: Option<String>,
    #[schema(value_type = Option<String>, format = Byte)]
    phone_number_sharing: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct CredentialProfileDto {
    #[serde(flatten)]
    profile: VersionedProfileDto,
    /// `ExpiringProfileKeyCredentialResponse` (expires now + 7 days, truncated to the day), standard base64; null
    /// when the version is not current or not visible.
    #[schema(value_type = Option<String>, format = Byte)]
    credential: Option<String>,
}

/// Who is asking: the `Authorization` header or the `Unidentified-Access-Key` (never both).
fn requester(
    caller: Option<flatline_core::auth::AuthenticatedDevice>,
    headers: &HeaderMap,
) -> Result<ProfileRequester, ApiError> {
    match (caller, headers.get("unidentified-access-key")) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "ambiguous_credentials",
            "send either Authorization or Unidentified-Access-Key",
        )),
        (Some(d), None) => Ok(ProfileRequester::Device(Box::new(d))),
        // A malformed access key is a wrong access key: 401.
        (None, Some(v)) => Ok(ProfileRequester::AccessKey(
            v.to_str()
                .ok()
                .and_then(|s| wire::decode_std(s).ok())
                .unwrap_or_default(),
        )),
        (None, None) => Ok(ProfileRequester::Anonymous),
    }
}

fn aci_of(s: &str) -> Result<Aci, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request("invalid_identifier", "not an ACI"))
}

/// Reads an account's base profile (ACI or PNI).
///
/// Authorized by Basic auth, by the target's `Unidentified-Access-Key` (ACI targets only), or by a
/// `Group-Send-Token` covering exactly the target (a fellow group member; it decides alone, even beside Basic
/// auth, as Signal-Server does).
#[utoipa::path(
    get,
    path = "/v1/profile/{identifier}",
    tag = "profiles",
    security(("basicAuth" = []), ("unidentifiedAccessKey" = []), ()),
    params(
        ("identifier" = String, Path, description = "`<aci>` or `PNI:<pni>`"),
        ("Group-Send-Token" = Option<String>, Header, description = "A serialized GroupSendFullToken, standard \
            base64, covering exactly `{identifier}`; never with Unidentified-Access-Key"),
    ),
    responses(
        (status = 200, description = "The base profile", body = BaseProfileDto),
        (status = 400, description = "`invalid_identifier` or `ambiguous_credentials` (Authorization with an \
            access key, or a Group-Send-Token with an access key)", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no credentials, a wrong access key, an access key for a PNI, \
            (with an access key) no such account, or a Group-Send-Token that does not parse, has expired or does \
            not cover exactly the target", body = ErrorBody),
        (status = 404, description = "`not_found` (authenticated, or with a valid Group-Send-Token)", body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn get_profile(
    State(state): State<AppState>,
    MaybeAuthenticated(caller): MaybeAuthenticated,
    headers: HeaderMap,
    Path(identifier): Path<String>,
) -> Result<axum::Json<BaseProfileDto>, ApiError> {
    // Signal-Server converts the header before the endpoint runs: one that does not parse is a 401.
    let token = match headers.get("group-send-token") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| parse_group_send_token(s).ok())
                .ok_or_else(ApiError::unauthorized)?,
        ),
    };
    let target: ServiceId = identifier
        .parse()
        .map_err(|_| ApiError::bad_request("invalid_identifier", "not an ACI or PNI:uuid"))?;
    let how = plan_base_read(
        headers.contains_key("unidentified-access-key"),
        token.is_some(),
    )
    .map_err(|e| ApiError::bad_request("ambiguous_credentials", e.to_string()))?;
    let view = match (how, token) {
        (BaseReadAuth::GroupSendToken, Some(token)) => {
            let trust = state.trust.clone();
            state
                .profiles
                .base_by_group_send_token(
                    &token,
                    trust.as_deref().map(|t| &t.zk().server),
                    target,
                    state.clock.now(),
                )
                .await
        }
        _ => {
            let who = requester(caller, &headers)?;
            state.profiles.base(&who, target).await
        }
    }
    .map_err(profile_error)?;
    Ok(axum::Json(view.into()))
}

fn versioned_dto(v: VersionedView) -> VersionedProfileDto {
    let enc = |b: &Option<Vec<u8>>| b.as_ref().map(|b| wire::std_padded::encode(b));
    let p = v.profile.as_ref();
    VersionedProfileDto {
        name: p.map(|p| wire::std_padded::encode(&p.name)),
        about: p.and_then(|p| enc(&p.about)),
        about_emoji: p.and_then(|p| enc(&p.about_emoji)),
        avatar: p.and_then(|p| p.avatar.clone()),
        payment_address: p.and_then(|p| enc(&p.payment_address)),
        phone_number_sharing: p.and_then(|p| enc(&p.phone_number_sharing)),
        base: v.base.into(),
    }
}

/// Reads a profile version.
///
/// Content fields are null when the version does not exist or is hidden from the reader (an `invite_only`
/// account's strangers; docs/API.md "Profiles").
#[utoipa::path(
    get,
    path = "/v1/profile/{aci}/{version}",
    tag = "profiles",
    security(("basicAuth" = []), ("unidentifiedAccessKey" = [])),
    params(
        ("aci" = String, Path, description = "The account's ACI"),
        ("version" = String, Path, description = "The profile version (64 hex characters)"),
    ),
    responses(
        (status = 200, description = "The profile", body = VersionedProfileDto),
        (status = 400, description = "`invalid_identifier` or `ambiguous_credentials`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found` (authenticated)", body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn get_versioned_profile(
    State(state): State<AppState>,
    MaybeAuthenticated(caller): MaybeAuthenticated,
    headers: HeaderMap,
    Path((aci, version)): Path<(String, String)>,
) -> Result<axum::Json<VersionedProfileDto>, ApiError> {
    let who = requester(caller, &headers)?;
    let v = state
        .profiles
        .versioned(&who, aci_of(&aci)?, &version)
        .await
        .map_err(profile_error)?;
    Ok(axum::Json(versioned_dto(v)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct CredentialQuery {
    /// Must be `expiringProfileKey`.
    #[serde(rename = "credentialType")]
    #[param(rename = "credentialType")]
    credential_type: Option<String>,
}

/// Reads a profile version with an expiring profile key credential.
///
/// `credential` is null when the version is not current or hidden from the reader, or the server has no zkgroup
/// parameters; a request that does not match the version's commitment is 400.
#[utoipa::path(
    get,
    path = "/v1/profile/{aci}/{version}/{credentialRequest}",
    tag = "profiles",
    security(("basicAuth" = []), ("unidentifiedAccessKey" = [])),
    params(
        ("aci" = String, Path, description = "The account's ACI"),
        ("version" = String, Path, description = "The profile version"),
        ("credentialRequest" = String, Path, description = "Hex `ProfileKeyCredentialRequest`"),
        CredentialQuery,
    ),
    responses(
        (status = 200, description = "The profile and credential", body = CredentialProfileDto),
        (status = 400, description = "`invalid_credential_type`, `invalid_credential_request`, `invalid_identifier` or `ambiguous_credentials`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found` (authenticated)", body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn get_profile_credential(
    State(state): State<AppState>,
    MaybeAuthenticated(caller): MaybeAuthenticated,
    headers: HeaderMap,
    Path((aci, version, request)): Path<(String, String, String)>,
    Query(q): Query<CredentialQuery>,
) -> Result<axum::Json<CredentialProfileDto>, ApiError> {
    if q.credential_type.as_deref() != Some("expiringProfileKey") {
        return Err(ApiError::bad_request(
            "invalid_credential_type",
            "credentialType must be expiringProfileKey",
        ));
    }
    if hex::decode(&request).is_err() {
        return Err(ApiError::bad_request(
            "invalid_credential_request",
            "credentialRequest is not hex",
        ));
    }
    let who = requester(caller, &headers)?;
    let aci = aci_of(&aci)?;
    let v = state
        .profiles
        .versioned(&who, aci, &version)
        .await
        .map_err(profile_error)?;
    // A credential only for the current version (Signal answers null otherwise), and only with zkgroup params.
    let commitment = v
        .profile
        .as_ref()
        .filter(|_| v.current)
        .map(|p| p.commitment.clone());
    let credential = match (commitment, state.trust.clone()) {
        (Some(commitment), Some(trust)) => {
            let now = u64::try_from(state.clock.now().as_secs()).unwrap_or(0);
            let rng = state.rng.clone();
            // One issuance with proofs: off the async workers.
            let issued = tokio::task::spawn_blocking(move || {
                issue_profile_key_credential(
                    &trust.zk().server,
                    aci,
                    &commitment,
                    &request,
                    now,
                    rng.as_ref(),
                )
            })
            .await
            .map_err(|e| ApiError::internal(&e))?;
            match issued {
                Ok(c) => Some(STANDARD.encode(c)),
                Err(ProfileCredentialError::InvalidCommitment) => {
                    return Err(ApiError::internal(
                        &ProfileCredentialError::InvalidCommitment,
                    ));
                }
                Err(_) => {
                    return Err(ApiError::bad_request(
                        "invalid_credential_request",
                        "credentialRequest is not a valid ProfileKeyCredentialRequest for this profile",
                    ));
                }
            }
        }
        _ => None,
    };
    Ok(axum::Json(CredentialProfileDto {
        profile: versioned_dto(v),
        credential,
    }))
}

/// One remote-config entry.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ConfigEntryDto {
    name: String,
    enabled: bool,
    value: Option<String>,
}

/// `UserRemoteConfigList`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct RemoteConfigDto {
    config: Vec<ConfigEntryDto>,
    /// Server time, seconds since the epoch.
    server_epoch_time: i64,
}

/// Remote configuration for clients.
///
/// Never contains `*.libsignal.grpc.*` keys, so libsignal stays on the WebSocket (M§1.8).
#[utoipa::path(
    get,
    path = "/v1/config",
    tag = "profiles",
    security(("basicAuth" = [])),
    responses(
        (status = 200, description = "The configuration", body = RemoteConfigDto),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn remote_config(
    State(state): State<AppState>,
    Authenticated(_caller): Authenticated,
) -> axum::Json<RemoteConfigDto> {
    let entry = |name: &str, value: Option<String>| ConfigEntryDto {
        name: name.to_owned(),
        enabled: true,
        value,
    };
    axum::Json(RemoteConfigDto {
        config: vec![
            entry(
                "global.attachments.maxBytes",
                Some(state.storage.config.max_attachment_bytes.to_string()),
            ),
            entry(
                "global.attachments.maxBytesCdn3",
                Some(state.storage.config.max_attachment_bytes.to_string()),
            ),
        ],
        server_epoch_time: state.clock.now().as_secs(),
    })
}

/// Most bytes of an avatar POST body (the 10 MiB file plus the form fields).
const MAX_AVATAR_FORM_BYTES: usize = 10 * 1024 * 1024 + 64 * 1024;

/// The parts of a `multipart/form-data` body: field name → content. Fields after `file` are ignored, as in S3.
fn multipart(content_type: &str, body: &[u8]) -> Option<BTreeMap<String, Bytes>> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))?
        .trim_matches('"');
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay.get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|i| i + from)
    };
    let mut fields = BTreeMap::new();
    let mut pos = find(body, delim, 0)? + delim.len();
    loop {
        if body.get(pos..pos + 2) == Some(b"--") {
            return Some(fields);
        }
        let head_start = pos + 2; // CRLF after the delimiter
        let head_end = find(body, b"\r\n\r\n", head_start)?;
        let head = std::str::from_utf8(body.get(head_start..head_end)?).ok()?;
        let name = head.lines().find_map(|l| {
            let l = l.trim();
            l.to_ascii_lowercase()
                .starts_with("content-disposition:")
                .then(|| {
                    l.split(';').map(str::trim).find_map(|p| {
                        p.strip_prefix("name=")
                            .map(|n| n.trim_matches('"').to_owned())
                    })
                })
                .flatten()
        })?;
        let data_start = head_end + 4;
        let mut next_delim = Vec::with_capacity(delim.len() + 2);
        next_delim.extend_from_slice(b"\r\n");
        next_delim.extend_from_slice(delim);
        let data_end = find(body, &next_delim, data_start)?;
        let is_file = name == "file";
        fields
            .entry(name)
            .or_insert_with(|| Bytes::copy_from_slice(&body[data_start..data_end]));
        if is_file {
            return Some(fields);
        }
        pos = data_end + next_delim.len();
    }
}

/// Uploads an avatar with the form from `PUT /v1/profile` (multipart POST to the cdn0 base URL, S3 style).
///
/// Fields: `key`, `policy`, `signature` (and the other form fields, which are ignored), then `file`. The policy
/// must carry this server's signature, not be expired, name exactly `key`, and allow the file's size (1..10 MiB).
#[utoipa::path(
    post,
    path = "/",
    tag = "profiles",
    request_body(content = String, content_type = "multipart/form-data",
        description = "The avatar form's fields, then `file` (the encrypted avatar)"),
    responses(
        (status = 204, description = "Stored"),
        (status = 400, description = "`invalid_form`: not multipart, missing fields, or a size outside the policy's range", body = ErrorBody),
        (status = 403, description = "`policy_rejected`: bad signature, expired policy, or another key", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn upload_avatar(
    State(state): State<AppState>,
    request: Request,
) -> Result<StatusCode, ApiError> {
    let bad = || ApiError::bad_request("invalid_form", "not a valid avatar upload form");
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if !content_type.starts_with("multipart/form-data") {
        return Err(bad());
    }
    let body = axum::body::to_bytes(request.into_body(), MAX_AVATAR_FORM_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the avatar form exceeds 10 MiB",
            )
        })?;
    let fields = multipart(&content_type, &body).ok_or_else(bad)?;
    let text = |n: &str| {
        fields
            .get(n)
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::to_owned)
            .ok_or_else(bad)
    };
    let (key, policy, signature) = (text("key")?, text("policy")?, text("signature")?);
    let file = fields.get("file").ok_or_else(bad)?.clone();
    verify_avatar_form(
        &state.storage.secret,
        &policy,
        &signature,
        &key,
        file.len() as u64,
        state.clock.now(),
    )
    .map_err(|e| match e {
        AvatarFormError::Forbidden => ApiError::new(
            StatusCode::FORBIDDEN,
            "policy_rejected",
            "the form's policy does not allow this upload",
        ),
        AvatarFormError::BadRequest => ApiError::bad_request(
            "invalid_form",
            "the file's size is outside the policy's range",
        ),
    })?;
    state
        .storage
        .objects
        .put(&key, file)
        .await
        .map_err(|e| ApiError::storage_unavailable(&e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Downloads an avatar (`GET {cdn0}/{key}`; the key is `profiles/<id>`).
///
/// The bytes are encrypted by the client.
#[utoipa::path(
    get,
    path = "/profiles/{id}",
    tag = "profiles",
    params(("id" = String, Path, description = "The avatar id (the key without `profiles/`)")),
    responses(
        (status = 200, description = "The encrypted avatar", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn download_avatar(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let key = format!("{}{id}", flatline_core::profiles::AVATAR_PREFIX);
    if !is_avatar_key(&key) {
        return Err(ApiError::not_found("no such avatar"));
    }
    let Some((len, _)) = state
        .storage
        .objects
        .stat(&key)
        .await
        .map_err(|e| ApiError::storage_unavailable(&e))?
    else {
        return Err(ApiError::not_found("no such avatar"));
    };
    let object = state
        .storage
        .objects
        .open(&key, 0, len)
        .await
        .map_err(|e| ApiError::storage_unavailable(&e))?
        .ok_or_else(|| ApiError::not_found("no such avatar"))?;
    let mut response = Body::from_stream(object.body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(object.len));
    if let Ok(v) = HeaderValue::from_str(&object.etag) {
        h.insert(header::ETAG, v);
    }
    Ok(response)
}
