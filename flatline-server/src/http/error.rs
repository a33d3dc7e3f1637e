//! The error body every handler group shares, and JSON extraction with Signal's 400-vs-422 split.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flatline_core::ratelimit::{LimitError, RateLimited};
use flatline_core::store::StoreError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An HTTP error: a status, a stable snake_case `code`, a human `message`, and `Retry-After` for 429.
#[derive(Debug)]
pub struct ApiError {
    /// Status code.
    pub status: StatusCode,
    /// Stable, documented reason (`contact_not_allowed`, `invalid_json`, …).
    pub code: &'static str,
    /// Human text; never contains secrets.
    pub message: String,
    /// Seconds to wait, for 429.
    pub retry_after: Option<u64>,
}

/// The body of every Flatline error: `{"code": "<snake_case_reason>", "message": "<human text>"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable, documented reason (`unauthorized`, `invalid_json`, `validation_failed`, `rate_limited`, …).
    #[schema(example = "validation_failed")]
    pub code: &'static str,
    /// Human text; never contains secrets.
    pub message: String,
}

impl ApiError {
    /// An error with a code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// 422 `validation_failed`.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            message,
        )
    }
    /// 401 `unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid credentials",
        )
    }
    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// 500 for a store failure, or 503 `store_unavailable` with `Retry-After` when the database cannot be reached
    /// right now (connection lost or refused, pool exhausted, PostgreSQL shutting down, SQLite busy, read-only or
    /// full): a fault that passes by itself, and nothing was written. The detail goes to the log, not to the client.
    pub fn internal(e: &(dyn std::error::Error + 'static)) -> Self {
        if crate::store::database_unavailable(e) {
            tracing::warn!(error = %e, "database unavailable");
            return ApiError {
                retry_after: Some(UNAVAILABLE_RETRY_SECS),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the database is unavailable; retry later",
                )
            };
        }
        tracing::error!(error = %e, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error",
        )
    }
}

impl ApiError {
    /// 503 `storage_unavailable` with `Retry-After`: the object store (the attachment directory or the
    /// S3-compatible service) failed — disk full, permissions, the service unreachable. A fault of the
    /// environment that passes once the operator mends it; nothing was published. The detail goes to the log.
    pub fn storage_unavailable(e: &std::io::Error) -> Self {
        tracing::warn!(error = %e, "object store unavailable");
        ApiError {
            retry_after: Some(UNAVAILABLE_RETRY_SECS),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "the object store is unavailable; retry later",
            )
        }
    }
}

/// `Retry-After` of a 503 `store_unavailable`.
pub const UNAVAILABLE_RETRY_SECS: u64 = 5;

impl From<RateLimited> for ApiError {
    fn from(r: RateLimited) -> Self {
        ApiError {
            retry_after: Some(r.retry_after_secs()),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "rate limited",
            )
        }
    }
}

impl From<LimitError> for ApiError {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::Limited(r) => r.into(),
            LimitError::Store(s) => ApiError::internal(&s),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal(&e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(ErrorBody {
                code: self.code,
                message: self.message,
            }),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// JSON body extractor: malformed JSON, wrong types, a body that is not a JSON object and a wrong content type give
/// 400 `invalid_json` (validation of well-formed values is the handler's job and gives 422), an oversized body 413.
///
/// Every request body of the API is an object. serde's derived structs would also take a JSON array of the fields
/// in declaration order, so a top-level array is refused before deserializing (found by schemathesis).
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::bad_request(
                "invalid_json",
                "expected Content-Type: application/json",
            ));
        }
        let bytes = match Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "request body too large",
                ));
            }
            Err(e) => return Err(ApiError::bad_request("invalid_json", e.body_text())),
        };
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::bad_request(
                "invalid_json",
                "the body must be a JSON object",
            ));
        }
        if has_escaped_nul(&bytes) {
            return Err(ApiError::bad_request("invalid_json", NUL_MESSAGE));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(e) => Err(ApiError::bad_request("invalid_json", e.body_text())),
        }
    }
}

const NUL_MESSAGE: &str = "strings must not contain NUL (U+0000)";

/// Whether a JSON text holds the escape `\u0000` in a string (raw control characters are invalid JSON already).
/// No stored string may hold NUL: PostgreSQL TEXT refuses it, which would be a 500 (F-08), so every request body
/// is refused with 400 before anything is parsed. Escapes are skipped pairwise, so `\\u0000` (a backslash and
/// the text `u0000`) is not NUL.
pub fn has_escaped_nul(json: &[u8]) -> bool {
    let mut i = 0;
    while i < json.len() {
        if json[i] == b'\\' {
            if json.get(i + 1) == Some(&b'u') && json.get(i + 2..i + 6) == Some(b"0000".as_slice())
            {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// `application/json` or any `application/*+json`, parameters allowed (what axum's own extractor accepts).
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json") && !sub.contains('/'))
}

/// Whether a URI part holds `%00` (a percent-encoded NUL).
fn has_encoded_nul(s: &str) -> bool {
    s.as_bytes().windows(3).any(|w| w == b"%00")
}

/// Path parameters. A segment that does not decode (invalid UTF-8 after percent-decoding, or not the expected type)
/// is 400 `invalid_path` with the usual error body, not axum's plain-text rejection (found by schemathesis).
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if has_encoded_nul(parts.uri.path()) {
            return Err(ApiError::bad_request("invalid_path", NUL_MESSAGE));
        }
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            // Missing or mismatched route parameters are a routing bug, not bad input.
            Err(e) if e.status().is_server_error() => Err(ApiError::internal(&e)),
            Err(e) => Err(ApiError::bad_request("invalid_path", e.body_text())),
        }
    }
}

/// Query parameters. A query string that does not deserialize (a repeated parameter, a wrong type) is 400
/// `invalid_query` with the usual error body, not axum's plain-text rejection (found by schemathesis).
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if parts.uri.query().is_some_and(has_encoded_nul) {
            return Err(ApiError::bad_request("invalid_query", NUL_MESSAGE));
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_database_codes() {
        for (code, away) in [
            ("08006", true),
            ("57P01", true),
            ("57P03", true),
            ("53300", true),
            ("53100", true),
            ("23505", false),
            ("22P02", false),
            ("5", true),
            ("517", true),
            ("8", true),
            ("13", true),
            ("19", false),
            ("2067", false),
        ] {
            assert_eq!(crate::store::unavailable_code(code), away, "{code}");
        }
    }

    #[test]
    fn escaped_nul_is_found_only_as_an_escape() {
        for (json, nul) in [
            (r#"{"a":"x\u0000y"}"#, true),
            (r#"{"a":"\u0000"}"#, true),
            (r#"{"a":"x\\u0000y"}"#, false),
            (r#"{"a":"\\\u0000"}"#, true),
            (r#"{"a":"\u00001"}"#, true),
            (r#"{"a":"\u0001"}"#, false),
            (r#"{"a":"u0000"}"#, false),
        ] {
            assert_eq!(has_escaped_nul(json.as_bytes()), nul, "{json}");
        }
    }
}
