//! Registers a simulated client against a running Flatline server through its identity provider, then calls
//! whoami and prints the new credentials. Meant for `flatline-server dev` (docs/DEVELOPMENT.md):
//!
//! ```text
//! cargo run -p flatline-testkit --example register -- [SERVER_URL] [LOGIN]
//! cargo run -p flatline-testkit --example register -- body SESSION_ID
//! ```
//!
//! The second form only prints a `POST /v1/registration` body for a session you verified yourself (with curl):
//! fresh identity keys and prekeys with valid signatures. Its private keys are thrown away, which is fine for
//! trying the API, not for messaging.
//!
//! SERVER_URL defaults to `http://127.0.0.1:8080`, LOGIN to `dev-user`; the provider is `dev` unless
//! `FLATLINE_PROVIDER` names another, and the redirect URI is `<SERVER_URL>/dev-idp/callback` unless
//! `FLATLINE_REDIRECT_URI` is set. The keys are real (fresh Curve25519 identity keys, signed prekeys) but thrown
//! away when the program ends: the printed password is all you keep.

use flatline_core::random::SecureRandom;
use flatline_testkit::UsernameForm;
use flatline_testkit::remote::{Browser, Remote};

/// The OS random source (the test kit's `SeededRng` would give every run the same keys).
struct OsRandom;

impl SecureRandom for OsRandom {
    fn fill(&self, dest: &mut [u8]) {
        #[expect(
            clippy::expect_used,
            reason = "an example without randomness cannot go on"
        )]
        getrandom::fill(dest).expect("OS random source");
    }
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("register: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("body") {
        let session = args.nth(1).ok_or("usage: register body SESSION_ID")?;
        let client = flatline_testkit::SimClient::new(&OsRandom);
        let body = client.registration_body(&session, &OsRandom);
        println!(
            "{}",
            serde_json::to_string_pretty(&body).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let base = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let login = args.next().unwrap_or_else(|| "dev-user".to_owned());
    let provider = std::env::var("FLATLINE_PROVIDER").unwrap_or_else(|_| "dev".to_owned());
    let base = base.trim_end_matches('/').to_owned();
    let redirect = std::env::var("FLATLINE_REDIRECT_URI")
        .unwrap_or_else(|_| format!("{base}/dev-idp/callback"));

    let remote = Remote::new(&base)?;
    let providers = remote.providers().await?;
    if !providers.iter().any(|p| p["id"] == provider.as_str()) {
        return Err(format!(
            "{base} offers no provider `{provider}` (has: {}); is `flatline-server dev` running?",
            providers
                .iter()
                .filter_map(|p| p["id"].as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let browser = Browser::new(vec![redirect.clone()])?;
    let (client, registered) = remote
        .register_through(&browser, &provider, &redirect, Some(&login), &OsRandom)
        .await?;
    let whoami = remote.whoami(&client).await?;
    if whoami.status != 200 {
        return Err(format!(
            "whoami answered {}: {}",
            whoami.status, whoami.body
        ));
    }
    println!("registered {login} through provider {provider}");
    println!(
        "  reregistration: {}",
        registered["reregistration"].as_bool().unwrap_or(false)
    );
    println!(
        "  principal:      {}",
        registered["principal"].as_str().unwrap_or("?")
    );
    println!("  ACI:            {}", client.aci);
    println!("  PNI:            {}", client.pni);
    println!("  device id:      {}", client.device_id);
    println!("  password:       {}", client.password);
    println!("whoami: {}", whoami.body);
    println!("try it:");
    println!(
        "  curl -s -u '{}.{}:{}' {base}/v1/accounts/whoami",
        client.aci, client.device_id, client.password
    );
    // The header form, for tools that want it.
    println!("  Authorization: {}", client.basic_auth(UsernameForm::Dot));
    Ok(())
}
