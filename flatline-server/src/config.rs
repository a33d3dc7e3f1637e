//! Configuration: a TOML file, then `FLATLINE_*` environment overrides, then validation.
//!
//! Every setting has a default, so an empty file (or none) is a working development configuration.
//! Environment overrides name the key path in upper case with `__` between levels:
//! `FLATLINE_SERVER__LISTEN=0.0.0.0:8080`, `FLATLINE_LIMITS__PREKEYS__BUCKET_SIZE=20`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use flatline_core::ratelimit::{BucketConfig, Limiter, Limits};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// A configuration problem, naming the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("config file is not valid TOML: {0}")]
    Syntax(String),
    /// A key has a bad value (or is unknown).
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// Dotted key path.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listeners and network trust.
    pub server: ServerConfig,
    /// Where data lives.
    pub database: DatabaseConfig,
    /// Logging.
    pub log: LogConfig,
    /// Request and payload limits.
    pub limits: LimitsConfig,
}

/// Listeners and network trust.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Main listener. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Optional separate listener for `/healthz` and `/metrics`; when unset they are on the main listener.
    pub admin_listen: Option<SocketAddr>,
    /// Public base URL of this server, used in links. Default `http://127.0.0.1:8080`.
    pub public_url: String,
    /// Peers whose `X-Forwarded-For` is believed (CIDRs or addresses). Default: none.
    pub trusted_proxies: Vec<String>,
    /// Seconds to let in-flight requests finish after a shutdown signal. Default 20.
    pub shutdown_grace_seconds: u64,
    /// Largest request body in bytes. Default 1 MiB (a full key upload is ~180 KiB).
    pub max_body_bytes: usize,
    /// Seconds before a request is abandoned with 408. Default 30.
    pub request_timeout_seconds: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: None,
            public_url: "http://127.0.0.1:8080".into(),
            trusted_proxies: vec![],
            shutdown_grace_seconds: 20,
            max_body_bytes: 1 << 20,
            request_timeout_seconds: 30,
        }
    }
}

/// Where data lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://<path>` (default `sqlite://flatline.db`) or `postgres://…`.
    pub url: String,
    /// Reader connections (SQLite) or pool size (PostgreSQL). Default 8.
    pub max_connections: u32,
    /// Milliseconds a SQLite writer waits for a lock before failing. Default 5000.
    pub busy_timeout_ms: u64,
    /// PostgreSQL: seconds a query waits for a free pool connection before failing. Default 10.
    pub acquire_timeout_seconds: u64,
    /// PostgreSQL: seconds after which an idle pool connection is closed; 0 keeps them open. Default 600.
    pub idle_timeout_seconds: u64,
    /// PostgreSQL: `statement_timeout` set on every connection, in milliseconds; 0 disables it. Default 30000.
    /// Migrations run without it.
    pub statement_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://flatline.db".into(),
            max_connections: 8,
            busy_timeout_ms: 5000,
            acquire_timeout_seconds: 10,
            idle_timeout_seconds: 600,
            statement_timeout_ms: 30_000,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter directive. Default `info`. `RUST_LOG` wins when set.
    pub filter: String,
    /// `text` (default) or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// One rate limiter's settings in the config file.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimiterConfig {
    /// Permits a burst may use.
    pub bucket_size: u32,
    /// Seconds for one permit to come back.
    pub permit_regeneration_seconds: f64,
}

/// Rate limiters, by name (`registration`, `prekeys`, `usernameLookup`, …). Unset ones keep their defaults,
/// which are Signal-Server's where Signal has the limiter (see docs/OPERATOR.md for the table).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LimitsConfig(pub BTreeMap<String, LimiterConfig>);

impl LimitsConfig {
    /// The effective limits.
    pub fn to_limits(&self) -> Result<Limits, ConfigError> {
        let mut limits = Limits::default();
        for (name, c) in &self.0 {
            let key = format!("limits.{name}");
            let limiter = Limiter::from_name(name).ok_or_else(|| {
                let known: Vec<_> = Limiter::ALL.iter().map(|l| l.name()).collect();
                invalid(
                    &key,
                    format!("unknown limiter; known: {}", known.join(", ")),
                )
            })?;
            if c.bucket_size == 0 {
                return Err(invalid(format!("{key}.bucket_size"), "must be at least 1"));
            }
            let regen = Duration::try_from_secs_f64(c.permit_regeneration_seconds)
                .ok()
                .filter(|d| {
                    *d >= Duration::from_millis(1) && *d <= Duration::from_secs(365 * 86_400)
                })
                .ok_or_else(|| {
                    invalid(
                        format!("{key}.permit_regeneration_seconds"),
                        "must be between 0.001 and 31536000",
                    )
                })?;
            limits.set(limiter, BucketConfig::new(c.bucket_size, regen));
        }
        Ok(limits)
    }
}

impl Config {
    /// Loads `path` (if given) and applies `FLATLINE_*` overrides from `env`, then validates.
    pub fn load(
        path: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_owned(),
                source,
            })?,
            None => String::new(),
        };
        Self::from_toml_and_env(&text, env)
    }

    /// Parses TOML text, applies overrides, validates.
    pub fn from_toml_and_env(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut root: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax(e.to_string()))?;
        for (name, value) in env {
            let Some(path) = name.strip_prefix("FLATLINE_") else {
                continue;
            };
            // FLATLINE_CONFIG names the file itself; it is not a key.
            if path == "CONFIG" {
                continue;
            }
            set_path(&mut root, path, &value)?;
        }
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(root)).map_err(|e| {
                let key = e.path().to_string();
                invalid(
                    if key == "." { "(root)".to_owned() } else { key },
                    e.into_inner().to_string(),
                )
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.trusted_proxies()?;
        self.limits.to_limits()?;
        let db = &self.database.url;
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database.url",
                "must start with sqlite: or postgres://",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if self.database.acquire_timeout_seconds == 0 {
            return Err(invalid(
                "database.acquire_timeout_seconds",
                "must be at least 1",
            ));
        }
        if !(self.server.public_url.starts_with("https://")
            || self.server.public_url.starts_with("http://"))
        {
            return Err(invalid(
                "server.public_url",
                "must be an http:// or https:// URL",
            ));
        }
        if self.server.max_body_bytes < 1024 {
            return Err(invalid("server.max_body_bytes", "must be at least 1024"));
        }
        if self.server.request_timeout_seconds == 0 {
            return Err(invalid(
                "server.request_timeout_seconds",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The parsed trusted-proxy networks.
    pub fn trusted_proxies(&self) -> Result<Vec<IpNet>, ConfigError> {
        self.server
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        invalid(
                            format!("server.trusted_proxies[{i}]"),
                            format!("`{s}` is not an IP address or CIDR"),
                        )
                    })
            })
            .collect()
    }
}

/// Sets `a__b__c` (case-insensitive, lowered) in `root` to `value`, read as a TOML scalar when it parses as one.
fn set_path(root: &mut toml::Table, path: &str, value: &str) -> Result<(), ConfigError> {
    let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
    let dotted = parts.join(".");
    if parts.iter().any(String::is_empty) {
        return Err(invalid(format!("FLATLINE_{path}"), "empty key segment"));
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let (last, parents) = parts
        .split_last()
        .ok_or_else(|| invalid(&dotted, "empty key"))?;
    let mut table = root;
    for p in parents {
        let entry = table
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| invalid(&dotted, format!("`{p}` is not a table")))?;
    }
    table.insert(last.clone(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml_and_env(
            text,
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    #[test]
    fn empty_config_is_valid_defaults() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.server.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(c.limits.to_limits().unwrap(), Limits::default());
    }

    #[test]
    fn env_overrides_file() {
        let c = load(
            "[server]\nlisten = \"127.0.0.1:1\"\n",
            &[
                ("FLATLINE_SERVER__LISTEN", "0.0.0.0:9000"),
                ("FLATLINE_LIMITS__PREKEYS__BUCKET_SIZE", "20"),
                (
                    "FLATLINE_LIMITS__PREKEYS__PERMIT_REGENERATION_SECONDS",
                    "1.5",
                ),
                ("OTHER", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.server.listen, SocketAddr::from(([0, 0, 0, 0], 9000)));
        // Limiter names are case-sensitive on the wire but env keys are lowered: document camelCase via the file.
        assert!(c.limits.0.contains_key("prekeys"));
        assert_eq!(
            c.limits.to_limits().unwrap().get(Limiter::PreKeys),
            BucketConfig::new(20, Duration::from_millis(1500))
        );
    }

    #[test]
    fn errors_name_the_bad_key() {
        let cases = [
            ("[server]\nlisten = \"nope\"\n", "server.listen"),
            ("[server]\nlisen = \"127.0.0.1:1\"\n", "server.lisen"),
            (
                "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"bogus\"]\n",
                "server.trusted_proxies[1]",
            ),
            (
                "[limits.nosuch]\nbucket_size = 1\npermit_regeneration_seconds = 1\n",
                "limits.nosuch",
            ),
            (
                "[limits.prekeys]\nbucket_size = 0\npermit_regeneration_seconds = 1\n",
                "limits.prekeys.bucket_size",
            ),
            ("[database]\nurl = \"mysql://x\"\n", "database.url"),
            (
                "[database]\nacquire_timeout_seconds = 0\n",
                "database.acquire_timeout_seconds",
            ),
        ];
        for (text, key) in cases {
            match load(text, &[]) {
                Err(ConfigError::Invalid { key: k, message }) => {
                    assert_eq!(k, key, "{text}: {message}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn postgres_pool_settings_have_defaults_and_env_overrides() {
        let c = load(
            "[database]\nurl = \"postgresql://flatline@db/flatline\"\n",
            &[("FLATLINE_DATABASE__STATEMENT_TIMEOUT_MS", "1500")],
        )
        .unwrap();
        assert_eq!(c.database.acquire_timeout_seconds, 10);
        assert_eq!(c.database.idle_timeout_seconds, 600);
        assert_eq!(c.database.statement_timeout_ms, 1500);
    }

    #[test]
    fn trusted_proxies_accept_addresses_and_cidrs() {
        let c = load(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.trusted_proxies().unwrap().len(), 2);
    }
}
