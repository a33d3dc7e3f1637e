//! The command line: `flatline-server [serve]` and the admin subcommands.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use flatline_core::manifest::Fingerprint;
use flatline_core::time::Clock;

use crate::config::{Config, LogFormat, Settings};
use crate::system::SystemClock;
use crate::trust::KeyFileState;

/// Flatline: a self-hostable Signal-compatible server without phone numbers.
#[derive(Debug, Parser)]
#[command(name = "flatline-server", version)]
pub struct Cli {
    /// Configuration file (TOML). Every key has a default; `FLATLINE_*` variables override the file.
    #[arg(long, short, env = "FLATLINE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve,
    /// Validate the configuration and print the effective values (secrets excluded).
    CheckConfig,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the OpenAPI description of the HTTP API (what `GET /openapi.json` serves with this configuration).
    Openapi,
    /// Instance key files.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The signed instance manifest and the server descriptor.
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// Registration invites: create (outside quotas), list, show the invite tree, revoke (docs/INVITES.md).
    #[command(subcommand)]
    Invites(crate::cli_invites::InvitesCommand),
    /// Account moderation.
    #[command(subcommand)]
    Accounts(crate::cli_invites::AccountsCommand),
    /// Pinned identity-provider key sets.
    #[command(subcommand)]
    Jwks(JwksCommand),
    /// Message queues and spam reports.
    #[command(subcommand)]
    Messages(MessagesCommand),
    /// Sealed-sender server certificates: list, rotate.
    #[command(subcommand)]
    SealedSender(crate::cli_sealed::SealedSenderCommand),
    /// INSECURE development mode: SQLite in a data directory, generated keys, and a built-in identity provider at
    /// `/dev-idp` that logs anyone in (docs/DEVELOPMENT.md). Loopback only; never expose it.
    Dev {
        /// Directory for the database (`flatline-dev.db`), keys and secrets; created if missing.
        #[arg(long, default_value = ".")]
        data_dir: PathBuf,
        /// Listener address (loopback only; port 0 picks a free one).
        #[arg(long, default_value = crate::dev_idp::DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
        /// TLS listener with a self-signed `localhost` certificate created in the data directory (its path and
        /// SHA-256 are logged), for libsignal-net clients; loopback only.
        #[arg(long, default_value = crate::dev_idp::DEFAULT_TLS_LISTEN)]
        tls_listen: std::net::SocketAddr,
        /// Do not open the TLS listener.
        #[arg(long)]
        no_tls: bool,
    },
}

/// `messages` subcommands.
#[derive(Debug, Subcommand)]
pub enum MessagesCommand {
    /// List the most recent spam reports, newest first: time (Unix seconds), reporter ACI, reported sender ACI,
    /// message guid, and whether a reporting token came with it (tab-separated).
    Reports {
        /// How many to list.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Only reports about this sender (ACI), among the `limit` most recent.
        #[arg(long)]
        account: Option<String>,
    },
}

/// `jwks` subcommands.
#[derive(Debug, Subcommand)]
pub enum JwksCommand {
    /// Fetch a provider's JWKS now and replace the pinned set atomically (after an IdP key rotation). On failure
    /// the old set stays pinned and the exit code is 1.
    Refresh {
        /// The provider id.
        #[arg(long)]
        provider: String,
    },
}

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create the signing and sealed-sender key files (mode 0600) unless they exist; print their fingerprints.
    Init,
    /// List the key and secret fingerprints recorded in the database (what every process is checked against).
    Fingerprints,
    /// Forget one recorded fingerprint after rotating that key or secret on purpose (docs/OPERATIONS.md): the next
    /// process to start records its own. Every process must already have the new key or secret.
    Forget {
        /// The fingerprint's name as `keys fingerprints` lists it (e.g. `oidc-client-secret:corp`).
        name: String,
    },
}

/// `manifest` subcommands. All but `verify` open the database like a server start: they record or check the key
/// fingerprints and bump the manifest version when the configured content changed.
#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Print the current manifest payload as JSON.
    Show,
    /// Write the current signed manifest (compact JWS) to a file, for hosting it elsewhere.
    Export {
        /// Destination file.
        file: PathBuf,
    },
    /// Check a signed manifest file: signature, key, expiry and version.
    Verify {
        /// The compact-JWS manifest file.
        file: PathBuf,
        /// The expected instance fingerprint (`sha256:…`); without it only self-consistency is checked.
        #[arg(long)]
        fingerprint: Option<String>,
        /// Reject manifests with a version below this (the last version accepted before).
        #[arg(long)]
        min_version: Option<u64>,
    },
    /// Print the server descriptor (`flatline://server?url=…&fp=sha256:…`).
    Descriptor {
        /// Also print it as a QR code made of Unicode half blocks.
        #[arg(long)]
        qr: bool,
    },
}

/// Parses arguments, loads configuration and runs the command. Returns the process exit code.
pub async fn main() -> i32 {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flatline-server: {e}");
            return 2;
        }
    };
    init_logging(&config);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => match toml::to_string_pretty(&Config {
            // The database URL may carry a password.
            database: crate::config::DatabaseConfig {
                url: crate::store::redact_url(config.database.url()),
                ..config.source().database.clone()
            },
            ..config.source().clone()
        }) {
            Ok(text) => {
                println!("{text}");
                0
            }
            Err(e) => {
                eprintln!("flatline-server: {e}");
                1
            }
        },
        Command::Migrate => match crate::store::open(&config.database).await {
            Ok(_) => {
                tracing::info!("database is up to date");
                0
            }
            Err(e) => {
                tracing::error!(error = %e, "migration failed");
                1
            }
        },
        Command::Openapi => match crate::http::openapi_document(&config).to_pretty_json() {
            Ok(text) => {
                println!("{text}");
                0
            }
            Err(e) => {
                eprintln!("flatline-server: {e}");
                1
            }
        },
        Command::Keys(KeysCommand::Init) => keys_init(&config),
        Command::Keys(KeysCommand::Fingerprints) => keys_fingerprints(&config).await,
        Command::Keys(KeysCommand::Forget { name }) => keys_forget(&config, &name).await,
        Command::Manifest(cmd) => manifest(&config, cmd).await,
        Command::SealedSender(cmd) => crate::cli_sealed::sealed_sender(&config, cmd).await,
        Command::Invites(cmd) => crate::cli_invites::invites(&config, cmd).await,
        Command::Accounts(cmd) => crate::cli_invites::accounts(&config, cmd).await,
        Command::Messages(MessagesCommand::Reports { limit, account }) => {
            spam_reports(&config, limit, account.as_deref()).await
        }
        Command::Jwks(JwksCommand::Refresh { provider }) => {
            match jwks_refresh(config, &provider).await {
                Ok(n) => {
                    println!("provider {provider}: pinned a new JWKS with {n} keys");
                    0
                }
                Err(e) => {
                    eprintln!(
                        "flatline-server: JWKS refresh for {provider} failed; the old set stays pinned: {e}"
                    );
                    1
                }
            }
        }
        Command::Dev {
            data_dir,
            listen,
            tls_listen,
            no_tls,
        } => {
            let opts = crate::dev_idp::DevOptions {
                data_dir,
                listen,
                tls_listen: (!no_tls).then_some(tls_listen),
            };
            crate::dev_idp::warn_insecure(&opts);
            let server = match crate::dev_idp::prepare(config, &opts).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the development server");
                    return 1;
                }
            };
            match server.run(crate::serve::shutdown_signal()).await {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!(error = %e, "server failed");
                    1
                }
            }
        }
        Command::Serve => {
            let state = match crate::serve::production_state(config).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start");
                    return 1;
                }
            };
            let listeners = match crate::serve::bind(&state.config).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen");
                    return 1;
                }
            };
            match crate::serve::run(state, listeners, crate::serve::shutdown_signal()).await {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!(error = %e, "server failed");
                    1
                }
            }
        }
    }
}

/// `jwks refresh`: fetches the provider's JWKS (its `jwks_uri`, `https://` or `file://`, or the discovered one) and
/// replaces the pinned set; returns the number of keys. The old set stays when anything fails.
pub async fn jwks_refresh(config: Settings, provider: &str) -> Result<usize, String> {
    if !config.providers.iter().any(|p| p.id == provider) {
        return Err(format!("no provider `{provider}` is configured"));
    }
    let store = crate::store::open(&config.database)
        .await
        .map_err(|e| e.to_string())?;
    let state = crate::http::AppState::new(
        config,
        store,
        std::sync::Arc::new(SystemClock),
        std::sync::Arc::new(crate::system::OsRandom),
    )
    .map_err(|e| e.to_string())?;
    state
        .registration
        .refresh_jwks(provider)
        .await
        .map_err(|e| e.to_string())
}

fn keys_init(config: &Settings) -> i32 {
    match crate::trust::load_keys(config, &crate::system::OsRandom) {
        Ok(keys) => {
            for (what, path, state, fp) in [
                (
                    "signing key",
                    &config.instance.signing_key_file,
                    keys.signing_state,
                    keys.signing.fingerprint(),
                ),
                (
                    "sealed-sender trust root",
                    &config.instance.sealed_sender_key_file,
                    keys.sealed_sender_state,
                    keys.sealed_sender.fingerprint(),
                ),
                (
                    "zkgroup server params",
                    &config.instance.zk_params_file,
                    keys.zk_state,
                    keys.zk.fingerprint(),
                ),
            ] {
                let state = match state {
                    KeyFileState::Created => "created",
                    KeyFileState::Loaded => "exists",
                };
                println!(
                    "{what}: {} ({state}), fingerprint {}",
                    path.display(),
                    fp.with_hash_name()
                );
            }
            0
        }
        Err(e) => {
            eprintln!("flatline-server: {e}");
            1
        }
    }
}

async fn spam_reports(config: &Settings, limit: u32, account: Option<&str>) -> i32 {
    let about = match account
        .map(str::parse::<flatline_core::ids::Aci>)
        .transpose()
    {
        Ok(a) => a,
        Err(_) => {
            eprintln!("flatline-server: --account must be an ACI");
            return 2;
        }
    };
    let listed = async {
        let store = crate::store::open(&config.database).await?;
        store.spam_reports(limit).await
    };
    match listed.await {
        Ok(all) => {
            for r in all
                .into_iter()
                .filter(|r| about.is_none_or(|a| r.source == a))
            {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    r.reported_at.as_secs(),
                    r.reporter,
                    r.source,
                    r.guid.0,
                    if r.token.is_some() { "token" } else { "-" }
                );
            }
            0
        }
        Err(e) => {
            eprintln!("flatline-server: {e}");
            1
        }
    }
}

async fn keys_fingerprints(config: &Settings) -> i32 {
    let listed = async {
        let store = crate::store::open(&config.database).await?;
        store.key_fingerprints().await
    };
    match listed.await {
        Ok(all) => {
            for (name, fingerprint) in all {
                println!("{name}\t{fingerprint}");
            }
            0
        }
        Err(e) => {
            eprintln!("flatline-server: {e}");
            1
        }
    }
}

async fn keys_forget(config: &Settings, name: &str) -> i32 {
    let forgotten = async {
        let store = crate::store::open(&config.database).await?;
        store.forget_key_fingerprint(name).await
    };
    match forgotten.await {
        Ok(true) => {
            println!("forgot the fingerprint `{name}`; the next process to start records its own");
            0
        }
        Ok(false) => {
            eprintln!(
                "flatline-server: no fingerprint named `{name}` is recorded (see `keys fingerprints`)"
            );
            1
        }
        Err(e) => {
            eprintln!("flatline-server: {e}");
            1
        }
    }
}

async fn manifest(config: &Settings, cmd: ManifestCommand) -> i32 {
    let now = SystemClock.now();
    if let ManifestCommand::Verify {
        file,
        fingerprint,
        min_version,
    } = &cmd
    {
        return verify_file(file, fingerprint.as_deref(), *min_version, now);
    }
    let trust = match open_trust(config, now).await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("flatline-server: {e}");
            return 1;
        }
    };
    let (payload, jws) = trust.signed_manifest(now);
    match cmd {
        ManifestCommand::Show => match serde_json::to_string_pretty(&payload) {
            Ok(text) => {
                println!("{text}");
                0
            }
            Err(e) => {
                eprintln!("flatline-server: {e}");
                1
            }
        },
        ManifestCommand::Export { file } => match std::fs::write(&file, format!("{jws}\n")) {
            Ok(()) => {
                eprintln!(
                    "wrote manifest version {} to {} (expires at {} unix seconds; export again before then)",
                    payload.version,
                    file.display(),
                    payload.expires_at
                );
                0
            }
            Err(e) => {
                eprintln!("flatline-server: {}: {e}", file.display());
                1
            }
        },
        ManifestCommand::Descriptor { qr } => {
            let descriptor = trust.descriptor().to_string();
            println!("{descriptor}");
            if qr {
                match qrcode::QrCode::new(descriptor.as_bytes()) {
                    Ok(code) => println!(
                        "{}",
                        code.render::<qrcode::render::unicode::Dense1x2>()
                            // Light modules drawn as blocks: readable on the usual dark terminal background.
                            .dark_color(qrcode::render::unicode::Dense1x2::Light)
                            .light_color(qrcode::render::unicode::Dense1x2::Dark)
                            .quiet_zone(true)
                            .build()
                    ),
                    Err(e) => {
                        eprintln!("flatline-server: cannot make a QR code: {e}");
                        return 1;
                    }
                }
            }
            0
        }
        ManifestCommand::Verify { .. } => 1,
    }
}

async fn open_trust(
    config: &Settings,
    now: flatline_core::time::Timestamp,
) -> Result<crate::trust::Trust, String> {
    let store = crate::store::open(&config.database)
        .await
        .map_err(|e| e.to_string())?;
    crate::trust::Trust::bootstrap(config, store.as_ref(), &crate::system::OsRandom, &[], now)
        .await
        .map_err(|e| e.to_string())
}

fn verify_file(
    file: &std::path::Path,
    fingerprint: Option<&str>,
    min_version: Option<u64>,
    now: flatline_core::time::Timestamp,
) -> i32 {
    let expected = match fingerprint.map(Fingerprint::parse).transpose() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("flatline-server: --fingerprint: {e}");
            return 2;
        }
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("flatline-server: {}: {e}", file.display());
            return 1;
        }
    };
    match flatline_core::manifest::verify(&text, expected.as_ref(), min_version, now) {
        Ok(m) => {
            println!(
                "manifest OK: version {}, signed by {}, expires at {} unix seconds",
                m.version,
                m.fingerprint().with_hash_name(),
                m.expires_at
            );
            if expected.is_none() {
                println!(
                    "note: no --fingerprint given; the signer was not checked against a known key"
                );
            }
            0
        }
        Err(e) => {
            eprintln!("manifest rejected: {e}");
            1
        }
    }
}

fn init_logging(config: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless; ignore it.
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
