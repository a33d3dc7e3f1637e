//! `flatline-server sealed-sender …`: the server certificates that sign sender certificates (API.md §11).

use clap::Subcommand;
use flatline_core::sealed::service;
use flatline_core::time::Clock;

use crate::config::Settings;
use crate::system::{OsRandom, SystemClock};

/// `sealed-sender` subcommands. Both open the database like a server start (key fingerprints are checked).
#[derive(Debug, Subcommand)]
pub enum SealedSenderCommand {
    /// List the stored server certificates: id, issued, retired (the current one first).
    List,
    /// Issue a new server certificate and make it current. The old one keeps vouching for the sender certificates
    /// it signed until they expire (`sealed_sender.certificate_lifetime_hours`); certificates retired longer ago
    /// than that are deleted. Running servers switch on their next certificate request.
    Rotate,
}

/// Runs a `sealed-sender` subcommand; returns the exit code.
pub async fn sealed_sender(config: &Settings, cmd: SealedSenderCommand) -> i32 {
    let now = SystemClock.now();
    let store = match crate::store::open(&config.database).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("flatline-server: {e}");
            return 1;
        }
    };
    let trust =
        match crate::trust::Trust::bootstrap(config, store.as_ref(), &OsRandom, &[], now).await {
            Ok(t) => t,
            Err(e) => {
                eprintln!("flatline-server: {e}");
                return 1;
            }
        };
    let root = &trust.sealed_sender().0.private_key;
    match cmd {
        SealedSenderCommand::List => match store.server_certificates().await {
            Ok(all) => {
                println!("{:>10}  {:>13}  {:>13}", "id", "issued_at", "retired_at");
                for r in all {
                    let retired = r
                        .retired_at
                        .map_or_else(|| "current".to_owned(), |t| t.as_secs().to_string());
                    println!(
                        "{:>10}  {:>13}  {:>13}",
                        r.id,
                        r.created_at.as_secs(),
                        retired
                    );
                }
                0
            }
            Err(e) => {
                eprintln!("flatline-server: {e}");
                1
            }
        },
        SealedSenderCommand::Rotate => {
            let keep = config.sealed_sender.certificate_lifetime;
            match service::rotate(store.as_ref(), root, &OsRandom, now, keep).await {
                Ok(r) => {
                    println!(
                        "server certificate {} is current{}; {} expired certificate(s) deleted",
                        r.signer.certificate.id(),
                        r.retired
                            .map_or_else(String::new, |id| format!(" (replaces {id})")),
                        r.pruned
                    );
                    0
                }
                Err(e) => {
                    eprintln!("flatline-server: {e}");
                    1
                }
            }
        }
    }
}
