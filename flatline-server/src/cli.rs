//! The command line: `flatline-server [serve]` and the admin subcommands.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};

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
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => match toml::to_string_pretty(&Config {
            // The database URL may carry a password.
            database: crate::config::DatabaseConfig {
                url: crate::store::redact_url(&config.database.url),
                ..config.database.clone()
            },
            ..config.clone()
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

fn init_logging(config: &Config) {
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
