//! `/v2/keys*`: upload, counts, check and fetch of prekeys, exactly as Signal-Server answers them.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use flatline_core::ids::{DeviceId, IdentityType, ServiceId};
use flatline_core::keys::{
    DeviceSelector, FetchError, KeyError, PreKeyBundle, RawKey, RawKeyUpload, Requester,
};
use serde::{Deserialize, Serialize};
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
        .routes(routes!(counts, upload))
        .routes(routes!(check))
        .routes(routes!(fetch))
}

/// Status table for uploads and checks.
fn key_error(e: KeyError) -> ApiError {
    match e {
        KeyError::Invalid(m) => ApiError::unprocessable(m),
        KeyError::BadSignature => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_signature",
            "Invalid signature",
        ),
        KeyError::DeviceGone => ApiError::unauthorized(),
        KeyError::Store(s) => ApiError::internal(&s),
    }
}

/// Status table for fetches.
fn fetch_error(e: FetchError) -> ApiError {
    match e {
        FetchError::Unauthorized => ApiError::unauthorized(),
        FetchError::NotFound => ApiError::not_found("no keys"),
        FetchError::ContactNotAllowed => ApiError::new(
            StatusCode::FORBIDDEN,
            "contact_not_allowed",
            "this account accepts contacts by invite only",
        ),
        FetchError::RateLimited(r) => r.into(),
        FetchError::Store(s) => ApiError::internal(&s),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct IdentityQuery {
    /// Which identity's keys: `aci` (default) or `pni`, case-insensitive. Anything else is 400 `invalid_identity`.
    #[param(example = "aci", pattern = "^([aA][cC][iI]|[pP][nN][iI])$")]
    identity: Option<String>,
}

/// `?identity=aci|pni` (case-insensitive; default aci). Anything else is 400, as a bad enum is in Signal.
fn identity_of(q: &IdentityQuery) -> Result<IdentityType, ApiError> {
    q.identity
        .as_deref()
        .map_or(Ok(IdentityType::Aci), str::parse)
        .map_err(|_| ApiError::bad_request("invalid_identity", "identity must be aci or pni"))
}

/// Remaining one-time keys of the calling device.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct CountsDto {
    count: u32,
    pq_count: u32,
}

/// How many one-time EC and Kyber prekeys the calling device has left.
#[utoipa::path(
    get,
    path = "/v2/keys",
    tag = "keys",
    security(("basicAuth" = [])),
    params(IdentityQuery),
    responses(
        (status = 200, description = "Key counts", body = CountsDto),
        (status = 400, description = "`invalid_identity` (`identity` is neither aci nor pni) or `invalid_query`", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn counts(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<IdentityQuery>,
) -> Result<axum::Json<CountsDto>, ApiError> {
    let c = state.keys.counts(&caller, identity_of(&q)?).await?;
    Ok(axum::Json(CountsDto {
        count: c.ec,
        pq_count: c.kem,
    }))
}

/// A one-time EC prekey on the wire.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EcKeyDto {
    /// Key id (0..2^31-1).
    pub key_id: i64,
    /// Public key (33 bytes, `0x05`‖u), standard base64 (padded on output).
    #[serde(with = "wire::std_padded")]
    #[schema(value_type = String, format = Byte, pattern = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$")]
    pub public_key: Vec<u8>,
}

/// A signed prekey (EC or Kyber) on the wire.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignedKeyDto {
    /// Key id (0..2^31-1).
    pub key_id: i64,
    /// Public key (EC: 33 bytes; Kyber: 1569 bytes), standard base64 (padded on output).
    #[serde(with = "wire::std_padded")]
    #[schema(value_type = String, format = Byte, pattern = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$")]
    pub public_key: Vec<u8>,
    /// XEdDSA signature (64 bytes) by the identity key, standard base64 (unpadded on output).
    #[serde(with = "wire::std_unpadded")]
    #[schema(value_type = String, format = Byte, pattern = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$")]
    pub signature: Vec<u8>,
}

impl From<&SignedKeyDto> for RawKey {
    fn from(d: &SignedKeyDto) -> Self {
        RawKey {
            key_id: d.key_id,
            public_key: d.public_key.clone(),
            signature: d.signature.clone(),
        }
    }
}

/// `SetKeysRequest`. A non-empty list replaces the stored keys of its kind; an empty or absent one keeps them.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SetKeysDto {
    /// One-time EC keys.
    pub pre_keys: Option<Vec<EcKeyDto>>,
    /// Signed EC prekey.
    pub signed_pre_key: Option<SignedKeyDto>,
    /// One-time Kyber keys.
    pub pq_pre_keys: Option<Vec<SignedKeyDto>>,
    /// Last-resort Kyber key.
    pub pq_last_resort_pre_key: Option<SignedKeyDto>,
}

impl From<&SetKeysDto> for RawKeyUpload {
    fn from(d: &SetKeysDto) -> Self {
        RawKeyUpload {
            ec: d
                .pre_keys
                .iter()
                .flatten()
                .map(|k| RawKey {
                    key_id: k.key_id,
                    public_key: k.public_key.clone(),
                    signature: vec![],
                })
                .collect(),
            signed: d.signed_pre_key.as_ref().map(RawKey::from),
            kem: d.pq_pre_keys.iter().flatten().map(RawKey::from).collect(),
            last_resort: d.pq_last_resort_pre_key.as_ref().map(RawKey::from),
        }
    }
}

/// Uploads the calling device's prekeys for one identity. All or nothing: every signature is checked first.
#[utoipa::path(
    put,
    path = "/v2/keys",
    tag = "keys",
    security(("basicAuth" = [])),
    params(IdentityQuery),
    request_body = SetKeysDto,
    responses(
        (status = 204, description = "Keys stored"),
        (status = 400, description = "`invalid_json`, `invalid_identity` or `invalid_query`", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 413, description = BODY_TOO_LARGE, body = ErrorBody),
        (status = 422, description = "`validation_failed` (counts, ids, key sizes) or `invalid_signature`", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn upload(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<IdentityQuery>,
    Json(body): Json<SetKeysDto>,
) -> Result<StatusCode, ApiError> {
    let identity = identity_of(&q)?;
    state
        .keys
        .upload(&caller, identity, &RawKeyUpload::from(&body))
        .await
        .map_err(key_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `CheckKeysRequest`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct CheckDto {
    /// `aci` (default) or `pni`, case-insensitive.
    #[schema(pattern = "^([aA][cC][iI]|[pP][nN][iI])$")]
    identity_type: Option<String>,
    /// SHA-256 over the identity key, signed prekey id and key, last-resort key id and key; standard base64.
    #[serde(default, deserialize_with = "wire::opt_std")]
    #[schema(value_type = Option<String>, format = Byte, pattern = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$")]
    digest: Option<Vec<u8>>,
}

/// Compares the client's digest of its identity, signed and last-resort keys with what the server stores.
#[utoipa::path(
    post,
    path = "/v2/keys/check",
    tag = "keys",
    security(("basicAuth" = [])),
    request_body = CheckDto,
    responses(
        (status = 200, description = "The stored keys match the digest"),
        (status = 400, description = "`invalid_json`, or `invalid_identity`", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 409, description = "`keys_mismatch`: the stored keys differ (or are missing)", body = ErrorBody),
        (status = 413, description = BODY_TOO_LARGE, body = ErrorBody),
        (status = 422, description = "`validation_failed`: no digest, or not 32 bytes", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn check(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Json(body): Json<CheckDto>,
) -> Result<StatusCode, ApiError> {
    let identity = identity_of(&IdentityQuery {
        identity: body.identity_type,
    })?;
    let digest = body
        .digest
        .ok_or_else(|| ApiError::unprocessable("digest is required"))?;
    if state
        .keys
        .check(&caller, identity, &digest)
        .await
        .map_err(key_error)?
    {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "keys_mismatch",
            "stored keys differ from the digest",
        ))
    }
}

/// `PreKeyResponse`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct BundleDto {
    /// The target identity's public key, standard base64.
    #[serde(with = "wire::std_padded")]
    #[schema(value_type = String, format = Byte)]
    identity_key: Vec<u8>,
    /// One entry per selected device that has keys.
    devices: Vec<DeviceBundleDto>,
}

/// One device's keys.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct DeviceBundleDto {
    /// Device id (1..=127).
    device_id: u8,
    /// The device's registration id.
    registration_id: u16,
    /// Signed EC prekey.
    signed_pre_key: SignedKeyDto,
    /// A one-time EC prekey, handed out once; null when none is left.
    pre_key: Option<EcKeyDto>,
    /// A one-time Kyber prekey, or the last-resort key when none is left.
    pq_pre_key: SignedKeyDto,
}

fn signed_dto(k: flatline_core::keys::SignedPreKey) -> SignedKeyDto {
    SignedKeyDto {
        key_id: i64::from(k.key_id.get()),
        public_key: k.public_key,
        signature: k.signature,
    }
}

impl From<PreKeyBundle> for BundleDto {
    fn from(b: PreKeyBundle) -> Self {
        BundleDto {
            identity_key: b.identity_key,
            devices: b
                .devices
                .into_iter()
                .map(|d| DeviceBundleDto {
                    device_id: d.device_id.get(),
                    registration_id: d.registration_id,
                    signed_pre_key: signed_dto(d.signed),
                    pre_key: d.one_time.map(|k| EcKeyDto {
                        key_id: i64::from(k.key_id.get()),
                        public_key: k.public_key,
                    }),
                    pq_pre_key: signed_dto(d.kem),
                })
                .collect(),
        }
    }
}

/// Fetches prekeys of one device (or `*`: all devices) of an account.
///
/// Consumes one-time keys. Authorized by the caller's device credentials, or anonymously by the target's
/// unidentified-access key (never both). Unauthenticated misses are 401, not 404.
#[utoipa::path(
    get,
    path = "/v2/keys/{identifier}/{device}",
    tag = "keys",
    security(("basicAuth" = []), ("unidentifiedAccessKey" = [])),
    params(
        ("identifier" = String, Path, description = "The target: an ACI, or `PNI:` followed by a PNI",
            example = "PNI:9d0652a3-dcc3-4d11-975f-74d61598733f"),
        ("device" = String, Path, description = "A device id 1..=127, or `*` for every device"),
    ),
    responses(
        (status = 200, description = "The prekey bundle", body = BundleDto),
        (status = 400, description = "`ambiguous_credentials` (Authorization and Unidentified-Access-Key both sent), \
            `invalid_identifier` or `invalid_path`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: bad credentials, no credentials, or a wrong access key", body = ErrorBody),
        (status = 403, description = "`contact_not_allowed`: the target accepts contacts by invite only", body = ErrorBody),
        (status = 404, description = "`not_found`: no such account or device, or no keys", body = ErrorBody),
        (status = 422, description = "`validation_failed`: the device is neither 1..=127 nor `*`", body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn fetch(
    State(state): State<AppState>,
    MaybeAuthenticated(caller): MaybeAuthenticated,
    headers: HeaderMap,
    Path((identifier, device)): Path<(String, String)>,
) -> Result<axum::Json<BundleDto>, ApiError> {
    let access_key = headers.get("unidentified-access-key");
    let requester = match (caller, access_key) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "ambiguous_credentials",
                "send either Authorization or Unidentified-Access-Key",
            ));
        }
        (Some(device), None) => Requester::Device(Box::new(device)),
        // A malformed access key is a wrong access key: 401.
        (None, Some(v)) => Requester::AccessKey(
            v.to_str()
                .ok()
                .and_then(|s| wire::decode_std(s).ok())
                .unwrap_or_default(),
        ),
        (None, None) => Requester::Anonymous,
    };
    let target: ServiceId = identifier
        .parse()
        .map_err(|_| ApiError::bad_request("invalid_identifier", "not an ACI or PNI:uuid"))?;
    let selector = if device == "*" {
        DeviceSelector::All
    } else {
        DeviceSelector::One(
            device
                .parse::<DeviceId>()
                .map_err(|_| ApiError::unprocessable("device id must be 1..=127 or *"))?,
        )
    };
    let bundle = state
        .keys
        .fetch(&requester, target, selector)
        .await
        .map_err(fetch_error)?;
    Ok(axum::Json(bundle.into()))
}
