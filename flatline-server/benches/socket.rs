//! Chat socket benchmark (`cargo bench -p flatline-server --bench socket`): a real `flatline-server` process on
//! SQLite, measured from this process.
//!
//! 1. Request round trips: `GET /v1/accounts/whoami` through one authenticated chat socket (`SOCKET_BENCH_INFLIGHT`
//!    requests in flight, default 1 and 16) against the same request over HTTP/1.1 keep-alive (as many connections
//!    as requests in flight).
//! 2. Idle sockets: `SOCKET_BENCH_IDLE` (default 10000) unauthenticated sockets opened and held; the server's RSS
//!    growth per socket (from `/proc/<pid>/status`) and the connect rate.
//!
//! Results and method: docs/PERFORMANCE.md ("Chat socket").

use std::time::{Duration, Instant};

use flatline_core::chat::{Frame, decode_frame, encode_request};
use flatline_core::time::Clock as _;
use flatline_server::system::{OsRandom, SystemClock};
use flatline_testkit::{SimClient, UsernameForm};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

struct Server {
    child: tokio::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

async fn start(auth_client: &SimClient, sockets: usize) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let db = format!("sqlite://{}/bench.db?mode=rwc", dir.path().display());
    let store = flatline_server::store::open(
        &flatline_server::config::DatabaseConfig {
            url: db.clone(),
            ..Default::default()
        }
        .settings()
        .expect("valid database settings"),
    )
    .await
    .expect("store");
    store
        .create_account(auth_client.new_account("bench", &OsRandom, SystemClock.now()))
        .await
        .expect("account");
    drop(store);
    let d = dir.path().display();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
max_connections_per_ip = 100000
max_connections = 100000
[database]
url = "{db}"
[registration]
principal_secret_file = "{d}/principal.key"
[instance]
signing_key_file = "{d}/signing.key"
sealed_sender_key_file = "{d}/sealed-sender.key"
[log]
filter = "warn"
[chat]
max_sockets_per_ip = {sockets}
max_sockets = {sockets}
idle_timeout_seconds = 3600
"#,
            sockets = sockets + 16
        ),
    )
    .expect("config");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_flatline-server"))
        .args(["--config", config.to_str().expect("utf-8"), "serve"])
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .spawn()
        .expect("server");
    let http = reqwest::Client::new();
    for _ in 0..1200 {
        if http
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Server {
                child,
                port,
                _dir: dir,
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not start");
}

/// Round trips per second through one socket with `inflight` requests outstanding.
async fn socket_round_trips(port: u16, auth: &str, n: usize, inflight: usize) -> f64 {
    let mut request = format!("ws://127.0.0.1:{port}/v1/websocket/")
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("authorization", auth.parse().expect("header"));
    let (ws, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
        .await
        .expect("socket");
    let (mut tx, mut rx) = ws.split();
    let started = Instant::now();
    let mut sent = 0usize;
    let mut done = 0usize;
    while sent < inflight.min(n) {
        let f = encode_request(Some(sent as u64), "GET", "/v1/accounts/whoami", &[], b"");
        tx.send(Message::Binary(f.into())).await.expect("send");
        sent += 1;
    }
    while done < n {
        let Some(Ok(Message::Binary(b))) = rx.next().await else {
            continue;
        };
        if let Ok(Frame::Response(r)) = decode_frame(&b) {
            assert_eq!(r.status, 200);
            done += 1;
            if sent < n {
                let f = encode_request(Some(sent as u64), "GET", "/v1/accounts/whoami", &[], b"");
                tx.send(Message::Binary(f.into())).await.expect("send");
                sent += 1;
            }
        }
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Round trips per second over HTTP keep-alive with `inflight` concurrent connections.
async fn http_round_trips(port: u16, auth: &str, n: usize, inflight: usize) -> f64 {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(inflight)
        .build()
        .expect("client");
    let url = format!("http://127.0.0.1:{port}/v1/accounts/whoami");
    // Warm the connections.
    for _ in 0..inflight {
        client
            .get(&url)
            .header("authorization", auth)
            .send()
            .await
            .expect("warm");
    }
    let started = Instant::now();
    let per = n / inflight;
    let mut tasks = vec![];
    for _ in 0..inflight {
        let (client, url, auth) = (client.clone(), url.clone(), auth.to_owned());
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                let r = client
                    .get(&url)
                    .header("authorization", &auth)
                    .send()
                    .await
                    .expect("get");
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    (per * inflight) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let n: usize = env_or("SOCKET_BENCH_REQUESTS", 5000);
    let idle: usize = env_or("SOCKET_BENCH_IDLE", 10_000);
    let client = SimClient::new(&OsRandom);
    let auth = client.basic_auth(UsernameForm::Dot);
    let server = start(&client, idle).await;
    let pid = server.child.id().expect("pid");
    println!("round trips of GET /v1/accounts/whoami ({n} each, SQLite, one server process):");
    println!(
        "{:>9} {:>14} {:>14}",
        "in flight", "socket req/s", "HTTP req/s"
    );
    for inflight in [1usize, 16] {
        let s = socket_round_trips(server.port, &auth, n, inflight).await;
        let h = http_round_trips(server.port, &auth, n, inflight).await;
        println!("{inflight:>9} {s:>14.0} {h:>14.0}");
    }

    let before = rss_kib(pid);
    let started = Instant::now();
    let mut held = Vec::with_capacity(idle);
    let url = format!("ws://127.0.0.1:{}/v1/websocket/", server.port);
    for _ in 0..idle {
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("idle socket");
        held.push(ws);
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Let the server settle (its tasks park) before reading RSS.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid);
    println!(
        "idle sockets: {idle} held, connect rate {:.0}/s, server RSS {} -> {} KiB ({:.1} KiB per socket)",
        idle as f64 / elapsed,
        before,
        after,
        after.saturating_sub(before) as f64 / idle as f64
    );
    drop(held);
}
