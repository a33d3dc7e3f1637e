//! `flatline-server` binary.

#[tokio::main]
async fn main() {
    std::process::exit(flatline_server::cli::main().await);
}
