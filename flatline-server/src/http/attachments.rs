//! Attachments v4 (M§6), hosted by Flatline: the upload form (`cdn: 3`), a TUS 1.0 server (core, creation,
//! creation-with-upload, termination) at `{cdn3}/attachments`, and ranged downloads at `{cdn3}/attachments/{key}`.
//!
//! Status table: 400 `invalid_upload_length` / `invalid_offset` / `invalid_metadata` / `upload_interrupted`; 401 `unauthorized` (form
//! without device credentials; TUS without a valid bearer token for the key); 404 `not_found`; 409 `offset_mismatch`
//! (`Upload-Offset` is not the current offset, an append is running, or the key exists); 412 `unsupported_version`
//! (`Tus-Resumable` other than 1.0.0); 413 `upload_too_large` (over `[storage] max_attachment_bytes` or the token's
//! length, or a body past `Upload-Length`); 415 `invalid_content_type`; 416 `range_not_satisfiable`; 429 (forms: limiters
//! `attachmentCreate`, and `attachmentCreateBytes` when `uploadLength` is given).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use flatline_core::attachments::{
    is_attachment_key, new_attachment_key, upload_token, verify_upload_token,
};
use flatline_core::ratelimit::{Limiter, attachment_kib};
use flatline_core::time::Timestamp;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ErrorBody, Path, Query};
use super::extract::Authenticated;
use super::openapi::{INTERNAL, UNAUTHORIZED};
use crate::storage::{AppendError, ByteStream};

/// The TUS protocol version served.
pub const TUS_VERSION: &str = "1.0.0";
/// Namespace of attachment objects in the object store.
const NAMESPACE: &str = "attachments/";

/// Routes of this group.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload_form))
        .routes(routes!(tus_create, tus_options))
        .routes(routes!(
            download_attachment,
            tus_head,
            tus_patch,
            tus_delete
        ))
}

/// An object-store failure: 503 `storage_unavailable`, never a 500.
fn internal(e: std::io::Error) -> ApiError {
    ApiError::storage_unavailable(&e)
}

fn too_large(message: &str) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "upload_too_large",
        message.to_owned(),
    )
}

/// `AttachmentDescriptorV3`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct UploadFormDto {
    /// Always 3 (TUS).
    cdn: u32,
    /// The attachment key (base64url of 15 bytes).
    key: String,
    /// Headers the client sends with every TUS request: `Authorization: Bearer …` and `Upload-Metadata`.
    headers: BTreeMap<String, String>,
    /// Where to `POST` the TUS creation request (`{cdn3}/attachments`).
    signed_upload_location: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct FormQuery {
    /// The size the client will upload; over `[storage] max_attachment_bytes` is 413.
    #[serde(rename = "uploadLength")]
    #[param(rename = "uploadLength")]
    upload_length: Option<i64>,
}

fn cdn3(state: &AppState) -> String {
    state
        .config
        .instance
        .endpoints
        .get("cdn3")
        .cloned()
        .unwrap_or_else(|| state.config.server.public_url.clone())
        .trim_end_matches('/')
        .to_owned()
}

/// An upload form for one attachment (`cdn: 3`).
///
/// A TUS location on this server and a bearer token bound to the key and the largest length.
#[utoipa::path(
    get,
    path = "/v4/attachments/form/upload",
    tag = "attachments",
    security(("basicAuth" = [])),
    params(FormQuery),
    responses(
        (status = 200, description = "The upload form", body = UploadFormDto),
        (status = 400, description = "`invalid_upload_length`: not positive", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 413, description = "`upload_too_large`", body = ErrorBody),
        (status = 429, description = "`rate_limited` (wait `Retry-After` seconds): the `attachmentCreate` \
            limiter, or `attachmentCreateBytes` (KiB of `uploadLength`, only when given)", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn upload_form(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<FormQuery>,
) -> Result<axum::Json<UploadFormDto>, ApiError> {
    let max = state.storage.config.max_attachment_bytes;
    let max_len = match q.upload_length {
        Some(n) if n <= 0 => {
            return Err(ApiError::bad_request(
                "invalid_upload_length",
                "uploadLength must be positive",
            ));
        }
        Some(n) if n.unsigned_abs() > max => {
            return Err(too_large("uploadLength exceeds the maximum"));
        }
        Some(n) => n.unsigned_abs(),
        None => max,
    };
    let aci = caller.account.aci.to_string();
    // Every form request spends a count permit, even one the bytes limiter then refuses (Signal hands that permit
    // back; the shared buckets have no refund, and the only one hurt is the caller).
    state
        .limiters
        .check(Limiter::AttachmentCreate, &aci)
        .await?;
    // Only a declared length is charged: without one the form allows up to the maximum, as in Signal.
    if q.upload_length.is_some() {
        state
            .limiters
            .check_n(
                Limiter::AttachmentCreateBytes,
                &aci,
                attachment_kib(max_len),
            )
            .await?;
    }
    let key = new_attachment_key(state.rng.as_ref());
    let lifetime = i64::try_from(state.storage.config.upload_expiry.as_secs()).unwrap_or(i64::MAX);
    let expires = Timestamp::from_secs(state.clock.now().as_secs().saturating_add(lifetime));
    let token = upload_token(&state.storage.secret, &key, max_len, expires);
    let headers = BTreeMap::from([
        ("Authorization".to_owned(), format!("Bearer {token}")),
        (
            "Upload-Metadata".to_owned(),
            format!(
                "filename {}",
                base64::engine::general_purpose::STANDARD.encode(&key)
            ),
        ),
    ]);
    Ok(axum::Json(UploadFormDto {
        cdn: 3,
        signed_upload_location: format!("{}/attachments", cdn3(&state)),
        key,
        headers,
    }))
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Checks `Tus-Resumable` and the bearer token for `key`; returns the token's largest length.
fn tus_auth(state: &AppState, h: &HeaderMap, key: &str) -> Result<u64, ApiError> {
    if header_str(h, "tus-resumable").is_some_and(|v| v != TUS_VERSION) {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "unsupported_version",
            "Tus-Resumable must be 1.0.0",
        ));
    }
    let token = header_str(h, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(ApiError::unauthorized)?;
    verify_upload_token(&state.storage.secret, token, key, state.clock.now())
        .ok_or_else(ApiError::unauthorized)
}

fn tus(mut r: Response) -> Response {
    r.headers_mut()
        .insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    r
}

fn object_key(key: &str) -> Result<String, ApiError> {
    if is_attachment_key(key) {
        Ok(format!("{NAMESPACE}{key}"))
    } else {
        Err(ApiError::not_found("no such attachment"))
    }
}

fn body_stream(body: Body) -> ByteStream {
    Box::pin(body.into_data_stream().map_err(std::io::Error::other))
}

async fn append(state: &AppState, key: &str, offset: u64, body: Body) -> Result<u64, ApiError> {
    state
        .storage
        .objects
        .append(key, offset, body_stream(body))
        .await
        .map_err(|e| match e {
            AppendError::NotFound => ApiError::not_found("no such upload"),
            AppendError::Conflict => ApiError::new(
                StatusCode::CONFLICT,
                "offset_mismatch",
                "Upload-Offset is not the upload's offset",
            ),
            AppendError::TooLong => too_large("the body goes past Upload-Length"),
            AppendError::Interrupted(_) => ApiError::bad_request(
                "upload_interrupted",
                "the body broke off; HEAD gives the offset to resume from",
            ),
            AppendError::Io(e) => internal(e),
        })
}

fn is_offset_stream(h: &HeaderMap) -> bool {
    header_str(h, "content-type").is_some_and(|v| v.starts_with("application/offset+octet-stream"))
}

/// TUS discovery: the version and extensions served, and the largest upload.
#[utoipa::path(
    options,
    path = "/attachments",
    tag = "attachments",
    responses(
        (status = 204, description = "`Tus-Resumable`, `Tus-Version: 1.0.0`, `Tus-Extension: creation,creation-with-upload,termination`, `Tus-Max-Size`"),
    )
)]
async fn tus_options(State(state): State<AppState>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    h.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    h.insert(
        "tus-extension",
        HeaderValue::from_static("creation,creation-with-upload,termination"),
    );
    h.insert(
        "tus-max-size",
        HeaderValue::from(state.config.storage.max_attachment_bytes),
    );
    response
}

/// TUS creation (and creation-with-upload).
///
/// `Upload-Length`, `Upload-Metadata: filename <base64 key>` and the form's bearer token; a body of type
/// `application/offset+octet-stream` is the first chunk.
#[utoipa::path(
    post,
    path = "/attachments",
    tag = "attachments",
    security(("bearerUpload" = [])),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream",
        description = "Optional first chunk (creation-with-upload)"),
    responses(
        (status = 201, description = "Created; `Location` is the upload's URL, `Upload-Offset` the bytes taken"),
        (status = 400, description = "`invalid_upload_length`, `invalid_metadata` or `upload_interrupted`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no or a wrong bearer token for the key", body = ErrorBody),
        (status = 409, description = "`offset_mismatch`: the key already exists", body = ErrorBody),
        (status = 412, description = "`unsupported_version`", body = ErrorBody),
        (status = 413, description = "`upload_too_large`", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn tus_create(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let h = request.headers().clone();
    // The token is bound to the key in the metadata, but a request without any bearer token is refused as
    // unauthenticated before its metadata is looked at.
    if header_str(&h, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_none()
    {
        return Err(ApiError::unauthorized());
    }
    let key = header_str(&h, "upload-metadata")
        .and_then(|m| {
            m.split(',').find_map(|pair| {
                let mut it = pair.trim().splitn(2, ' ');
                (it.next() == Some("filename")).then(|| it.next()).flatten()
            })
        })
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|k| is_attachment_key(k))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_metadata",
                "Upload-Metadata needs filename <base64 key>",
            )
        })?;
    let max_len = tus_auth(&state, &h, &key)?;
    let length: u64 = header_str(&h, "upload-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            ApiError::bad_request("invalid_upload_length", "Upload-Length is required")
        })?;
    if length > max_len || length > state.storage.config.max_attachment_bytes {
        return Err(too_large("Upload-Length exceeds the maximum"));
    }
    let object = object_key(&key)?;
    if !state
        .storage
        .objects
        .create_upload(&object, length, state.clock.now())
        .await
        .map_err(internal)?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "offset_mismatch",
            "an upload with this key exists",
        ));
    }
    let offset = if is_offset_stream(&h) {
        append(&state, &object, 0, request.into_body()).await?
    } else {
        0
    };
    let mut r = StatusCode::CREATED.into_response();
    let location = format!("{}/attachments/{key}", cdn3(&state));
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert("upload-offset", HeaderValue::from(offset));
    Ok(tus(r))
}

/// TUS offset query, or the download's headers.
///
/// With the bearer token: `Upload-Offset`, `Upload-Length`; without `Authorization`: `Content-Length`, `ETag`.
#[utoipa::path(
    head,
    path = "/attachments/{key}",
    tag = "attachments",
    params(("key" = String, Path, description = "The attachment key")),
    responses(
        (status = 200, description = "`Upload-Offset` and `Upload-Length` (TUS), or the download's headers"),
        (status = 401, description = "`unauthorized`: a wrong bearer token", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn tus_head(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let object = object_key(&key)?;
    if headers.get(header::AUTHORIZATION).is_none() {
        let Some((len, etag)) = state
            .storage
            .objects
            .stat(&object)
            .await
            .map_err(internal)?
        else {
            return Err(ApiError::not_found("no such attachment"));
        };
        let mut r = StatusCode::OK.into_response();
        let h = r.headers_mut();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Ok(v) = HeaderValue::from_str(&etag) {
            h.insert(header::ETAG, v);
        }
        return Ok(r);
    }
    tus_auth(&state, &headers, &key)?;
    let s = state
        .storage
        .objects
        .upload_state(&object)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::not_found("no such upload"))?;
    let mut r = StatusCode::OK.into_response();
    let h = r.headers_mut();
    h.insert("upload-offset", HeaderValue::from(s.offset));
    h.insert("upload-length", HeaderValue::from(s.length));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(tus(r))
}

/// TUS append.
///
/// `Upload-Offset` must be the current offset (else 409); the body (`application/offset+octet-stream`) is
/// streamed to the upload. The object becomes downloadable, atomically, when the last byte arrives.
#[utoipa::path(
    patch,
    path = "/attachments/{key}",
    tag = "attachments",
    security(("bearerUpload" = [])),
    params(("key" = String, Path, description = "The attachment key")),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"),
    responses(
        (status = 204, description = "Appended; `Upload-Offset` is the new offset"),
        (status = 400, description = "`invalid_offset`: no or a malformed `Upload-Offset`; `upload_interrupted`: the body broke off", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`offset_mismatch`", body = ErrorBody),
        (status = 412, description = "`unsupported_version`", body = ErrorBody),
        (status = 413, description = "`upload_too_large`: past `Upload-Length`", body = ErrorBody),
        (status = 415, description = "`invalid_content_type`", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn tus_patch(
    State(state): State<AppState>,
    Path(key): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let object = object_key(&key)?;
    let h = request.headers().clone();
    tus_auth(&state, &h, &key)?;
    if !is_offset_stream(&h) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_content_type",
            "Content-Type must be application/offset+octet-stream",
        ));
    }
    let offset: u64 = header_str(&h, "upload-offset")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::bad_request("invalid_offset", "Upload-Offset is required"))?;
    let new = append(&state, &object, offset, request.into_body()).await?;
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert("upload-offset", HeaderValue::from(new));
    Ok(tus(r))
}

/// TUS termination: deletes an unfinished upload.
#[utoipa::path(
    delete,
    path = "/attachments/{key}",
    tag = "attachments",
    security(("bearerUpload" = [])),
    params(("key" = String, Path, description = "The attachment key")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no unfinished upload", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn tus_delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let object = object_key(&key)?;
    tus_auth(&state, &headers, &key)?;
    if !state
        .storage
        .objects
        .delete_upload(&object)
        .await
        .map_err(internal)?
    {
        return Err(ApiError::not_found("no such upload"));
    }
    Ok(tus(StatusCode::NO_CONTENT.into_response()))
}

/// A single `bytes=` range over `len` bytes: `Some(Ok((start, end_exclusive)))`, `Some(Err(()))` when not
/// satisfiable, `None` to serve the whole object (no or an unsupported Range header).
fn range(h: &HeaderMap, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = header_str(h, "range")?.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let r = match (a.is_empty(), b.is_empty()) {
        (true, false) => {
            let n: u64 = b.parse().ok()?;
            if n == 0 {
                return Some(Err(()));
            }
            (len.saturating_sub(n), len)
        }
        (false, _) => {
            let start: u64 = a.parse().ok()?;
            let end = if b.is_empty() {
                len
            } else {
                let last: u64 = b.parse().ok()?;
                if last < start {
                    return None;
                }
                (last + 1).min(len)
            };
            (start, end)
        }
        (true, true) => return None,
    };
    if r.0 >= len {
        return Some(Err(()));
    }
    Some(Ok(r))
}

/// Downloads a finished attachment, whole or one `Range` (206).
///
/// Streamed from the store. Unfinished uploads are never served.
#[utoipa::path(
    get,
    path = "/attachments/{key}",
    tag = "attachments",
    params(("key" = String, Path, description = "The attachment key")),
    responses(
        (status = 200, description = "The attachment (encrypted by the client)", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 304, description = "`If-None-Match` matches the ETag"),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 416, description = "`range_not_satisfiable`", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn download_attachment(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let object = object_key(&key)?;
    let Some((len, etag)) = state
        .storage
        .objects
        .stat(&object)
        .await
        .map_err(internal)?
    else {
        return Err(ApiError::not_found("no such attachment"));
    };
    if header_str(&headers, "if-none-match").is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&etag) {
            r.headers_mut().insert(header::ETAG, v);
        }
        return Ok(r);
    }
    let (status, start, end) = match range(&headers, len) {
        None => (StatusCode::OK, 0, len),
        Some(Ok((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e),
        Some(Err(())) => {
            let mut r = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                "the range is outside the attachment",
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
    };
    let opened = state
        .storage
        .objects
        .open(&object, start, end)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::not_found("no such attachment"))?;
    let mut r = (status, Body::from_stream(opened.body)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&opened.etag) {
        h.insert(header::ETAG, v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(r)
}
