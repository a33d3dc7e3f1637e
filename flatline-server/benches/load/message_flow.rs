//! The message workloads of the load benchmark (`LOAD_WORKLOADS=messages,idle`):
//!
//! - **messages**: `C` concurrent conversations (`LOAD_CONVERSATIONS`, default 1, 100, 1000), each a sender and
//!   a recipient account with one authenticated chat socket apiece (the sender's on process `k`, the
//!   recipient's on process `k + 1` when there are several). A conversation is a closed loop: the sender sends
//!   `PUT /v1/messages/{recipient}` (one identified 1 KiB message) through its socket; the recipient's socket is
//!   pushed the envelope and acknowledges it with 200; the server deletes it and queues a server delivery receipt,
//!   which is pushed to the sender's socket and acknowledged; then the next message. A message counts when the
//!   send was answered 200 and its receipt arrived (so the acknowledgement took effect). Latencies: send →
//!   recipient push (delivery) and send → receipt (the whole cycle).
//! - **raw store**: the same number of messages at the same concurrency straight on the store from this process:
//!   `insert_messages` of one envelope of the same size, `read_messages` of the queue, `delete_message` by guid.
//! - **idle**: `LOAD_IDLE_SOCKETS` (default 10 000) authenticated chat sockets of as many accounts opened to
//!   process 0 and held idle (each got its `queue/empty`); the server's RSS before and after.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flatline_core::chat::{Frame, decode_frame, encode_request, encode_response};
use flatline_core::ids::DeviceId;
use flatline_core::messages::store::{InsertOutcome, MessageCursor, NewMessage};
use flatline_core::messages::{Envelope, MessageGuid};
use flatline_core::store::Store;
use flatline_core::time::{Clock as _, Timestamp};
use flatline_server::system::{OsRandom, SystemClock};
use flatline_testkit::{SimClient, UsernameForm};
use futures_util::{SinkExt as _, StreamExt as _};
use prost::Message as _;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{Failure, Outcome, drive};

/// Content bytes of each message (the envelope adds its ids and timestamps).
pub const CONTENT_BYTES: usize = 1024;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The accounts of the message workloads.
pub struct MessageMaterial {
    /// (sender, recipient) of each conversation; as many as the largest level.
    pub pairs: Vec<(SimClient, SimClient)>,
    /// Owners of the idle sockets.
    pub idle: Vec<SimClient>,
}

impl MessageMaterial {
    pub fn generate(conversations: usize, idle: usize) -> MessageMaterial {
        MessageMaterial {
            pairs: (0..conversations)
                .map(|_| (SimClient::new(&OsRandom), SimClient::new(&OsRandom)))
                .collect(),
            idle: (0..idle).map(|_| SimClient::new(&OsRandom)).collect(),
        }
    }

    /// Every account into `store`, 16 at a time.
    pub async fn seed(&self, store: Arc<dyn Store>) -> Result<(), String> {
        let now = SystemClock.now();
        let mut accounts = self
            .pairs
            .iter()
            .flat_map(|(a, b)| [a, b])
            .chain(&self.idle)
            .enumerate()
            .map(|(i, c)| c.new_account(&format!("msg{i}@example.org"), &OsRandom, now));
        loop {
            let batch: Vec<_> = accounts.by_ref().take(16).collect();
            if batch.is_empty() {
                return Ok(());
            }
            for r in
                futures_util::future::join_all(batch.into_iter().map(|a| store.create_account(a)))
                    .await
            {
                r.map_err(|e| format!("seed: {e}"))?;
            }
        }
    }
}

async fn connect(port: u16, client: &SimClient) -> Result<Ws, String> {
    let mut request = format!("ws://127.0.0.1:{port}/v1/websocket/")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let auth = client
        .basic_auth(UsernameForm::Dot)
        .parse()
        .map_err(|e| format!("header: {e}"))?;
    request.headers_mut().insert("authorization", auth);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    Ok(ws)
}

/// The next frame of `ws`, or why there is none.
async fn next_frame(ws: &mut Ws) -> Result<Frame, String> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .map_err(|_| "no frame within 60 s".to_owned())?;
        match message {
            Some(Ok(Message::Binary(b))) => {
                return decode_frame(&b).map_err(|e| format!("frame: {e:?}"));
            }
            Some(Ok(Message::Close(c))) => return Err(format!("closed: {c:?}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("socket: {e}")),
            None => return Err("socket ended".into()),
        }
    }
}

/// Reads until `queue/empty` (acknowledging any message pushed before it).
async fn until_queue_empty(ws: &mut Ws) -> Result<(), String> {
    loop {
        if let Frame::Request(r) = next_frame(ws).await? {
            if r.path == "/api/v1/queue/empty" {
                return Ok(());
            }
            if let Some(id) = r.id {
                let ack = encode_response(id, 200, "OK", &[], b"");
                ws.send(Message::Binary(ack.into()))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
    }
}

async fn ack(ws: &mut Ws, id: Option<u64>) -> Result<(), String> {
    let id = id.ok_or("a push without id")?;
    ws.send(Message::Binary(
        encode_response(id, 200, "OK", &[], b"").into(),
    ))
    .await
    .map_err(|e| format!("ack: {e}"))
}

/// One conversation's sockets.
struct Conversation {
    sender: Ws,
    recipient: Ws,
    path: String,
    next_id: u64,
}

/// Latencies of one message, in microseconds: (send → recipient push, send → receipt).
type Timing = (u64, u64);

impl Conversation {
    async fn open(
        sender_port: u16,
        recipient_port: u16,
        pair: &(SimClient, SimClient),
    ) -> Result<Conversation, String> {
        let mut sender = connect(sender_port, &pair.0).await?;
        let mut recipient = connect(recipient_port, &pair.1).await?;
        until_queue_empty(&mut sender).await?;
        until_queue_empty(&mut recipient).await?;
        Ok(Conversation {
            sender,
            recipient,
            path: format!("/v1/messages/{}", pair.1.aci),
            next_id: 0,
        })
    }

    /// One message through the whole cycle.
    async fn message(&mut self, body: &[u8]) -> Result<Timing, Failure> {
        let id = self.next_id;
        self.next_id += 1;
        let err = |e: String| Failure::Error(e);
        let started = Instant::now();
        let frame = encode_request(
            Some(id),
            "PUT",
            &self.path,
            &[("content-type", "application/json")],
            body,
        );
        self.sender
            .send(Message::Binary(frame.into()))
            .await
            .map_err(|e| err(format!("send: {e}")))?;
        // Both sockets at once: the send's answer (a failure shows up there, before any push), the recipient's
        // push, and the receipt pushed to the sender once the recipient's acknowledgement took effect.
        let (mut answered, mut pushed, mut receipt) = (false, None, None);
        while !answered || pushed.is_none() || receipt.is_none() {
            let state = || {
                format!(
                    "answered {answered}, pushed {}, receipt {}",
                    pushed.is_some(),
                    receipt.is_some()
                )
            };
            tokio::select! {
                frame = next_frame(&mut self.sender) => {
                    match frame.map_err(|e| err(format!("sender ({}): {e}", state())))? {
                        Frame::Response(r) if r.id == id => {
                            if r.status != 200 {
                                let body = String::from_utf8_lossy(&r.body);
                                return Err(err(format!("status {}: {body}", r.status)));
                            }
                            answered = true;
                        }
                        Frame::Request(r) if r.path == "/api/v1/message" => {
                            let envelope = Envelope::decode(r.body.as_slice())
                                .map_err(|e| err(format!("envelope: {e}")))?;
                            if envelope.r#type != Some(5) {
                                return Err(err(format!("unexpected push type {:?}", envelope.r#type)));
                            }
                            receipt = Some(started.elapsed());
                            ack(&mut self.sender, r.id).await.map_err(err)?;
                        }
                        _ => {}
                    }
                }
                frame = next_frame(&mut self.recipient) => {
                    let frame = frame.map_err(|e| err(format!("recipient ({}): {e}", state())))?;
                    if let Frame::Request(r) = frame
                        && r.path == "/api/v1/message"
                    {
                        pushed = Some(started.elapsed());
                        ack(&mut self.recipient, r.id).await.map_err(err)?;
                    }
                }
            }
        }
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Ok((
            us(pushed.unwrap_or_default()),
            us(receipt.unwrap_or_default()),
        ))
    }
}

/// The body of a 1 KiB identified send to a one-device recipient (registration id 11, as seeded).
fn send_body(i: usize) -> Vec<u8> {
    let mut content = vec![0u8; CONTENT_BYTES];
    content[..8].copy_from_slice(&(i as u64).to_le_bytes());
    serde_json::json!({
        "messages": [{"type": 1, "destinationDeviceId": 1, "destinationRegistrationId": 11,
                      "content": STANDARD.encode(&content)}],
        "timestamp": 1_700_000_000_000u64 + i as u64, "online": false, "urgent": true,
    })
    .to_string()
    .into_bytes()
}

/// End-to-end result of one level.
pub struct FlowOutcome {
    pub conversations: usize,
    pub messages: usize,
    pub elapsed: Duration,
    /// Sorted, microseconds.
    pub delivery: Vec<u64>,
    /// Sorted, microseconds.
    pub cycle: Vec<u64>,
    pub failures: BTreeMap<String, usize>,
}

pub fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

impl FlowOutcome {
    pub fn per_second(&self) -> f64 {
        self.cycle.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn failure_text(&self) -> String {
        if self.failures.is_empty() {
            return "0".into();
        }
        let n: usize = self.failures.values().sum();
        let parts: Vec<String> = self
            .failures
            .iter()
            .map(|(k, v)| format!("{v}× {k}"))
            .collect();
        format!("{n} ({})", parts.join(", "))
    }
}

/// `conversations` closed loops of `per` messages each (after one unmeasured warm-up message each), sockets on
/// `ports` (the sender of conversation `k` on `ports[k % n]`, its recipient on `ports[(k + 1) % n]`).
pub async fn end_to_end(
    m: &MessageMaterial,
    ports: &[u16],
    conversations: usize,
    per: usize,
) -> Result<FlowOutcome, String> {
    let mut open = Vec::with_capacity(conversations);
    // Connected 32 at a time: the upgrade burst is not what is measured.
    for chunk in m.pairs[..conversations].chunks(32) {
        let base = open.len();
        let opened = futures_util::future::join_all(chunk.iter().enumerate().map(|(j, pair)| {
            let k = base + j;
            Conversation::open(ports[k % ports.len()], ports[(k + 1) % ports.len()], pair)
        }))
        .await;
        for c in opened {
            open.push(c?);
        }
    }
    let warm_body = send_body(0);
    let mut warmed = Vec::with_capacity(conversations);
    for chunk in open.chunks_mut(64) {
        let results =
            futures_util::future::join_all(chunk.iter_mut().map(|c| c.message(&warm_body))).await;
        warmed.extend(results);
    }
    if let Some(Err(_)) = warmed.iter().find(|r| r.is_err()) {
        return Err("warm-up message failed".into());
    }
    let started = Instant::now();
    let tasks: Vec<_> = open
        .into_iter()
        .enumerate()
        .map(|(k, mut c)| {
            tokio::spawn(async move {
                let mut timings = Vec::with_capacity(per);
                let mut failures: BTreeMap<String, usize> = BTreeMap::new();
                for i in 0..per {
                    match c.message(&send_body(1 + k * per + i)).await {
                        Ok(t) => timings.push(t),
                        Err(f) => {
                            let key = match f {
                                Failure::Status(s) => format!("status {s}"),
                                Failure::NoOneTimeKey => "?".into(),
                                Failure::Error(e) => e.chars().take(60).collect(),
                            };
                            *failures.entry(key).or_default() += 1;
                            // A broken socket ends the conversation.
                            break;
                        }
                    }
                }
                (timings, failures)
            })
        })
        .collect();
    let mut out = FlowOutcome {
        conversations,
        messages: conversations * per,
        elapsed: Duration::ZERO,
        delivery: vec![],
        cycle: vec![],
        failures: BTreeMap::new(),
    };
    for t in tasks {
        match t.await {
            Ok((timings, failures)) => {
                for (d, c) in timings {
                    out.delivery.push(d);
                    out.cycle.push(c);
                }
                for (k, v) in failures {
                    *out.failures.entry(k).or_default() += v;
                }
            }
            Err(e) => *out.failures.entry(format!("task: {e}")).or_default() += 1,
        }
    }
    out.elapsed = started.elapsed();
    out.delivery.sort_unstable();
    out.cycle.sort_unstable();
    Ok(out)
}

/// The raw store cycle of the same messages: `conversations` tasks, each on its recipient's queue, `per` times
/// insert one envelope of the end-to-end size, read the queue, delete it by guid.
pub async fn raw_store(
    m: &MessageMaterial,
    store: Arc<dyn Store>,
    conversations: usize,
    per: usize,
) -> Outcome {
    let recipients: Arc<Vec<flatline_core::ids::Aci>> = Arc::new(
        m.pairs[..conversations]
            .iter()
            .map(|(_, r)| r.aci)
            .collect(),
    );
    // The stored envelope of an end-to-end message: 1 KiB content plus ids, guid and timestamps.
    let envelope_bytes = CONTENT_BYTES + 150;
    let total = conversations * per;
    drive(total, conversations, move |i| {
        let (store, recipients) = (store.clone(), recipients.clone());
        async move {
            let aci = recipients[i % recipients.len()];
            let guid = MessageGuid(uuid::Uuid::new_v4());
            let now = SystemClock.now();
            let message = NewMessage {
                aci,
                device: DeviceId::PRIMARY,
                guid,
                envelope: vec![7; envelope_bytes],
                server_timestamp: now,
                expires_at: Timestamp(now.0 + 86_400_000),
                story: false,
                source: None,
                gated: false,
                shared: None,
            };
            let err = |e: flatline_core::store::StoreError| Failure::Error(e.to_string());
            match store
                .insert_messages(&[message], u64::MAX)
                .await
                .map_err(err)?
            {
                InsertOutcome::Stored => {}
                other => return Err(Failure::Error(format!("insert: {other:?}"))),
            }
            let page = store
                .read_messages(aci, DeviceId::PRIMARY, MessageCursor::START, 100)
                .await
                .map_err(err)?;
            if page.is_empty() {
                return Err(Failure::Error("read: empty queue".into()));
            }
            store
                .delete_message(aci, DeviceId::PRIMARY, guid)
                .await
                .map_err(err)?
                .ok_or_else(|| Failure::Error("delete: not found".into()))?;
            Ok(())
        }
    })
    .await
}

/// VmRSS of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Idle sockets: RSS of `pid` before, with all of them open (each authenticated and past its `queue/empty`), and
/// the sockets per second of opening them (64 at a time).
pub struct IdleOutcome {
    pub sockets: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub connect_per_second: f64,
}

pub async fn idle_sockets(m: &MessageMaterial, port: u16, pid: u32) -> Result<IdleOutcome, String> {
    let rss_before_kib = rss_kib(pid).ok_or("no RSS")?;
    let started = Instant::now();
    let mut held: Vec<Ws> = Vec::with_capacity(m.idle.len());
    for chunk in m.idle.chunks(64) {
        let opened = futures_util::future::join_all(chunk.iter().map(|c| async move {
            let mut ws = connect(port, c).await?;
            until_queue_empty(&mut ws).await?;
            Ok::<Ws, String>(ws)
        }))
        .await;
        for ws in opened {
            held.push(ws?);
        }
    }
    let connect_per_second = held.len() as f64 / started.elapsed().as_secs_f64();
    // The server's tasks park once every socket has had its queue/empty; give the allocator a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after_kib = rss_kib(pid).ok_or("no RSS")?;
    let sockets = held.len();
    drop(held);
    Ok(IdleOutcome {
        sockets,
        rss_before_kib,
        rss_after_kib,
        connect_per_second,
    })
}

/// A connect storm: `count` accounts' authenticated sockets opened all at once (as after a server restart, when
/// every client reconnects), each until its `queue/empty`.
pub struct StormOutcome {
    pub sockets: usize,
    /// From the first connect to the last `queue/empty`.
    pub elapsed: Duration,
    /// Sorted, microseconds: connect to `queue/empty` of each socket that made it.
    pub latency: Vec<u64>,
    pub failures: BTreeMap<String, usize>,
}

pub async fn connect_storm(m: &MessageMaterial, port: u16, count: usize) -> StormOutcome {
    let started = Instant::now();
    let results = futures_util::future::join_all(m.idle.iter().take(count).map(|c| async move {
        let t = Instant::now();
        let mut ws = tokio::time::timeout(Duration::from_secs(30), async {
            let mut ws = connect(port, c).await?;
            until_queue_empty(&mut ws).await?;
            Ok::<Ws, String>(ws)
        })
        .await
        .map_err(|_| "no queue/empty within 30 s".to_owned())??;
        let micros = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
        let _ = ws.close(None).await;
        Ok::<u64, String>(micros)
    }))
    .await;
    let elapsed = started.elapsed();
    let mut latency = vec![];
    let mut failures = BTreeMap::new();
    for r in results {
        match r {
            Ok(us) => latency.push(us),
            Err(e) => *failures.entry(e).or_insert(0) += 1,
        }
    }
    latency.sort_unstable();
    StormOutcome {
        sockets: latency.len(),
        elapsed,
        latency,
        failures,
    }
}
