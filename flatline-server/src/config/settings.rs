//! The validated configuration: what a [`Config`] means, in the types the program uses.
//!
//! [`Config::load`] and [`Config::validate`] are the only ways to make a [`Settings`], so holding one means every
//! key was checked once, with errors that name the key (and the environment variable it came from). Durations are
//! [`Duration`]s, networks are parsed, the core's policies are built, and defaults that follow other keys (key
//! files next to the database, manifest endpoints at `server.public_url`) are resolved: nothing downstream converts
//! or can fail on a setting again.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flatline_core::contacts::ContactsConfig;
use flatline_core::devices::DevicesConfig;
use flatline_core::invites::InvitePolicy;
use flatline_core::messages::service::MessagesConfig;
use flatline_core::ratelimit::Limits;
use ipnet::IpNet;

use super::{Config, LogConfig, ProviderConfig, TlsConfig};

/// The whole validated configuration.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Settings {
    /// `[server]`.
    pub server: ServerSettings,
    /// `[database]`: which store, and its pool settings.
    pub database: DatabaseSettings,
    /// `[log]`.
    pub log: LogConfig,
    /// `[limits.*]` over the defaults.
    pub limits: Limits,
    /// `[registration]`.
    pub registration: RegistrationOptions,
    /// `[invites]`.
    pub invites: InviteSettings,
    /// `[[providers]]`, checked, in the order listed.
    pub providers: Vec<ProviderConfig>,
    /// `[contacts]`.
    pub contacts: ContactsConfig,
    /// `[instance]`, with its defaults resolved.
    pub instance: InstanceSettings,
    /// `[storage]`.
    pub storage: StorageSettings,
    /// `[messages]`.
    pub messages: MessagesConfig,
    /// `[sealed_sender]`.
    pub sealed_sender: SealedSenderSettings,
    /// `[chat]`.
    pub chat: ChatSettings,
    /// `[devices]`.
    pub devices: DevicesConfig,
    /// The file form these were made from, for `check-config` and for `dev`, which rewrites and validates it again.
    pub(super) source: Config,
}

/// `[server]`: listeners, network trust and HTTP limits.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Main listener.
    pub listen: SocketAddr,
    /// Separate listener for `/healthz` and `/metrics`; `None` = on the main listener.
    pub admin_listen: Option<SocketAddr>,
    /// Public base URL (`http://` or `https://`).
    pub public_url: String,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<[IpNet]>,
    /// Time in-flight requests get after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Largest request body in bytes (at least 1024).
    pub max_body_bytes: usize,
    /// Time before a request is abandoned with 408 (at least 1 s).
    pub request_timeout: Duration,
    /// Prefix length per-IP limits count IPv6 clients by (32..=128).
    pub ipv6_limit_prefix: u8,
    /// Native TLS on the main listener.
    pub tls: Option<TlsConfig>,
    /// Time a connection may take to send a request head, and may stay idle (at least 1 s).
    pub header_read_timeout: Duration,
    /// Open HTTP connections of the main listener (at least 1).
    pub max_connections: usize,
    /// Open HTTP connections per client address (at least 1).
    pub max_connections_per_ip: usize,
}

/// `[registration]`.
#[derive(Debug, Clone)]
pub struct RegistrationOptions {
    /// Lifetime of a verification session (10 s..=1 day).
    pub session_lifetime: Duration,
    /// The principal secret's file.
    pub principal_secret_file: PathBuf,
    /// Time to wait for an identity provider before answering 502 (1..=120 s).
    pub idp_timeout: Duration,
}

/// `[invites]`.
#[derive(Debug, Clone)]
pub struct InviteSettings {
    /// New subjects need an invite on every provider.
    pub required: bool,
    /// The invites service's policy.
    pub policy: InvitePolicy,
}

/// `[instance]`, with every default resolved.
#[derive(Debug, Clone)]
pub struct InstanceSettings {
    /// Instance name shown by apps (not blank).
    pub name: String,
    /// The Ed25519 instance signing key file.
    pub signing_key_file: PathBuf,
    /// The sealed-sender trust root file (differs from the signing key's).
    pub sealed_sender_key_file: PathBuf,
    /// The zkgroup parameters file (differs from both above).
    pub zk_params_file: PathBuf,
    /// How long a signed manifest stays valid (1..=365 days).
    pub manifest_lifetime: Duration,
    /// The manifest's endpoints by name: the configured ones, else `chat`, `cdn0` (avatars) and `cdn3`
    /// (attachments), all `server.public_url`, which serves the three.
    pub endpoints: BTreeMap<String, String>,
    /// PEM certificate files whose public keys clients may pin.
    pub tls_certificates: Vec<PathBuf>,
    /// Where the manifest is published.
    pub manifest_url: String,
}

/// `[storage]`.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// Where objects are kept.
    pub objects: ObjectStorage,
    /// Largest attachment accepted, in bytes (at least 1).
    pub max_attachment_bytes: u64,
    /// How long an upload form (and its TUS upload) stays usable.
    pub upload_expiry: Duration,
    /// How long a finished attachment is kept.
    pub attachment_retention: Duration,
    /// Time between cleanup runs.
    pub cleanup_interval: Duration,
}

/// The object store `[storage]` chooses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectStorage {
    /// The local directory (created when absent).
    Local(PathBuf),
    /// An S3-compatible bucket.
    S3(S3Location),
}

/// An S3-compatible bucket and how to sign for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket name (3..=63 of `a-z0-9-.`).
    pub bucket: String,
    /// The endpoint (`https://` or `http://`); `None` = AWS for `region`.
    pub endpoint: Option<String>,
    /// The region (not blank).
    pub region: String,
    /// The access key id (not empty).
    pub access_key_id: String,
    /// Where the secret access key is read from.
    pub secret_access_key: SecretSource,
}

/// Where a secret is read from: exactly one of a file and an environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file holding it.
    File(PathBuf),
    /// An environment variable holding it.
    Env(String),
}

/// `[sealed_sender]`.
#[derive(Debug, Clone, Copy)]
pub struct SealedSenderSettings {
    /// How long a sender certificate is valid (1..=720 hours); a rotated server certificate is kept this long.
    pub certificate_lifetime: Duration,
}

/// `[chat]`: the chat and provisioning WebSockets.
#[derive(Debug, Clone)]
pub struct ChatSettings {
    /// Largest WebSocket message a client may send, in bytes (4096..=10485760).
    pub max_frame_bytes: usize,
    /// Requests of one socket handled at once (at least 1).
    pub max_in_flight_requests: usize,
    /// Pushes sent and not yet acknowledged on one socket (1..=4096).
    pub push_window: usize,
    /// Open sockets per client IP (at least 1).
    pub max_sockets_per_ip: usize,
    /// Open sockets of this process (at least 1).
    pub max_sockets: usize,
    /// Silence after which a chat socket is closed (at least 1 s).
    pub idle_timeout: Duration,
    /// Silence after which a provisioning socket is closed (at least 1 s).
    pub provisioning_idle_timeout: Duration,
    /// Age at which a provisioning socket is closed however busy (at least 1 s).
    pub provisioning_lifetime: Duration,
}

impl Settings {
    /// The file form these settings were validated from: what `check-config` prints, and what `flatline-server
    /// dev` rewrites before validating again. Read settings from the typed fields, not from it.
    pub fn source(&self) -> &Config {
        &self.source
    }

    /// Settings that are valid but probably not what the operator wants; logged at start-up.
    ///
    /// Principals live in one namespace shared by every provider (F-20, docs/SECURITY.md): when two providers map
    /// the same claim, a user of either IdP can take a principal first and the other provider's user with the same
    /// claim value is refused with `principal_conflict`.
    ///
    /// Without `server.admin_listen`, `/metrics` (route counts, authentication failure reasons) and `/healthz` are
    /// served on the main listener, as the API contract allows (F-18); that is said when the main listener is
    /// probably reachable from the internet: not on loopback, or behind a proxy (`server.trusted_proxies` is set).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = vec![];
        let public =
            !self.server.listen.ip().is_loopback() || !self.server.trusted_proxies.is_empty();
        if self.server.admin_listen.is_none() && public {
            warnings.push(format!(
                "`/metrics` and `/healthz` are served to anyone who reaches the main listener {} (or a proxy in \
                 front of it); set `server.admin_listen` to a loopback or internal address to serve them there only \
                 (docs/SECURITY.md, F-18)",
                self.server.listen
            ));
        }
        let mut by_claim: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for p in &self.providers {
            if let Some(claim) = p.principal_claim.as_deref() {
                by_claim.entry(claim).or_default().push(p.id.as_str());
            }
        }
        by_claim
            .into_iter()
            .filter(|(_, ids)| ids.len() > 1)
            .map(|(claim, ids)| {
                format!(
                    "providers {} all map the `{claim}` claim to principals; principals are one namespace, so \
                     whoever registers a value first through any of them holds it (use opaque principals, or \
                     only IdPs that are authoritative for the same users; see docs/SECURITY.md, F-20)",
                    ids.join(", ")
                )
            })
            .for_each(|w| warnings.push(w));
        warnings
    }
}

/// `[database]`, by dialect (the URL's scheme), in the types the stores take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseSettings {
    /// `sqlite:` — the embedded database.
    Sqlite {
        /// The URL as configured.
        url: String,
        /// Reader connections (`max_connections`, at least 1).
        readers: u32,
        /// How long the writer waits for a lock before failing.
        busy_timeout: Duration,
        /// How long a query waits for a free connection (at least 1 s).
        acquire_timeout: Duration,
    },
    /// `postgres://` or `postgresql://`.
    Postgres {
        /// The URL as configured (it may carry a password: print it through `store::redact_url`).
        url: String,
        /// Pool sizes and timeouts.
        pool: crate::store::postgres::PoolSettings,
    },
}

impl DatabaseSettings {
    /// The configured URL.
    pub fn url(&self) -> &str {
        match self {
            DatabaseSettings::Sqlite { url, .. } | DatabaseSettings::Postgres { url, .. } => url,
        }
    }
}
