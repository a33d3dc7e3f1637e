//! The chat socket (`/v1/websocket/`, `/v1/websocket/provisioning/`) at the socket level with a real WebSocket client
//! (tokio-tungstenite, plain and TLS): upgrade credentials and 403, framing, 404 in a frame, 1007, 1009, requests
//! without id, keepalive, `X-Signal-Timestamp`, displacement 4409 (one process, and two processes on PostgreSQL),
//! 4401 on account deletion, push ack/nack results, socket limits, the provisioning socket; then a subset of the
//! HTTP API tests a second time through the socket, and libsignal-net (npm) against the native TLS listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use flatline_core::chat::{self, Frame, decode_frame, encode_request, encode_response};
use flatline_server::chat::{DeliveryContext, DeliveryLoop, Event, PushError};
use flatline_server::config::Config;
use flatline_testkit::{SimClient, UsernameForm};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::support::{Backend, TestApp, via_socket};

/// Upper bound on any single wait, so a broken server fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(60);

/// What the client saw next.
#[derive(Debug)]
pub enum Incoming {
    Frame(Frame),
    /// The server closed with this code and reason (or without a close frame).
    Closed(Option<(u16, String)>),
}

/// A test client speaking Signal's WebSocket framing.
pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Server requests (pushes) received while waiting for responses.
    pub pushes: Vec<chat::Request>,
    /// The upgrade response's headers.
    pub upgrade_headers: axum::http::HeaderMap,
}

impl WsClient {
    /// Opens `ws://addr/v1/websocket/`, with `Authorization: auth` when given; `Err(status)` when the upgrade is
    /// refused.
    pub async fn connect(addr: SocketAddr, auth: Option<&str>) -> Result<WsClient, u16> {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        match Self::open(&format!("ws://{addr}/v1/websocket/"), &headers, None).await {
            Ok(c) => Ok(c),
            Err(tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
            Err(e) => panic!("connect: {e}"),
        }
    }

    /// Opens `url` with extra upgrade headers and an optional TLS connector.
    pub async fn open(
        url: &str,
        headers: &[(&str, &str)],
        connector: Option<Connector>,
    ) -> Result<WsClient, tungstenite::Error> {
        let mut request = url.into_client_request()?;
        for (k, v) in headers {
            request.headers_mut().insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        let (ws, response) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector),
        )
        .await
        .expect("connect in time")?;
        Ok(WsClient {
            ws,
            next_id: 0,
            pushes: vec![],
            upgrade_headers: response.headers().clone(),
        })
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    /// Sends a request frame with `id` (or none).
    pub async fn send_request(
        &mut self,
        id: Option<u64>,
        verb: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) {
        let frame = encode_request(id, verb, path, headers, body);
        self.send_raw(Message::Binary(frame.into())).await;
    }

    /// The next frame or the close.
    pub async fn recv(&mut self) -> Incoming {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time");
            match next {
                None | Some(Err(_)) => return Incoming::Closed(None),
                Some(Ok(Message::Close(frame))) => {
                    return Incoming::Closed(
                        frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())),
                    );
                }
                Some(Ok(Message::Binary(b))) => {
                    return Incoming::Frame(decode_frame(&b).expect("server frames decode"));
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The close code and reason the server sends next (frames before it are skipped).
    pub async fn closed(&mut self) -> Option<(u16, String)> {
        loop {
            if let Incoming::Closed(c) = self.recv().await {
                return c;
            }
        }
    }

    /// The next response frame, keeping server requests in [`WsClient::pushes`].
    pub async fn response(&mut self) -> chat::Response {
        loop {
            match self.recv().await {
                Incoming::Frame(Frame::Response(r)) => return r,
                Incoming::Frame(Frame::Request(r)) => self.pushes.push(r),
                Incoming::Closed(c) => panic!("closed while waiting for a response: {c:?}"),
            }
        }
    }

    /// The next server request.
    pub async fn push(&mut self) -> chat::Request {
        if !self.pushes.is_empty() {
            return self.pushes.remove(0);
        }
        match self.recv().await {
            Incoming::Frame(Frame::Request(r)) => r,
            Incoming::Frame(Frame::Response(r)) => panic!("unexpected response {r:?}"),
            Incoming::Closed(c) => panic!("closed while waiting for a push: {c:?}"),
        }
    }

    /// Sends a request with the next id and waits for its response.
    pub async fn request(
        &mut self,
        verb: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> chat::Response {
        let id = self.next_id;
        self.next_id += 1;
        self.send_request(Some(id), verb, path, headers, body).await;
        let r = self.response().await;
        assert_eq!(r.id, id, "responses answer their request");
        r
    }

    /// Answers the server request `id` with `status`, as libsignal does.
    pub async fn ack(&mut self, id: u64, status: u16) {
        let reason = axum::http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Unknown");
        let frame = encode_response(id, status, reason, &[], b"");
        self.send_raw(Message::Binary(frame.into())).await;
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

fn header<'a>(r: &'a chat::Response, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).expect("JSON body")
}

async fn app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config::default();
    tweak(&mut config);
    TestApp::with_config(Backend::Memory, config).await
}

async fn connected(app: &TestApp, client: &SimClient) -> WsClient {
    let addr = app.listen().await;
    WsClient::connect(addr, Some(&client.basic_auth(UsernameForm::Dot)))
        .await
        .expect("authenticated socket")
}

#[tokio::test]
async fn upgrade_credentials_decide_the_socket_and_bad_ones_are_403() {
    let app = TestApp::new(Backend::Sqlite).await;
    let alice = app.seed("alice").await;
    let addr = app.listen().await;

    // Basic in the upgrade: requests inside need no Authorization.
    let mut socket = connected(&app, &alice).await;
    let ts = socket.upgrade_headers["x-signal-timestamp"]
        .to_str()
        .unwrap();
    assert_eq!(
        ts.parse::<i64>().unwrap(),
        app.clock.as_ref().now_ms(),
        "the 101 carries X-Signal-Timestamp"
    );
    let r = socket.request("GET", "/v1/accounts/whoami", &[], b"").await;
    assert_eq!((r.status, r.message.as_str()), (200, "OK"));
    let http = app
        .get(
            "/v1/accounts/whoami",
            Some(&alice.basic_auth(UsernameForm::Aci)),
        )
        .await;
    assert_eq!(r.body, http.body, "same body as over HTTP");
    assert_eq!(json(&r.body)["uuid"], alice.aci.to_string());
    socket.close().await;

    // The login/password query parameters of older clients.
    let url = format!(
        "ws://{addr}/v1/websocket/?login={}.1&password={}",
        alice.aci,
        alice.password.replace('+', "%2B").replace('/', "%2F")
    );
    let mut socket = WsClient::open(&url, &[], None).await.expect("query login");
    let r = socket.request("GET", "/v1/accounts/whoami", &[], b"").await;
    assert_eq!(r.status, 200);
    socket.close().await;

    // Wrong or malformed credentials: 403 before the upgrade, with the timestamp header.
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}.1:nope-nope-nope", alice.aci))
    );
    for auth in [wrong.as_str(), "Basic !!!", "Bearer x"] {
        match WsClient::open(
            &format!("ws://{addr}/v1/websocket/"),
            &[("authorization", auth)],
            None,
        )
        .await
        {
            Err(tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 403, "{auth}");
                assert!(r.headers().contains_key("x-signal-timestamp"), "{auth}");
            }
            Err(e) => panic!("{auth}: {e}"),
            Ok(_) => panic!("{auth}: upgraded"),
        }
    }
    let bad_query = format!(
        "ws://{addr}/v1/websocket/?login={}.1&password=wrong",
        alice.aci
    );
    assert!(matches!(
        WsClient::open(&bad_query, &[], None).await,
        Err(tungstenite::Error::Http(r)) if r.status() == 403
    ));

    // No credentials: an unauthenticated socket, where a device request is 401 like over HTTP without
    // credentials, even with an Authorization header in the frame.
    let mut anon = WsClient::connect(addr, None)
        .await
        .expect("unauthenticated");
    let auth = alice.basic_auth(UsernameForm::Dot);
    let r = anon
        .request(
            "GET",
            "/v1/accounts/whoami",
            &[("authorization", &auth)],
            b"",
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(json(&r.body)["code"], "unauthorized");
    anon.close().await;

    // A plain GET is not an upgrade.
    let r = app.get("/v1/websocket/", None).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "websocket_upgrade_required");
}

trait NowMs {
    fn now_ms(&self) -> i64;
}

impl NowMs for flatline_testkit::MockClock {
    fn now_ms(&self) -> i64 {
        flatline_core::time::Clock::now(self).as_millis()
    }
}

#[tokio::test]
async fn frames_carry_status_reason_headers_and_body() {
    let app = TestApp::new(Backend::Memory).await;
    let alice = app.seed("alice").await;
    let mut socket = connected(&app, &alice).await;

    // Request id 0 is a real id; headers are `name:value`, Content-Length always, the timestamp too.
    let r = socket.request("GET", "/v1/accounts/whoami", &[], b"").await;
    assert_eq!(r.id, 0);
    assert_eq!(header(&r, "content-type"), Some("application/json"));
    assert_eq!(
        header(&r, "content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert!(header(&r, "x-signal-timestamp").is_some());

    // An unknown path is a 404 in a frame, and the socket stays open.
    let r = socket.request("GET", "/v1/nope", &[], b"").await;
    assert_eq!((r.status, r.message.as_str()), (404, "Not Found"));
    assert_eq!(json(&r.body)["code"], "not_found");

    // A JSON body travels in the frame: 204 with no body (omitted), Content-Length 0.
    let body = serde_json::json!({"registrationId": 77, "fetchesMessages": true}).to_string();
    let r = socket
        .request(
            "PUT",
            "/v1/accounts/attributes",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .await;
    assert_eq!((r.status, r.message.as_str()), (204, "No Content"));
    assert!(r.body.is_empty());
    assert_eq!(header(&r, "content-length"), Some("0"));

    // A request without id is handled and not answered: the next frame answers the keepalive after it.
    socket
        .send_request(None, "GET", "/v1/accounts/whoami", &[], b"")
        .await;
    socket
        .send_request(Some(42), "GET", "/v1/keepalive", &[], b"")
        .await;
    let r = socket.response().await;
    assert_eq!((r.id, r.status, r.body.len()), (42, 200, 0));

    // Text frames are ignored.
    socket.send_raw(Message::Text("hello".into())).await;
    let r = socket.request("GET", "/v1/keepalive", &[], b"").await;
    assert_eq!(r.status, 200);

    // A verb that is not a method, a path that is not a path: 400 in a frame.
    let r = socket.request("GET", "no-slash", &[], b"").await;
    assert_eq!(r.status, 400);

    // A socket cannot be opened inside a socket.
    let r = socket.request("GET", "/v1/websocket/", &[], b"").await;
    assert_eq!(r.status, 400);
    assert_eq!(json(&r.body)["code"], "websocket_upgrade_required");

    // Keepalive is not an HTTP endpoint.
    assert_eq!(app.get("/v1/keepalive", None).await.status, 404);
    socket.close().await;
}

#[tokio::test]
async fn a_malformed_frame_closes_1007_and_an_oversized_one_1009() {
    let app = app_with(|c| c.chat.max_frame_bytes = 4096).await;
    let addr = app.listen().await;

    let mut socket = WsClient::connect(addr, None).await.unwrap();
    socket
        .send_raw(Message::Binary(vec![0xff, 0xff, 0xff].into()))
        .await;
    assert_eq!(
        socket.closed().await,
        Some((1007, "Badly formatted".into()))
    );

    // A request frame without a path is badly formatted too.
    let mut socket = WsClient::connect(addr, None).await.unwrap();
    let frame = chat::WebSocketMessage {
        r#type: Some(1),
        request: Some(chat::WebSocketRequestMessage {
            verb: Some("GET".into()),
            path: None,
            body: None,
            headers: vec![],
            id: Some(1),
        }),
        response: None,
    };
    socket
        .send_raw(Message::Binary(
            prost::Message::encode_to_vec(&frame).into(),
        ))
        .await;
    assert_eq!(
        socket.closed().await,
        Some((1007, "Badly formatted".into()))
    );

    let mut socket = WsClient::connect(addr, None).await.unwrap();
    let big = vec![b'x'; 5000];
    socket
        .send_request(Some(0), "PUT", "/v1/nope", &[], &big)
        .await;
    assert_eq!(
        socket.closed().await,
        Some((1009, "Frame too large".into()))
    );

    // Just under the limit is fine.
    let mut socket = WsClient::connect(addr, None).await.unwrap();
    let r = socket
        .request("PUT", "/v1/nope", &[], &vec![b'x'; 3000])
        .await;
    assert_eq!(r.status, 404);
    socket.close().await;
}

#[tokio::test]
async fn a_newer_socket_displaces_the_older_with_4409() {
    let app = TestApp::new(Backend::Memory).await;
    let alice = app.seed("alice").await;
    let mut first = connected(&app, &alice).await;
    assert_eq!(
        first.request("GET", "/v1/keepalive", &[], b"").await.status,
        200
    );
    let mut second = connected(&app, &alice).await;
    assert_eq!(
        first.closed().await,
        Some((4409, "Connected elsewhere".into()))
    );
    assert_eq!(
        second
            .request("GET", "/v1/keepalive", &[], b"")
            .await
            .status,
        200
    );
    assert!(
        app.state
            .chat
            .is_present(alice.aci, flatline_core::ids::DeviceId::PRIMARY)
    );
    // Unauthenticated sockets have no presence: any number coexist.
    let addr = app.listen().await;
    let mut a = WsClient::connect(addr, None).await.unwrap();
    let mut b = WsClient::connect(addr, None).await.unwrap();
    assert_eq!(
        a.request("GET", "/v1/keepalive", &[], b"").await.status,
        200
    );
    assert_eq!(
        b.request("GET", "/v1/keepalive", &[], b"").await.status,
        200
    );
    second.close().await;
}

#[tokio::test]
async fn deleting_the_account_closes_its_sockets_with_4401() {
    for backend in [Backend::Memory, Backend::Sqlite] {
        let app = TestApp::new(backend).await;
        let alice = app.seed("alice").await;
        let bob = app.seed("bob").await;
        let mut watcher = connected(&app, &alice).await;
        let mut bobs = connected(&app, &bob).await;
        // Deleted over HTTP: the socket is told to reauthenticate.
        let r = app
            .send(
                axum::http::Method::DELETE,
                "/v1/accounts/me",
                &[("authorization", &alice.basic_auth(UsernameForm::Aci))],
                None,
            )
            .await;
        assert_eq!(r.status, 204, "{backend:?}");
        assert_eq!(
            watcher.closed().await,
            Some((4401, "Reauthentication required".into())),
            "{backend:?}"
        );
        // Deleted through its own socket: the 204 arrives before the close.
        let r = bobs.request("DELETE", "/v1/accounts/me", &[], b"").await;
        assert_eq!(r.status, 204, "{backend:?}");
        assert_eq!(bobs.closed().await.map(|c| c.0), Some(4401), "{backend:?}");
        // The credentials no longer open a socket.
        let addr = app.listen().await;
        assert_eq!(
            WsClient::connect(addr, Some(&bob.basic_auth(UsernameForm::Dot)))
                .await
                .err(),
            Some(403)
        );
    }
}

#[tokio::test]
async fn a_stale_socket_identity_is_401_per_request() {
    // Even without the event (another process, a lost notification), each request reloads the account.
    let app = TestApp::new(Backend::Memory).await;
    let alice = app.seed("alice").await;
    let mut socket = connected(&app, &alice).await;
    app.state.store.lock_credentials(alice.aci).await.unwrap();
    let r = socket.request("GET", "/v1/accounts/whoami", &[], b"").await;
    assert_eq!(r.status, 401);
    socket.close().await;
}

/// A delivery loop for tests: pushes what it is told to and reports every receipt.
struct Scripted {
    pushes: usize,
    wait_for_wake: bool,
    results: mpsc::UnboundedSender<Result<u16, PushError>>,
}

#[async_trait]
impl DeliveryLoop for Scripted {
    async fn run(&self, ctx: DeliveryContext) {
        if self.wait_for_wake {
            ctx.wake.notified().await;
        }
        let mut receipts = vec![];
        for i in 0..self.pushes {
            match ctx
                .pusher
                .push_message(format!("envelope {i}").as_bytes())
                .await
            {
                Ok(r) => receipts.push(r),
                Err(e) => {
                    let _ = self.results.send(Err(e));
                }
            }
        }
        let _ = ctx.pusher.queue_empty().await;
        for r in receipts {
            let _ = self.results.send(r.result().await);
        }
    }
}

#[tokio::test]
async fn pushes_are_ordered_and_each_ack_or_nack_reaches_the_caller() {
    let app = app_with(|c| c.chat.push_window = 2).await;
    let alice = app.seed("alice").await;
    let (tx, mut results) = mpsc::unbounded_channel();
    app.state.chat.set_delivery_loop(Arc::new(Scripted {
        pushes: 3,
        wait_for_wake: false,
        results: tx,
    }));
    let mut socket = connected(&app, &alice).await;
    let first = socket.push().await;
    let second = socket.push().await;
    for (i, p) in [&first, &second].into_iter().enumerate() {
        assert_eq!(
            (p.verb.as_str(), p.path.as_str()),
            ("PUT", "/api/v1/message")
        );
        assert_eq!(p.id, Some(i as u64), "ids count from 0");
        assert_eq!(p.body, format!("envelope {i}").into_bytes());
        assert_eq!(
            p.headers[0],
            ("x-signal-key".into(), "false".into()),
            "X-Signal-Key first"
        );
        assert_eq!(p.headers[1].0, "x-signal-timestamp");
        assert_eq!(p.headers[1].1, app.clock.now_ms().to_string());
    }
    // The window is 2: the third push waits for an answer. A NACK frees a slot too.
    socket.ack(1, 500).await;
    let third = socket.push().await;
    assert_eq!(third.id, Some(2));
    let empty = socket.push().await;
    assert_eq!(
        (empty.path.as_str(), empty.id, empty.body.len()),
        ("/api/v1/queue/empty", Some(3), 0)
    );
    socket.ack(0, 200).await;
    // Results arrive in push order: 200 (ack), 500 (nack), and the socket closes before the third is answered.
    assert_eq!(results.recv().await, Some(Ok(200)));
    assert_eq!(results.recv().await, Some(Ok(500)));
    socket.close().await;
    assert_eq!(results.recv().await, Some(Err(PushError::Closed)));
}

#[tokio::test]
async fn message_available_wakes_the_delivery_loop_and_the_default_sends_queue_empty() {
    let app = TestApp::new(Backend::Memory).await;
    let alice = app.seed("alice").await;
    // The default loop: queue/empty once, then nothing.
    let mut socket = connected(&app, &alice).await;
    let empty = socket.push().await;
    assert_eq!(
        (empty.verb.as_str(), empty.path.as_str()),
        ("PUT", "/api/v1/queue/empty")
    );
    assert_eq!(
        socket
            .request("GET", "/v1/keepalive", &[], b"")
            .await
            .status,
        200
    );
    assert!(socket.pushes.is_empty());
    socket.close().await;

    let (tx, mut results) = mpsc::unbounded_channel();
    app.state.chat.set_delivery_loop(Arc::new(Scripted {
        pushes: 1,
        wait_for_wake: true,
        results: tx,
    }));
    let mut socket = connected(&app, &alice).await;
    // Nothing is pushed until the wake-up.
    assert_eq!(
        socket
            .request("GET", "/v1/keepalive", &[], b"")
            .await
            .status,
        200
    );
    assert!(socket.pushes.is_empty());
    app.state.chat.publish(Event::MessageAvailable {
        aci: alice.aci,
        device: flatline_core::ids::DeviceId::PRIMARY,
    });
    let p = socket.push().await;
    assert_eq!(p.path, "/api/v1/message");
    socket.ack(p.id.unwrap(), 200).await;
    assert_eq!(results.recv().await, Some(Ok(200)));
    socket.close().await;
}

#[tokio::test]
async fn a_socket_over_the_per_ip_limit_is_429_with_retry_after() {
    let app = app_with(|c| c.chat.max_sockets_per_ip = 1).await;
    let addr = app.listen().await;
    let first = WsClient::connect(addr, None).await.unwrap();
    match WsClient::open(&format!("ws://{addr}/v1/websocket/"), &[], None).await {
        Err(tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 429);
            assert!(r.headers().contains_key("retry-after"));
        }
        other => panic!("{:?}", other.err()),
    }
    first.close().await;
    // The slot is released when the socket ends.
    let mut again = None;
    for _ in 0..200 {
        if let Ok(c) = WsClient::connect(addr, None).await {
            again = Some(c);
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    again.expect("a slot again").close().await;
}

#[tokio::test]
async fn the_provisioning_socket_sends_an_address_and_relays_one_envelope() {
    let app = TestApp::new(Backend::Memory).await;
    let addr = app.listen().await;
    let mut socket = WsClient::open(
        &format!("ws://{addr}/v1/websocket/provisioning/"),
        &[],
        None,
    )
    .await
    .expect("provisioning socket");
    assert!(socket.upgrade_headers.contains_key("x-signal-timestamp"));
    let first = socket.push().await;
    assert_eq!(
        (first.verb.as_str(), first.path.as_str()),
        ("PUT", "/v1/address")
    );
    let address = <chat::ProvisioningAddress as prost::Message>::decode(first.body.as_slice())
        .unwrap()
        .address
        .unwrap();
    assert_eq!(address.len(), 24);
    assert_eq!(
        base64::engine::general_purpose::URL_SAFE
            .decode(&address)
            .unwrap()
            .len(),
        16
    );
    socket.ack(first.id.unwrap(), 200).await;
    let r = socket
        .request("GET", "/v1/keepalive/provisioning", &[], b"")
        .await;
    assert_eq!(r.status, 200);
    let r = socket.request("GET", "/v1/accounts/whoami", &[], b"").await;
    assert_eq!(r.status, 404);

    let registry = app.state.chat.provisioning();
    assert!(registry.is_listening(&address));
    assert!(
        registry
            .relay("AAAAAAAAAAAAAAAAAAAAAA==", b"x".to_vec())
            .is_err()
    );
    registry
        .relay(&address, b"provision envelope".to_vec())
        .unwrap();
    let message = socket.push().await;
    assert_eq!(
        (
            message.verb.as_str(),
            message.path.as_str(),
            message.body.as_slice()
        ),
        ("PUT", "/v1/message", b"provision envelope".as_slice())
    );
    assert!(
        registry.relay(&address, b"again".to_vec()).is_err(),
        "one envelope per socket"
    );
    socket.ack(message.id.unwrap(), 200).await;
    assert_eq!(socket.closed().await, Some((1000, "Closed".into())));
}

#[tokio::test]
async fn a_dribbled_request_head_is_closed_by_the_header_timeout() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = app_with(|c| c.server.header_read_timeout_seconds = 1).await;
    let addr = app.listen().await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = vec![];
    // The server closes (possibly after a 408); a bound instead of a hang if it did not.
    let read = tokio::time::timeout(WAIT, tcp.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "still open");
    // A silent connection too.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let read = tokio::time::timeout(WAIT, silent.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "silent connection still open");
}

/// A self-signed `localhost` certificate and the TLS acceptor serving it.
pub fn test_tls() -> (Vec<u8>, tokio_rustls::TlsAcceptor) {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let der = generated.cert.der().to_vec();
    let key = tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(
        generated.signing_key.serialize_der().into(),
    );
    let acceptor = flatline_server::tls::acceptor_from_der(vec![generated.cert.der().clone()], key)
        .expect("acceptor");
    (der, acceptor)
}

fn client_tls(root_der: &[u8]) -> Connector {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(root_der.to_vec()))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Connector::Rustls(Arc::new(config))
}

#[tokio::test]
async fn wss_over_native_tls() {
    let app = TestApp::new(Backend::Memory).await;
    let alice = app.seed("alice").await;
    let (der, acceptor) = test_tls();
    let addr = app.serve(Some(acceptor)).await;
    let auth = alice.basic_auth(UsernameForm::Dot);
    let url = format!("wss://localhost:{}/v1/websocket/", addr.port());
    let mut socket = WsClient::open(&url, &[("authorization", &auth)], Some(client_tls(&der)))
        .await
        .expect("WSS");
    let r = socket.request("GET", "/v1/accounts/whoami", &[], b"").await;
    assert_eq!(r.status, 200);
    let empty = socket.push().await;
    assert_eq!(empty.path, "/api/v1/queue/empty");
    socket.close().await;
    let mut anon = WsClient::open(&url, &[], Some(client_tls(&der)))
        .await
        .expect("WSS");
    assert_eq!(
        anon.request("GET", "/v1/keepalive", &[], b"").await.status,
        200
    );
    anon.close().await;
}

// --- The HTTP API tests again, through the socket ---

#[test]
fn keys_upload_then_fetch_through_the_socket() {
    via_socket(crate::keys::upload_then_fetch_hands_out_lowest_ids_then_last_resort);
}

#[test]
fn keys_bad_uploads_through_the_socket() {
    via_socket(crate::keys::any_bad_key_refuses_the_whole_upload);
}

#[test]
fn keys_access_rules_through_the_socket() {
    via_socket(crate::keys::fetch_access_rules);
}

#[test]
fn keys_check_through_the_socket() {
    via_socket(crate::keys::check_compares_the_digest);
}

#[test]
fn accounts_attributes_through_the_socket() {
    via_socket(crate::accounts::attributes_are_applied);
}

#[test]
fn accounts_bad_bodies_through_the_socket() {
    via_socket(crate::accounts::bad_bodies_are_refused_and_write_nothing);
}

#[test]
fn accounts_deletion_through_the_socket() {
    via_socket(crate::accounts::deleting_the_account_removes_it);
}

#[test]
fn usernames_full_flow_through_the_socket() {
    via_socket(crate::usernames::full_flow_reserve_confirm_lookup_link_delete);
}

#[test]
fn usernames_conflicts_through_the_socket() {
    via_socket(crate::usernames::reserve_and_confirm_conflicts_409_410);
}

#[test]
fn usernames_links_through_the_socket() {
    via_socket(crate::usernames::username_links_put_get_delete);
}

/// `chat.max_in_flight_requests`: with one request of a socket still being handled (a long poll), one more is
/// answered 429 `too_many_requests_in_flight` with `Retry-After: 1` at once; the first is answered normally, and
/// afterwards the socket takes requests again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_in_flight_limit_are_429() {
    let app = app_with(|c| c.chat.max_in_flight_requests = 1).await;
    let alice = app.seed("alice").await;
    let mut socket = connected(&app, &alice).await;
    let r = socket
        .request("GET", "/v1/devices/provisioning/code", &[], b"")
        .await;
    assert_eq!(r.status, 200);
    let identifier = json(&r.body)["tokenIdentifier"]
        .as_str()
        .unwrap()
        .to_owned();
    let wait = format!("/v1/devices/wait_for_linked_device/{identifier}?timeout=2");
    socket.send_request(Some(10), "GET", &wait, &[], b"").await;
    // Give the long poll time to be taken up by the socket before the next request arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    socket
        .send_request(Some(11), "GET", "/v1/devices", &[], b"")
        .await;
    let refused = socket.response().await;
    assert_eq!((refused.id, refused.status), (11, 429));
    assert_eq!(header(&refused, "retry-after"), Some("1"));
    assert_eq!(json(&refused.body)["code"], "too_many_requests_in_flight");
    let waited = socket.response().await;
    assert_eq!((waited.id, waited.status), (10, 204));
    let r = socket.request("GET", "/v1/devices", &[], b"").await;
    assert_eq!(r.status, 200);
}

/// More of the HTTP API tests, each run a second time with every request through the chat socket (see
/// [`via_socket`]): registration, messages, profiles, contacts, shortcodes, invites, devices, multi-recipient sends,
/// zkgroup and sealed-sender certificates, usernames, attachments and the manifest answer through the socket exactly
/// as over HTTP (with the keys, accounts and usernames tests above, every endpoint group).
#[test]
fn the_http_api_tests_pass_through_the_socket() {
    let tests: &[(&str, fn())] = &[
        (
            "messages::two_accounts_exchange_messages_and_receipts",
            crate::messages::two_accounts_exchange_messages_and_receipts,
        ),
        (
            "messages::device_mismatches_answer_409_and_410_with_their_bodies",
            crate::messages::device_mismatches_answer_409_and_410_with_their_bodies,
        ),
        (
            "messages::authorization_and_validation_statuses",
            crate::messages::authorization_and_validation_statuses,
        ),
        (
            "messages::sync_messages_and_needs_sync",
            crate::messages::sync_messages_and_needs_sync,
        ),
        (
            "messages::invite_only_accounts_refuse_strangers_before_the_device_check",
            crate::messages::invite_only_accounts_refuse_strangers_before_the_device_check,
        ),
        (
            "messages::sealed_sends_with_the_access_key_carry_no_sender",
            crate::messages::sealed_sends_with_the_access_key_carry_no_sender,
        ),
        (
            "messages::the_rest_fetch_pages_by_100_and_says_when_more_wait",
            crate::messages::the_rest_fetch_pages_by_100_and_says_when_more_wait,
        ),
        (
            "profiles::set_and_read_authenticated_and_with_the_access_key",
            crate::profiles::set_and_read_authenticated_and_with_the_access_key,
        ),
        (
            "profiles::wrong_sizes_are_422_and_the_old_profile_stays",
            crate::profiles::wrong_sizes_are_422_and_the_old_profile_stays,
        ),
        (
            "profiles::invite_only_accounts_show_strangers_only_the_base_profile",
            crate::profiles::invite_only_accounts_show_strangers_only_the_base_profile,
        ),
        (
            "contacts::contact_invite_lifecycle",
            crate::contacts::contact_invite_lifecycle,
        ),
        (
            "contacts::redeem_refusals",
            crate::contacts::redeem_refusals,
        ),
        (
            "contacts::grants_blocks_and_policy_switch",
            crate::contacts::grants_blocks_and_policy_switch,
        ),
        (
            "contacts::unidentified_access_of_invite_only_accounts",
            crate::contacts::unidentified_access_of_invite_only_accounts,
        ),
        (
            "shortcodes::create_list_redeem_once_and_revoke",
            crate::shortcodes::create_list_redeem_once_and_revoke,
        ),
        (
            "shortcodes::unusable_codes_get_identical_404s",
            crate::shortcodes::unusable_codes_get_identical_404s,
        ),
        (
            "shortcodes::third_failed_guess_burns",
            crate::shortcodes::third_failed_guess_burns,
        ),
        (
            "invites::create_list_and_revoke",
            crate::invites::create_list_and_revoke,
        ),
        (
            "invites::bad_requests_change_nothing",
            crate::invites::bad_requests_change_nothing,
        ),
        (
            "devices::link_list_and_remove_a_device",
            crate::devices::link_list_and_remove_a_device,
        ),
        (
            "devices::bad_links_change_nothing",
            crate::devices::bad_links_change_nothing,
        ),
        (
            "devices::capabilities_are_per_device",
            crate::devices::capabilities_are_per_device,
        ),
        (
            "multi_recipient::statuses_and_bodies_in_order",
            crate::multi_recipient::statuses_and_bodies_in_order,
        ),
        (
            "zk::group_credentials_cover_each_day_of_the_range",
            crate::zk::group_credentials_cover_each_day_of_the_range,
        ),
        (
            "zk::bad_ranges_are_400_and_anonymous_is_401",
            crate::zk::bad_ranges_are_400_and_anonymous_is_401,
        ),
        (
            "registration::registers_and_authenticates",
            crate::registration::registers_and_authenticates,
        ),
        (
            "registration::reregistration_keeps_the_aci_and_replaces_the_device",
            crate::registration::reregistration_keeps_the_aci_and_replaces_the_device,
        ),
        (
            "registration::registration_request_rules",
            crate::registration::registration_request_rules,
        ),
        (
            "registration::hostile_registration_usernames_are_4xx",
            crate::registration::hostile_registration_usernames_are_4xx,
        ),
        (
            "sealed::delivery_certificate_on_every_backend",
            crate::sealed::delivery_certificate_on_every_backend,
        ),
        (
            "usernames::invalid_requests_are_422_or_400_and_change_nothing",
            crate::usernames::invalid_requests_are_422_or_400_and_change_nothing,
        ),
        (
            "usernames::holds_last_seven_days_and_at_most_three",
            crate::usernames::holds_last_seven_days_and_at_most_three,
        ),
        (
            "attachments::limits_tokens_creation_with_upload_and_termination",
            crate::attachments::limits_tokens_creation_with_upload_and_termination,
        ),
        (
            "manifest::without_trust_material_the_manifest_is_404",
            crate::manifest::without_trust_material_the_manifest_is_404,
        ),
    ];
    for (name, test) in tests {
        eprintln!("through the socket: {name}");
        via_socket(*test);
    }
}

// --- Two server processes on one PostgreSQL database ---

pub(crate) struct Process {
    pub(crate) child: tokio::process::Child,
    pub(crate) port: u16,
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, written to `dir` as `tls-cert.pem`, `tls-key.pem`
/// (for `[server.tls]` and `NODE_EXTRA_CA_CERTS`) and `tls-root.der` (for libsignal-net).
pub(crate) struct ProcessTls {
    pub(crate) der: Vec<u8>,
    pub(crate) cert_pem: std::path::PathBuf,
    pub(crate) key_pem: std::path::PathBuf,
    pub(crate) root_der: std::path::PathBuf,
}

impl ProcessTls {
    pub(crate) fn new(dir: &std::path::Path) -> ProcessTls {
        let generated = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .expect("certificate");
        let tls = ProcessTls {
            der: generated.cert.der().to_vec(),
            cert_pem: dir.join("tls-cert.pem"),
            key_pem: dir.join("tls-key.pem"),
            root_der: dir.join("tls-root.der"),
        };
        std::fs::write(&tls.cert_pem, generated.cert.pem()).expect("cert");
        std::fs::write(&tls.key_pem, generated.signing_key.serialize_pem()).expect("key");
        std::fs::write(&tls.root_der, &tls.der).expect("der");
        tls
    }
}

pub(crate) async fn start_process(dir: &std::path::Path, name: &str, db: &str) -> Process {
    start_process_with(dir, name, db, None, "").await
}

/// A `flatline-server serve` child on `db` with the key files of `dir`, plain HTTP or native TLS (`tls`), with
/// `extra` TOML appended to its configuration; returned once `/healthz` answers.
pub(crate) async fn start_process_with(
    dir: &std::path::Path,
    name: &str,
    db: &str,
    tls: Option<&ProcessTls>,
    extra: &str,
) -> Process {
    let port = crate::multiprocess::free_port();
    let d = dir.display();
    let config = dir.join(format!("{name}.toml"));
    let scheme = if tls.is_some() { "https" } else { "http" };
    let tls_section = tls.map_or(String::new(), |t| {
        format!(
            "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            t.cert_pem.display(),
            t.key_pem.display()
        )
    });
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
public_url = "{scheme}://127.0.0.1:{port}"
shutdown_grace_seconds = 1
{tls_section}[database]
url = "{db}"
max_connections = 4
[registration]
principal_secret_file = "{d}/principal.key"
[instance]
signing_key_file = "{d}/signing.key"
sealed_sender_key_file = "{d}/sealed-sender.key"
[log]
filter = "warn"
{extra}
"#
        ),
    )
    .expect("config");
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_flatline-server"))
        .args(["--config", config.to_str().expect("utf-8"), "serve"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("start flatline-server");
    let mut http = reqwest::Client::builder();
    if let Some(t) = tls {
        http = http.add_root_certificate(reqwest::Certificate::from_der(&t.der).expect("root"));
    }
    let http = http.build().expect("HTTP client");
    for _ in 0..2400 {
        if http
            .get(format!("{scheme}://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Process { child, port };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    panic!("{name} did not become healthy:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn displacement_and_disconnects_cross_processes_on_postgres() {
    use flatline_server::system::{OsRandom, SystemClock};
    let dir = tempfile::tempdir().unwrap();
    let db = crate::multiprocess::fresh_database().await;
    let one = start_process(dir.path(), "one", &db).await;
    let two = start_process(dir.path(), "two", &db).await;
    let store = flatline_server::store::open(&crate::support::database(&db))
        .await
        .unwrap();
    let alice = SimClient::new(&OsRandom);
    store
        .create_account(alice.new_account(
            "alice",
            &OsRandom,
            flatline_core::time::Clock::now(&SystemClock),
        ))
        .await
        .unwrap();
    let auth = alice.basic_auth(UsernameForm::Dot);
    let addr = |p: &Process| SocketAddr::from(([127, 0, 0, 1], p.port));

    // A socket on process one, then a newer one on process two: the first is displaced over LISTEN/NOTIFY.
    let mut first = WsClient::connect(addr(&one), Some(&auth)).await.unwrap();
    assert_eq!(
        first.request("GET", "/v1/keepalive", &[], b"").await.status,
        200
    );
    let mut second = WsClient::connect(addr(&two), Some(&auth)).await.unwrap();
    assert_eq!(
        first.closed().await,
        Some((4409, "Connected elsewhere".into()))
    );
    assert_eq!(
        second
            .request("GET", "/v1/keepalive", &[], b"")
            .await
            .status,
        200
    );

    // The newest wins the other way round too, and a process's own announcement does not close its newest socket.
    let mut third = WsClient::connect(addr(&one), Some(&auth)).await.unwrap();
    assert_eq!(second.closed().await.map(|c| c.0), Some(4409));
    assert_eq!(
        third.request("GET", "/v1/keepalive", &[], b"").await.status,
        200
    );

    // Deleting the account on process two closes the socket on process one with 4401.
    let r = reqwest::Client::new()
        .delete(format!("http://127.0.0.1:{}/v1/accounts/me", two.port))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        third.closed().await,
        Some((4401, "Reauthentication required".into()))
    );
}

// --- A real client: libsignal-net from npm ---

/// `flatline-testkit/libsignal`, when node and the npm package are installed there.
fn libsignal_dir() -> Option<std::path::PathBuf> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../flatline-testkit/libsignal");
    let installed = dir
        .join("node_modules/@signalapp/libsignal-client/package.json")
        .exists();
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    (installed && node).then_some(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libsignal_net_connects_over_native_tls() {
    let Some(dir) = libsignal_dir() else {
        eprintln!(
            "SKIPPED: node or npm @signalapp/libsignal-client is missing (npm ci --prefix flatline-testkit/libsignal)"
        );
        return;
    };
    let app = TestApp::new(Backend::Sqlite).await;
    let alice = app.seed("alice").await;
    let (der, acceptor) = test_tls();
    let addr = app.serve(Some(acceptor)).await;
    let scratch = tempfile::tempdir().unwrap();
    let cert = scratch.path().join("root.der");
    std::fs::write(&cert, &der).unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new("node")
            .arg(dir.join("net_chat.mjs"))
            .arg(addr.port().to_string())
            .arg(&cert)
            .arg(format!("{}.1", alice.aci))
            .arg(&alice.password)
            .current_dir(&dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("node finished")
    .expect("node ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "net_chat.mjs failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(seen["whoami"]["status"], 200, "{seen}");
    assert_eq!(seen["whoami"]["uuid"], alice.aci.to_string(), "{seen}");
    assert_eq!(seen["keepalive"], 200, "{seen}");
    assert_eq!(seen["queueEmpty"], true, "{seen}");
    assert_eq!(
        seen["serverTimestamp"],
        app.clock.now_ms(),
        "the 101's X-Signal-Timestamp reaches the client: {seen}"
    );
    // 403 on the upgrade is libsignal's DeviceDelinked (error code 39).
    assert_eq!(seen["wrongPassword"], 39, "{seen}");
    assert_eq!(seen["unauthenticatedKeepalive"], 200, "{seen}");
    assert_eq!(seen["unauthenticatedWhoami"], 401, "{seen}");
}

/// A real TLS client (rustls, `wss://localhost`) against two server processes with native TLS on one PostgreSQL
/// database: authenticated and unauthenticated connects, a request round trip, a pushed message acknowledged (gone
/// from the queue afterwards), displacement 4409 across the processes, and 4401 on device removal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_across_two_processes_on_postgres() {
    use base64::engine::general_purpose::STANDARD;
    use flatline_core::ids::DeviceId;
    use flatline_core::messages::store::MessageCursor;
    use flatline_server::system::{OsRandom, SystemClock};
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let tls = ProcessTls::new(dir.path());
    let db = crate::multiprocess::fresh_database().await;
    let one = start_process_with(dir.path(), "one", &db, Some(&tls), "").await;
    let two = start_process_with(dir.path(), "two", &db, Some(&tls), "").await;
    let store = flatline_server::store::open(&crate::support::database(&db))
        .await
        .unwrap();
    let now = flatline_core::time::Clock::now(&SystemClock);
    let alice = SimClient::new(&OsRandom);
    let bob = SimClient::new(&OsRandom);
    store
        .create_account(alice.new_account("alice", &OsRandom, now))
        .await
        .unwrap();
    store
        .create_account(bob.new_account("bob", &OsRandom, now))
        .await
        .unwrap();
    let alice_reg = store.account(alice.aci).await.unwrap().unwrap().devices[0]
        .settings
        .registration_id;
    let wss = |p: &Process| format!("wss://localhost:{}/v1/websocket/", p.port);
    let https = |p: &Process| format!("https://localhost:{}", p.port);
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_der(&tls.der).unwrap())
        .build()
        .unwrap();
    let alice_auth = alice.basic_auth(UsernameForm::Dot);

    let mut first = WsClient::open(
        &wss(&one),
        &[("authorization", &alice_auth)],
        Some(client_tls(&tls.der)),
    )
    .await
    .expect("authenticated WSS");
    let r = first.request("GET", "/v1/accounts/whoami", &[], b"").await;
    assert_eq!(
        (r.status, json(&r.body)["uuid"].clone()),
        (200, json!(alice.aci.to_string()))
    );
    assert_eq!(first.push().await.path, "/api/v1/queue/empty");
    let mut anon = WsClient::open(&wss(&two), &[], Some(client_tls(&tls.der)))
        .await
        .expect("unauthenticated WSS");
    assert_eq!(
        anon.request("GET", "/v1/keepalive", &[], b"").await.status,
        200
    );

    // Bob sends through process two; the push reaches Alice's socket on process one, and her ack deletes it.
    let body = json!({
        "messages": [{"type": 1, "destinationDeviceId": 1, "destinationRegistrationId": alice_reg,
                      "content": STANDARD.encode(b"over tls")}],
        "online": false, "urgent": true, "timestamp": 1,
    });
    let r = http
        .put(format!("{}/v1/messages/{}", https(&two), alice.aci))
        .header("authorization", bob.basic_auth(UsernameForm::Aci))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let pushed = first.push().await;
    assert_eq!(pushed.path, "/api/v1/message");
    let envelope = flatline_core::messages::Envelope::from_bytes(&pushed.body).unwrap();
    assert_eq!(envelope.content.as_deref(), Some(b"over tls".as_slice()));
    first.ack(pushed.id.unwrap(), 200).await;
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = store
            .read_messages(alice.aci, DeviceId::PRIMARY, MessageCursor::START, 10)
            .await
            .unwrap()
            .len();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "the acknowledged message is deleted");

    // A newer socket of the same device on process two displaces the one on process one.
    let mut second = WsClient::open(
        &wss(&two),
        &[("authorization", &alice_auth)],
        Some(client_tls(&tls.der)),
    )
    .await
    .expect("WSS");
    assert_eq!(
        first.closed().await,
        Some((4409, "Connected elsewhere".into()))
    );
    assert_eq!(
        second
            .request("GET", "/v1/keepalive", &[], b"")
            .await
            .status,
        200
    );

    // A linked device on process one; removing it through process two closes its socket with 4401.
    let v: Value = http
        .get(format!("{}/v1/devices/provisioning/code", https(&two)))
        .header("authorization", alice.basic_auth(UsernameForm::Aci))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let password = "linked-device-password-0123";
    let r = http
        .put(format!("{}/v1/devices/link", https(&one)))
        .header(
            "authorization",
            format!("Basic {}", STANDARD.encode(format!("x:{password}"))),
        )
        .json(&alice.link_body(v["verificationCode"].as_str().unwrap(), 300, &OsRandom))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let linked_auth = format!(
        "Basic {}",
        STANDARD.encode(format!("{}.2:{password}", alice.aci))
    );
    let mut linked = WsClient::open(
        &wss(&one),
        &[("authorization", &linked_auth)],
        Some(client_tls(&tls.der)),
    )
    .await
    .expect("linked device WSS");
    assert_eq!(
        linked
            .request("GET", "/v1/keepalive", &[], b"")
            .await
            .status,
        200
    );
    let r = http
        .delete(format!("{}/v1/devices/2", https(&two)))
        .header("authorization", alice.basic_auth(UsernameForm::Aci))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        linked.closed().await,
        Some((4401, "Reauthentication required".into()))
    );
    // The primary's socket stays.
    assert_eq!(
        second
            .request("GET", "/v1/keepalive", &[], b"")
            .await
            .status,
        200
    );
}
