//! Attachment throughput and memory: a real `flatline-server` process on 127.0.0.1 (SQLite, the local object
//! store), one TUS upload (`POST` + one `PATCH`) and one download (`GET`, read as a stream) of an `ATT_MIB`-MiB
//! attachment (default 100) per round, against a raw file copy of the same bytes on the same disk (`std::fs::copy`,
//! then `fsync`, as the store syncs a finished upload; a user-space read/write copy is printed for context). Throughput ratios HTTP / raw copy are the headline (goal
//! ≥ 0.7). The server's memory is read from `/proc/<pid>/status`: VmRSS before, the peak (VmHWM, reset through
//! `/proc/<pid>/clear_refs` before each transfer) and VmRSS after; a server that buffered whole attachments would
//! peak about `ATT_MIB` MiB above its resting size.
//!
//! `cargo bench -p flatline-server --bench attachments`; knobs `ATT_MIB`, `ATT_ROUNDS` (default 3), `ATT_DIR`
//! (where the store and the raw copies live; default a temporary directory under `target/`). Without `--bench`
//! (as under `cargo test --benches`) the binary does nothing.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use flatline_core::time::Clock as _;
use flatline_server::system::{OsRandom, SystemClock};
use flatline_testkit::{SimClient, UsernameForm};
use futures_util::StreamExt as _;
use tokio::process::{Child, Command};

const MIB: usize = 1024 * 1024;

struct Settings {
    mib: usize,
    rounds: usize,
    dir: Option<PathBuf>,
}

impl Settings {
    fn from_env() -> Settings {
        let n = |k: &str, d: usize| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        Settings {
            mib: n("ATT_MIB", 100).max(1),
            rounds: n("ATT_ROUNDS", 3).max(1),
            dir: std::env::var_os("ATT_DIR").map(PathBuf::from),
        }
    }
}

fn status_kib(pid: u32, field: &str) -> Result<u64, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status"))
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0; needs the right to write the process's clear_refs).
fn reset_peak(pid: u32) -> Result<(), String> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .map_err(|e| format!("/proc/{pid}/clear_refs: {e}"))
}

/// Deterministic, incompressible-looking bytes (xorshift), so no layer can shortcut them.
fn bytes(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}

/// The raw baseline: `std::fs::copy` (on Linux `copy_file_range`, in the kernel, as `cp` does), then `fsync`, as the
/// store syncs a finished upload.
fn raw_copy(src: &Path, dst: &Path) -> Result<Duration, String> {
    let t = Instant::now();
    std::fs::copy(src, dst).map_err(|e| format!("copy: {e}"))?;
    let copied = t.elapsed();
    std::fs::File::open(dst)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("fsync: {e}"))?;
    let d = t.elapsed();
    eprintln!(
        "raw copy: {:.0} ms copying, {:.0} ms fsync",
        copied.as_secs_f64() * 1e3,
        (d - copied).as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_file(dst);
    Ok(d)
}

/// For context: the same copy through user space (1 MiB reads and writes), then `fsync`.
fn user_space_copy(src: &Path, dst: &Path) -> Result<Duration, String> {
    use std::io::{Read as _, Write as _};
    let t = Instant::now();
    let mut from = std::fs::File::open(src).map_err(|e| format!("open: {e}"))?;
    let mut to = std::fs::File::create(dst).map_err(|e| format!("create: {e}"))?;
    let mut buf = vec![0u8; MIB];
    loop {
        let n = from.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n]).map_err(|e| format!("write: {e}"))?;
    }
    to.sync_all().map_err(|e| format!("fsync: {e}"))?;
    let d = t.elapsed();
    let _ = std::fs::remove_file(dst);
    Ok(d)
}

struct Server {
    child: Child,
    pid: u32,
    base: String,
}

async fn start_server(dir: &Path, db: &str, max_bytes: usize) -> Result<Server, String> {
    let port = free_port()?;
    let d = dir.display();
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
[database]
url = "{db}"
[registration]
principal_secret_file = "{d}/principal.key"
[instance]
signing_key_file = "{d}/signing.key"
sealed_sender_key_file = "{d}/sealed-sender.key"
[storage]
path = "{d}/store"
max_attachment_bytes = {max_bytes}
[limits.attachmentCreate]
bucket_size = 100000
permit_regeneration_seconds = 0.001
[log]
filter = "warn"
"#
        ),
    )
    .map_err(|e| format!("config: {e}"))?;
    let log = std::fs::File::create(dir.join("server.log")).map_err(|e| format!("log: {e}"))?;
    let child = Command::new(env!("CARGO_BIN_EXE_flatline-server"))
        .args(["--config", &config.to_string_lossy(), "serve"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("start flatline-server: {e}"))?;
    let pid = child.id().ok_or("no pid")?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..1200 {
        if http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(Server { child, pid, base });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "server did not start:\n{}",
        std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
    ))
}

struct Memory {
    before_kib: u64,
    peak_kib: u64,
    after_kib: u64,
}

impl Memory {
    fn show(&self) -> String {
        format!(
            "RSS before {:.1} MiB, peak {:.1} MiB (+{:.1}), after {:.1} MiB",
            self.before_kib as f64 / 1024.0,
            self.peak_kib as f64 / 1024.0,
            self.peak_kib.saturating_sub(self.before_kib) as f64 / 1024.0,
            self.after_kib as f64 / 1024.0
        )
    }
}

async fn measured<F: std::future::Future<Output = Result<(), String>>>(
    pid: u32,
    f: F,
) -> Result<(Duration, Memory), String> {
    let before_kib = status_kib(pid, "VmRSS:")?;
    reset_peak(pid)?;
    let t = Instant::now();
    f.await?;
    let d = t.elapsed();
    Ok((
        d,
        Memory {
            before_kib,
            peak_kib: status_kib(pid, "VmHWM:")?,
            after_kib: status_kib(pid, "VmRSS:")?,
        },
    ))
}

async fn upload(
    http: &reqwest::Client,
    base: &str,
    auth: &str,
    data: &axum::body::Bytes,
) -> Result<String, String> {
    let f: serde_json::Value = http
        .get(format!(
            "{base}/v4/attachments/form/upload?uploadLength={}",
            data.len()
        ))
        .header("authorization", auth)
        .send()
        .await
        .map_err(|e| format!("form: {e}"))?
        .json()
        .await
        .map_err(|e| format!("form: {e}"))?;
    let key = f["key"].as_str().ok_or("form: no key")?.to_owned();
    let bearer = f["headers"]["Authorization"].as_str().unwrap_or_default();
    let r = http
        .post(format!("{base}/attachments"))
        .header("tus-resumable", "1.0.0")
        .header("authorization", bearer)
        .header("upload-length", data.len().to_string())
        .header(
            "upload-metadata",
            f["headers"]["Upload-Metadata"].as_str().unwrap_or_default(),
        )
        .send()
        .await
        .map_err(|e| format!("create: {e}"))?;
    if r.status() != 201 {
        return Err(format!("create: {}", r.status()));
    }
    let r = http
        .patch(format!("{base}/attachments/{key}"))
        .header("tus-resumable", "1.0.0")
        .header("authorization", bearer)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "0")
        .body(data.clone())
        .send()
        .await
        .map_err(|e| format!("patch: {e}"))?;
    if r.status() != 204 {
        return Err(format!("patch: {}", r.status()));
    }
    Ok(key)
}

/// Streams the download and compares it with `data` chunk by chunk (nothing is collected).
async fn download(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    data: &[u8],
) -> Result<(), String> {
    let r = http
        .get(format!("{base}/attachments/{key}"))
        .send()
        .await
        .map_err(|e| format!("get: {e}"))?;
    if r.status() != 200 {
        return Err(format!("get: {}", r.status()));
    }
    let mut at = 0;
    let mut body = r.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("get body: {e}"))?;
        if data.get(at..at + chunk.len()) != Some(&chunk[..]) {
            return Err(format!("downloaded bytes differ at {at}"));
        }
        at += chunk.len();
    }
    if at != data.len() {
        return Err(format!("downloaded {at} of {} bytes", data.len()));
    }
    Ok(())
}

fn mib_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn run(s: Settings) -> Result<(), String> {
    let tmp;
    let dir = match &s.dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            d.clone()
        }
        None => {
            let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp");
            std::fs::create_dir_all(&target).map_err(|e| format!("target/tmp: {e}"))?;
            tmp = tempfile::tempdir_in(target).map_err(|e| format!("tempdir: {e}"))?;
            tmp.path().to_owned()
        }
    };
    let len = s.mib * MIB;
    eprintln!(
        "attachments: {} MiB x {} rounds in {}; load average {}",
        s.mib,
        s.rounds,
        dir.display(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let data = axum::body::Bytes::from(bytes(len));

    // The raw baseline on the same disk.
    let src = dir.join("raw-src");
    std::fs::write(&src, &data).map_err(|e| format!("raw source: {e}"))?;
    let (mut raw, mut user) = (vec![], vec![]);
    for _ in 0..s.rounds {
        raw.push(mib_s(len, raw_copy(&src, &dir.join("raw-dst"))?));
        user.push(mib_s(len, user_space_copy(&src, &dir.join("raw-dst"))?));
    }
    let _ = std::fs::remove_file(&src);

    let db = format!("sqlite://{}/flatline.db?mode=rwc", dir.display());
    let store = flatline_server::store::open(
        &flatline_server::config::DatabaseConfig {
            url: db.clone(),
            ..Default::default()
        }
        .settings()
        .expect("valid database settings"),
    )
    .await
    .map_err(|e| format!("store: {e}"))?;
    let bob = SimClient::new(&OsRandom);
    store
        .create_account(bob.new_account("bob", &OsRandom, SystemClock.now()))
        .await
        .map_err(|e| format!("seed: {e}"))?;
    drop(store);
    let mut server = start_server(&dir, &db, len + MIB).await?;
    let auth = bob.basic_auth(UsernameForm::Dot);
    let http = reqwest::Client::new();

    let (mut up, mut down) = (vec![], vec![]);
    let (mut up_mem, mut down_mem) = (vec![], vec![]);
    for round in 0..s.rounds {
        let mut key = String::new();
        let (d, m) = measured(server.pid, async {
            key = upload(&http, &server.base, &auth, &data).await?;
            Ok(())
        })
        .await?;
        up.push(mib_s(len, d));
        eprintln!(
            "round {round}: upload {:.0} MiB/s, {}",
            mib_s(len, d),
            m.show()
        );
        up_mem.push(m);
        let (d, m) = measured(server.pid, download(&http, &server.base, &key, &data)).await?;
        down.push(mib_s(len, d));
        eprintln!(
            "round {round}: download {:.0} MiB/s, {}",
            mib_s(len, d),
            m.show()
        );
        down_mem.push(m);
    }
    let _ = server.child.start_kill();
    let _ = server.child.wait().await;

    let (raw_m, up_m, down_m) = (median(raw), median(up), median(down));
    let growth = |v: &[Memory]| {
        v.iter()
            .map(|m| m.peak_kib.saturating_sub(m.before_kib))
            .max()
            .unwrap_or(0) as f64
            / 1024.0
    };
    println!(
        "raw file copy (std::fs::copy + fsync): {raw_m:.0} MiB/s; through user space (1 MiB read/write + fsync): {:.0} MiB/s (medians of {})",
        median(user),
        s.rounds
    );
    println!(
        "upload through HTTP (POST + PATCH, store write + fsync + rename): {up_m:.0} MiB/s, ratio {:.2}",
        up_m / raw_m
    );
    println!(
        "download through HTTP (GET, streamed): {down_m:.0} MiB/s, ratio {:.2}",
        down_m / raw_m
    );
    println!(
        "server peak RSS growth while streaming {} MiB: upload {:.1} MiB, download {:.1} MiB (largest of {} rounds)",
        s.mib,
        growth(&up_mem),
        growth(&down_mem),
        s.rounds
    );
    Ok(())
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and must not start a run.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "attachments benchmark: run it with `cargo bench -p flatline-server --bench attachments`"
        );
        return;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(Settings::from_env())) {
        eprintln!("attachments benchmark failed: {e}");
        std::process::exit(1);
    }
}
