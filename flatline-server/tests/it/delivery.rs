//! Live delivery over the authenticated chat socket (API.md §9–§10, M§1.4–1.7, M§7): a message sent over HTTP is
//! pushed to the recipient's socket in queue order; a 2xx ack deletes it (with the sender's delivery receipt), a
//! NACK or a close keeps it for the next connection; `queue/empty` comes once per connection after the backlog;
//! displacement redelivers unacknowledged messages; stories only on request; online messages to connected devices
//! only; and across two processes on PostgreSQL.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::Method;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flatline_core::chat;
use flatline_core::messages::Envelope;
use flatline_testkit::{SimClient, UsernameForm};
use serde_json::{Value, json};

use crate::socket::WsClient;
use crate::support::{Backend, TestApp};

/// The primary device's registration id in the test kit.
const REG: u32 = 11;

fn body(content: &[u8], online: bool) -> Value {
    json!({"messages": [{"type": 1, "destinationDeviceId": 1, "destinationRegistrationId": REG,
                         "content": STANDARD.encode(content)}],
           "timestamp": 1_700_000_000_123u64, "online": online, "urgent": true})
}

async fn send(app: &TestApp, from: &SimClient, to: &SimClient, content: &[u8]) {
    send_with(app, from, to, content, false, "").await;
}

async fn send_with(
    app: &TestApp,
    from: &SimClient,
    to: &SimClient,
    content: &[u8],
    online: bool,
    query: &str,
) {
    let r = app
        .send(
            Method::PUT,
            &format!("/v1/messages/{}{query}", to.aci),
            &[("authorization", &from.basic_auth(UsernameForm::Dot))],
            Some(&body(content, online).to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// The REST queue of the primary device (stories included).
async fn queued(app: &TestApp, who: &SimClient) -> Vec<Value> {
    let r = app
        .send(
            Method::GET,
            "/v1/messages",
            &[
                ("authorization", &who.basic_auth(UsernameForm::Dot)),
                ("x-signal-receive-stories", "true"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    r.json()["messages"].as_array().unwrap().clone()
}

/// Waits until the queue holds exactly `n` messages (acks are applied just after the client's answer arrives).
async fn queue_settles(app: &TestApp, who: &SimClient, n: usize) -> Vec<Value> {
    for _ in 0..500 {
        let q = queued(app, who).await;
        if q.len() == n {
            return q;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the queue never held {n} messages: {:?}",
        queued(app, who).await
    );
}

async fn socket(addr: SocketAddr, who: &SimClient, stories: bool) -> WsClient {
    let auth = who.basic_auth(UsernameForm::Dot);
    let mut headers = vec![("authorization", auth.as_str())];
    if stories {
        headers.push(("x-signal-receive-stories", "true"));
    }
    WsClient::open(&format!("ws://{addr}/v1/websocket/"), &headers, None)
        .await
        .expect("authenticated socket")
}

/// The next push, which must be a message; its envelope.
async fn message(ws: &mut WsClient) -> (chat::Request, Envelope) {
    let p = ws.push().await;
    assert_eq!(
        (p.verb.as_str(), p.path.as_str()),
        ("PUT", "/api/v1/message")
    );
    let e = Envelope::from_bytes(&p.body).expect("an envelope");
    (p, e)
}

async fn queue_empty(ws: &mut WsClient) {
    let p = ws.push().await;
    assert_eq!(
        (p.verb.as_str(), p.path.as_str()),
        ("PUT", "/api/v1/queue/empty")
    );
}

/// No further push is waiting: a keepalive is answered with nothing pushed before it.
async fn nothing_pushed(ws: &mut WsClient) {
    assert_eq!(
        ws.request("GET", "/v1/keepalive", &[], b"").await.status,
        200
    );
    assert!(ws.pushes.is_empty(), "unexpected pushes {:?}", ws.pushes);
}

#[tokio::test]
async fn a_sent_message_is_pushed_in_order_and_an_ack_removes_it_a_nack_keeps_it() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let addr = app.listen().await;
        let alice = app.seed("alice").await;
        let bob = app.seed("bob").await;
        let mut ws = socket(addr, &bob, false).await;
        // Nothing queued at connect time: queue/empty at once.
        queue_empty(&mut ws).await;

        send(&app, &alice, &bob, b"one").await;
        send(&app, &alice, &bob, b"two").await;
        let (p1, e1) = message(&mut ws).await;
        let (p2, e2) = message(&mut ws).await;
        assert_eq!(e1.content.as_deref(), Some(&b"one"[..]), "{backend:?}");
        assert_eq!(e2.content.as_deref(), Some(&b"two"[..]));
        assert_eq!(e1.source_service_id, Some(alice.aci.to_string()));
        assert_eq!(e1.ephemeral, None, "ephemeral is stripped before delivery");
        // X-Signal-Key: false first, then the timestamp.
        assert_eq!(p1.headers[0].0.to_ascii_lowercase(), "x-signal-key");
        assert_eq!(p1.headers[0].1, "false");
        assert!(
            p1.headers
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case("x-signal-timestamp")
                    && v.parse::<u64>().is_ok())
        );
        assert!(p2.id.unwrap() > p1.id.unwrap());

        // Ack the first: gone from the queue, and alice gets a delivery receipt. NACK the second: it stays.
        ws.ack(p1.id.unwrap(), 200).await;
        ws.ack(p2.id.unwrap(), 500).await;
        let left = queue_settles(&app, &bob, 1).await;
        assert_eq!(left[0]["guid"], json!(e2.server_guid.clone().unwrap()));
        let receipts = queue_settles(&app, &alice, 1).await;
        assert_eq!(receipts[0]["type"], json!(5), "a server delivery receipt");
        nothing_pushed(&mut ws).await;
        ws.close().await;

        // On the next connection the NACKed message comes again (same guid), then queue/empty.
        let mut ws = socket(addr, &bob, false).await;
        let (p, e) = message(&mut ws).await;
        assert_eq!(e.server_guid, e2.server_guid);
        assert_eq!(p.body, p2.body, "redelivery carries identical bytes");
        queue_empty(&mut ws).await;
        ws.ack(p.id.unwrap(), 204).await;
        queue_settles(&app, &bob, 0).await;
        ws.close().await;
    }
}

#[tokio::test]
async fn the_backlog_then_queue_empty_once_then_new_messages_without_it() {
    let app = TestApp::new(Backend::Sqlite).await;
    let addr = app.listen().await;
    let alice = app.seed("alice").await;
    let bob = app.seed("bob").await;
    for i in 0..3u8 {
        send(&app, &alice, &bob, &[b'a' + i]).await;
    }
    let mut ws = socket(addr, &bob, false).await;
    let mut ids = vec![];
    for i in 0..3u8 {
        let (p, e) = message(&mut ws).await;
        assert_eq!(e.content, Some(vec![b'a' + i]), "queue order");
        ids.push(p.id.unwrap());
    }
    queue_empty(&mut ws).await;
    // A message arriving later is pushed without another queue/empty, and in-flight ones are not pushed again.
    send(&app, &alice, &bob, b"late").await;
    let (late, e) = message(&mut ws).await;
    assert_eq!(e.content.as_deref(), Some(&b"late"[..]));
    nothing_pushed(&mut ws).await;
    for id in ids.into_iter().chain([late.id.unwrap()]) {
        ws.ack(id, 200).await;
    }
    queue_settles(&app, &bob, 0).await;
    ws.close().await;
}

#[tokio::test]
async fn displacement_redelivers_unacknowledged_messages_on_the_new_socket() {
    let app = TestApp::new(Backend::Memory).await;
    let addr = app.listen().await;
    let alice = app.seed("alice").await;
    let bob = app.seed("bob").await;
    send(&app, &alice, &bob, b"hello").await;
    let mut first = socket(addr, &bob, false).await;
    let (_, e) = message(&mut first).await;
    queue_empty(&mut first).await;
    let mut second = socket(addr, &bob, false).await;
    assert_eq!(
        first.closed().await,
        Some((4409, "Connected elsewhere".into()))
    );
    let (p, again) = message(&mut second).await;
    assert_eq!(again.server_guid, e.server_guid);
    queue_empty(&mut second).await;
    second.ack(p.id.unwrap(), 200).await;
    queue_settles(&app, &bob, 0).await;
    second.close().await;
}

#[tokio::test]
async fn stories_are_pushed_only_to_sockets_that_asked_for_them() {
    let app = TestApp::new(Backend::Memory).await;
    let addr = app.listen().await;
    let alice = app.seed("alice").await;
    let bob = app.seed("bob").await;
    send_with(&app, &alice, &bob, b"story 1", false, "?story=true").await;
    send(&app, &alice, &bob, b"plain").await;
    // Without X-Signal-Receive-Stories the story is removed silently (no receipt) and only the plain message comes.
    let mut ws = socket(addr, &bob, false).await;
    let (p, e) = message(&mut ws).await;
    assert_eq!(e.content.as_deref(), Some(&b"plain"[..]));
    queue_empty(&mut ws).await;
    ws.ack(p.id.unwrap(), 200).await;
    queue_settles(&app, &bob, 0).await;
    ws.close().await;

    // With it, stories are pushed.
    let mut ws = socket(addr, &bob, true).await;
    queue_empty(&mut ws).await;
    send_with(&app, &alice, &bob, b"story 2", false, "?story=true").await;
    let (p, e) = message(&mut ws).await;
    assert_eq!(e.content.as_deref(), Some(&b"story 2"[..]));
    assert_eq!(e.story, Some(true));
    ws.ack(p.id.unwrap(), 200).await;
    queue_settles(&app, &bob, 0).await;
    // Only the plain message earned alice a receipt, and no story did.
    assert_eq!(queued(&app, &alice).await.len(), 1);
    ws.close().await;
}

#[tokio::test]
async fn online_messages_reach_connected_devices_only_and_are_never_stored() {
    let app = TestApp::new(Backend::Sqlite).await;
    let addr = app.listen().await;
    let alice = app.seed("alice").await;
    let bob = app.seed("bob").await;
    // Not connected: dropped.
    send_with(&app, &alice, &bob, b"typing 1", true, "").await;
    assert!(queued(&app, &bob).await.is_empty());
    let mut ws = socket(addr, &bob, false).await;
    queue_empty(&mut ws).await;
    send_with(&app, &alice, &bob, b"typing 2", true, "").await;
    let (p, e) = message(&mut ws).await;
    assert_eq!(e.content.as_deref(), Some(&b"typing 2"[..]));
    assert_eq!(e.ephemeral, None, "ephemeral is stripped before delivery");
    ws.ack(p.id.unwrap(), 200).await;
    nothing_pushed(&mut ws).await;
    assert!(queued(&app, &bob).await.is_empty());
    assert!(
        queued(&app, &alice).await.is_empty(),
        "no receipt for online messages"
    );
    ws.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_to_one_process_reaches_a_socket_on_another_on_postgres() {
    use flatline_server::system::{OsRandom, SystemClock};
    let dir = tempfile::tempdir().unwrap();
    let db = crate::multiprocess::fresh_database().await;
    let one = crate::socket::start_process(dir.path(), "one", &db).await;
    let two = crate::socket::start_process(dir.path(), "two", &db).await;
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
    let http = reqwest::Client::new();
    let put = |port: u16, content: &'static [u8], online: bool| {
        let http = http.clone();
        let auth = alice.basic_auth(UsernameForm::Dot);
        let url = format!("http://127.0.0.1:{port}/v1/messages/{}", bob.aci);
        async move {
            let r = http
                .put(url)
                .header("authorization", auth)
                .header("content-type", "application/json")
                .body(body(content, online).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };

    let mut ws = socket(SocketAddr::from(([127, 0, 0, 1], two.port)), &bob, false).await;
    queue_empty(&mut ws).await;
    // Stored on process one: the wake-up crosses to process two.
    put(one.port, b"across", false).await;
    let (p, e) = message(&mut ws).await;
    assert_eq!(e.content.as_deref(), Some(&b"across"[..]));
    ws.ack(p.id.unwrap(), 200).await;
    // An online message sent to process one reaches the socket on process two.
    put(one.port, b"typing", true).await;
    let (p, e) = message(&mut ws).await;
    assert_eq!(e.content.as_deref(), Some(&b"typing"[..]));
    assert_eq!(e.ephemeral, None, "ephemeral is stripped before delivery");
    ws.ack(p.id.unwrap(), 200).await;
    ws.close().await;
    // The acknowledged message is gone (the ack went through process two's message service).
    let bob_aci = bob.aci;
    for _ in 0..500 {
        if store
            .queue_size(bob_aci, flatline_core::ids::DeviceId::PRIMARY)
            .await
            .unwrap()
            .messages
            == 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the acknowledged message is still queued");
}
