//! Every process of an instance must run with the same secrets: the providers' client secrets are fingerprinted in
//! the database at start (keyed, never the plain secret), a different one refuses to start, and
//! `keys fingerprints` / `keys forget` let an operator rotate one on purpose.

use std::path::Path;
use std::process::Command;

use flatline_server::config::{Config, Settings};
use flatline_server::serve::{CLIENT_SECRET_NAME_PREFIX, ServeError, production_state};
use sha2::Digest as _;

fn config_text(dir: &Path) -> String {
    format!(
        r#"
[database]
url = "sqlite://{dir}/secrets.db"

[registration]
principal_secret_file = "{dir}/principal.key"

[instance]
signing_key_file = "{dir}/signing.key"
sealed_sender_key_file = "{dir}/sealed-sender.key"
zk_params_file = "{dir}/zkgroup.key"

[[providers]]
id = "corp"
name = "Corp"
issuer = "http://127.0.0.1:9"
discovery = false
authorization_endpoint = "http://127.0.0.1:9/authorize"
token_endpoint = "http://127.0.0.1:9/token"
par_endpoint = "http://127.0.0.1:9/par"
jwks_uri = "http://127.0.0.1:9/jwks"
client_id = "flatline"
client_secret_file = "{dir}/client.secret"
redirect_uris = ["flatline://callback"]
"#,
        dir = dir.display()
    )
}

fn cli(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flatline-server"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run flatline-server");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn recorded(config: &Settings, name: &str) -> Option<String> {
    let store = flatline_server::store::open(&config.database)
        .await
        .unwrap();
    store.key_fingerprint(name).await.unwrap()
}

#[tokio::test]
async fn a_different_client_secret_refuses_to_start_until_its_fingerprint_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config_path = d.join("flatline.toml");
    std::fs::write(&config_path, config_text(d)).unwrap();
    let config = Config::from_toml_and_env(&config_text(d), []).unwrap();
    let name = format!("{CLIENT_SECRET_NAME_PREFIX}corp");

    std::fs::write(d.join("client.secret"), "first-secret\n").unwrap();
    production_state(config.clone()).await.expect("first start");
    let first = recorded(&config, &name)
        .await
        .expect("fingerprint recorded");
    // Keyed with the principal secret: a database dump does not let anyone test guesses of a short secret.
    assert_ne!(first, hex::encode(sha2::Sha256::digest(b"first-secret")));
    production_state(config.clone())
        .await
        .expect("a second process with the same secret");

    std::fs::write(d.join("client.secret"), "second-secret\n").unwrap();
    match production_state(config.clone()).await {
        Err(ServeError::ClientSecretMismatch { provider, name: n }) => {
            assert_eq!(provider, "corp");
            assert_eq!(n, name);
        }
        Err(other) => panic!("expected a client-secret mismatch, got {other}"),
        Ok(_) => panic!("started with a different client secret"),
    }
    assert_eq!(recorded(&config, &name).await.as_ref(), Some(&first));

    let (ok, listed, _) = cli(&config_path, &["keys", "fingerprints"]);
    assert!(ok);
    for expected in [name.as_str(), "principal-secret", "instance_signing_key"] {
        assert!(
            listed.contains(expected),
            "{expected} missing from:\n{listed}"
        );
    }
    assert!(!listed.contains("first-secret") && !listed.contains("second-secret"));

    let (ok, _, _) = cli(&config_path, &["keys", "forget", &name]);
    assert!(ok, "forget succeeds");
    let (ok, _, stderr) = cli(&config_path, &["keys", "forget", &name]);
    assert!(!ok && stderr.contains("no fingerprint"), "{stderr}");

    production_state(config.clone())
        .await
        .expect("start with the rotated secret");
    let second = recorded(&config, &name).await.expect("new fingerprint");
    assert_ne!(second, first);
    std::fs::write(d.join("client.secret"), "first-secret\n").unwrap();
    assert!(matches!(
        production_state(config).await,
        Err(ServeError::ClientSecretMismatch { .. })
    ));
}

/// F-19: a symlink planted at the temporary name never receives the secret.
#[cfg(unix)]
#[test]
fn planted_symlinks_do_not_receive_secrets() {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("symlink-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let victim = dir.join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    let path = dir.join("principal.key");
    let tmp = dir.join(format!("principal.key.tmp-{}", std::process::id()));
    std::os::unix::fs::symlink(&victim, &tmp).unwrap();
    let _ = flatline_server::secrets::write_private(&path, b"c0ffee");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
}
