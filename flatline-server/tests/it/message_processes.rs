//! Messages through real `flatline-server` processes: the libsignal-net flow of `messages.rs` with the sender on
//! one process and the recipient on another (PostgreSQL, native TLS on both), and a `kill -9` of the recipient's
//! process while its socket is receiving and acknowledging, on SQLite and PostgreSQL: every message whose send was
//! answered 200 and that was not acknowledged is delivered after the restart.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flatline_core::messages::Envelope;
use flatline_core::store::Store;
use flatline_server::system::{OsRandom, SystemClock};
use flatline_testkit::{SimClient, UsernameForm};
use prost::Message as _;
use serde_json::json;

use crate::socket::{ProcessTls, WsClient, start_process_with};

pub(crate) async fn open_store(db: &str) -> Arc<dyn Store> {
    flatline_server::store::open(&crate::support::database(db))
        .await
        .expect("store")
}

pub(crate) async fn seed(store: &dyn Store, principal: &str) -> SimClient {
    let client = SimClient::new(&OsRandom);
    store
        .create_account(client.new_account(
            principal,
            &OsRandom,
            flatline_core::time::Clock::now(&SystemClock),
        ))
        .await
        .expect("seed account");
    client
}

/// The libsignal-net flow (net_messages.mjs, asserted as in `messages.rs`) with Alice on process one and Bob on
/// process two, sharing a fresh PostgreSQL database; both serve native TLS with a test certificate, so REST (node
/// `fetch`, trusting it through `NODE_EXTRA_CA_CERTS`) and libsignal-net use the same listener. Alice's sends
/// are stored by process one and pushed by process two; Bob's acknowledgements on process two send delivery
/// receipts that process one pushes to Alice. The failing sends run too (on process one), with the same
/// answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libsignal_messages_across_two_processes_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let db = crate::multiprocess::fresh_database().await;
    let tls = ProcessTls::new(dir.path());
    let limits = "[limits.messages]\nbucket_size = 20\npermit_regeneration_seconds = 3600\n";
    let one = start_process_with(dir.path(), "one", &db, Some(&tls), limits).await;
    let two = start_process_with(dir.path(), "two", &db, Some(&tls), limits).await;
    let store = open_store(&db).await;
    let alice = seed(store.as_ref(), "alice").await;
    let bob = seed(store.as_ref(), "bob").await;
    let base = |port: u16| format!("https://127.0.0.1:{port}");
    let config = json!({
        "alice": crate::messages::libsignal_party(&alice, &base(one.port), one.port, &tls.root_der),
        "bob": crate::messages::libsignal_party(&bob, &base(two.port), two.port, &tls.root_der),
        "statuses": true,
    });
    let Some(seen) = crate::messages::run_libsignal_script(
        "net_messages.mjs",
        &config,
        &[("NODE_EXTRA_CA_CERTS", &tls.cert_pem)],
    )
    .await
    else {
        return;
    };
    crate::messages::assert_backlog_and_redelivery(&seen, &alice, &bob);
    crate::messages::assert_failing_sends(&seen, &bob);
}

/// Messages are sent over HTTP, one at a time, as `m<i>`; the indices answered 200 are recorded.
async fn sender(
    port: u16,
    auth: String,
    to: String,
    range: std::ops::Range<usize>,
    ok: Arc<Mutex<Vec<usize>>>,
) {
    let http = reqwest::Client::new();
    for i in range {
        let body = json!({"messages": [{"type": 1, "destinationDeviceId": 1, "destinationRegistrationId": 11,
                          "content": STANDARD.encode(format!("m{i}"))}],
                          "timestamp": 1_700_000_000_000u64 + i as u64, "online": false, "urgent": true});
        let r = http
            .put(format!("http://127.0.0.1:{port}/v1/messages/{to}"))
            .header("authorization", &auth)
            .json(&body)
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 200 => ok.lock().unwrap().push(i),
            // The process was killed (or refused): stop, the answer did not say "stored".
            _ => return,
        }
    }
}

/// The index of a pushed `m<i>` envelope.
fn index_of(push: &flatline_core::chat::Request) -> usize {
    let envelope = Envelope::decode(push.body.as_slice()).expect("an envelope");
    let content = String::from_utf8(envelope.content.expect("content")).expect("utf-8");
    content
        .strip_prefix('m')
        .and_then(|n| n.parse().ok())
        .expect("m<i>")
}

/// Pushes until `queue/empty`, each acknowledged with 200; the indices in push order.
async fn drain(ws: &mut WsClient) -> Vec<usize> {
    let mut seen = vec![];
    loop {
        let push = ws.push().await;
        if push.path == "/api/v1/queue/empty" {
            return seen;
        }
        assert_eq!(push.path, "/api/v1/message");
        seen.push(index_of(&push));
        ws.ack(push.id.expect("id"), 200).await;
    }
}

/// `kill -9` of the recipient's process mid-stream on `db`: Alice has 150 messages queued for Bob; Bob's socket
/// receives them and, while Alice sends 150 more one by one, the live ones too, acknowledging every message except
/// each third (`m0`, `m3`, …, left unanswered as a client that crashed before acknowledging would). Once a message
/// of the second batch past `m180` has been pushed (so Alice is still sending, and Bob receiving), the process gets
/// SIGKILL. Restarted on the same database, Bob's new socket receives every message that was answered 200 and not
/// acknowledged, in send order, each once, and nothing that was never sent. (Acknowledged ones may come again:
/// an ack frame may not have been processed before the kill.)
async fn kill_9_mid_stream(db: &str, dir: &std::path::Path) {
    const BACKLOG: usize = 150;
    const MORE: usize = 150;
    const KILL_AFTER: usize = BACKLOG + 30;
    let limits = "[limits.messages]\nbucket_size = 100000\npermit_regeneration_seconds = 0.001\n";
    let store = open_store(db).await;
    let alice = seed(store.as_ref(), "alice").await;
    let bob = seed(store.as_ref(), "bob").await;
    // SQLite: the server process is the only writer of the file.
    drop(store);
    let mut first = start_process_with(dir, "first", db, None, limits).await;
    let alice_auth = alice.basic_auth(UsernameForm::Dot);
    let ok = Arc::new(Mutex::new(vec![]));
    sender(
        first.port,
        alice_auth.clone(),
        bob.aci.to_string(),
        0..BACKLOG,
        ok.clone(),
    )
    .await;
    assert_eq!(ok.lock().unwrap().len(), BACKLOG, "the backlog is stored");

    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let bob_auth = bob.basic_auth(UsernameForm::Dot);
    let mut ws = WsClient::connect(addr(first.port), Some(&bob_auth))
        .await
        .expect("bob's socket");
    let more = tokio::spawn(sender(
        first.port,
        alice_auth,
        bob.aci.to_string(),
        BACKLOG..BACKLOG + MORE,
        ok.clone(),
    ));
    let mut acked = BTreeSet::new();
    let mut pushed = vec![];
    loop {
        let push = ws.push().await;
        if push.path == "/api/v1/queue/empty" {
            continue;
        }
        assert_eq!(push.path, "/api/v1/message");
        let i = index_of(&push);
        pushed.push(i);
        if !i.is_multiple_of(3) {
            ws.ack(push.id.expect("id"), 200).await;
            acked.insert(i);
        }
        if i >= KILL_AFTER {
            break;
        }
    }
    first.child.start_kill().expect("SIGKILL");
    first.child.wait().await.expect("killed");
    more.await.expect("sender");
    drop(ws);
    assert_eq!(
        pushed,
        (0..pushed.len()).collect::<Vec<_>>(),
        "pushed in send order before the kill"
    );
    let answered: BTreeSet<usize> = ok.lock().unwrap().iter().copied().collect();
    // Sends stop at the first failure: at most the one after the last 200 may have been stored unanswered.
    let attempted = answered.iter().max().map_or(0, |m| m + 2);
    let kept: BTreeSet<usize> = answered.difference(&acked).copied().collect();
    // Every third of m0…m179 was answered and left unacknowledged (m180's 200 may still be on its way to the sender
    // when its push arrives): at least 60 messages must come back.
    assert!(kept.len() >= KILL_AFTER / 3, "{} kept", kept.len());

    let second = start_process_with(dir, "second", db, None, limits).await;
    let mut ws = WsClient::connect(addr(second.port), Some(&bob_auth))
        .await
        .expect("bob's socket after the restart");
    let after = drain(&mut ws).await;
    ws.close().await;
    let missing: Vec<usize> = kept
        .iter()
        .filter(|i| !after.contains(i))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "answered 200, not acknowledged, lost after kill -9: {missing:?}"
    );
    assert!(
        after.windows(2).all(|w| w[0] < w[1]),
        "in send order, each once: {after:?}"
    );
    assert!(
        after.iter().all(|i| *i < attempted),
        "nothing that was never sent: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_recipients_process_loses_no_stored_message_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/flatline.db?mode=rwc", dir.path().display());
    kill_9_mid_stream(&db, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_recipients_process_loses_no_stored_message_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let db = crate::multiprocess::fresh_database().await;
    kill_9_mid_stream(&db, dir.path()).await;
}
