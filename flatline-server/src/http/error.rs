//! The error body every handler group shares, and JSON extraction with Signal's 400-vs-422 split.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
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

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
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
    /// 500 for a store failure. The detail goes to the log, not to the client.
    pub fn internal(e: &dyn std::error::Error) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error",
        )
    }
}

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
            axum::Json(Body {
                code: self.code,
                message: &self.message,
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

/// JSON body extractor: malformed JSON, wrong types and a wrong content type give 400 `invalid_json` (validation
/// of well-formed values is the handler's job and gives 422), an oversized body 413.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "request body too large",
                ))
            }
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::bad_request(
                "invalid_json",
                "expected Content-Type: application/json",
            )),
            Err(e) => Err(ApiError::bad_request("invalid_json", e.body_text())),
        }
    }
}
