//! `flatline-server jwks refresh --provider <id>`: replaces the pinned set from a `file://` jwks_uri; a failing
//! fetch keeps the old set and exits non-zero.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use flatline_core::random::SecureRandom;
use flatline_core::time::Clock;
use flatline_server::cli::jwks_refresh;
use flatline_server::config::{Config, Settings};
use flatline_server::dev_idp::development_idp;
use flatline_testkit::{MockClock, SeededRng};
use serde_json::{Value, json};

/// A public JWKS with one Ed25519 key per seed (keys are derived like the dev IdP's, so they are real).
fn jwks(seeds: &[u8]) -> String {
    let keys: Vec<Value> = seeds
        .iter()
        .map(|s| {
            let clock: Arc<dyn Clock> = Arc::new(MockClock::default());
            let rng: Arc<dyn SecureRandom> = Arc::new(SeededRng::new(1));
            development_idp("http://127.0.0.1:9".into(), vec![], &[*s; 32], clock, rng).jwks()
                ["keys"][0]
                .clone()
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

fn config_text(dir: &Path) -> String {
    format!(
        r#"
[database]
url = "sqlite://{dir}/refresh.db"

[registration]
principal_secret_file = "{dir}/principal.key"

[[providers]]
id = "corp"
name = "Corp"
issuer = "http://127.0.0.1:9"
discovery = false
authorization_endpoint = "http://127.0.0.1:9/authorize"
token_endpoint = "http://127.0.0.1:9/token"
par_endpoint = "http://127.0.0.1:9/par"
jwks_uri = "file://{dir}/jwks.json"
client_id = "flatline"
client_secret_file = "{dir}/client.secret"
redirect_uris = ["flatline://callback"]
"#,
        dir = dir.display()
    )
}

async fn pinned(config: &Settings) -> Option<String> {
    let store = flatline_server::store::open(&config.database)
        .await
        .unwrap();
    store.pinned_jwks("corp").await.unwrap()
}

#[tokio::test]
async fn refresh_replaces_the_pinned_set_and_a_failure_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("client.secret"), "s3cret\n").unwrap();
    let config = Config::from_toml_and_env(&config_text(d), []).unwrap();
    let (a, b) = (jwks(&[1]), jwks(&[2, 3]));
    assert_ne!(a, b);

    std::fs::write(d.join("jwks.json"), &a).unwrap();
    assert_eq!(jwks_refresh(config.clone(), "corp").await, Ok(1));
    assert_eq!(pinned(&config).await.as_deref(), Some(a.as_str()));

    std::fs::write(d.join("jwks.json"), &b).unwrap();
    assert_eq!(jwks_refresh(config.clone(), "corp").await, Ok(2));
    assert_eq!(pinned(&config).await.as_deref(), Some(b.as_str()));

    for broken in [Some("not json"), Some(r#"{"keys": []}"#), None] {
        match broken {
            Some(text) => std::fs::write(d.join("jwks.json"), text).unwrap(),
            None => std::fs::remove_file(d.join("jwks.json")).unwrap(),
        }
        let e = jwks_refresh(config.clone(), "corp").await.unwrap_err();
        assert!(!e.is_empty());
        assert_eq!(
            pinned(&config).await.as_deref(),
            Some(b.as_str()),
            "old set kept after {broken:?}"
        );
    }
    assert!(
        jwks_refresh(config.clone(), "nope")
            .await
            .unwrap_err()
            .contains("no provider `nope`")
    );
}

#[tokio::test]
async fn the_binary_reports_the_key_count_and_fails_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("client.secret"), "s3cret\n").unwrap();
    let config_file = d.join("flatline.toml");
    std::fs::write(&config_file, config_text(d)).unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_flatline-server"))
            .args(["--config"])
            .arg(&config_file)
            .args(["jwks", "refresh", "--provider", "corp"])
            .env("RUST_LOG", "error")
            .env_remove("FLATLINE_CONFIG")
            .output()
            .unwrap()
    };
    let keys = jwks(&[4, 5, 6]);
    std::fs::write(d.join("jwks.json"), &keys).unwrap();
    let out = run();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 keys"),
        "{out:?}"
    );

    std::fs::write(d.join("jwks.json"), "{}").unwrap();
    let out = run();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("old set stays pinned"),
        "{out:?}"
    );
    let config = Config::from_toml_and_env(&config_text(d), []).unwrap();
    assert_eq!(pinned(&config).await.as_deref(), Some(keys.as_str()));
}
