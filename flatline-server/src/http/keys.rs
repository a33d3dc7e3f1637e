//! `/v2/keys*`: upload, counts, check and fetch of prekeys, exactly as Signal-Server answers them.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use flatline_core::ids::{DeviceId, IdentityType, ServiceId};
use flatline_core::keys::{
    DeviceSelector, FetchError, KeyError, PreKeyBundle, RawKey, RawKeyUpload, Requester,
};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{ApiError, Json};
use super::extract::{Authenticated, MaybeAuthenticated};
use super::wire;

/// Routes of this group.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/keys", get(counts).put(upload))
        .route("/v2/keys/check", post(check))
        .route("/v2/keys/{identifier}/{device}", get(fetch))
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

#[derive(Deserialize)]
struct IdentityQuery {
    identity: Option<String>,
}

/// `?identity=aci|pni` (case-insensitive; default aci). Anything else is 400, as a bad enum is in Signal.
fn identity_of(q: &IdentityQuery) -> Result<IdentityType, ApiError> {
    q.identity
        .as_deref()
        .map_or(Ok(IdentityType::Aci), str::parse)
        .map_err(|_| ApiError::bad_request("invalid_identity", "identity must be aci or pni"))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CountsDto {
    count: u32,
    pq_count: u32,
}

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
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EcKeyDto {
    /// Key id.
    pub key_id: i64,
    /// Public key, std base64 (padded on output).
    #[serde(with = "wire::std_padded")]
    pub public_key: Vec<u8>,
}

/// A signed prekey (EC or Kyber) on the wire.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedKeyDto {
    /// Key id.
    pub key_id: i64,
    /// Public key, std base64 (padded on output).
    #[serde(with = "wire::std_padded")]
    pub public_key: Vec<u8>,
    /// Signature, std base64 (unpadded on output).
    #[serde(with = "wire::std_unpadded")]
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

/// `SetKeysRequest`.
#[derive(Debug, Default, Deserialize)]
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CheckDto {
    identity_type: Option<String>,
    #[serde(default, deserialize_with = "wire::opt_std")]
    digest: Option<Vec<u8>>,
}

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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BundleDto {
    #[serde(with = "wire::std_padded")]
    identity_key: Vec<u8>,
    devices: Vec<DeviceBundleDto>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeviceBundleDto {
    device_id: u8,
    registration_id: u16,
    signed_pre_key: SignedKeyDto,
    pre_key: Option<EcKeyDto>,
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
