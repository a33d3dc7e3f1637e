//! The object stores the attachment and avatar tests run against: the local directory and a real S3-compatible
//! server on loopback (moto, `pip install 'moto[server]'`; `.ci/run` installs it and sets `MOTO_SERVER`).

use std::time::Duration;

use flatline_server::config::Config;

/// Which object store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Local,
    S3,
}

impl StoreKind {
    pub const ALL: [StoreKind; 2] = [StoreKind::Local, StoreKind::S3];
}

/// A moto S3 server on a free loopback port, killed when dropped.
pub struct Moto {
    _child: tokio::process::Child,
    pub endpoint: String,
}

impl Moto {
    pub async fn start(log_dir: &std::path::Path) -> Moto {
        let program = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".to_owned());
        let port = crate::multiprocess::free_port();
        let log = std::fs::File::create(log_dir.join("moto.log")).expect("moto log");
        let child = tokio::process::Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{program} (pip install 'moto[server]', or set MOTO_SERVER): {e}")
            });
        let endpoint = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..600 {
            if http.get(&endpoint).send().await.is_ok() {
                return Moto {
                    _child: child,
                    endpoint,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(log_dir.join("moto.log")).unwrap_or_default();
        panic!("moto did not answer on {endpoint}:\n{log}");
    }
}

/// One test's object store: a fresh directory, or a fresh bucket on its own moto server.
pub struct TestStorage {
    pub dir: tempfile::TempDir,
    moto: Option<Moto>,
    bucket: String,
}

impl TestStorage {
    pub async fn new(kind: StoreKind) -> TestStorage {
        let dir = tempfile::tempdir().unwrap();
        let bucket = format!("flatline-{}", uuid::Uuid::new_v4().simple());
        let moto = match kind {
            StoreKind::Local => None,
            StoreKind::S3 => {
                let moto = Moto::start(dir.path()).await;
                let r = reqwest::Client::new()
                    .put(format!("{}/{bucket}", moto.endpoint))
                    .send()
                    .await
                    .expect("create bucket");
                assert!(r.status().is_success(), "create bucket: {}", r.status());
                std::fs::write(dir.path().join("s3-secret"), "moto-secret\n").unwrap();
                Some(moto)
            }
        };
        TestStorage { dir, moto, bucket }
    }

    /// `[storage]` settings (without the section header) selecting this store.
    pub fn toml(&self) -> String {
        match &self.moto {
            None => format!("path = \"{}\"\n", self.dir.path().join("store").display()),
            Some(m) => format!(
                "url = \"s3://{}\"\ns3_endpoint = \"{}\"\ns3_access_key_id = \"moto\"\ns3_secret_access_key_file = \"{}\"\n",
                self.bucket,
                m.endpoint,
                self.dir.path().join("s3-secret").display()
            ),
        }
    }

    /// Points `config` at this store.
    pub fn apply(&self, config: &mut Config) {
        let section: flatline_server::config::StorageConfig =
            toml::from_str(&self.toml()).expect("storage toml");
        config.storage.path = section.path;
        config.storage.url = section.url;
        config.storage.s3_endpoint = section.s3_endpoint;
        config.storage.s3_access_key_id = section.s3_access_key_id;
        config.storage.s3_secret_access_key_file = section.s3_secret_access_key_file;
    }

    /// Everything stored under `prefix` (`objects/…`, `uploads/…`), read from the directory or the bucket itself.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        match &self.moto {
            None => {
                let root = self.dir.path().join("store");
                let mut out = vec![];
                let mut stack = vec![root.clone()];
                while let Some(d) = stack.pop() {
                    let Ok(rd) = std::fs::read_dir(&d) else {
                        continue;
                    };
                    for e in rd.flatten() {
                        let p = e.path();
                        if p.is_dir() {
                            stack.push(p);
                        } else {
                            let rel = p
                                .strip_prefix(&root)
                                .unwrap()
                                .to_string_lossy()
                                .into_owned();
                            if rel.starts_with(prefix) {
                                out.push(rel);
                            }
                        }
                    }
                }
                out.sort();
                out
            }
            Some(m) => {
                let xml = reqwest::Client::new()
                    .get(format!(
                        "{}/{}?list-type=2&prefix={prefix}",
                        m.endpoint, self.bucket
                    ))
                    .send()
                    .await
                    .expect("list bucket")
                    .text()
                    .await
                    .expect("listing");
                xml.split("<Key>")
                    .skip(1)
                    .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_owned()))
                    .collect()
            }
        }
    }

    /// S3 multipart uploads begun and neither completed nor aborted (none for the local store).
    pub async fn open_multipart_uploads(&self) -> usize {
        let Some(m) = &self.moto else {
            return 0;
        };
        let xml = reqwest::Client::new()
            .get(format!("{}/{}?uploads", m.endpoint, self.bucket))
            .send()
            .await
            .expect("list multipart uploads")
            .text()
            .await
            .expect("listing");
        xml.matches("<UploadId>").count()
    }
}
