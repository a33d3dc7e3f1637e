//! Message queues at the store and service level, no HTTP: the raw store cycle of one message (insert one 1 KiB
//! envelope, read the queue from its start, delete it by guid: what delivery costs the database), and
//! `MessageService::send` of one identified 1 KiB message followed by its acknowledgement (access decision,
//! three limiter permits, the device check, building the envelope, the insert, then delete plus the delivery
//! receipt). On the in-memory store, SQLite (a file, WAL) and, when `TEST_POSTGRES_URL` is set, PostgreSQL.
//!
//! `multi_recipient_fan_out`: one SSv2 multi-recipient story to 1000 recipients with 2 devices each (2 KiB shared part):
//! `MessageService::send_multi_recipient` — parse, recipient checks, the device check against every account, 2000
//! envelopes built without copying the shared part, one all-or-nothing insert that stores the shared part once —
//! next to the raw `insert_messages` of the same 2000 envelopes whole, in one batch.
//!
//! Run with `cargo bench -p flatline-server --bench messages`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use flatline_core::auth::AuthenticatedDevice;
use flatline_core::ids::{Aci, DeviceId, ServiceId};
use flatline_core::messages::service::{
    MessageService, MessagesConfig, MultiRecipientAuth, MultiRecipientRequest, NoNotifier,
    SendCredentials, SendRequest,
};
use flatline_core::messages::store::{InsertOutcome, MessageCursor, NewMessage};
use flatline_core::messages::{EnvelopeType, IncomingMessage, MessageGuid};
use flatline_core::ratelimit::{BucketConfig, Limiter, Limits, RateLimiters};
use flatline_core::store::Store;
use flatline_core::time::Timestamp;
use flatline_server::store::postgres::{PgStore, PoolSettings};
use flatline_server::store::sqlite::SqliteStore;
use flatline_testkit::{MemoryStore, MockClock, SeededRng, SimClient};
use tokio::runtime::Runtime;

const T0: Timestamp = Timestamp(1_700_000_000_000);
const ENVELOPE_BYTES: usize = 1024;

/// Total time of `iters` raw cycles: insert, read from the start, delete by guid.
async fn raw_cycles(store: &dyn Store, aci: Aci, iters: u64) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        let guid = MessageGuid(uuid::Uuid::from_u64_pair(i, 7));
        let m = NewMessage {
            aci,
            device: DeviceId::PRIMARY,
            guid,
            envelope: vec![1; ENVELOPE_BYTES],
            server_timestamp: T0,
            expires_at: Timestamp(T0.0 + 86_400_000),
            story: false,
            source: None,
            gated: false,
            shared: None,
        };
        let stored = store.insert_messages(&[m], u64::MAX).await.expect("insert");
        assert_eq!(stored, InsertOutcome::Stored);
        let page = store
            .read_messages(aci, DeviceId::PRIMARY, MessageCursor::START, 100)
            .await
            .expect("read");
        assert_eq!(page.len(), 1);
        assert!(
            store
                .delete_message(aci, DeviceId::PRIMARY, guid)
                .await
                .expect("delete")
                .is_some()
        );
    }
    start.elapsed()
}

struct Service {
    service: MessageService,
    sender: SendCredentials<'static>,
    bob: Aci,
}

impl Service {
    async fn new(store: Arc<dyn Store>) -> Self {
        let rng = Arc::new(SeededRng::new(7));
        let clock = Arc::new(MockClock::at(T0));
        let alice = SimClient::new(rng.as_ref());
        let bob = SimClient::new(rng.as_ref());
        let alice_new = alice.new_account("alice@example.org", rng.as_ref(), T0);
        let account = alice_new.account.clone();
        store.create_account(alice_new).await.expect("alice");
        store
            .create_account(bob.new_account("bob@example.org", rng.as_ref(), T0))
            .await
            .expect("bob");
        // The permits are still taken from the store on every send (part of the cost), but never refused.
        let mut limits = Limits::default();
        for l in [Limiter::Messages, Limiter::InboundMessageBytes] {
            limits.set(l, BucketConfig::new(u32::MAX, Duration::from_millis(1)));
        }
        let limiters = RateLimiters::new(store.clone(), clock.clone(), limits);
        Service {
            service: MessageService::new(
                store,
                clock,
                rng,
                limiters,
                Arc::new(NoNotifier),
                MessagesConfig::default(),
            ),
            sender: SendCredentials::Device(Box::new(AuthenticatedDevice {
                account,
                device_id: DeviceId::PRIMARY,
            })),
            bob: bob.aci,
        }
    }

    /// Total time of `iters` sends of one message to Bob's single device, each acknowledged.
    async fn cycles(&self, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            let request = SendRequest {
                destination: ServiceId::Aci(self.bob),
                messages: vec![IncomingMessage {
                    r#type: EnvelopeType::Ciphertext,
                    device: DeviceId::PRIMARY,
                    registration_id: 11,
                    content: vec![2; ENVELOPE_BYTES],
                }],
                timestamp: 1,
                online: false,
                urgent: true,
                story: false,
            };
            let outcome = self
                .service
                .send(&self.sender, request)
                .await
                .expect("send");
            assert_eq!(outcome.stored.len(), 1);
            let page = self
                .service
                .read(self.bob, DeviceId::PRIMARY, MessageCursor::START, 100)
                .await
                .expect("read");
            let guid = page.first().expect("queued").guid;
            assert!(
                self.service
                    .acknowledge(self.bob, DeviceId::PRIMARY, guid)
                    .await
                    .expect("ack")
            );
        }
        start.elapsed()
    }
}

const RECIPIENTS: usize = 1000;
const DEVICES: u8 = 2;
const SHARED_BYTES: usize = 2048;

/// Accounts with two devices each, and the SSv2 0x22 SentMessage addressing all of them.
async fn fan_out_setup(store: &Arc<dyn Store>) -> (Vec<u8>, Vec<(Aci, u16)>) {
    let rng = SeededRng::new(11);
    let mut body = vec![0x22];
    let mut n = RECIPIENTS as u64;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            body.push(b);
            break;
        }
        body.push(b | 0x80);
    }
    let mut recipients = vec![];
    for i in 0..RECIPIENTS {
        let client = SimClient::new(&rng);
        let mut new = client.new_account(&format!("r{i}@example.org"), &rng, T0);
        let mut second = new.account.devices[0].clone();
        second.id = DeviceId::new(2).expect("device 2");
        new.account.devices.push(second);
        let reg = new.account.devices[0].settings.registration_id;
        let aci = new.account.aci;
        store.create_account(new).await.expect("recipient");
        body.extend_from_slice(aci.as_bytes());
        for d in 1..=DEVICES {
            body.push(d);
            let more = if d < DEVICES { 0x8000 } else { 0 };
            body.extend_from_slice(&(reg | more).to_be_bytes());
        }
        body.extend_from_slice(&[i as u8; 48]);
        recipients.push((aci, reg));
    }
    body.extend_from_slice(&[0x33; SHARED_BYTES]);
    (body, recipients)
}

/// Total time of `iters` multi-recipient sends of `body`.
async fn fan_out_sends(service: &MessageService, body: &[u8], iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let outcome = service
            .send_multi_recipient(
                MultiRecipientAuth::Story,
                MultiRecipientRequest {
                    body,
                    timestamp: 1,
                    online: false,
                    urgent: true,
                    story: true,
                },
            )
            .await
            .expect("multi-recipient send");
        assert_eq!(outcome.stored.len(), RECIPIENTS * usize::from(DEVICES));
    }
    start.elapsed()
}

/// Total time of `iters` raw inserts of the same envelopes whole (2000 per batch, each as large as delivered).
async fn fan_out_raw(store: &dyn Store, recipients: &[(Aci, u16)], iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for i in 0..iters {
        let batch: Vec<NewMessage> = recipients
            .iter()
            .flat_map(|(aci, _)| (1..=DEVICES).map(move |d| (*aci, d)))
            .enumerate()
            .map(|(j, (aci, d))| NewMessage {
                aci,
                device: DeviceId::new(d).expect("device"),
                guid: MessageGuid(uuid::Uuid::from_u64_pair(i, j as u64)),
                envelope: vec![3; SHARED_BYTES + 49 + 120],
                server_timestamp: T0,
                expires_at: Timestamp(T0.0 + 86_400_000),
                story: true,
                source: None,
                gated: false,
                shared: None,
            })
            .collect();
        let start = Instant::now();
        assert_eq!(
            store
                .insert_messages(&batch, u64::MAX)
                .await
                .expect("insert"),
            InsertOutcome::Stored
        );
        total += start.elapsed();
    }
    total
}

async fn stores() -> Vec<(&'static str, Arc<dyn Store>, Option<tempfile::TempDir>)> {
    let mut out: Vec<(&'static str, Arc<dyn Store>, Option<tempfile::TempDir>)> =
        vec![("memory", Arc::new(MemoryStore::new()), None)];
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let sqlite = SqliteStore::open(&url, 4, 10_000).await.expect("SQLite");
    sqlite.migrate().await.expect("migrate");
    out.push(("sqlite", Arc::new(sqlite), Some(dir)));
    if let Some(url) = std::env::var("TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        // A schema of its own, dropped by the next run's `DROP SCHEMA … CASCADE` at the start.
        let schema = "flatline_bench_messages";
        let admin = PgStore::open(&url, &PoolSettings::default())
            .await
            .expect("PostgreSQL");
        for sql in [
            format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
            format!("CREATE SCHEMA {schema}"),
        ] {
            sqlx::query(&sql).execute(admin.pool()).await.expect(&sql);
        }
        let options: sqlx::postgres::PgConnectOptions = url.parse().expect("URL");
        let pg = PgStore::connect_with(
            options.options([("search_path", schema)]),
            &PoolSettings::default(),
        )
        .await
        .expect("PostgreSQL");
        pg.migrate().await.expect("migrate");
        out.push(("postgres", Arc::new(pg), None));
    }
    out
}

fn messages(c: &mut Criterion) {
    let rt = Runtime::new().expect("tokio runtime");
    let all = rt.block_on(stores());
    let mut raw = c.benchmark_group("message_raw_cycle");
    for (name, store, _) in &all {
        let aci = Aci(uuid::Uuid::from_u64_pair(1, 1));
        raw.bench_function(*name, |b| {
            b.iter_custom(|iters| rt.block_on(raw_cycles(store.as_ref(), aci, iters)))
        });
    }
    raw.finish();
    let mut send = c.benchmark_group("message_send_and_ack");
    for (name, store, _) in &all {
        let service = rt.block_on(Service::new(store.clone()));
        send.bench_function(*name, |b| {
            b.iter_custom(|iters| rt.block_on(service.cycles(iters)))
        });
    }
    send.finish();
    let mut fan = c.benchmark_group("multi_recipient_fan_out");
    fan.sample_size(10);
    for (name, store, _) in &all {
        if *name == "memory" {
            continue;
        }
        let (body, recipients) = rt.block_on(fan_out_setup(store));
        let mut limits = Limits::default();
        limits.set(
            Limiter::Stories,
            BucketConfig::new(u32::MAX, Duration::from_millis(1)),
        );
        limits.set(
            Limiter::InboundMessageBytes,
            BucketConfig::new(u32::MAX, Duration::from_millis(1)),
        );
        let clock = Arc::new(MockClock::at(T0));
        let service = MessageService::new(
            store.clone(),
            clock.clone(),
            Arc::new(SeededRng::new(5)),
            RateLimiters::new(store.clone(), clock, limits),
            Arc::new(NoNotifier),
            MessagesConfig::default(),
        );
        fan.bench_function(format!("{name}/service"), |b| {
            b.iter_custom(|iters| rt.block_on(fan_out_sends(&service, &body, iters)))
        });
        fan.bench_function(format!("{name}/raw_insert"), |b| {
            b.iter_custom(|iters| rt.block_on(fan_out_raw(store.as_ref(), &recipients, iters)))
        });
    }
    fan.finish();
}

criterion_group!(benches, messages);
criterion_main!(benches);
