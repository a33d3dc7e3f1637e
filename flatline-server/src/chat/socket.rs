//! The frame loops of the chat and provisioning sockets (M§1.2–§1.7).
//!
//! A chat socket reads binary frames: a request frame is dispatched into the HTTP router as a request of its own
//! (concurrently, at most `[chat] max_in_flight_requests` at once) and answered with a response frame carrying the
//! status, reason phrase, `name:value` headers and body; a request without id is handled and not answered. A
//! response frame acknowledges a server push. A frame that does not decode closes the socket with 1007, one over the
//! size limit with 1009, silence longer than the idle timeout with 1000 `Timeout`. The hub can close the socket with
//! 4409 (displaced) or 4401 (reauthenticate); requests in flight are answered first.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use flatline_core::chat::{
    Frame, Header, Request, decode_frame, effective_headers, encode_provisioning_address,
    encode_request, encode_response,
};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt as _;

use super::push::{DeliveryContext, OutFrame, Pusher, Wake};
use super::{CloseReason, Control, SocketIdentity, SocketSlot, UnauthenticatedSocket};
use crate::http::AppState;
use crate::http::error::ApiError;

/// The router requests inside a socket are dispatched to: the same application as HTTP.
#[derive(Clone)]
pub struct Tunnel(pub Router);

/// The keep-alive path answered inside the chat socket itself.
pub const KEEPALIVE_PATH: &str = "/v1/keepalive";
/// The keep-alive path of the provisioning socket.
pub const PROVISIONING_KEEPALIVE_PATH: &str = "/v1/keepalive/provisioning";

/// How long requests in flight may take to be answered when the server closes a socket.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Online messages waiting for one socket's delivery loop; more are dropped (they are ephemeral).
const LIVE_BUFFER: usize = 64;
/// How long the server waits for the client's close frame after sending its own.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Everything a chat socket needs, fixed at the upgrade.
pub struct ChatSocket {
    /// The application state.
    pub state: AppState,
    /// Where tunnelled requests go.
    pub tunnel: Router,
    /// The TCP peer, as HTTP requests see it.
    pub peer: Option<ConnectInfo<SocketAddr>>,
    /// The upgrade request's headers (lower-case names).
    pub upgrade_headers: Vec<Header>,
    /// The device, for an authenticated socket.
    pub identity: Option<SocketIdentity>,
    /// `X-Signal-Receive-Stories: true` on the upgrade.
    pub receive_stories: bool,
    /// The socket's place in the socket limits.
    pub slot: SocketSlot,
}

/// What ended the frame loop.
enum End {
    /// The client went away (or the connection failed): nothing more to send.
    Gone,
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The hub closes the socket: answer the requests in flight, then close.
    Control(CloseReason),
}

fn close_message(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Whether a read error is the size limit (tungstenite's capacity error).
fn is_too_large(e: axum::Error) -> bool {
    matches!(
        e.into_inner().downcast_ref::<tungstenite::Error>(),
        Some(tungstenite::Error::Capacity(_))
    )
}

/// The path without its query.
fn path_only(path: &str) -> &str {
    path.split_once('?').map_or(path, |(p, _)| p)
}

/// Runs an upgraded chat socket until it closes.
pub async fn run_chat(mut socket: WebSocket, ctx: ChatSocket) {
    let ChatSocket {
        state,
        tunnel,
        peer,
        upgrade_headers,
        identity,
        receive_stories,
        slot,
    } = ctx;
    let _slot = slot;
    let config = state.config.chat.clone();
    let hub = state.chat.clone();
    let (out_tx, mut out_rx) = mpsc::channel::<OutFrame>(config.push_window + 16);
    let (control_tx, mut control_rx) = mpsc::unbounded_channel::<Control>();
    let pusher = Pusher::new(out_tx, config.push_window, state.clock.clone());

    // An authenticated socket becomes its device's message consumer and runs the delivery loop.
    let mut presence = None;
    let mut delivery = None;
    if let Some(id) = &identity {
        let wake = Arc::new(Notify::new());
        let (live_tx, live_rx) = mpsc::channel(LIVE_BUFFER);
        presence = Some(hub.register(
            id.aci,
            id.device_id,
            state.clock.now().as_millis(),
            control_tx.clone(),
            wake.clone(),
            live_tx,
        ));
        let delivery_loop = hub.delivery_loop();
        let context = DeliveryContext {
            aci: id.aci,
            device: id.device_id,
            receive_stories,
            pusher: pusher.clone(),
            wake: Wake(wake),
            live: live_rx,
            control: control_tx.clone(),
        };
        delivery = Some(tokio::spawn(
            async move { delivery_loop.run(context).await },
        ));
        tracing::debug!(aci = %id.aci, device = %id.device_id, "chat socket opened");
    }
    let dispatch = Arc::new(Dispatch {
        tunnel,
        peer,
        upgrade_headers,
        identity: identity.clone(),
    });

    let idle = config.idle_timeout;
    let mut deadline = Instant::now() + idle;
    let mut requests: JoinSet<Option<OutFrame>> = JoinSet::new();
    let end = loop {
        tokio::select! {
            biased;
            Some(Control::Close(reason)) = control_rx.recv() => break End::Control(reason),
            Some(frame) = out_rx.recv() => {
                if socket.send(Message::Binary(frame.into())).await.is_err() {
                    break End::Gone;
                }
            }
            Some(done) = requests.join_next(), if !requests.is_empty() => {
                if let Ok(Some(frame)) = done
                    && socket.send(Message::Binary(frame.into())).await.is_err()
                {
                    break End::Gone;
                }
            }
            message = socket.recv() => {
                deadline = Instant::now() + idle;
                match message {
                    None => break End::Gone,
                    Some(Err(e)) => {
                        if is_too_large(e) {
                            break End::Close(1009, "Frame too large");
                        }
                        break End::Gone;
                    }
                    Some(Ok(Message::Close(_))) => break End::Gone,
                    Some(Ok(Message::Binary(bytes))) => match decode_frame(&bytes) {
                        Err(_) => break End::Close(1007, "Badly formatted"),
                        Ok(Frame::Response(r)) => {
                            let status = u16::try_from(r.status).unwrap_or(u16::MAX);
                            pusher.acknowledge(r.id, status);
                        }
                        Ok(Frame::Request(r)) => {
                            if r.verb.eq_ignore_ascii_case("GET") && path_only(&r.path) == KEEPALIVE_PATH {
                                // A displaced device's socket is closed rather than kept alive (M§1.6).
                                if presence.as_ref().is_some_and(|p| !p.is_current()) {
                                    break End::Control(CloseReason::NotPresent);
                                }
                                if let Some(id) = r.id
                                    && socket.send(Message::Binary(empty_response(id, StatusCode::OK).into())).await.is_err()
                                {
                                    break End::Gone;
                                }
                            } else if requests.len() >= config.max_in_flight_requests {
                                if let Some(id) = r.id {
                                    let frame = too_many(id);
                                    if socket.send(Message::Binary(frame.into())).await.is_err() {
                                        break End::Gone;
                                    }
                                }
                            } else {
                                let dispatch = dispatch.clone();
                                requests.spawn(async move { dispatch.handle(r).await });
                            }
                        }
                    },
                    // Text frames are ignored, as by Signal-Server; pings are answered by the WebSocket layer.
                    Some(Ok(_)) => {}
                }
            }
            () = tokio::time::sleep_until(deadline) => break End::Close(1000, "Timeout"),
        }
    };

    // Outstanding pushes resolve to `Closed` now; the delivery loop gets a moment to see that (and report it to
    // its callers) before it is aborted.
    pusher.close();
    if let Some(mut task) = delivery {
        tokio::spawn(async move {
            if tokio::time::timeout(CLOSE_GRACE, &mut task).await.is_err() {
                task.abort();
            }
        });
    }
    drop(presence);
    let close = match end {
        End::Gone => None,
        End::Close(code, reason) => Some((code, reason)),
        End::Control(reason) => {
            // Answer what is in flight (the request that deleted the account, say) before closing.
            let drain = async {
                while let Some(done) = requests.join_next().await {
                    if let Ok(Some(frame)) = done
                        && socket.send(Message::Binary(frame.into())).await.is_err()
                    {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
            Some(reason.code())
        }
    };
    requests.abort_all();
    if let Some((code, reason)) = close {
        finish(socket, code, reason).await;
    }
    if let Some(id) = identity {
        tracing::debug!(aci = %id.aci, device = %id.device_id, close = ?close, "chat socket closed");
    }
}

/// Sends the close frame and waits briefly for the client's.
async fn finish(mut socket: WebSocket, code: u16, reason: &'static str) {
    if socket.send(close_message(code, reason)).await.is_ok() {
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(_)) = socket.recv().await {}
        })
        .await;
    }
}

fn empty_response(id: u64, status: StatusCode) -> OutFrame {
    encode_response(
        id,
        status.as_u16(),
        status.canonical_reason().unwrap_or("Unknown"),
        &[("Content-Length", "0")],
        b"",
    )
}

fn too_many(id: u64) -> OutFrame {
    let body = serde_json::json!({
        "code": "too_many_requests_in_flight",
        "message": "too many requests in flight on this socket",
    })
    .to_string();
    let length = body.len().to_string();
    encode_response(
        id,
        429,
        "Too Many Requests",
        &[
            ("content-type", "application/json"),
            ("retry-after", "1"),
            ("Content-Length", &length),
        ],
        body.as_bytes(),
    )
}

/// Turns request frames into router requests.
struct Dispatch {
    tunnel: Router,
    peer: Option<ConnectInfo<SocketAddr>>,
    upgrade_headers: Vec<Header>,
    identity: Option<SocketIdentity>,
}

impl Dispatch {
    /// Handles one request frame; the response frame, or `None` for a request without id.
    async fn handle(&self, r: Request) -> Option<OutFrame> {
        let id = r.id;
        let response = match self.request(r) {
            Ok(request) => match self.tunnel.clone().oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            },
            Err(e) => e.into_response(),
        };
        let id = id?;
        Some(response_frame(id, response).await)
    }

    fn request(&self, r: Request) -> Result<axum::http::Request<Body>, ApiError> {
        let bad = |m: &str| ApiError::bad_request("bad_request_frame", m.to_owned());
        let method = Method::from_bytes(r.verb.as_bytes()).map_err(|_| bad("invalid verb"))?;
        if !r.path.starts_with('/') {
            return Err(bad("the path must start with /"));
        }
        let uri: Uri = r.path.parse().map_err(|_| bad("invalid path"))?;
        let mut request = axum::http::Request::new(Body::from(r.body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        for (name, value) in effective_headers(&self.upgrade_headers, &r.headers) {
            // The frame carries the whole body; length and framing headers of the client do not apply.
            if matches!(
                name.as_str(),
                "content-length" | "transfer-encoding" | "connection" | "upgrade"
            ) {
                continue;
            }
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.append(n, v);
            }
        }
        let extensions = request.extensions_mut();
        if let Some(peer) = self.peer {
            extensions.insert(peer);
        }
        match &self.identity {
            Some(identity) => {
                extensions.insert(identity.clone());
            }
            None => {
                extensions.insert(UnauthenticatedSocket);
            }
        }
        Ok(request)
    }
}

/// A response as Signal-Server frames it: reason phrase, one `name:value` per header name (its first value),
/// `Content-Length` always, body omitted when empty.
async fn response_frame(id: u64, response: Response) -> OutFrame {
    let (parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(_) => return empty_response(id, StatusCode::INTERNAL_SERVER_ERROR),
    };
    let mut headers: Vec<(&str, &str)> = vec![];
    for name in parts.headers.keys() {
        if name == axum::http::header::CONTENT_LENGTH {
            continue;
        }
        if let Some(value) = parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
        {
            headers.push((name.as_str(), value));
        }
    }
    let length = body.len().to_string();
    headers.push(("Content-Length", &length));
    encode_response(
        id,
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or("Unknown"),
        &headers,
        &body,
    )
}

/// A fresh provisioning address: 16 random bytes, URL-safe base64 with padding (24 characters), as Signal-Server.
pub fn provisioning_address(rng: &dyn flatline_core::random::SecureRandom) -> String {
    let bytes = flatline_core::random::random_array::<16>(rng);
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

/// Runs an upgraded provisioning socket: sends `PUT /v1/address`, relays at most one provisioning message
/// (`PUT /v1/message`) and closes 1000 `Closed` once the client answered it; 1000 `Timeout` after the idle timeout or
/// the socket's lifetime.
pub async fn run_provisioning(mut socket: WebSocket, state: AppState, slot: SocketSlot) {
    let _slot = slot;
    let config = state.config.chat.clone();
    let address = provisioning_address(state.rng.as_ref());
    let (registration, mut envelopes) = state
        .chat
        .open_provisioning(address.clone(), config.provisioning_lifetime)
        .await;
    let first = encode_request(
        Some(0),
        "PUT",
        "/v1/address",
        &[],
        &encode_provisioning_address(&address),
    );
    if socket.send(Message::Binary(first.into())).await.is_err() {
        return;
    }
    let idle = config.provisioning_idle_timeout;
    let lifetime = Instant::now() + config.provisioning_lifetime;
    let mut deadline = Instant::now() + idle;
    let mut relayed: Option<u64> = None;
    let close = loop {
        tokio::select! {
            Some(envelope) = envelopes.recv(), if relayed.is_none() => {
                let frame = encode_request(Some(1), "PUT", "/v1/message", &[], &envelope);
                if socket.send(Message::Binary(frame.into())).await.is_err() {
                    break None;
                }
                relayed = Some(1);
            }
            message = socket.recv() => {
                deadline = Instant::now() + idle;
                match message {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break None,
                    Some(Ok(Message::Binary(bytes))) => match decode_frame(&bytes) {
                        Err(_) => break Some((1007, "Badly formatted")),
                        Ok(Frame::Response(r)) => {
                            if relayed == Some(r.id) {
                                break Some((1000, "Closed"));
                            }
                        }
                        Ok(Frame::Request(r)) => {
                            let status = if r.verb.eq_ignore_ascii_case("GET")
                                && path_only(&r.path) == PROVISIONING_KEEPALIVE_PATH
                            {
                                StatusCode::OK
                            } else {
                                StatusCode::NOT_FOUND
                            };
                            if let Some(id) = r.id
                                && socket.send(Message::Binary(empty_response(id, status).into())).await.is_err()
                            {
                                break None;
                            }
                        }
                    },
                    Some(Ok(_)) => {}
                }
            }
            () = tokio::time::sleep_until(deadline.min(lifetime)) => break Some((1000, "Timeout")),
        }
    };
    drop(registration);
    state.chat.close_provisioning(address);
    if let Some((code, reason)) = close {
        finish(socket, code, reason).await;
    }
}
