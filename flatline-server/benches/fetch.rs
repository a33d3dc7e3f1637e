//! Prekey bundle fetch at the store level: `KeyService::fetch` of one device by an authenticated device, on
//! the in-memory store and on the SQLite store (a file in a temporary directory, WAL, as the server runs it).
//! A fetch reads the target account, takes a rate-limit permit (a write), checks contact gating, reads the
//! signed prekey and takes one one-time EC and one one-time Kyber key (a write). No HTTP, no JSON.
//!
//! Run with `cargo bench -p flatline-server --bench fetch`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use flatline_core::auth::AuthenticatedDevice;
use flatline_core::ids::{DeviceId, IdentityType, ServiceId};
use flatline_core::keys::{DeviceSelector, KeyService, KeyUpload, Requester};
use flatline_core::ratelimit::{BucketConfig, Limiter, Limits, RateLimiters};
use flatline_core::store::Store;
use flatline_core::time::Timestamp;
use flatline_server::store::sqlite::SqliteStore;
use flatline_testkit::{MemoryStore, MockClock, SeededRng, SimClient};
use tokio::runtime::Runtime;

/// One-time keys of each kind stored per refill; a fetch takes one of each.
const KEYS_PER_REFILL: u32 = 500;

/// A store with two accounts, Alice fetching Bob's keys, and Bob's refill upload built once.
struct Fixture {
    keys: KeyService,
    store: Arc<dyn Store>,
    requester: Requester,
    target: ServiceId,
    refill: KeyUpload,
}

impl Fixture {
    async fn new(store: Arc<dyn Store>) -> Self {
        let rng = SeededRng::new(7);
        let clock = Arc::new(MockClock::at(Timestamp(1_700_000_000_000)));
        let alice = SimClient::new(&rng);
        let bob = SimClient::new(&rng);
        let alice_new = alice.new_account("alice@example.org", &rng, Timestamp(1_700_000_000_000));
        let account = alice_new.account.clone();
        store.create_account(alice_new).await.expect("create alice");
        store
            .create_account(bob.new_account("bob@example.org", &rng, Timestamp(1_700_000_000_000)))
            .await
            .expect("create bob");
        // The fetch limiter still takes its permit from the store on every call (that write is part of the
        // cost being measured), but the bucket is large enough never to refuse during a run.
        let mut limits = Limits::default();
        limits.set(
            Limiter::PreKeys,
            BucketConfig::new(u32::MAX, Duration::from_millis(1)),
        );
        let limiters = RateLimiters::new(store.clone(), clock, limits);
        let refill = KeyUpload {
            ec: Some(
                (0..KEYS_PER_REFILL)
                    .map(|i| bob.one_time_ec(i, &rng))
                    .collect(),
            ),
            kem: Some(
                (0..KEYS_PER_REFILL)
                    .map(|i| bob.kem(IdentityType::Aci, i, &rng))
                    .collect(),
            ),
            ..Default::default()
        };
        Fixture {
            keys: KeyService::new(store.clone(), limiters),
            store,
            requester: Requester::Device(Box::new(AuthenticatedDevice {
                account,
                device_id: DeviceId::PRIMARY,
            })),
            target: ServiceId::Aci(bob.aci),
            refill,
        }
    }

    async fn refill(&self) {
        self.store
            .store_keys(self.target, DeviceId::PRIMARY, &self.refill)
            .await
            .expect("store keys");
    }

    /// Total time of `iters` fetches, each of which must hand out a one-time EC key. Refills happen outside
    /// the timed region, so every measured fetch takes keys rather than falling back to the last-resort key.
    async fn time_fetches(&self, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        let mut left = 0;
        for _ in 0..iters {
            if left == 0 {
                self.refill().await;
                left = KEYS_PER_REFILL;
            }
            let start = Instant::now();
            let bundle = self
                .keys
                .fetch(
                    &self.requester,
                    self.target,
                    DeviceSelector::One(DeviceId::PRIMARY),
                )
                .await;
            total += start.elapsed();
            let has_one_time = bundle
                .as_ref()
                .is_ok_and(|b| b.devices.first().is_some_and(|d| d.one_time.is_some()));
            assert!(
                has_one_time,
                "fetch must hand out a one-time key: {bundle:?}"
            );
            left -= 1;
        }
        total
    }
}

fn fetch(c: &mut Criterion) {
    let rt = Runtime::new().expect("tokio runtime");
    let mut g = c.benchmark_group("fetch_one_device");

    let memory = rt.block_on(Fixture::new(Arc::new(MemoryStore::new())));
    g.bench_function("memory", |b| {
        b.iter_custom(|iters| rt.block_on(memory.time_fetches(iters)))
    });

    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let sqlite = rt.block_on(async {
        let store = SqliteStore::open(&url, 4, 10_000)
            .await
            .expect("open SQLite");
        store.migrate().await.expect("migrate");
        Fixture::new(Arc::new(store)).await
    });
    g.bench_function("sqlite", |b| {
        b.iter_custom(|iters| rt.block_on(sqlite.time_fetches(iters)))
    });
    g.finish();
}

criterion_group!(benches, fetch);
criterion_main!(benches);
