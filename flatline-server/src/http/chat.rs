//! `GET /v1/websocket/` and `GET /v1/websocket/provisioning/`: the WebSocket upgrades of the chat transport
//! (API.md §9, M§1.1). The frame loops live in [`crate::chat::socket`].

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use flatline_core::auth::AuthError;
use flatline_core::credentials::DeviceCredentials;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ErrorBody, Query};
use super::extract::ClientIp;
use super::openapi::{INTERNAL, RATE_LIMITED};
use crate::chat::socket::{ChatSocket, Tunnel, run_chat, run_provisioning};
use crate::chat::{SocketIdentity, SocketSlot};

/// The read buffer of one socket. tungstenite's default (128 KiB, allocated up front) made an idle socket cost
/// ~137 KiB of server memory; frames larger than this are read in several steps.
const READ_BUFFER: usize = 4096;

/// Routes of this group.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(chat_websocket))
        .routes(routes!(provisioning_websocket))
}

/// Credentials as query parameters, as older clients send them.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LoginParams {
    /// `ACI`, `ACI.deviceId` or `ACI\0deviceId` (when there is no `Authorization` header).
    pub login: Option<String>,
    /// The device password.
    pub password: Option<String>,
}

fn forbidden() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "invalid credentials for the chat socket",
    )
}

fn upgrade_error(r: WebSocketUpgradeRejection) -> ApiError {
    ApiError::new(
        r.status(),
        "websocket_upgrade_required",
        "this endpoint is a WebSocket upgrade",
    )
}

fn socket_limit() -> ApiError {
    ApiError {
        retry_after: Some(30),
        ..ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many open sockets",
        )
    }
}

fn take_slot(state: &AppState, ip: std::net::IpAddr) -> Result<SocketSlot, ApiError> {
    let chat = &state.config.chat;
    state
        .chat
        .take_slot(ip, chat.max_sockets_per_ip, chat.max_sockets)
        .ok_or_else(socket_limit)
}

/// The device an upgrade authenticates as: `None` without credentials; 403 for bad ones (M§1.1: libsignal maps it
/// to `DeviceDeregistered`).
async fn upgrade_identity(
    state: &AppState,
    headers: &HeaderMap,
    login: LoginParams,
) -> Result<Option<SocketIdentity>, ApiError> {
    let credentials = match headers.get(AUTHORIZATION) {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| DeviceCredentials::from_header(v).ok())
            .ok_or_else(forbidden)?,
        None => match (login.login, login.password) {
            (Some(user), Some(password)) => {
                DeviceCredentials::from_login(&user, &password).map_err(|_| forbidden())?
            }
            (None, None) => return Ok(None),
            _ => return Err(forbidden()),
        },
    };
    match state.auth.authenticate(&credentials).await {
        Ok(device) => {
            let credential = device
                .account
                .device(device.device_id)
                .map(|d| d.credential.clone())
                .ok_or_else(forbidden)?;
            Ok(Some(SocketIdentity {
                aci: device.account.aci,
                device_id: device.device_id,
                credential,
            }))
        }
        Err(AuthError::Store(e)) => Err(ApiError::internal(&e)),
        Err(_) => {
            state.metrics.auth_failure("websocket");
            Err(forbidden())
        }
    }
}

/// Opens the chat WebSocket.
///
/// Authenticated with the device's Basic credentials (or the `login` and `password` parameters), unauthenticated
/// without. Frames are Signal's `WebSocketMessage` protobufs; every request inside is handled like the same request
/// over HTTP (docs/API.md, "Chat socket"), and `GET /v1/keepalive` is answered by the socket itself.
#[utoipa::path(
    get,
    path = "/v1/websocket/",
    tag = "chat",
    params(LoginParams),
    security((), ("basicAuth" = [])),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol",
            headers(("X-Signal-Timestamp" = i64, description = "The server's time in milliseconds"))),
        (status = 400, description = "`websocket_upgrade_required`: not a WebSocket upgrade", body = ErrorBody),
        (status = 403, description = "`forbidden`: the credentials are malformed or wrong", body = ErrorBody),
        (status = 426, description = "`websocket_upgrade_required`: the connection cannot be upgraded", body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn chat_websocket(
    State(state): State<AppState>,
    tunnel: Option<Extension<Tunnel>>,
    ClientIp(ip): ClientIp,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Query(login): Query<LoginParams>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let identity = upgrade_identity(&state, &headers, login).await?;
    let upgrade = upgrade.map_err(upgrade_error)?;
    // A socket cannot be opened from inside another one.
    let Some(Extension(Tunnel(tunnel))) = tunnel else {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_upgrade_required",
            "a socket cannot be opened inside a socket",
        ));
    };
    let slot = take_slot(&state, ip)?;
    let receive_stories = headers
        .get("x-signal-receive-stories")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let upgrade_headers = headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.trim().to_owned())))
        .collect();
    let limit = state.config.chat.max_frame_bytes;
    let socket = ChatSocket {
        state,
        tunnel,
        peer: peer.map(|Extension(p)| p),
        upgrade_headers,
        identity,
        receive_stories,
        slot,
    };
    Ok(upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |ws| run_chat(ws, socket))
        .into_response())
}

/// Opens a provisioning (device linking) WebSocket.
///
/// Never authenticated. The server sends `PUT /v1/address` with a fresh `ProvisioningAddress`, then at most one
/// `PUT /v1/message` with the provisioning envelope a primary device relayed to that address.
#[utoipa::path(
    get,
    path = "/v1/websocket/provisioning/",
    tag = "chat",
    responses(
        (status = 101, description = "Switching to the WebSocket protocol",
            headers(("X-Signal-Timestamp" = i64, description = "The server's time in milliseconds"))),
        (status = 400, description = "`websocket_upgrade_required`: not a WebSocket upgrade", body = ErrorBody),
        (status = 426, description = "`websocket_upgrade_required`: the connection cannot be upgraded", body = ErrorBody),
        (status = 429, description = RATE_LIMITED, body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
async fn provisioning_websocket(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(upgrade_error)?;
    let slot = take_slot(&state, ip)?;
    let limit = state.config.chat.max_frame_bytes;
    Ok(upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |ws| run_provisioning(ws, state, slot))
        .into_response())
}
