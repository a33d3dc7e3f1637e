//! The OpenAPI 3.1 description of the HTTP API, generated from the code and served at `GET /openapi.json`.
//!
//! Each handler carries a `#[utoipa::path]` attribute (method, path, parameters, request body, every status it can
//! answer with its body), and each wire DTO derives `utoipa::ToSchema`. Every group registers its handlers with
//! `utoipa_axum::routes!`, which adds the route to the axum router and the operation to the document in one step,
//! so the router and the document cannot drift apart; `tests/it/openapi.rs` checks that nothing bypasses it.
//!
//! Status codes every operation may see besides the ones it lists: 408 `request_timeout` (the request took longer
//! than `server.request_timeout_seconds`) and 405 for a method the path does not have.

use axum::Extension;
use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

/// Where the document is served.
pub const PATH: &str = "/openapi.json";
/// Security scheme: a device's HTTP Basic credentials (`ACI`, `ACI.deviceId` or `ACI\0deviceId` : password).
pub const BASIC_AUTH: &str = "basicAuth";
/// Security scheme: HTTP Basic `principal:new device password` on `POST /v1/registration`.
pub const REGISTRATION_AUTH: &str = "registrationAuth";
/// Security scheme: the target account's unidentified-access key, on prekey fetches.
pub const ACCESS_KEY: &str = "unidentifiedAccessKey";
/// Security scheme: the bearer token of an attachment upload form, on TUS requests.
pub const BEARER_UPLOAD: &str = "bearerUpload";

/// 400 for a JSON body that does not parse, has a wrong type, or lacks `Content-Type: application/json`.
pub const INVALID_JSON: &str =
    "`invalid_json`: malformed JSON, a wrong type, an undecodable field, or no JSON content type";
/// 401 for missing or wrong device credentials.
pub const UNAUTHORIZED: &str = "`unauthorized`: missing or invalid credentials";
/// 413 for an oversized body.
pub const BODY_TOO_LARGE: &str = "`body_too_large`: the body exceeds `server.max_body_bytes`";
/// 429 from a rate limiter.
pub const RATE_LIMITED: &str = "`rate_limited`: wait `Retry-After` seconds";
/// 500 for a failing database.
pub const INTERNAL: &str = "`internal_error`: the database failed (a bug otherwise)";

/// The document's fixed parts: info, tags and security schemes. The operations come from the routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Flatline",
        description = "A Signal-compatible server whose accounts need no phone number: registration goes through an \
OpenID Connect identity provider. Errors have the body `{\"code\", \"message\"}`; the `code` values are part of the \
API (docs/API.md). 429 answers carry `Retry-After` in seconds. Any operation may also answer 408 `request_timeout`. \
The only intended 5xx is 502 `idp_error`; a 500 `internal_error` means a bug or a failing database.",
        license(name = "AGPL-3.0-only", identifier = "AGPL-3.0-only"),
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "accounts", description = "The caller's account"),
        (name = "keys", description = "Signal prekeys"),
        (name = "verification", description = "Identity providers and verification sessions"),
        (name = "registration", description = "Creating an account from a verified session"),
        (name = "usernames", description = "Username hashes, username links and principal discovery"),
        (name = "contacts", description = "Contact policy, contact invites, grants and introductions"),
        (name = "invites", description = "Registration invites"),
        (name = "messages", description = "Sending, fetching and acknowledging messages; spam reports"),
        (name = "trust", description = "The signed instance manifest"),
        (name = "profiles", description = "Versioned profiles, avatars (cdn0) and remote configuration"),
        (name = "attachments", description = "Attachment upload forms, TUS uploads and downloads (cdn3)"),
        (name = "zkgroup", description = "Zero-knowledge group, call-link and profile credentials"),
        (name = "sealed_sender", description = "Sender certificates for sealed sender"),
        (name = "chat", description = "The chat and provisioning WebSockets"),
        (name = "devices", description = "Linked devices and the provisioning relay"),
        (name = "operations", description = "Health, metrics and this document"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BASIC_AUTH,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "A device's credentials: username `ACI` (primary device 1), `ACI.deviceId` or \
                         `ACI\\0deviceId`; the device password chosen at registration.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            REGISTRATION_AUTH,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "Registration: username = the principal of the verified session, password = the new \
                         device's password (16..=512 bytes).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            ACCESS_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Unidentified-Access-Key",
                "The target account's 16-byte unidentified-access key, standard base64. Never together with \
                 Authorization.",
            ))),
        );
        components.add_security_scheme(
            BEARER_UPLOAD,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The `Authorization` header of an attachment upload form (`GET /v4/attachments/form/upload`), \
                         bound to the form's key and largest length.",
                    ))
                    .build(),
            ),
        );
    }
}

/// A string schema whose value is one of `values`.
fn string_enum(description: &str, values: &[&str]) -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .enum_values(Some(values.iter().copied()))
        .build()
        .into()
}

/// Contact policy modes.
pub fn contact_policy_schema() -> utoipa::openapi::schema::Schema {
    string_enum("Who may fetch the prekeys", &["open", "invite_only"])
}
/// Introduction policies.
pub fn introductions_schema() -> utoipa::openapi::schema::Schema {
    string_enum("How introductions are handled", &["ask", "auto", "off"])
}
/// Contact invite states.
pub fn contact_invite_state_schema() -> utoipa::openapi::schema::Schema {
    string_enum(
        "The invite's state now",
        &["active", "paused", "exhausted", "expired"],
    )
}
/// Contact grant states.
pub fn grant_state_schema() -> utoipa::openapi::schema::Schema {
    string_enum(
        "The grant's state",
        &["active", "pending", "quarantined", "denied"],
    )
}
/// How a grant came about.
pub fn grant_via_schema() -> utoipa::openapi::schema::Schema {
    string_enum(
        "How the grant came about",
        &["invite", "introduction", "direct", "shortcode"],
    )
}
/// Contact shortcode states.
pub fn shortcode_state_schema() -> utoipa::openapi::schema::Schema {
    string_enum(
        "The shortcode's state now",
        &["live", "used", "burned", "expired", "revoked"],
    )
}
/// Registration invite states.
pub fn registration_invite_state_schema() -> utoipa::openapi::schema::Schema {
    string_enum(
        "The invite's state now",
        &[
            "active",
            "exhausted",
            "expired",
            "revoked",
            "owner_suspended",
        ],
    )
}

/// The serialized document, shared by every request.
#[derive(Clone)]
pub struct Document(Bytes);

impl Document {
    /// Serializes `api` once.
    pub fn new(api: &utoipa::openapi::OpenApi) -> Self {
        let json = serde_json::to_vec(api).unwrap_or_else(|e| {
            // The document is plain data; this would be a bug in a derive, not a runtime condition.
            tracing::error!(error = %e, "OpenAPI document does not serialize");
            b"{}".to_vec()
        });
        Document(Bytes::from(json))
    }
}

/// Routes of this group.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// This description of the API (OpenAPI 3.1), generated from the server's code.
#[utoipa::path(
    get,
    path = PATH,
    tag = "operations",
    responses(
        (status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object,
            headers(("Cache-Control" = String, description = "`public, max-age=3600`"))),
    )
)]
async fn openapi_json(Extension(doc): Extension<Document>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            // The document changes only with the server binary (and the admin-listener setting).
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        doc.0,
    )
        .into_response()
}
