//! Load benchmark: real `flatline-server` processes driven over HTTP on 127.0.0.1.
//!
//! `cargo bench -p flatline-server --bench load` runs, per scenario (SQLite × 1 process, PostgreSQL × 1,
//! PostgreSQL × 3 on one database), on a fresh database:
//!
//! - **fetch**: authenticated `GET /v2/keys/{aci}/*` by `LOAD_CONCURRENCY` clients against seeded accounts that
//!   hold enough one-time keys for every request (each answer must carry a one-time EC key);
//! - **register**: the whole OIDC registration (verification session with PAR → fake IdP approval → `PATCH` with
//!   the code → `POST /v1/registration`), with each step on a different process when there are several;
//! - **service fetch**: `Authenticator::authenticate` + `KeyService::fetch` called in this process on the same
//!   store type (what a fetch costs without HTTP, to show where the time goes);
//! - **raw take**: `KeyStore::take_one_time_keys` called directly on the store, the one transaction a fetch cannot
//!   avoid. The ratio HTTP fetch / raw take is the headline number (goal ≥ 0.5).
//!
//! With `LOAD_WORKLOADS` naming `messages` and `idle` (see `load/message_flow.rs`), also the message path:
//! end-to-end messages per second and latency at 1, 100 and 1000 concurrent conversations over chat sockets,
//! next to the raw store cycle of the same messages, and the server's RSS with 10 000 idle authenticated
//! sockets: `LOAD_WORKLOADS=messages,idle LOAD_SCENARIOS=sqlite1,pg1 cargo bench -p flatline-server --bench load`.
//!
//! `cargo bench -p flatline-server --bench load -- <word>…` picks workloads (`fetch`, `register`, `idle`, `storm`,
//! `messages`, `all`) and scenarios (`sqlite1`, `pg1`, `pg3`) on the command line; a table of the performance goals
//! with what this run measured closes the output. `-- smoke` runs every workload on every scenario with tiny sizes
//! and fails on any failed operation: CI runs it (`--profile dev`), for the code paths, never for the numbers.
//!
//! Rate limits are raised in the servers' configuration so the run measures work, not 429s; any non-2xx answer
//! is counted and printed. Everything is configured by `LOAD_*` environment variables (see [`Settings`]); never
//! `FLATLINE_*`, which the server binary would read as its own configuration. Without `--bench` (as under
//! `cargo test --benches`) the binary does nothing, so a test run never starts a load run by accident.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flatline_core::auth::Authenticator;
use flatline_core::credentials::DeviceCredentials;
use flatline_core::ids::{DeviceId, IdentityType, ServiceId};
use flatline_core::keys::{DeviceSelector, KeyService, KeyUpload, Requester};
use flatline_core::ratelimit::{BucketConfig, Limiter, Limits, RateLimiters};
use flatline_core::store::Store;
use flatline_core::time::Clock;
use flatline_server::config::DatabaseConfig;
use flatline_server::system::{OsRandom, SystemClock};
use flatline_testkit::fake_idp::{CLIENT_SECRET, FakeIdp, ServerProcessConfig};
use flatline_testkit::remote::{Callback, Remote};
use flatline_testkit::{SimClient, UsernameForm};
use tokio::process::{Child, Command};

#[path = "load/message_flow.rs"]
mod message_flow;

const REDIRECT: &str = "flatline://oidc/callback";

/// Knobs, each from an environment variable.
#[derive(Debug, Clone)]
struct Settings {
    /// `LOAD_SCENARIOS`: comma-separated `sqlite1`, `pg1`, `pg3` (any `sqliteN`/`pgN`, though SQLite is for one
    /// process).
    scenarios: Vec<Scenario>,
    /// `LOAD_FETCHES`: measured bundle fetches per scenario (and as many service fetches and raw takes).
    fetches: usize,
    /// `LOAD_CONCURRENCY`: concurrent clients for fetches, service fetches and raw takes.
    concurrency: usize,
    /// `LOAD_ROUNDS`: the fetch, service-fetch and raw-take measurements are split into this many interleaved
    /// rounds.
    rounds: usize,
    /// `LOAD_BREAKDOWN` (default 1; 0 turns it off): also time each store call of a fetch alone.
    breakdown: bool,
    /// `LOAD_REGISTRATIONS`: measured registrations per scenario.
    registrations: usize,
    /// `LOAD_REG_CONCURRENCY`: concurrent registrations.
    reg_concurrency: usize,
    /// `LOAD_TARGETS`: accounts whose bundles are fetched (keys are spread over them).
    targets: usize,
    /// `LOAD_DB_CONNECTIONS`: `database.max_connections` of every server process and of the in-process stores.
    db_connections: u32,
    /// `LOAD_THREADS`: tokio worker threads of this load generator.
    threads: usize,
    /// `LOAD_WORKLOADS`: comma-separated `fetch` (bundle fetches, service fetches, raw takes, breakdown),
    /// `register`, `messages` (end-to-end over chat sockets and the raw store cycle), `idle` (RSS with idle
    /// sockets). Default `fetch,register`.
    workloads: Vec<String>,
    /// `LOAD_CONVERSATIONS`: comma-separated concurrent conversations of the `messages` workload (1,100,1000).
    conversations: Vec<usize>,
    /// `LOAD_MESSAGES`: measured messages per conversation level (1000; at least two per conversation).
    messages: usize,
    /// `LOAD_IDLE_SOCKETS`: authenticated sockets held idle by the `idle` workload (10000).
    idle_sockets: usize,
    /// `LOAD_STORM`: sockets of the `storm` workload, reconnecting at once after a restart of the server (1000).
    storm: usize,
    /// `smoke` on the command line: every workload with tiny sizes, failing on any failed operation (CI runs it
    /// in the debug build; its numbers mean nothing).
    smoke: bool,
    /// `TEST_POSTGRES_URL`: the PostgreSQL server; each PostgreSQL scenario creates (and drops) a database there.
    postgres: String,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("{name}={v} is not valid; using the default");
            default
        }),
        Err(_) => default,
    }
}

impl Settings {
    fn from_env() -> Settings {
        let scenarios =
            std::env::var("LOAD_SCENARIOS").unwrap_or_else(|_| "sqlite1,pg1,pg3".into());
        Settings {
            scenarios: scenarios
                .split(',')
                .filter_map(|s| {
                    let parsed = Scenario::parse(s.trim());
                    if parsed.is_none() {
                        eprintln!("unknown scenario `{s}` skipped (use sqliteN or pgN)");
                    }
                    parsed
                })
                .collect(),
            fetches: env_or("LOAD_FETCHES", 20_000),
            concurrency: env_or("LOAD_CONCURRENCY", 32usize).max(1),
            rounds: env_or("LOAD_ROUNDS", 4usize).max(1),
            breakdown: env_or("LOAD_BREAKDOWN", 1u8) != 0,
            registrations: env_or("LOAD_REGISTRATIONS", 600),
            reg_concurrency: env_or("LOAD_REG_CONCURRENCY", 16usize).max(1),
            targets: env_or("LOAD_TARGETS", 100usize).max(1),
            db_connections: env_or("LOAD_DB_CONNECTIONS", 8u32).max(1),
            threads: env_or("LOAD_THREADS", 2usize).max(1),
            workloads: std::env::var("LOAD_WORKLOADS")
                .unwrap_or_else(|_| "fetch,register".into())
                .split(',')
                .map(|w| w.trim().to_owned())
                .filter(|w| !w.is_empty())
                .collect(),
            conversations: std::env::var("LOAD_CONVERSATIONS")
                .unwrap_or_else(|_| "1,100,1000".into())
                .split(',')
                .filter_map(|c| c.trim().parse().ok())
                .filter(|c: &usize| *c > 0)
                .collect(),
            messages: env_or("LOAD_MESSAGES", 1000usize).max(1),
            idle_sockets: env_or("LOAD_IDLE_SOCKETS", 10_000usize),
            storm: env_or("LOAD_STORM", 1000usize),
            smoke: false,
            postgres: std::env::var("TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        }
    }

    /// Applies the command line (`cargo bench -p flatline-server --bench load -- <word>…`): each word a workload
    /// (`fetch`, `register`, `messages`, `idle`, `storm`, or `all`), a scenario (`sqlite1`, `pg1`, `pg3`, …), or
    /// `smoke`. Words replace the `LOAD_WORKLOADS` / `LOAD_SCENARIOS` defaults.
    fn apply_args(&mut self, words: &[String]) -> Result<(), String> {
        let (mut workloads, mut scenarios) = (vec![], vec![]);
        for w in words {
            match w.as_str() {
                "smoke" => self.smoke = true,
                "all" => workloads.extend(WORKLOADS.iter().map(|w| (*w).to_owned())),
                w if WORKLOADS.contains(&w) => workloads.push(w.to_owned()),
                w => scenarios.push(Scenario::parse(w).ok_or_else(|| {
                    format!(
                        "`{w}` is neither a workload ({}, all), a scenario (sqliteN, pgN) nor `smoke`",
                        WORKLOADS.join(", ")
                    )
                })?),
            }
        }
        if self.smoke {
            // Tiny sizes: every code path of the benchmark runs once or a few times, in well under a minute.
            self.fetches = 64;
            self.concurrency = 4;
            self.rounds = 1;
            self.registrations = 8;
            self.reg_concurrency = 2;
            self.targets = 4;
            self.conversations = vec![1, 4];
            self.messages = 8;
            self.idle_sockets = 16;
            self.storm = 16;
            self.workloads = WORKLOADS.iter().map(|w| (*w).to_owned()).collect();
            self.scenarios = ["sqlite1", "pg1", "pg3"]
                .iter()
                .filter_map(|s| Scenario::parse(s))
                .collect();
        }
        if !workloads.is_empty() {
            self.workloads = workloads;
        }
        if !scenarios.is_empty() {
            self.scenarios = scenarios;
        }
        Ok(())
    }

    fn has(&self, workload: &str) -> bool {
        self.workloads.iter().any(|w| w == workload)
    }

    /// Requests run before each measurement and not counted: connections, statement caches, first bucket rows.
    fn warmup(&self) -> usize {
        (self.concurrency * 8).min(self.fetches.max(1))
    }

    /// One-time keys each target needs so that none of `workloads` workloads (each a warm-up plus `rounds` runs,
    /// every run spreading its requests round-robin over the targets) gets an answer without a one-time key. A run
    /// can put one request more than the average on a target, hence the margin.
    fn keys_per_target(&self, workloads: usize) -> u32 {
        let needed = workloads * (self.fetches + self.warmup());
        let margin = workloads * (self.rounds + 1) + 1;
        u32::try_from(needed.div_ceil(self.targets) + margin).unwrap_or(u32::MAX)
    }
}

/// Every workload, in the order they run.
const WORKLOADS: [&str; 5] = ["fetch", "register", "idle", "storm", "messages"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy)]
struct Scenario {
    backend: Backend,
    processes: usize,
}

impl Scenario {
    fn parse(s: &str) -> Option<Scenario> {
        let (backend, n) = if let Some(n) = s.strip_prefix("sqlite") {
            (Backend::Sqlite, n)
        } else {
            (Backend::Postgres, s.strip_prefix("pg")?)
        };
        let processes: usize = n.parse().ok()?;
        (processes >= 1).then_some(Scenario { backend, processes })
    }

    fn label(&self) -> String {
        let db = match self.backend {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        };
        let unit = if self.processes == 1 {
            "process"
        } else {
            "processes"
        };
        format!("{db} × {} {unit}", self.processes)
    }
}

/// Accounts and key material, generated once and seeded into every scenario's fresh database.
struct Material {
    /// Fetched over HTTP.
    targets: Vec<(SimClient, KeyUpload)>,
    /// Fetched in-process (service fetch) and taken from directly (raw take); twice the stock of `targets`.
    direct: Vec<(SimClient, KeyUpload)>,
    /// The fetching accounts, one per concurrent client.
    callers: Vec<SimClient>,
}

impl Material {
    /// The identities of the in-process targets.
    fn direct_targets(&self) -> Arc<Vec<ServiceId>> {
        Arc::new(
            self.direct
                .iter()
                .map(|(c, _)| ServiceId::Aci(c.aci))
                .collect(),
        )
    }
}

fn account_with_keys(keys: u32) -> (SimClient, KeyUpload) {
    let client = SimClient::new(&OsRandom);
    let upload = KeyUpload {
        ec: Some(
            (0..keys)
                .map(|i| client.one_time_ec(i, &OsRandom))
                .collect(),
        ),
        kem: Some(
            (0..keys)
                .map(|i| client.kem(IdentityType::Aci, i, &OsRandom))
                .collect(),
        ),
        ..KeyUpload::default()
    };
    (client, upload)
}

impl Material {
    fn generate(s: &Settings) -> Material {
        if !s.has("fetch") {
            return Material {
                targets: vec![],
                direct: vec![],
                callers: vec![],
            };
        }
        let http = s.keys_per_target(1);
        let direct = s.keys_per_target(2);
        Material {
            targets: (0..s.targets).map(|_| account_with_keys(http)).collect(),
            direct: (0..s.targets).map(|_| account_with_keys(direct)).collect(),
            callers: (0..s.concurrency)
                .map(|_| SimClient::new(&OsRandom))
                .collect(),
        }
    }

    async fn seed(&self, store: &dyn Store) -> Result<(), String> {
        let now = SystemClock.now();
        let all = self
            .targets
            .iter()
            .chain(&self.direct)
            .map(|(c, u)| (c, Some(u)))
            .chain(self.callers.iter().map(|c| (c, None)));
        for (i, (client, upload)) in all.enumerate() {
            store
                .create_account(client.new_account(&format!("load{i}@example.org"), &OsRandom, now))
                .await
                .map_err(|e| format!("seed account: {e}"))?;
            if let Some(upload) = upload {
                store
                    .store_keys(ServiceId::Aci(client.aci), DeviceId::PRIMARY, upload)
                    .await
                    .map_err(|e| format!("seed keys: {e}"))?;
            }
        }
        Ok(())
    }
}

/// Why one operation did not count as a success.
enum Failure {
    /// A non-2xx HTTP answer.
    Status(u16),
    /// A 200 without a one-time key (the seeded stock ran out: the measurement would be of a cheaper path).
    NoOneTimeKey,
    /// Transport or other error.
    Error(String),
}

/// One measured run.
struct Outcome {
    ops: usize,
    elapsed: Duration,
    /// Latencies of successful operations, sorted, in microseconds.
    latencies: Vec<u64>,
    failures: BTreeMap<String, usize>,
}

impl Outcome {
    fn empty() -> Outcome {
        Outcome {
            ops: 0,
            elapsed: Duration::ZERO,
            latencies: vec![],
            failures: BTreeMap::new(),
        }
    }

    /// Adds another run of the same workload (throughput is then over the summed running time).
    fn merge(&mut self, other: Outcome) {
        self.ops += other.ops;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
        self.latencies.sort_unstable();
        for (k, n) in other.failures {
            *self.failures.entry(k).or_default() += n;
        }
    }

    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1] as f64 / 1000.0
    }

    fn failed(&self) -> usize {
        self.failures.values().sum()
    }

    fn failure_text(&self) -> String {
        if self.failures.is_empty() {
            return "0".into();
        }
        let parts: Vec<String> = self
            .failures
            .iter()
            .map(|(k, n)| format!("{n}× {k}"))
            .collect();
        format!("{} ({})", self.failed(), parts.join(", "))
    }
}

/// Runs `op(0..n)` on `concurrency` tasks pulling indices from one counter; times each call.
async fn drive<F, Fut>(n: usize, concurrency: usize, op: F) -> Outcome
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Failure>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency.min(n.max(1)))
        .map(|_| {
            let (op, next) = (op.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures: BTreeMap<String, usize> = BTreeMap::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let t = Instant::now();
                    match op(i).await {
                        Ok(()) => latencies.push(t.elapsed().as_micros() as u64),
                        Err(f) => {
                            let key = match f {
                                Failure::Status(s) => format!("HTTP {s}"),
                                Failure::NoOneTimeKey => "no one-time key".into(),
                                // Error texts carry ids; the first 60 characters group them well enough.
                                Failure::Error(e) => e.chars().take(60).collect(),
                            };
                            *failures.entry(key).or_default() += 1;
                        }
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(n);
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for t in tasks {
        match t.await {
            Ok((l, f)) => {
                latencies.extend(l);
                for (k, v) in f {
                    *failures.entry(k).or_default() += v;
                }
            }
            Err(e) => *failures.entry(format!("task: {e}")).or_default() += 1,
        }
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    Outcome {
        ops: n,
        elapsed,
        latencies,
        failures,
    }
}

/// The servers of one scenario.
struct Cluster {
    /// Configs, key files and logs (the scenario's temporary directory, which outlives the cluster: the SQLite
    /// database lives there too).
    dir: PathBuf,
    children: Vec<Child>,
    remotes: Vec<Remote>,
    /// The processes' ports, in order.
    ports: Vec<u16>,
    /// The fetch workload's client (keep-alive connections to every process).
    http: reqwest::Client,
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}

/// A server configuration for load: every rate limit raised out of the way, logs at `warn`, no invites, and
/// room for `sockets` chat sockets from 127.0.0.1.
fn config_text(
    dir: &Path,
    port: u16,
    db: &str,
    connections: u32,
    issuer: &str,
    sockets: usize,
) -> String {
    let mut text = ServerProcessConfig {
        dir,
        port,
        database_url: db,
        max_connections: connections,
        issuer,
        invites_required: false,
        redirect_uri: REDIRECT,
    }
    .to_toml();
    // `inboundMessageBytes` counts bytes: a million permits would stop the message workload after 1000 messages
    // (4 GB is about four million of its 1 KiB messages).
    text = text.replace(
        "[limits.inboundMessageBytes]\nbucket_size = 1000000\npermit_regeneration_seconds = 0.001\n",
        "[limits.inboundMessageBytes]\nbucket_size = 4000000000\npermit_regeneration_seconds = 0.001\n",
    );
    text.push_str(&format!(
        "[chat]\nmax_sockets_per_ip = {sockets}\nmax_sockets = {sockets}\nidle_timeout_seconds = 600\n"
    ));
    text
}

/// `LOAD_SERVER_BIN`, e.g. another build to compare against, or the `flatline-server` cargo built with this
/// benchmark.
fn server_binary() -> PathBuf {
    std::env::var_os("LOAD_SERVER_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_flatline-server")),
        PathBuf::from,
    )
}

/// Like [`healthy`], for at most 10 s.
async fn healthy_soon(remote: &Remote) -> bool {
    tokio::time::timeout(Duration::from_secs(10), healthy(remote))
        .await
        .unwrap_or(false)
}

async fn healthy(remote: &Remote) -> bool {
    for _ in 0..1200 {
        if remote
            .get("/healthz", None)
            .await
            .is_ok_and(|a| a.status == 200)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

impl Cluster {
    async fn start(
        processes: usize,
        db: &str,
        connections: u32,
        idp: &FakeIdp,
        dir: &Path,
        sockets: usize,
    ) -> Result<Cluster, String> {
        std::fs::write(dir.join("client.secret"), CLIENT_SECRET)
            .map_err(|e| format!("client secret: {e}"))?;
        let mut cluster = Cluster {
            dir: dir.to_owned(),
            children: vec![],
            remotes: vec![],
            ports: vec![],
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .map_err(|e| format!("HTTP client: {e}"))?,
        };
        for i in 0..processes {
            let port = free_port()?;
            let config = cluster.dir.join(format!("server{i}.toml"));
            std::fs::write(
                &config,
                config_text(&cluster.dir, port, db, connections, &idp.issuer(), sockets),
            )
            .map_err(|e| format!("config: {e}"))?;
            let child = cluster.spawn(i)?;
            cluster.children.push(child);
            cluster.ports.push(port);
            cluster
                .remotes
                .push(Remote::new(&format!("http://127.0.0.1:{port}"))?);
        }
        for (i, remote) in cluster.remotes.iter().enumerate() {
            if !healthy(remote).await {
                return Err(format!("server {i} did not start:\n{}", cluster.logs()));
            }
        }
        Ok(cluster)
    }

    /// Starts process `i` from its configuration file (written by [`Cluster::start`]), logging to its log file.
    fn spawn(&self, i: usize) -> Result<Child, String> {
        let config = self.dir.join(format!("server{i}.toml"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .map_err(|e| format!("log: {e}"))?;
        let mut command = Command::new(server_binary());
        command.env_remove("RUST_LOG");
        // `LOAD_SERVER_LOG`: the servers' log filter (e.g. `warn,sqlx::query=debug` to count statements).
        if let Ok(filter) = std::env::var("LOAD_SERVER_LOG") {
            command.env("RUST_LOG", filter);
        }
        command
            .args(["--config", &config.to_string_lossy(), "serve"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("start flatline-server: {e}"))
    }

    /// Kills process `i` (SIGKILL, as a crash would) and starts it again on the same port and database.
    async fn restart(&mut self, i: usize) -> Result<(), String> {
        let _ = self.children[i].start_kill();
        let _ = self.children[i].wait().await;
        // The port is free again once the process is gone; retry briefly in case the kernel lags.
        for attempt in 0..50 {
            self.children[i] = self.spawn(i)?;
            if healthy_soon(&self.remotes[i]).await {
                return Ok(());
            }
            let _ = self.children[i].start_kill();
            let _ = self.children[i].wait().await;
            tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
        }
        Err(format!("server {i} did not restart:\n{}", self.logs()))
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("server{i}.log"))
    }

    fn logs(&self) -> String {
        (0..self.children.len().max(1))
            .map(|i| std::fs::read_to_string(self.log_path(i)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    async fn stop(mut self) {
        for child in &mut self.children {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

async fn fresh_postgres(admin: &str) -> Result<(String, String), String> {
    let name = format!("flatline_load_{}", uuid::Uuid::new_v4().simple());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(admin)
        .await
        .map_err(|e| format!("PostgreSQL at TEST_POSTGRES_URL: {e}"))?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .map_err(|e| format!("create database: {e}"))?;
    let (base, _) = admin
        .rsplit_once('/')
        .ok_or("TEST_POSTGRES_URL has no database path")?;
    Ok((format!("{base}/{name}"), name))
}

async fn drop_postgres(admin: &str, name: &str) {
    if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(admin).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}

/// Authenticated bundle fetches over HTTP, spread round-robin over the processes. The client does as little as it
/// can (it shares the cores with the servers): no JSON parsing, only a look for the one-time key in the answer.
async fn http_fetches(
    s: &Settings,
    m: &Material,
    cluster: &Cluster,
    first: usize,
    n: usize,
) -> Outcome {
    let urls: Arc<Vec<Vec<String>>> = Arc::new(
        cluster
            .remotes
            .iter()
            .map(|r| {
                m.targets
                    .iter()
                    .map(|(c, _)| format!("{}/v2/keys/{}/*", r.base(), c.aci))
                    .collect()
            })
            .collect(),
    );
    let auths: Arc<Vec<String>> = Arc::new(
        m.callers
            .iter()
            .map(|c| c.basic_auth(UsernameForm::Aci))
            .collect(),
    );
    let http = cluster.http.clone();
    drive(n, s.concurrency, move |i| {
        let (urls, auths, http) = (urls.clone(), auths.clone(), http.clone());
        async move {
            let i = first + i;
            let urls = &urls[i % urls.len()];
            let r = http
                .get(&urls[i % urls.len()])
                .header("authorization", &auths[i % auths.len()])
                .send()
                .await
                .map_err(|e| Failure::Error(e.to_string()))?;
            let status = r.status().as_u16();
            let body = r.bytes().await.map_err(|e| Failure::Error(e.to_string()))?;
            if status != 200 {
                return Err(Failure::Status(status));
            }
            // A device answer without a one-time key carries `"preKey":null`.
            if !body.windows(10).any(|w| w == b"\"preKey\":{") {
                return Err(Failure::NoOneTimeKey);
            }
            Ok(())
        }
    })
    .await
}

/// Whole OIDC registrations; with several processes each step goes to the next one.
async fn registrations(
    s: &Settings,
    remotes: &[Remote],
    idp: Arc<FakeIdp>,
    tag: &str,
    n: usize,
) -> Outcome {
    let remotes: Arc<Vec<Remote>> = Arc::new(remotes.to_vec());
    let tag = tag.to_owned();
    drive(n, s.reg_concurrency, move |i| {
        let (remotes, idp, login) = (remotes.clone(), idp.clone(), format!("{tag}-{i}"));
        async move {
            let at = |k: usize| &remotes[(i + k) % remotes.len()];
            let (a, attempt) = at(0)
                .start("fake", REDIRECT, Some(&login), &OsRandom)
                .await
                .map_err(Failure::Error)?;
            if a.status != 200 {
                return Err(Failure::Status(a.status));
            }
            let request_uri = attempt.session["requestUri"].as_str().unwrap_or_default();
            let (code, state, iss) = idp
                .approve(request_uri, &login)
                .ok_or_else(|| Failure::Error("the IdP knows no such request_uri".into()))?;
            let callback = Callback {
                code,
                state,
                iss: Some(iss),
            };
            let v = at(1)
                .verify(&attempt, &callback)
                .await
                .map_err(Failure::Error)?;
            if v.status != 200 {
                return Err(Failure::Status(v.status));
            }
            let principal = v.body["principal"].as_str().unwrap_or_default().to_owned();
            let client = SimClient::new(&OsRandom);
            let r = at(2)
                .register(&client, &principal, attempt.id(), &OsRandom)
                .await
                .map_err(Failure::Error)?;
            if r.status != 200 {
                return Err(Failure::Status(r.status));
            }
            Ok(())
        }
    })
    .await
}

/// `Authenticator::authenticate` + `KeyService::fetch` in this process, as the HTTP handler calls them.
async fn service_fetches(
    s: &Settings,
    m: &Material,
    store: Arc<dyn Store>,
    first: usize,
    n: usize,
) -> Outcome {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut limits = Limits::default();
    for l in Limiter::ALL {
        limits.set(
            l,
            BucketConfig {
                bucket_size: 1_000_000,
                permit_regeneration: Duration::from_millis(1),
            },
        );
    }
    let auth = Arc::new(Authenticator::new(store.clone(), clock.clone()));
    let keys = Arc::new(KeyService::new(
        store.clone(),
        RateLimiters::new(store, clock, limits),
    ));
    let targets = m.direct_targets();
    let callers: Arc<Vec<DeviceCredentials>> = Arc::new(
        m.callers
            .iter()
            .map(|c| DeviceCredentials {
                aci: c.aci,
                device_id: DeviceId::PRIMARY,
                password: c.password.clone(),
            })
            .collect(),
    );
    drive(n, s.concurrency, move |i| {
        let (auth, keys, targets, callers) =
            (auth.clone(), keys.clone(), targets.clone(), callers.clone());
        async move {
            let i = first + i;
            let caller = auth
                .authenticate(&callers[i % callers.len()])
                .await
                .map_err(|e| Failure::Error(format!("authenticate: {e:?}")))?;
            let bundle = keys
                .fetch(
                    &Requester::Device(Box::new(caller)),
                    targets[i % targets.len()],
                    DeviceSelector::All,
                )
                .await
                .map_err(|e| Failure::Error(format!("fetch: {e:?}")))?;
            if bundle
                .devices
                .first()
                .and_then(|d| d.one_time.as_ref())
                .is_none()
            {
                return Err(Failure::NoOneTimeKey);
            }
            Ok(())
        }
    })
    .await
}

/// `take_one_time_keys` on the store directly.
async fn raw_takes(
    s: &Settings,
    m: &Material,
    store: Arc<dyn Store>,
    first: usize,
    n: usize,
) -> Outcome {
    let targets = m.direct_targets();
    drive(n, s.concurrency, move |i| {
        let (store, targets) = (store.clone(), targets.clone());
        async move {
            let taken = store
                .take_one_time_keys(targets[(first + i) % targets.len()], DeviceId::PRIMARY)
                .await
                .map_err(|e| Failure::Error(format!("take: {e}")))?;
            if taken.ec.is_none() {
                return Err(Failure::NoOneTimeKey);
            }
            Ok(())
        }
    })
    .await
}

/// Each store call of an authenticated fetch alone, at the same concurrency: where a fetch's time goes.
async fn breakdown(
    s: &Settings,
    m: &Material,
    store: Arc<dyn Store>,
) -> Vec<(&'static str, Outcome)> {
    let n = (s.fetches / 4).max(1);
    let targets = m.direct_targets();
    let callers: Arc<Vec<String>> = Arc::new(m.callers.iter().map(|c| c.aci.to_string()).collect());
    let mut out = vec![];
    let st = store.clone();
    let t = targets.clone();
    out.push((
        "in-process: load account",
        drive(n, s.concurrency, move |i| {
            let (st, t) = (st.clone(), t.clone());
            async move {
                let aci = match t[i % t.len()] {
                    ServiceId::Aci(aci) => aci,
                    ServiceId::Pni(_) => return Err(Failure::Error("PNI target".into())),
                };
                match st.account(aci).await {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err(Failure::Error("no account".into())),
                    Err(e) => Err(Failure::Error(format!("account: {e}"))),
                }
            }
        })
        .await,
    ));
    let (st, t, c) = (store.clone(), targets.clone(), callers.clone());
    out.push((
        "in-process: rate-limit check",
        drive(n, s.concurrency, move |i| {
            let (st, t, c) = (st.clone(), t.clone(), c.clone());
            async move {
                // The prekeys limiter's key shape: caller device and target.
                let key = format!("bench.1__{}.{}.*", c[i % c.len()], t[i % t.len()].uuid());
                let config = BucketConfig {
                    bucket_size: 1_000_000,
                    permit_regeneration: Duration::from_millis(1),
                };
                st.acquire(&key, &config, 1, SystemClock.now())
                    .await
                    .map(|_| ())
                    .map_err(|e| Failure::Error(format!("acquire: {e}")))
            }
        })
        .await,
    ));
    let (st, t) = (store.clone(), targets.clone());
    out.push((
        "in-process: contact policy",
        drive(n, s.concurrency, move |i| {
            let (st, t) = (st.clone(), t.clone());
            async move {
                let ServiceId::Aci(aci) = t[i % t.len()] else {
                    return Err(Failure::Error("PNI target".into()));
                };
                st.contact_policy(aci)
                    .await
                    .map(|_| ())
                    .map_err(|e| Failure::Error(format!("policy: {e}")))
            }
        })
        .await,
    ));
    let (st, t) = (store, targets);
    out.push((
        "in-process: signed prekey",
        drive(n, s.concurrency, move |i| {
            let (st, t) = (st.clone(), t.clone());
            async move {
                match st.signed_pre_key(t[i % t.len()], DeviceId::PRIMARY).await {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err(Failure::Error("no signed prekey".into())),
                    Err(e) => Err(Failure::Error(format!("signed: {e}"))),
                }
            }
        })
        .await,
    ));
    out
}

struct Row {
    scenario: String,
    workload: &'static str,
    concurrency: usize,
    outcome: Outcome,
}

struct ScenarioResult {
    rows: Vec<Row>,
    label: String,
    /// HTTP fetch, service fetch and raw take per second, when the `fetch` workload ran.
    fetch: Option<(f64, f64, f64)>,
    /// Per conversation level: end to end, and the raw store cycle of the same messages.
    flows: Vec<(message_flow::FlowOutcome, Outcome)>,
    idle: Option<message_flow::IdleOutcome>,
    storm: Option<message_flow::StormOutcome>,
}

async fn run_scenario(
    s: &Settings,
    m: &Material,
    mm: &message_flow::MessageMaterial,
    idp: &Arc<FakeIdp>,
    scenario: Scenario,
) -> Result<ScenarioResult, String> {
    let label = scenario.label();
    eprintln!("== {label}");
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let (url, pg_name) = match scenario.backend {
        Backend::Sqlite => (
            format!("sqlite://{}", dir.path().join("flatline.db").display()),
            None,
        ),
        Backend::Postgres => {
            let (url, name) = fresh_postgres(&s.postgres).await?;
            (url, Some(name))
        }
    };
    let result = async {
        // Seeded before the servers start: the fetch path is measured, not seeding, and SQLite is then written by
        // one process at a time.
        let store = flatline_server::store::open(&DatabaseConfig {
            url: url.clone(),
            max_connections: s.db_connections,
            ..DatabaseConfig::default()
        }.settings().expect("valid database settings"))
        .await
        .map_err(|e| format!("open store: {e}"))?;
        let t = Instant::now();
        m.seed(store.as_ref()).await?;
        mm.seed(store.clone()).await?;
        eprintln!("   seeded in {:.1} s", t.elapsed().as_secs_f64());

        let sockets = s.idle_sockets + 2 * s.conversations.iter().max().copied().unwrap_or(0) + 100;
        let mut cluster = Cluster::start(
            scenario.processes,
            &url,
            s.db_connections,
            idp,
            dir.path(),
            sockets,
        )
        .await?;
        let mut fetch = Outcome::empty();
        let mut service = Outcome::empty();
        let mut raw = Outcome::empty();
        if s.has("fetch") {
            let warm = s.warmup();
            // Warm-up of each path: connections, prepared statements, the first rate-limit bucket rows.
            let w = http_fetches(s, m, &cluster, 0, warm).await;
            let _ = service_fetches(s, m, store.clone(), 0, warm).await;
            let _ = raw_takes(s, m, store.clone(), 0, warm).await;
            if w.failed() > 0 {
                eprintln!("   warm-up failures: {}", w.failure_text());
            }
            // The three fetch-like workloads run in interleaved rounds (in a rotating order), so that load from
            // elsewhere on the machine lands on all of them alike and their ratio stays meaningful. The idle servers
            // stay up during the in-process rounds.
            let (mut http_at, mut direct_at) = (warm, warm);
            for round in 0..s.rounds {
                let n = s.fetches / s.rounds + usize::from(round < s.fetches % s.rounds);
                for step in 0..3 {
                    match (round + step) % 3 {
                        0 => fetch.merge(http_fetches(s, m, &cluster, http_at, n).await),
                        1 => service.merge(service_fetches(s, m, store.clone(), direct_at, n).await),
                        _ => raw.merge(raw_takes(s, m, store.clone(), direct_at, n).await),
                    }
                }
                http_at += n;
                direct_at += n;
            }
            eprintln!(
                "   HTTP fetch {:.0}/s, service fetch {:.0}/s, raw take {:.0}/s",
                fetch.per_second(),
                service.per_second(),
                raw.per_second()
            );
        }
        let mut register = Outcome::empty();
        if s.has("register") {
            // Warm-up: discovery, JWKS pinning and connections to the IdP happen on the first registrations.
            let reg_warm = s.reg_concurrency.min(s.registrations.max(1));
            let tag = format!("{}-{}", scenario.processes, uuid::Uuid::new_v4().simple());
            registrations(
                s,
                &cluster.remotes,
                idp.clone(),
                &format!("w{tag}"),
                reg_warm,
            )
            .await;
            register = registrations(
                s,
                &cluster.remotes,
                idp.clone(),
                &format!("r{tag}"),
                s.registrations,
            )
            .await;
            eprintln!("   registration: {:.0}/s", register.per_second());
            if fetch.failed() + register.failed() > 0 {
                eprintln!("   server logs:\n{}", tail(&cluster.logs(), 40));
            }
        }
        let mut idle = None;
        if s.has("idle") && s.idle_sockets > 0 {
            let pid = cluster.children[0].id().ok_or("server pid")?;
            let t = Instant::now();
            let o = message_flow::idle_sockets(mm, cluster.ports[0], pid).await?;
            eprintln!(
                "   idle: {} sockets, RSS {} -> {} KiB ({:.1} s)",
                o.sockets,
                o.rss_before_kib,
                o.rss_after_kib,
                t.elapsed().as_secs_f64()
            );
            idle = Some(o);
        }
        let mut storm = None;
        if s.has("storm") && s.storm > 0 {
            cluster.restart(0).await?;
            let o = message_flow::connect_storm(mm, cluster.ports[0], s.storm).await;
            eprintln!(
                "   storm: {} of {} sockets past queue/empty in {:.2} s after a restart",
                o.sockets,
                s.storm,
                o.elapsed.as_secs_f64()
            );
            storm = Some(o);
        }
        let mut flows = vec![];
        if s.has("messages") {
            for &c in &s.conversations {
                let per = s.messages.div_ceil(c).max(2);
                let e2e = message_flow::end_to_end(mm, &cluster.ports, c, per).await?;
                let raw = message_flow::raw_store(mm, store.clone(), c, per).await;
                eprintln!(
                    "   {c} conversations: end to end {:.0}/s (p50 {:.1} ms, p99 {:.1} ms), raw store {:.0}/s",
                    e2e.per_second(),
                    message_flow::percentile_ms(&e2e.cycle, 50.0),
                    message_flow::percentile_ms(&e2e.cycle, 99.0),
                    raw.per_second()
                );
                flows.push((e2e, raw));
            }
        }
        cluster.stop().await;
        let parts = if s.breakdown && s.has("fetch") {
            breakdown(s, m, store.clone()).await
        } else {
            vec![]
        };
        drop(store);

        let (f, sv, r) = (fetch.per_second(), service.per_second(), raw.per_second());
        let row = |workload, concurrency, outcome| Row {
            scenario: label.clone(),
            workload,
            concurrency,
            outcome,
        };
        let mut rows = vec![];
        if s.has("fetch") {
            rows.push(row("HTTP bundle fetch", s.concurrency, fetch));
        }
        if s.has("register") {
            rows.push(row("HTTP registration (OIDC)", s.reg_concurrency, register));
        }
        if s.has("fetch") {
            rows.push(row("in-process service fetch", s.concurrency, service));
            rows.push(row("raw store take", s.concurrency, raw));
        }
        Ok(ScenarioResult {
            rows: rows
            .into_iter()
            .chain(
                parts
                    .into_iter()
                    .map(|(name, outcome)| row(name, s.concurrency, outcome)),
            )
            .collect(),
            label: label.clone(),
            fetch: s.has("fetch").then_some((f, sv, r)),
            flows,
            idle,
            storm,
        })
    }
    .await;
    if let Some(name) = pg_name {
        drop_postgres(&s.postgres, &name).await;
    }
    result
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and must not start a load run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("load benchmark: run it with `cargo bench -p flatline-server --bench load`");
        return;
    }
    let mut s = Settings::from_env();
    // Words after `--`: cargo adds `--bench` (and libtest-style flags a harness-less bench may ignore).
    let words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if let Err(e) = s.apply_args(&words) {
        eprintln!("load benchmark: {e}");
        std::process::exit(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(s.threads)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(s)) {
        eprintln!("load benchmark failed: {e}");
        std::process::exit(1);
    }
}

async fn run(s: Settings) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!("settings: {s:?}");
    eprintln!("server binary: {}", server_binary().display());
    let load_before = load_average();
    eprintln!("cores: {cores}, load average before: {load_before}");
    let t = Instant::now();
    let m = Material::generate(&s);
    eprintln!(
        "generated {} accounts and their keys in {:.1} s",
        m.targets.len() + m.direct.len() + m.callers.len(),
        t.elapsed().as_secs_f64()
    );
    let mm = message_flow::MessageMaterial::generate(
        if s.has("messages") {
            s.conversations.iter().max().copied().unwrap_or(0)
        } else {
            0
        },
        usize::max(
            if s.has("idle") { s.idle_sockets } else { 0 },
            if s.has("storm") { s.storm } else { 0 },
        ),
    );
    let idp = Arc::new(FakeIdp::start(Arc::new(SystemClock), Arc::new(OsRandom)).await);
    let mut results = vec![];
    for scenario in s.scenarios.clone() {
        results.push(run_scenario(&s, &m, &mm, &idp, scenario).await?);
    }
    let load_after = load_average();

    println!();
    if s.smoke {
        println!("Smoke run: tiny sizes, whatever build ran it; the numbers below mean nothing.");
    }
    println!(
        "Machine: {cores} cores, shared by the load generator ({} tokio threads), the servers and the database. \
         Load average (1, 5, 15 min) before: {load_before}; after: {load_after}.",
        s.threads
    );
    if results.iter().any(|r| !r.rows.is_empty()) {
        println!();
        println!("| Scenario | Workload | Concurrency | Ops | Ops/s | p50 ms | p99 ms | Failed |");
        println!("|---|---|---:|---:|---:|---:|---:|---|");
        for r in results.iter().flat_map(|r| &r.rows) {
            let o = &r.outcome;
            println!(
                "| {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {} |",
                r.scenario,
                r.workload,
                r.concurrency,
                o.ops,
                o.per_second(),
                o.percentile_ms(50.0),
                o.percentile_ms(99.0),
                o.failure_text()
            );
        }
    }
    if results.iter().any(|r| r.fetch.is_some()) {
        println!();
        println!(
            "| Scenario | HTTP fetch/s | Service fetch/s | Raw take/s | HTTP / raw (goal ≥ 0.5) | Service / raw |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        for r in &results {
            if let Some((f, sv, raw)) = r.fetch {
                println!(
                    "| {} | {f:.0} | {sv:.0} | {raw:.0} | {:.2} | {:.2} |",
                    r.label,
                    f / raw,
                    sv / raw
                );
            }
        }
    }
    if results.iter().any(|r| !r.flows.is_empty()) {
        println!();
        println!(
            "| Scenario | Conversations | Messages | End-to-end msg/s | Delivery p50 / p99 ms | Cycle p50 / p99 ms \
             | Raw store msg/s | Raw p50 / p99 ms | End-to-end / raw (goal ≥ 0.5) | Failed |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for r in &results {
            for (e, raw) in &r.flows {
                println!(
                    "| {} | {} | {} | {:.0} | {:.1} / {:.1} | {:.1} / {:.1} | {:.0} | {:.2} / {:.2} | {:.2} | {} / {} |",
                    r.label,
                    e.conversations,
                    e.messages,
                    e.per_second(),
                    message_flow::percentile_ms(&e.delivery, 50.0),
                    message_flow::percentile_ms(&e.delivery, 99.0),
                    message_flow::percentile_ms(&e.cycle, 50.0),
                    message_flow::percentile_ms(&e.cycle, 99.0),
                    raw.per_second(),
                    raw.percentile_ms(50.0),
                    raw.percentile_ms(99.0),
                    e.per_second() / raw.per_second(),
                    e.failure_text(),
                    raw.failure_text()
                );
            }
        }
    }
    if results.iter().any(|r| r.idle.is_some()) {
        println!();
        println!(
            "| Scenario | Idle authenticated sockets | Server RSS before (MiB) | With the sockets (MiB) | KiB per socket | Opened/s |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        for r in &results {
            if let Some(i) = &r.idle {
                println!(
                    "| {} | {} | {:.1} | {:.1} | {:.1} | {:.0} |",
                    r.label,
                    i.sockets,
                    i.rss_before_kib as f64 / 1024.0,
                    i.rss_after_kib as f64 / 1024.0,
                    i.rss_after_kib.saturating_sub(i.rss_before_kib) as f64
                        / i.sockets.max(1) as f64,
                    i.connect_per_second
                );
            }
        }
    }
    if results.iter().any(|r| r.storm.is_some()) {
        println!();
        println!(
            "| Scenario | Storm sockets (after a kill -9 and restart) | Connected | All past queue/empty (s) | p50 / p99 ms | Failed |"
        );
        println!("|---|---:|---:|---:|---:|---|");
        for r in &results {
            if let Some(o) = &r.storm {
                println!(
                    "| {} | {} | {} | {:.2} | {:.1} / {:.1} | {} |",
                    r.label,
                    s.storm,
                    o.sockets,
                    o.elapsed.as_secs_f64(),
                    message_flow::percentile_ms(&o.latency, 50.0),
                    message_flow::percentile_ms(&o.latency, 99.0),
                    failure_text(&o.failures)
                );
            }
        }
    }
    print_goals(&s, &results);
    let failed: usize = results.iter().map(ScenarioResult::failed).sum();
    if s.smoke && failed > 0 {
        return Err(format!(
            "smoke run: {failed} operations failed (see the tables)"
        ));
    }
    Ok(())
}

fn failure_text(failures: &BTreeMap<String, usize>) -> String {
    if failures.is_empty() {
        return "0".into();
    }
    let n: usize = failures.values().sum();
    let parts: Vec<String> = failures.iter().map(|(k, v)| format!("{v}× {k}")).collect();
    format!("{n} ({})", parts.join(", "))
}

impl ScenarioResult {
    /// Failed operations of every workload.
    fn failed(&self) -> usize {
        self.rows.iter().map(|r| r.outcome.failed()).sum::<usize>()
            + self
                .flows
                .iter()
                .map(|(e, raw)| e.failures.values().sum::<usize>() + raw.failed())
                .sum::<usize>()
            + self
                .storm
                .as_ref()
                .map_or(0, |o| o.failures.values().sum::<usize>())
    }
}

/// The goals of the performance issue next to what this run measured.
fn print_goals(s: &Settings, results: &[ScenarioResult]) {
    let mut lines: Vec<(String, String, String, bool)> = vec![];
    for r in results {
        let sqlite = r.label.starts_with("SQLite");
        if let Some((f, _, raw)) = r.fetch {
            let goal = if sqlite { 0.7 } else { 0.5 };
            lines.push((
                format!("HTTP fetch / raw take ≥ {goal}"),
                r.label.clone(),
                format!("{:.2}", f / raw),
                f / raw >= goal,
            ));
        }
        if sqlite
            && let Some(reg) = r
                .rows
                .iter()
                .find(|row| row.workload.starts_with("HTTP registration"))
        {
            let rate = reg.outcome.per_second();
            lines.push((
                "registrations ≥ 500/s".into(),
                r.label.clone(),
                format!("{rate:.0}/s"),
                rate >= 500.0,
            ));
        }
        for (e, raw) in &r.flows {
            let ratio = e.per_second() / raw.per_second();
            lines.push((
                format!(
                    "messages end to end / raw ≥ 0.5 ({} conversations)",
                    e.conversations
                ),
                r.label.clone(),
                format!("{ratio:.2}"),
                ratio >= 0.5,
            ));
            if e.conversations >= 1000 && r.label.starts_with("PostgreSQL × 3") {
                let p99 = message_flow::percentile_ms(&e.delivery, 99.0);
                lines.push((
                    "delivery p99 < 50 ms at 1000 conversations".into(),
                    r.label.clone(),
                    format!("{p99:.1} ms"),
                    p99 < 50.0,
                ));
            }
        }
        if let Some(i) = &r.idle {
            let mb = i.rss_after_kib as f64 * 1024.0 / 1e6;
            lines.push((
                "RSS ≤ 300 MB with 10 000 idle authenticated sockets".into(),
                r.label.clone(),
                format!("{mb:.0} MB with {} sockets", i.sockets),
                i.sockets >= 10_000 && mb <= 300.0,
            ));
        }
        if let Some(o) = &r.storm {
            let errors: usize = o.failures.values().sum();
            lines.push((
                "1000 reconnects within 1 s of a restart, no error".into(),
                r.label.clone(),
                format!(
                    "{} in {:.2} s, {errors} errors",
                    o.sockets,
                    o.elapsed.as_secs_f64()
                ),
                s.storm >= 1000 && errors == 0 && o.elapsed <= Duration::from_secs(1),
            ));
        }
    }
    if lines.is_empty() {
        return;
    }
    println!();
    println!("| Goal | Scenario | Measured | Met |");
    println!("|---|---|---|---|");
    for (goal, scenario, measured, met) in lines {
        println!(
            "| {goal} | {scenario} | {measured} | {} |",
            if met { "yes" } else { "**no**" }
        );
    }
}
