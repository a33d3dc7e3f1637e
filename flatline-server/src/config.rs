//! Configuration: a TOML file, then `FLATLINE_*` environment overrides, then validation into [`Settings`].
//!
//! [`Config`] and its sections are the file's shape (serde, defaults, `deny_unknown_fields`); tests and `dev` build
//! or tweak one and call [`Config::validate`]. The program itself runs on the [`Settings`] that validation makes
//! (typed values, defaults resolved), never on the file form.
//!
//! Every setting has a default, so an empty file (or none) is a working development configuration.
//! Environment overrides name the key path in upper case with `__` between levels:
//! `FLATLINE_SERVER__LISTEN=0.0.0.0:8080`, `FLATLINE_LIMITS__PREKEYS__BUCKET_SIZE=20`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use flatline_core::contacts::{ContactsConfig, FloodConfig};
use flatline_core::invites::InvitePolicy;
use flatline_core::ratelimit::{BucketConfig, Limiter, Limits};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

mod settings;
pub use settings::{
    ChatSettings, DatabaseSettings, InstanceSettings, InviteSettings, ObjectStorage,
    RegistrationOptions, S3Location, SealedSenderSettings, SecretSource, ServerSettings, Settings,
    StorageSettings,
};

/// Longest time a configured rate-limit bucket may take to refill from empty (100 years).
const MAX_BUCKET_SECONDS: f64 = 3_153_600_000.0;

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
    /// Rate limiters.
    pub limits: LimitsConfig,
    /// Registration through identity providers.
    pub registration: RegistrationConfig,
    /// Registration invites.
    pub invites: InvitesConfig,
    /// Identity providers (`[[providers]]`), in the order listed.
    pub providers: Vec<ProviderConfig>,
    /// Contact invites and contact gating (flood breaker thresholds).
    pub contacts: ContactsSection,
    /// Instance identity: signing keys and the signed manifest (docs/TRUST.md).
    pub instance: InstanceConfig,
    /// Avatars and attachments (`[storage]`, docs/OPERATIONS.md).
    pub storage: StorageConfig,
    /// Message queues: retention and the per-device bound.
    pub messages: MessagesSection,
    /// Sealed sender: sender certificates (API.md §11).
    pub sealed_sender: SealedSenderConfig,
    /// The chat WebSocket (`/v1/websocket/`): frame and connection limits, timeouts, the push window.
    pub chat: ChatConfig,
    /// Linked devices (API.md §12).
    pub devices: DevicesSection,
}

/// `[devices]`: linked devices.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevicesSection {
    /// Devices per account, the primary included (1..=127). Default 6 (Signal's); a link beyond it is 411.
    pub max_per_account: u8,
}

impl Default for DevicesSection {
    fn default() -> Self {
        DevicesSection {
            max_per_account: flatline_core::devices::DEFAULT_MAX_DEVICES,
        }
    }
}

impl DevicesSection {
    fn to_devices_config(&self) -> Result<flatline_core::devices::DevicesConfig, ConfigError> {
        if !(1..=flatline_core::ids::DeviceId::MAX).contains(&self.max_per_account) {
            return Err(invalid(
                "devices.max_per_account",
                "must be between 1 and 127",
            ));
        }
        Ok(flatline_core::devices::DevicesConfig {
            max_per_account: self.max_per_account,
        })
    }
}

/// Where avatars and attachments are kept, and their limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory of the local object store. Default `flatline-storage` next to the SQLite database (the working
    /// directory for other databases). Created when absent.
    pub path: Option<PathBuf>,
    /// Largest attachment accepted, in bytes (larger `Upload-Length` or `uploadLength` → 413). Default 100 MiB.
    pub max_attachment_bytes: u64,
    /// Seconds an upload form (and its TUS upload) stays usable; unfinished uploads older than this are deleted.
    /// Default 86400 (one day).
    pub upload_expiry_seconds: u64,
    /// Days a finished attachment is kept. Default 45 (Signal keeps attachments 45 days).
    pub attachment_retention_days: u64,
    /// Seconds between cleanup runs. Default 3600.
    pub cleanup_interval_seconds: u64,
    /// `s3://<bucket>`: keep objects in an S3-compatible bucket instead of the local directory `path`. Unset (the
    /// default) = local directory.
    pub url: Option<String>,
    /// The S3 endpoint, e.g. `https://s3.example.net` or `http://127.0.0.1:9000` (plain HTTP only when written so).
    /// Unset = AWS for `s3_region`.
    pub s3_endpoint: Option<String>,
    /// The bucket's region. Default `us-east-1`.
    pub s3_region: String,
    /// Access key id.
    pub s3_access_key_id: Option<String>,
    /// File holding the secret access key (exactly one of this and `s3_secret_access_key_env`).
    pub s3_secret_access_key_file: Option<PathBuf>,
    /// Environment variable holding the secret access key.
    pub s3_secret_access_key_env: Option<String>,
}

impl StorageConfig {
    /// The checked settings; `default_path` is the local directory when `path` is unset.
    fn to_settings(&self, default_path: PathBuf) -> Result<StorageSettings, ConfigError> {
        if self.max_attachment_bytes == 0 {
            return Err(invalid(
                "storage.max_attachment_bytes",
                "must be at least 1",
            ));
        }
        let objects = match &self.url {
            None => ObjectStorage::Local(self.path.clone().unwrap_or(default_path)),
            Some(url) => ObjectStorage::S3(self.s3_location(url)?),
        };
        Ok(StorageSettings {
            objects,
            max_attachment_bytes: self.max_attachment_bytes,
            upload_expiry: Duration::from_secs(self.upload_expiry_seconds),
            attachment_retention: Duration::from_secs(
                self.attachment_retention_days.saturating_mul(86_400),
            ),
            cleanup_interval: Duration::from_secs(self.cleanup_interval_seconds),
        })
    }

    fn s3_location(&self, url: &str) -> Result<S3Location, ConfigError> {
        // S3 bucket names: 3..=63 of lower-case letters, digits, '-' and '.'.
        let bucket = url
            .strip_prefix("s3://")
            .map(|b| b.trim_end_matches('/'))
            .filter(|b| {
                (3..=63).contains(&b.len())
                    && b.bytes().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.'
                    })
            })
            .ok_or_else(|| {
                invalid(
                    "storage.url",
                    "must be s3://<bucket> (3 to 63 of a-z, 0-9, '-', '.')",
                )
            })?;
        if let Some(e) = &self.s3_endpoint
            && !(e.starts_with("https://") || e.starts_with("http://"))
        {
            return Err(invalid(
                "storage.s3_endpoint",
                "must start with https:// or http://",
            ));
        }
        if self.s3_region.trim().is_empty() {
            return Err(invalid("storage.s3_region", "must not be empty"));
        }
        let access_key_id = match self.s3_access_key_id.as_deref() {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => {
                return Err(invalid(
                    "storage.s3_access_key_id",
                    "required with an s3:// url",
                ));
            }
        };
        let secret_access_key = match (
            &self.s3_secret_access_key_file,
            &self.s3_secret_access_key_env,
        ) {
            (Some(file), None) => SecretSource::File(file.clone()),
            (None, Some(var)) => SecretSource::Env(var.clone()),
            _ => {
                return Err(invalid(
                    "storage.s3_secret_access_key_file",
                    "set exactly one of s3_secret_access_key_file and s3_secret_access_key_env",
                ));
            }
        };
        Ok(S3Location {
            bucket: bucket.to_owned(),
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            access_key_id,
            secret_access_key,
        })
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: None,
            max_attachment_bytes: 100 * 1024 * 1024,
            upload_expiry_seconds: 86_400,
            attachment_retention_days: 45,
            cleanup_interval_seconds: 3600,
            url: None,
            s3_endpoint: None,
            s3_region: "us-east-1".to_owned(),
            s3_access_key_id: None,
            s3_secret_access_key_file: None,
            s3_secret_access_key_env: None,
        }
    }
}

/// `[messages]`: how long unacknowledged messages are kept and how large one device queue may grow.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagesSection {
    /// Days an unacknowledged message is kept before it expires (1..=365). Default 30.
    pub ttl_days: u32,
    /// Largest byte total of one device's queue; a send that would exceed it gets 429 and stores nothing
    /// (at least 1 MiB). Default 134217728 (128 MiB).
    pub max_queue_bytes: u64,
}

impl Default for MessagesSection {
    fn default() -> Self {
        let c = flatline_core::messages::service::MessagesConfig::default();
        MessagesSection {
            ttl_days: u32::try_from(c.ttl.as_secs() / 86_400).unwrap_or(30),
            max_queue_bytes: c.max_queue_bytes,
        }
    }
}

/// `[sealed_sender]`: the sender certificates of `GET /v1/certificate/delivery`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SealedSenderConfig {
    /// How long a sender certificate is valid, in hours (1..=720). Default 24. A rotated server certificate is
    /// kept this long, so raise it before, never right after, a rotation.
    pub certificate_lifetime_hours: u32,
}

impl Default for SealedSenderConfig {
    fn default() -> Self {
        SealedSenderConfig {
            certificate_lifetime_hours: 24,
        }
    }
}

/// `[chat]`: the chat and provisioning WebSockets (docs/API.md "Chat socket").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChatConfig {
    /// Largest WebSocket message (and frame) a client may send, in bytes; a larger one closes the socket with 1009.
    /// Default 524288 (512 KiB, Signal-Server's), range 4096..=10485760.
    pub max_frame_bytes: usize,
    /// Requests of one socket being handled at once; one more is answered 429 in its response frame. Default 128.
    pub max_in_flight_requests: usize,
    /// Server pushes (`PUT /api/v1/message`) sent and not yet acknowledged on one socket. Default 256 (Signal's).
    pub push_window: usize,
    /// Open chat and provisioning sockets per client IP; one more upgrade is answered 429. Default 100.
    pub max_sockets_per_ip: usize,
    /// Open chat and provisioning sockets of this process; one more upgrade is answered 429. Default 20000.
    pub max_sockets: usize,
    /// Seconds a chat socket may stay silent (no frame, ping or pong) before it is closed (1000 `Timeout`).
    /// Default 90 (libsignal pings after 31 s of silence).
    pub idle_timeout_seconds: u64,
    /// Seconds a provisioning socket may stay silent. Default 60.
    pub provisioning_idle_timeout_seconds: u64,
    /// Seconds after which a provisioning socket is closed however busy (1000 `Timeout`). Default 90.
    pub provisioning_lifetime_seconds: u64,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            max_frame_bytes: 512 * 1024,
            max_in_flight_requests: 128,
            push_window: 256,
            max_sockets_per_ip: 100,
            max_sockets: 20_000,
            idle_timeout_seconds: 90,
            provisioning_idle_timeout_seconds: 60,
            provisioning_lifetime_seconds: 90,
        }
    }
}

impl MessagesSection {
    fn to_messages_config(
        &self,
    ) -> Result<flatline_core::messages::service::MessagesConfig, ConfigError> {
        if !(1..=365).contains(&self.ttl_days) {
            return Err(invalid("messages.ttl_days", "must be between 1 and 365"));
        }
        if self.max_queue_bytes < 1 << 20 {
            return Err(invalid(
                "messages.max_queue_bytes",
                "must be at least 1048576 (1 MiB)",
            ));
        }
        Ok(flatline_core::messages::service::MessagesConfig {
            ttl: Duration::from_secs(u64::from(self.ttl_days) * 86_400),
            max_queue_bytes: self.max_queue_bytes,
        })
    }
}

impl SealedSenderConfig {
    fn to_settings(&self) -> Result<SealedSenderSettings, ConfigError> {
        if !(1..=720).contains(&self.certificate_lifetime_hours) {
            return Err(invalid(
                "sealed_sender.certificate_lifetime_hours",
                "must be between 1 and 720",
            ));
        }
        Ok(SealedSenderSettings {
            certificate_lifetime: Duration::from_secs(
                u64::from(self.certificate_lifetime_hours) * 3600,
            ),
        })
    }
}

impl ChatConfig {
    fn to_settings(&self) -> Result<ChatSettings, ConfigError> {
        if !(4096..=10 << 20).contains(&self.max_frame_bytes) {
            return Err(invalid(
                "chat.max_frame_bytes",
                "must be between 4096 and 10485760",
            ));
        }
        for (key, v) in [
            ("max_in_flight_requests", self.max_in_flight_requests as u64),
            ("push_window", self.push_window as u64),
            ("max_sockets_per_ip", self.max_sockets_per_ip as u64),
            ("max_sockets", self.max_sockets as u64),
            ("idle_timeout_seconds", self.idle_timeout_seconds),
            (
                "provisioning_idle_timeout_seconds",
                self.provisioning_idle_timeout_seconds,
            ),
            (
                "provisioning_lifetime_seconds",
                self.provisioning_lifetime_seconds,
            ),
        ] {
            if v == 0 {
                return Err(invalid(format!("chat.{key}"), "must be at least 1"));
            }
        }
        if self.push_window > 4096 {
            return Err(invalid("chat.push_window", "must be at most 4096"));
        }
        Ok(ChatSettings {
            max_frame_bytes: self.max_frame_bytes,
            max_in_flight_requests: self.max_in_flight_requests,
            push_window: self.push_window,
            max_sockets_per_ip: self.max_sockets_per_ip,
            max_sockets: self.max_sockets,
            idle_timeout: Duration::from_secs(self.idle_timeout_seconds),
            provisioning_idle_timeout: Duration::from_secs(self.provisioning_idle_timeout_seconds),
            provisioning_lifetime: Duration::from_secs(self.provisioning_lifetime_seconds),
        })
    }
}

/// `[server.tls]`: native TLS on the main listener (HTTPS and WSS on one port).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// Registration settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// Lifetime of a verification session, and of a verified session until it registers. Default 600.
    pub session_lifetime_seconds: u64,
    /// File with the principal secret (created with mode 0600 when absent). It keys opaque principals and
    /// tombstones: losing it changes every opaque principal. Default `flatline-principal.key`.
    pub principal_secret_file: PathBuf,
    /// Seconds to wait for an identity provider before answering 502. Default 10.
    pub idp_timeout_seconds: u64,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            session_lifetime_seconds: 600,
            principal_secret_file: PathBuf::from("flatline-principal.key"),
            idp_timeout_seconds: 10,
        }
    }
}

/// `[contacts]`: contact invites and the flood breaker (see docs/CONTACTS.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContactsSection {
    /// Redemptions one contact invite admits in a burst (its token bucket). Default 5.
    pub burst: u32,
    /// Seconds for one token of that bucket to come back. Default 600 (10 min).
    pub refill_seconds: u64,
    /// Seconds a contact invite stays paused after a flood. Default 86400 (24 h).
    pub pause_seconds: u64,
    /// The per-owner window in seconds. Default 3600 (1 h).
    pub owner_window_seconds: u64,
    /// New grantees an owner accepts per window before the excess is quarantined. Default 20.
    pub owner_window_max: u32,
    /// Lifetime of a contact invite created without `expiresInSeconds`. Default 604800 (7 days).
    pub default_expiry_seconds: u64,
    /// Longest lifetime a client may ask for. Default 31536000 (365 days).
    pub max_expiry_seconds: u64,
    /// Largest `maxUses` of a contact invite. Default 1000.
    pub max_uses: u32,
    /// Most contact invites one account may hold. Default 100.
    pub max_invites_per_account: u32,
}

impl Default for ContactsSection {
    fn default() -> Self {
        let c = ContactsConfig::default();
        ContactsSection {
            burst: c.flood.burst,
            refill_seconds: c.flood.refill.as_secs(),
            pause_seconds: c.flood.pause.as_secs(),
            owner_window_seconds: c.flood.owner_window.as_secs(),
            owner_window_max: c.flood.owner_window_max,
            default_expiry_seconds: c.default_expiry.as_secs(),
            max_expiry_seconds: c.max_expiry.as_secs(),
            max_uses: c.max_uses,
            max_invites_per_account: c.max_invites_per_account,
        }
    }
}

/// `[invites]`: registration invite policy (see docs/INVITES.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InvitesConfig {
    /// New subjects need an invite on every provider (providers can also require it alone). Default false.
    pub required: bool,
    /// Accounts may create invites (`POST /v1/invites`). Default true.
    pub users_may_invite: bool,
    /// Account age in days from which an account may invite. Default 7.
    pub min_account_age_days: u32,
    /// One more invite is earned per this many days of account age past `min_account_age_days`:
    /// earned = min(quota_max, 1 + ⌊(age − min_account_age_days) / quota_per_days⌋). Default 7.
    pub quota_per_days: u32,
    /// Cap on the invites an account earns in total. Default 10.
    pub quota_max: u32,
    /// Most active invites one account may hold at once. Default 5.
    pub max_open_invites: u32,
    /// Largest `maxUses` of an account's invite. Default 10.
    pub max_uses_per_user_invite: u32,
    /// Lifetime in days of an invite created without `expiresInSeconds`. Default 7.
    pub default_expiry_days: u32,
    /// Longest lifetime in days an account may ask for. Default 30.
    pub max_expiry_days: u32,
    /// An invite tree (an account admitted without an account's invite, and everyone transitively admitted from
    /// it) with this many members lets none of them create invites. Default 1000.
    pub tree_size_limit: u64,
    /// Fast-chain rule: refuse invites from an account whose admission and those of its inviters, `chain_hops`
    /// levels up, all happened within `chain_window_minutes`. Default 3.
    pub chain_hops: u32,
    /// The fast-chain window in minutes; 0 disables the rule. Default 5.
    pub chain_window_minutes: u32,
}

impl Default for InvitesConfig {
    fn default() -> Self {
        let p = InvitePolicy::default();
        let days = |d: Duration| u32::try_from(d.as_secs() / 86_400).unwrap_or(u32::MAX);
        InvitesConfig {
            required: false,
            users_may_invite: p.users_may_invite,
            min_account_age_days: days(p.min_account_age),
            quota_per_days: days(p.quota_interval),
            quota_max: p.quota_max,
            max_open_invites: p.max_open_invites,
            max_uses_per_user_invite: p.max_uses_per_user_invite,
            default_expiry_days: days(p.default_expiry),
            max_expiry_days: days(p.max_expiry),
            tree_size_limit: p.tree_size_limit,
            chain_hops: p.chain_hops,
            chain_window_minutes: u32::try_from(p.chain_window.as_secs() / 60).unwrap_or(u32::MAX),
        }
    }
}

impl InvitesConfig {
    fn to_policy(&self) -> Result<InvitePolicy, ConfigError> {
        for (key, v) in [
            ("quota_per_days", u64::from(self.quota_per_days)),
            (
                "max_uses_per_user_invite",
                u64::from(self.max_uses_per_user_invite),
            ),
            ("default_expiry_days", u64::from(self.default_expiry_days)),
            ("max_expiry_days", u64::from(self.max_expiry_days)),
            ("tree_size_limit", self.tree_size_limit),
            ("chain_hops", u64::from(self.chain_hops)),
        ] {
            if v == 0 {
                return Err(invalid(format!("invites.{key}"), "must be at least 1"));
            }
        }
        if self.default_expiry_days > self.max_expiry_days {
            return Err(invalid(
                "invites.default_expiry_days",
                "must not exceed invites.max_expiry_days",
            ));
        }
        if self.max_expiry_days > 3650 {
            return Err(invalid("invites.max_expiry_days", "must be at most 3650"));
        }
        let days = |d: u32| Duration::from_secs(u64::from(d) * 86_400);
        Ok(InvitePolicy {
            users_may_invite: self.users_may_invite,
            min_account_age: days(self.min_account_age_days),
            quota_interval: days(self.quota_per_days),
            quota_max: self.quota_max,
            max_open_invites: self.max_open_invites,
            max_uses_per_user_invite: self.max_uses_per_user_invite,
            default_expiry: days(self.default_expiry_days),
            max_expiry: days(self.max_expiry_days),
            tree_size_limit: self.tree_size_limit,
            chain_hops: self.chain_hops,
            chain_window: Duration::from_secs(u64::from(self.chain_window_minutes) * 60),
        })
    }
}

/// How we authenticate to a provider's PAR and token endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic (`client_secret_basic`, the default).
    #[default]
    ClientSecretBasic,
    /// Form fields (`client_secret_post`).
    ClientSecretPost,
}

/// One OpenID Connect provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Stable id, `[A-Za-z0-9_-]{1,64}`; part of URLs and of every account's binding.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Issuer identifier.
    pub issuer: String,
    /// Fill unset endpoints from `<issuer>/.well-known/openid-configuration`. Default true.
    #[serde(default = "yes")]
    pub discovery: bool,
    /// Authorization endpoint.
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    /// Token endpoint.
    #[serde(default)]
    pub token_endpoint: Option<String>,
    /// Pushed authorization request endpoint.
    #[serde(default)]
    pub par_endpoint: Option<String>,
    /// RP-initiated logout endpoint.
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    /// JWKS location, `https://` or `file://` (plain `http://` only for loopback hosts).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Our client id.
    pub client_id: String,
    /// File holding the client secret.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Name of an environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Client authentication method. Default `client_secret_basic`.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Scopes; must include `openid`. Default `["openid"]`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Claim mapped to the principal (e.g. `email`); absent = opaque principal (the default).
    #[serde(default)]
    pub principal_claim: Option<String>,
    /// Redirect URIs apps may use.
    pub redirect_uris: Vec<String>,
    /// Accepted ID-token algorithms. Default `["RS256", "ES256", "EdDSA"]`.
    #[serde(default = "default_algs")]
    pub allowed_algs: Vec<String>,
    /// Audiences besides our client id that a token may carry. Default none.
    #[serde(default)]
    pub trusted_audiences: Vec<String>,
    /// New subjects need an invite on this provider. Default false.
    #[serde(default)]
    pub invite_required: bool,
    /// Back-channel logout effect: `lock` (default) or `ignore`.
    #[serde(default = "default_logout")]
    pub logout: flatline_core::registration::oidc::LogoutEffect,
}

fn yes() -> bool {
    true
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into()]
}

fn default_algs() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
}

fn default_logout() -> flatline_core::registration::oidc::LogoutEffect {
    flatline_core::registration::oidc::LogoutEffect::Lock
}

/// Algorithms a provider may allow. `none` and HMAC algorithms are not among them.
pub const SUPPORTED_ALGS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Whether `url` is `https://`, or `http://` to a loopback host (development and tests).
pub fn secure_or_loopback(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

impl ProviderConfig {
    fn validate(&self, i: usize) -> Result<(), ConfigError> {
        let key = |field: &str| format!("providers[{i}].{field}");
        if self.id.is_empty()
            || self.id.len() > 64
            || !self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(invalid(
                key("id"),
                "must be 1..=64 characters of [A-Za-z0-9_-]",
            ));
        }
        if !secure_or_loopback(&self.issuer) {
            return Err(invalid(
                key("issuer"),
                "must be an https:// URL (http:// only for loopback)",
            ));
        }
        for (field, value) in [
            ("authorization_endpoint", &self.authorization_endpoint),
            ("token_endpoint", &self.token_endpoint),
            ("par_endpoint", &self.par_endpoint),
            ("end_session_endpoint", &self.end_session_endpoint),
        ] {
            if value.as_deref().is_some_and(|u| !secure_or_loopback(u)) {
                return Err(invalid(
                    key(field),
                    "must be an https:// URL (http:// only for loopback)",
                ));
            }
            if value.is_none() && !self.discovery && field != "end_session_endpoint" {
                return Err(invalid(key(field), "is required when discovery = false"));
            }
        }
        if let Some(jwks) = &self.jwks_uri {
            if !(jwks.starts_with("file://") || secure_or_loopback(jwks)) {
                return Err(invalid(
                    key("jwks_uri"),
                    "must be https:// or file:// (http:// only for loopback)",
                ));
            }
        } else if !self.discovery {
            return Err(invalid(
                key("jwks_uri"),
                "is required when discovery = false",
            ));
        }
        if self.client_id.is_empty() {
            return Err(invalid(key("client_id"), "must not be empty"));
        }
        if self.client_secret_file.is_some() == self.client_secret_env.is_some() {
            return Err(invalid(
                key("client_secret_file"),
                "set exactly one of client_secret_file and client_secret_env",
            ));
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            return Err(invalid(key("scopes"), "must include openid"));
        }
        if self.principal_claim.as_deref() == Some("") {
            return Err(invalid(
                key("principal_claim"),
                "must not be empty (omit it for opaque principals)",
            ));
        }
        if self.redirect_uris.is_empty()
            || self
                .redirect_uris
                .iter()
                .any(|u| u.is_empty() || u.contains('#'))
        {
            return Err(invalid(
                key("redirect_uris"),
                "must list at least one URI, none with a fragment",
            ));
        }
        if self.allowed_algs.is_empty() {
            return Err(invalid(key("allowed_algs"), "must not be empty"));
        }
        if let Some(bad) = self
            .allowed_algs
            .iter()
            .find(|a| !SUPPORTED_ALGS.contains(&a.as_str()))
        {
            return Err(invalid(
                key("allowed_algs"),
                format!(
                    "`{bad}` is not supported; use {}",
                    SUPPORTED_ALGS.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

impl ContactsSection {
    fn to_contacts_config(&self) -> Result<ContactsConfig, ConfigError> {
        for (key, v) in [
            ("burst", u64::from(self.burst)),
            ("refill_seconds", self.refill_seconds),
            ("pause_seconds", self.pause_seconds),
            ("owner_window_seconds", self.owner_window_seconds),
            ("owner_window_max", u64::from(self.owner_window_max)),
            ("default_expiry_seconds", self.default_expiry_seconds),
            ("max_expiry_seconds", self.max_expiry_seconds),
            ("max_uses", u64::from(self.max_uses)),
            (
                "max_invites_per_account",
                u64::from(self.max_invites_per_account),
            ),
        ] {
            if v == 0 {
                return Err(invalid(format!("contacts.{key}"), "must be at least 1"));
            }
        }
        if self.default_expiry_seconds > self.max_expiry_seconds {
            return Err(invalid(
                "contacts.default_expiry_seconds",
                "must not exceed contacts.max_expiry_seconds",
            ));
        }
        let secs = Duration::from_secs;
        Ok(ContactsConfig {
            flood: FloodConfig {
                burst: self.burst,
                refill: secs(self.refill_seconds),
                pause: secs(self.pause_seconds),
                owner_window: secs(self.owner_window_seconds),
                owner_window_max: self.owner_window_max,
            },
            default_expiry: secs(self.default_expiry_seconds),
            max_expiry: secs(self.max_expiry_seconds),
            max_uses: self.max_uses,
            max_invites_per_account: self.max_invites_per_account,
        })
    }
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
    /// Per-IP rate limits count IPv6 clients per network of this prefix length (32..=128). Default 64: one
    /// client usually holds a whole /64; use 48 or 56 where providers hand out larger blocks.
    pub ipv6_limit_prefix: u8,
    /// Native TLS: when set, the main listener serves HTTPS and WSS only. Default: plain HTTP (behind a TLS proxy).
    pub tls: Option<TlsConfig>,
    /// Seconds a connection may take to send a request head (and to finish the TLS handshake), and may stay idle
    /// between requests, before it is closed. Default 30.
    pub header_read_timeout_seconds: u64,
    /// Open HTTP connections of the main listener (upgraded WebSockets are counted by `[chat]` instead); further
    /// connections are closed at once. Default 10000.
    pub max_connections: usize,
    /// Open HTTP connections per client address (the TCP peer; trusted proxies are not capped). Default 1024.
    pub max_connections_per_ip: usize,
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
            ipv6_limit_prefix: 64,
            tls: None,
            header_read_timeout_seconds: 30,
            max_connections: 10_000,
            max_connections_per_ip: 1024,
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
    /// Seconds a query waits for a free pool connection before failing (503); on SQLite writes queue for the one
    /// writer connection. Keep it below `server.request_timeout_seconds`. Default 10.
    pub acquire_timeout_seconds: u64,
    /// PostgreSQL: seconds after which an idle pool connection is closed; 0 keeps them open. Default 600.
    pub idle_timeout_seconds: u64,
    /// PostgreSQL: `statement_timeout` set on every connection, in milliseconds; 0 disables it. Default 30000.
    /// Migrations run without it.
    pub statement_timeout_ms: u64,
    /// PostgreSQL: seconds an account stays cached for authenticating its devices' requests; 0 turns the cache
    /// off. Changes from any process drop an entry within milliseconds (notifications); this is the bound for a
    /// change nothing notified. Default 30.
    pub auth_cache_seconds: u64,
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
            auth_cache_seconds: 30,
        }
    }
}

impl DatabaseConfig {
    /// PostgreSQL's pool settings from these values (checked by [`DatabaseConfig::settings`]).
    pub(crate) fn pool_settings(&self) -> crate::store::postgres::PoolSettings {
        crate::store::postgres::PoolSettings {
            max_connections: self.max_connections.max(1),
            acquire_timeout: Duration::from_secs(self.acquire_timeout_seconds.max(1)),
            idle_timeout: (self.idle_timeout_seconds > 0)
                .then(|| Duration::from_secs(self.idle_timeout_seconds)),
            statement_timeout_ms: self.statement_timeout_ms,
            auth_cache: Duration::from_secs(self.auth_cache_seconds),
        }
    }

    /// The checked, typed form ([`Config::validate`] calls it; tests that open a store directly do too).
    pub fn settings(&self) -> Result<DatabaseSettings, ConfigError> {
        if self.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if self.acquire_timeout_seconds == 0 {
            return Err(invalid(
                "database.acquire_timeout_seconds",
                "must be at least 1",
            ));
        }
        let acquire_timeout = Duration::from_secs(self.acquire_timeout_seconds);
        let url = self.url.clone();
        if url.starts_with("sqlite:") {
            Ok(DatabaseSettings::Sqlite {
                url,
                readers: self.max_connections,
                busy_timeout: Duration::from_millis(self.busy_timeout_ms),
                acquire_timeout,
            })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseSettings::Postgres {
                url,
                pool: self.pool_settings(),
            })
        } else {
            Err(invalid(
                "database.url",
                "must start with sqlite: or postgres://",
            ))
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

/// Instance identity: the keys and what the signed manifest says (API.md §7, docs/TRUST.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InstanceConfig {
    /// Human-readable instance name shown by apps. Default `Flatline`.
    pub name: String,
    /// The Ed25519 instance signing key (PEM PKCS#8). Default `flatline-signing.key` next to the SQLite database
    /// (the working directory for other databases). Created with mode 0600 when absent.
    pub signing_key_file: Option<PathBuf>,
    /// The sealed-sender trust root (X25519, PEM PKCS#8). Default `flatline-sealed-sender.key` next to the signing
    /// key's default place. Created with mode 0600 when absent.
    pub sealed_sender_key_file: Option<PathBuf>,
    /// The zkgroup server secret params and generic server secret params (group, profile-key and call-link
    /// credentials, group send endorsements). Default `flatline-zkgroup.key` next to the signing key's default
    /// place. Created with mode 0600 when absent.
    pub zk_params_file: Option<PathBuf>,
    /// Days a signed manifest stays valid; the server re-signs when less than half is left. Default 30.
    pub manifest_lifetime_days: u32,
    /// Service endpoint URLs by name. Default: `chat`, `cdn0` and `cdn3` = `server.public_url`.
    pub endpoints: BTreeMap<String, String>,
    /// PEM certificate files whose public keys clients may pin (`tlsPins`). Default: none.
    pub tls_certificates: Vec<PathBuf>,
    /// Where the manifest is published (used in the descriptor). Default
    /// `<server.public_url>/.well-known/flatline/manifest`.
    pub manifest_url: Option<String>,
}

impl Default for InstanceConfig {
    fn default() -> Self {
        InstanceConfig {
            name: "Flatline".into(),
            signing_key_file: None,
            sealed_sender_key_file: None,
            zk_params_file: None,
            manifest_lifetime_days: 30,
            endpoints: BTreeMap::new(),
            tls_certificates: vec![],
            manifest_url: None,
        }
    }
}

fn is_http_url(s: &str) -> bool {
    s.starts_with("https://") || s.starts_with("http://")
}

impl Config {
    /// The directory default key files live in: the SQLite database's directory, else the working directory.
    fn key_dir(&self) -> PathBuf {
        let url = &self.database.url;
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .map(|p| p.split('?').next().unwrap_or(p))
            .filter(|p| !p.is_empty() && !p.starts_with(':'));
        path.and_then(|p| std::path::Path::new(p).parent().map(|d| d.to_path_buf()))
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// The instance signing key file.
    fn signing_key_path(&self) -> PathBuf {
        self.instance
            .signing_key_file
            .clone()
            .unwrap_or_else(|| self.key_dir().join("flatline-signing.key"))
    }

    /// The sealed-sender trust root key file.
    fn sealed_sender_key_path(&self) -> PathBuf {
        self.instance
            .sealed_sender_key_file
            .clone()
            .unwrap_or_else(|| self.key_dir().join("flatline-sealed-sender.key"))
    }

    /// The zkgroup parameters key file.
    fn zk_params_path(&self) -> PathBuf {
        self.instance
            .zk_params_file
            .clone()
            .unwrap_or_else(|| self.key_dir().join("flatline-zkgroup.key"))
    }

    /// The manifest's endpoints: the configured ones, or by default `chat`, `cdn0` (avatars) and `cdn3`
    /// (attachments), all `server.public_url`, which serves the three.
    fn manifest_endpoints(&self) -> BTreeMap<String, String> {
        if self.instance.endpoints.is_empty() {
            ["chat", "cdn0", "cdn3"]
                .into_iter()
                .map(|name| (name.to_owned(), self.server.public_url.clone()))
                .collect()
        } else {
            self.instance.endpoints.clone()
        }
    }

    /// The local object store's default directory.
    fn storage_path(&self) -> PathBuf {
        self.storage
            .path
            .clone()
            .unwrap_or_else(|| self.key_dir().join("flatline-storage"))
    }

    /// Where the manifest is published.
    fn manifest_url(&self) -> String {
        self.instance.manifest_url.clone().unwrap_or_else(|| {
            format!(
                "{}{}",
                self.server.public_url.trim_end_matches('/'),
                flatline_core::manifest::WELL_KNOWN_PATH
            )
        })
    }

    fn instance_settings(&self) -> Result<InstanceSettings, ConfigError> {
        let i = &self.instance;
        if i.name.trim().is_empty() {
            return Err(invalid("instance.name", "must not be empty"));
        }
        if !(1..=365).contains(&i.manifest_lifetime_days) {
            return Err(invalid(
                "instance.manifest_lifetime_days",
                "must be between 1 and 365",
            ));
        }
        for (name, url) in &i.endpoints {
            if !is_http_url(url) {
                return Err(invalid(
                    format!("instance.endpoints.{name}"),
                    "must be an http:// or https:// URL",
                ));
            }
        }
        if let Some(url) = &i.manifest_url
            && !is_http_url(url)
        {
            return Err(invalid(
                "instance.manifest_url",
                "must be an http:// or https:// URL",
            ));
        }
        if self.signing_key_path() == self.sealed_sender_key_path() {
            return Err(invalid(
                "instance.sealed_sender_key_file",
                "must differ from instance.signing_key_file",
            ));
        }
        let zk = self.zk_params_path();
        if zk == self.signing_key_path() || zk == self.sealed_sender_key_path() {
            return Err(invalid(
                "instance.zk_params_file",
                "must differ from instance.signing_key_file and instance.sealed_sender_key_file",
            ));
        }
        Ok(InstanceSettings {
            name: i.name.clone(),
            signing_key_file: self.signing_key_path(),
            sealed_sender_key_file: self.sealed_sender_key_path(),
            zk_params_file: zk,
            manifest_lifetime: Duration::from_secs(u64::from(i.manifest_lifetime_days) * 86_400),
            endpoints: self.manifest_endpoints(),
            tls_certificates: i.tls_certificates.clone(),
            manifest_url: self.manifest_url(),
        })
    }
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
    /// The effective limits: the defaults, with the configured ones replaced.
    fn to_limits(&self) -> Result<Limits, ConfigError> {
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
            // A full bucket's regeneration time, bounded so the stores' bucket arithmetic (in milliseconds, done
            // by the database) stays far from overflow.
            if f64::from(c.bucket_size) * regen.as_secs_f64() > MAX_BUCKET_SECONDS {
                return Err(invalid(
                    format!("{key}.bucket_size"),
                    "bucket_size × permit_regeneration_seconds must be at most 3153600000 (100 years)",
                ));
            }
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
    ) -> Result<Settings, ConfigError> {
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
    ) -> Result<Settings, ConfigError> {
        let mut root: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax(e.to_string()))?;
        // Only FLATLINE_<SECTION>__<KEY>… variables are configuration. Anything else under the prefix (a stray
        // FLATLINE_URL from a deployment script, FLATLINE_CONFIG naming the file) is not ours to refuse.
        let mut from_env: Vec<(String, String)> = vec![];
        for (name, value) in env {
            let Some(path) = name.strip_prefix("FLATLINE_") else {
                continue;
            };
            if !path.contains("__") {
                tracing::debug!(variable = %name, "not a FLATLINE_<SECTION>__<KEY> variable; ignored");
                continue;
            }
            set_path(&mut root, path, &value)?;
            from_env.push((path.to_ascii_lowercase().replace("__", "."), name));
        }
        serde_path_to_error::deserialize(toml::Value::Table(root))
            .map_err(|e| {
                let key = e.path().to_string();
                invalid(
                    if key == "." { "(root)".to_owned() } else { key },
                    e.into_inner().to_string(),
                )
            })
            .and_then(|c: Config| c.validate())
            .map_err(|e| name_variable(e, &from_env))
    }

    /// Checks what types alone cannot, and makes the typed [`Settings`] the program runs on.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let mut ids = std::collections::HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            p.validate(i)?;
            if !ids.insert(p.id.as_str()) {
                return Err(invalid(
                    format!("providers[{i}].id"),
                    format!("duplicate provider id `{}`", p.id),
                ));
            }
        }
        let r = &self.registration;
        if !(10..=86_400).contains(&r.session_lifetime_seconds) {
            return Err(invalid(
                "registration.session_lifetime_seconds",
                "must be between 10 and 86400",
            ));
        }
        if !(1..=120).contains(&r.idp_timeout_seconds) {
            return Err(invalid(
                "registration.idp_timeout_seconds",
                "must be between 1 and 120",
            ));
        }
        let registration = RegistrationOptions {
            session_lifetime: Duration::from_secs(r.session_lifetime_seconds),
            principal_secret_file: r.principal_secret_file.clone(),
            idp_timeout: Duration::from_secs(r.idp_timeout_seconds),
        };
        let trusted_proxies = self.trusted_proxies()?;
        let storage = self.storage.to_settings(self.storage_path())?;
        let limits = self.limits.to_limits()?;
        let contacts = self.contacts.to_contacts_config()?;
        let invites = InviteSettings {
            required: self.invites.required,
            policy: self.invites.to_policy()?,
        };
        let messages = self.messages.to_messages_config()?;
        let devices = self.devices.to_devices_config()?;
        let sealed_sender = self.sealed_sender.to_settings()?;
        let database = self.database.settings()?;
        let server = self.server_settings(trusted_proxies)?;
        let chat = self.chat.to_settings()?;
        let instance = self.instance_settings()?;
        Ok(Settings {
            server,
            database,
            log: self.log.clone(),
            limits,
            registration,
            invites,
            providers: self.providers.clone(),
            contacts,
            instance,
            storage,
            messages,
            sealed_sender,
            chat,
            devices,
            source: self.clone(),
        })
    }

    fn server_settings(&self, trusted_proxies: Vec<IpNet>) -> Result<ServerSettings, ConfigError> {
        let s = &self.server;
        if !(s.public_url.starts_with("https://") || s.public_url.starts_with("http://")) {
            return Err(invalid(
                "server.public_url",
                "must be an http:// or https:// URL",
            ));
        }
        if s.max_body_bytes < 1024 {
            return Err(invalid("server.max_body_bytes", "must be at least 1024"));
        }
        if !(32..=128).contains(&s.ipv6_limit_prefix) {
            return Err(invalid(
                "server.ipv6_limit_prefix",
                "must be between 32 and 128",
            ));
        }
        if s.request_timeout_seconds == 0 {
            return Err(invalid(
                "server.request_timeout_seconds",
                "must be at least 1",
            ));
        }
        for (key, v) in [
            (
                "header_read_timeout_seconds",
                s.header_read_timeout_seconds as usize,
            ),
            ("max_connections", s.max_connections),
            ("max_connections_per_ip", s.max_connections_per_ip),
        ] {
            if v == 0 {
                return Err(invalid(format!("server.{key}"), "must be at least 1"));
            }
        }
        Ok(ServerSettings {
            listen: s.listen,
            admin_listen: s.admin_listen,
            public_url: s.public_url.clone(),
            trusted_proxies: trusted_proxies.into(),
            shutdown_grace: Duration::from_secs(s.shutdown_grace_seconds),
            max_body_bytes: s.max_body_bytes,
            request_timeout: Duration::from_secs(s.request_timeout_seconds),
            ipv6_limit_prefix: s.ipv6_limit_prefix,
            tls: s.tls.clone(),
            header_read_timeout: Duration::from_secs(s.header_read_timeout_seconds),
            max_connections: s.max_connections,
            max_connections_per_ip: s.max_connections_per_ip,
        })
    }

    /// The parsed trusted-proxy networks.
    fn trusted_proxies(&self) -> Result<Vec<IpNet>, ConfigError> {
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

/// Adds the environment variable a key error is about, when the key (or its table) came from one.
fn name_variable(e: ConfigError, from_env: &[(String, String)]) -> ConfigError {
    let ConfigError::Invalid { key, message } = e else {
        return e;
    };
    let var = from_env.iter().find_map(|(dotted, var)| {
        let first = dotted.split('.').next().unwrap_or_default();
        let related = *dotted == key
            || dotted.starts_with(&format!("{key}."))
            || key.starts_with(&format!("{dotted}."))
            || key.starts_with(&format!("{dotted}["))
            || (key == "(root)" && message.contains(&format!("`{first}`")));
        related.then_some(var)
    });
    match var {
        Some(var) => ConfigError::Invalid {
            key: format!("{key} (from {var})"),
            message,
        },
        None => ConfigError::Invalid { key, message },
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

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Config::from_toml_and_env(
            text,
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    #[test]
    fn empty_config_is_valid_defaults() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.server.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.contacts, ContactsConfig::default());
    }

    #[test]
    fn messages_section() {
        let c = load("", &[]).unwrap().messages;
        assert_eq!(c.ttl, Duration::from_secs(30 * 86_400));
        assert_eq!(c.max_queue_bytes, 128 << 20);
        let c = load(
            "[messages]\nttl_days = 7\n",
            &[("FLATLINE_MESSAGES__MAX_QUEUE_BYTES", "2097152")],
        )
        .unwrap()
        .messages;
        assert_eq!(
            (c.ttl, c.max_queue_bytes),
            (Duration::from_secs(7 * 86_400), 2 << 20)
        );
        for (text, key) in [
            ("[messages]\nttl_days = 0\n", "messages.ttl_days"),
            (
                "[messages]\nmax_queue_bytes = 10\n",
                "messages.max_queue_bytes",
            ),
        ] {
            let e = load(text, &[]).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn contacts_section_overrides() {
        let c = load(
            "[contacts]\nburst = 3\nowner_window_max = 7\n",
            &[("FLATLINE_CONTACTS__PAUSE_SECONDS", "60")],
        )
        .unwrap();
        let cc = c.contacts;
        assert_eq!(
            (cc.flood.burst, cc.flood.owner_window_max, cc.flood.pause),
            (3, 7, Duration::from_secs(60))
        );
        assert_eq!(cc.flood.refill, Duration::from_secs(600));
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
        assert!(c.source().limits.0.contains_key("prekeys"));
        assert_eq!(
            c.limits.get(Limiter::PreKeys),
            BucketConfig::new(20, Duration::from_millis(1500))
        );
    }

    #[test]
    fn only_section_key_variables_are_configuration() {
        // Variables that are not FLATLINE_<SECTION>__<KEY> (a stray FLATLINE_URL, a tool's FLATLINE_HOME) are
        // ignored rather than stopping the server.
        let c = load(
            "",
            &[
                ("FLATLINE_URL", "https://chat.example.org"),
                ("FLATLINE_HOME", "/srv"),
                ("FLATLINE_", "x"),
                ("FLATLINE_SERVER__LISTEN", "0.0.0.0:9001"),
            ],
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 9001);
    }

    #[test]
    fn errors_about_variables_name_the_variable() {
        for (var, value) in [
            ("FLATLINE_SERVER__LISTEN", "nope"),
            ("FLATLINE_SERVER__LISEN", "127.0.0.1:1"),
            ("FLATLINE_NOSECTION__KEY", "1"),
            ("FLATLINE_DATABASE__URL", "mysql://x"),
            ("FLATLINE_SERVER____LISTEN", "x"),
        ] {
            let e = load("", &[(var, value)]).unwrap_err();
            assert!(e.to_string().contains(var), "{var}: {e}");
        }
    }

    #[test]
    fn public_operations_endpoints_are_warned_about() {
        let public = load("[server]\nlisten = \"0.0.0.0:8080\"\n", &[])
            .unwrap()
            .warnings();
        assert_eq!(public.len(), 1, "{public:?}");
        assert!(
            public[0].contains("0.0.0.0:8080") && public[0].contains("server.admin_listen"),
            "{public:?}"
        );
        let separate = "[server]\nlisten = \"0.0.0.0:8080\"\nadmin_listen = \"127.0.0.1:9090\"\n";
        assert!(load(separate, &[]).unwrap().warnings().is_empty());
        assert!(
            load("", &[]).unwrap().warnings().is_empty(),
            "loopback default"
        );
        assert!(
            load("[server]\nlisten = \"[::1]:8080\"\n", &[])
                .unwrap()
                .warnings()
                .is_empty()
        );
    }

    #[test]
    fn providers_sharing_a_principal_claim_are_warned_about() {
        let provider = |id: &str, claim: Option<&str>| {
            format!(
                "[[providers]]\nid = \"{id}\"\nname = \"{id}\"\nissuer = \"https://{id}.example\"\nclient_id = \"c\"\nclient_secret_env = \"S\"\nredirect_uris = [\"app://cb\"]\n{}",
                claim.map_or(String::new(), |c| format!("principal_claim = \"{c}\"\n"))
            )
        };
        let two_email = format!(
            "{}{}{}",
            provider("a", Some("email")),
            provider("b", Some("email")),
            provider("c", None)
        );
        let w = load(&two_email, &[]).unwrap().warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("a, b") && w[0].contains("`email`"), "{w:?}");
        let distinct = format!(
            "{}{}",
            provider("a", Some("email")),
            provider("b", Some("upn"))
        );
        assert!(load(&distinct, &[]).unwrap().warnings().is_empty());
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
            (
                "[limits.prekeys]\nbucket_size = 4000000000\npermit_regeneration_seconds = 31536000\n",
                "limits.prekeys.bucket_size",
            ),
            ("[database]\nurl = \"mysql://x\"\n", "database.url"),
            ("[storage]\nurl = \"s3://Bad_Bucket\"\n", "storage.url"),
            ("[storage]\nurl = \"https://b.example\"\n", "storage.url"),
            (
                "[storage]\nurl = \"s3://bucket\"\ns3_endpoint = \"ftp://x\"\n",
                "storage.s3_endpoint",
            ),
            (
                "[storage]\nurl = \"s3://bucket\"\ns3_secret_access_key_env = \"K\"\n",
                "storage.s3_access_key_id",
            ),
            (
                "[storage]\nurl = \"s3://bucket\"\ns3_access_key_id = \"a\"\n",
                "storage.s3_secret_access_key_file",
            ),
            (
                "[storage]\nmax_attachment_bytes = 0\n",
                "storage.max_attachment_bytes",
            ),
            ("[contacts]\nburst = 0\n", "contacts.burst"),
            ("[contacts]\nfloods = 1\n", "contacts.floods"),
            (
                "[contacts]\ndefault_expiry_seconds = 100\nmax_expiry_seconds = 10\n",
                "contacts.default_expiry_seconds",
            ),
            (
                "[instance]\nmanifest_lifetime_days = 0\n",
                "instance.manifest_lifetime_days",
            ),
            (
                "[instance.endpoints]\nchat = \"ftp://x\"\n",
                "instance.endpoints.chat",
            ),
            (
                "[instance]\nmanifest_url = \"x\"\n",
                "instance.manifest_url",
            ),
            ("[instance]\nname = \" \"\n", "instance.name"),
            (
                "[database]\nacquire_timeout_seconds = 0\n",
                "database.acquire_timeout_seconds",
            ),
            ("[chat]\nmax_frame_bytes = 10\n", "chat.max_frame_bytes"),
            ("[chat]\npush_window = 0\n", "chat.push_window"),
            ("[chat]\nidle_timeouts = 1\n", "chat.idle_timeouts"),
            (
                "[server]\nheader_read_timeout_seconds = 0\n",
                "server.header_read_timeout_seconds",
            ),
            ("[server.tls]\ncert_file = \"c.pem\"\n", "server.tls"),
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
    fn instance_defaults_follow_database_and_public_url() {
        let c = load(
            "[database]\nurl = \"sqlite:///var/lib/flatline/db.sqlite?mode=rwc\"\n[server]\npublic_url = \"https://chat.example.org/\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.instance.signing_key_file,
            PathBuf::from("/var/lib/flatline/flatline-signing.key")
        );
        assert_eq!(
            c.instance.sealed_sender_key_file,
            PathBuf::from("/var/lib/flatline/flatline-sealed-sender.key")
        );
        assert_eq!(
            c.instance.manifest_url,
            "https://chat.example.org/.well-known/flatline/manifest"
        );
        assert_eq!(
            c.instance.endpoints,
            BTreeMap::from(
                ["chat", "cdn0", "cdn3"].map(|n| (n.into(), "https://chat.example.org/".into()))
            )
        );
        assert_eq!(
            c.instance.manifest_lifetime,
            Duration::from_secs(30 * 86_400)
        );
        let d = load("", &[]).unwrap();
        assert_eq!(
            d.instance.signing_key_file,
            PathBuf::from("./flatline-signing.key")
        );
        let e = load(
            "[instance]\nsigning_key_file = \"/k\"\nmanifest_url = \"https://cdn.example.org/m\"\n[instance.endpoints]\nchat = \"https://a\"\ncdn = \"https://b\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(e.instance.signing_key_file, PathBuf::from("/k"));
        assert_eq!(e.instance.manifest_url, "https://cdn.example.org/m");
        assert_eq!(e.instance.endpoints.len(), 2);
    }

    #[test]
    fn the_default_database_is_sqlite_with_typed_timeouts() {
        let c = load("", &[("FLATLINE_DATABASE__BUSY_TIMEOUT_MS", "250")]).unwrap();
        assert_eq!(
            c.database,
            DatabaseSettings::Sqlite {
                url: "sqlite://flatline.db".into(),
                readers: 8,
                busy_timeout: Duration::from_millis(250),
                acquire_timeout: Duration::from_secs(10),
            }
        );
    }

    #[test]
    fn postgres_pool_settings_have_defaults_and_env_overrides() {
        let c = load(
            "[database]\nurl = \"postgresql://flatline@db/flatline\"\n",
            &[("FLATLINE_DATABASE__STATEMENT_TIMEOUT_MS", "1500")],
        )
        .unwrap();
        let DatabaseSettings::Postgres { url, pool } = &c.database else {
            panic!("a postgresql:// URL is PostgreSQL: {:?}", c.database);
        };
        assert_eq!(url, "postgresql://flatline@db/flatline");
        assert_eq!(pool.acquire_timeout, Duration::from_secs(10));
        assert_eq!(pool.idle_timeout, Some(Duration::from_secs(600)));
        assert_eq!(pool.statement_timeout_ms, 1500);
        assert_eq!(pool.auth_cache, Duration::from_secs(30));
    }

    #[test]
    fn chat_and_tls_sections() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.chat.max_frame_bytes, 512 * 1024);
        assert!(c.server.tls.is_none());
        let c = load(
            "[chat]\nmax_in_flight_requests = 4\n[server.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n",
            &[("FLATLINE_CHAT__MAX_SOCKETS_PER_IP", "3")],
        )
        .unwrap();
        assert_eq!(
            (c.chat.max_in_flight_requests, c.chat.max_sockets_per_ip),
            (4, 3)
        );
        assert_eq!(
            c.server.tls.map(|t| t.key_file),
            Some(PathBuf::from("k.pem"))
        );
    }

    #[test]
    fn trusted_proxies_accept_addresses_and_cidrs() {
        let c = load(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.server.trusted_proxies.len(), 2);
    }

    #[test]
    fn invites_section_defaults_overrides_and_errors() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.invites.policy, InvitePolicy::default());
        let c = load(
            "[invites]\nmin_account_age_days = 0\nquota_per_days = 2\nchain_window_minutes = 0\n",
            &[("FLATLINE_INVITES__MAX_OPEN_INVITES", "2")],
        )
        .unwrap();
        let p = c.invites.policy;
        assert_eq!(p.min_account_age, Duration::ZERO);
        assert_eq!(p.quota_interval, Duration::from_secs(2 * 86_400));
        assert_eq!(p.chain_window, Duration::ZERO);
        assert_eq!(p.max_open_invites, 2);
        for (text, key) in [
            ("[invites]\nquota_per_days = 0\n", "invites.quota_per_days"),
            ("[invites]\nchain_hops = 0\n", "invites.chain_hops"),
            (
                "[invites]\ntree_size_limit = 0\n",
                "invites.tree_size_limit",
            ),
            (
                "[invites]\nmax_uses_per_user_invite = 0\n",
                "invites.max_uses_per_user_invite",
            ),
            (
                "[invites]\ndefault_expiry_days = 31\n",
                "invites.default_expiry_days",
            ),
            ("[invites]\nquota = 3\n", "invites.quota"),
        ] {
            match load(text, &[]) {
                Err(ConfigError::Invalid { key: k, message }) => {
                    assert_eq!(k, key, "{text}: {message}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
