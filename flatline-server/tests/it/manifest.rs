//! Server trust bootstrap: the served manifest checked by an independent JOSE library, version semantics across
//! restarts on one database, key-file checks, and the `keys` / `manifest` CLI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use flatline_core::manifest::{Descriptor, Fingerprint, InstanceSigningKey, verify};
use flatline_core::store::{FingerprintRecord, Store};
use flatline_core::time::Clock;
use flatline_server::config::Config;
use flatline_server::http::AppState;
use flatline_server::store::sqlite::SqliteStore;
use flatline_server::trust::{
    SEALED_SENDER_KEY_NAME, SIGNING_KEY_NAME, Trust, TrustError, ZK_PARAMS_NAME,
};
use flatline_testkit::{MemoryStore, MockClock, SeededRng};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::{Backend, TestApp, sqlite_url};

const DAY: Duration = Duration::from_secs(86_400);

fn scratch_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("trust")
        .join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A configuration whose key files live in `keys` and whose database is `db_url`.
fn config(keys: &Path, db_url: &str) -> Config {
    let mut c = Config::default();
    c.database.url = db_url.to_owned();
    c.server.public_url = "https://chat.example.org".into();
    c.instance.name = "Example".into();
    c.instance.signing_key_file = Some(keys.join("signing.key"));
    c.instance.sealed_sender_key_file = Some(keys.join("sealed.key"));
    c.instance.zk_params_file = Some(keys.join("zk.key"));
    c
}

async fn open_sqlite(url: &str) -> Arc<dyn Store> {
    let store = SqliteStore::open(url, 2, 10_000).await.unwrap();
    store.migrate().await.unwrap();
    Arc::new(store)
}

async fn store_for(backend: Backend) -> Arc<dyn Store> {
    match backend {
        Backend::Memory => Arc::new(MemoryStore::new()),
        Backend::Sqlite => open_sqlite(&sqlite_url()).await,
        Backend::Postgres => crate::support::pg_store().await,
    }
}

/// Bootstraps like a server start at the mock clock's time. Each start has its own random seed, as separate
/// processes would, so keys created by different starts differ.
async fn start(config: &Config, store: &dyn Store, clock: &MockClock) -> Result<Trust, TrustError> {
    let rng = SeededRng::new(uuid::Uuid::new_v4().as_u64_pair().0);
    let settings = config.validate().expect("valid configuration");
    Trust::bootstrap(&settings, store, &rng, &[], clock.now()).await
}

async fn app_with_trust(backend: Backend) -> (TestApp, Arc<Trust>, Config) {
    let config = config(&scratch_dir(), "sqlite://unused.db");
    let store = store_for(backend).await;
    let clock = Arc::new(MockClock::default());
    let rng = Arc::new(SeededRng::new(1));
    let trust = Arc::new(start(&config, store.as_ref(), &clock).await.unwrap());
    let state = AppState::new(
        config.validate().unwrap(),
        store,
        clock.clone(),
        rng.clone(),
    )
    .unwrap()
    .with_trust(trust.clone());
    (TestApp::with_state(state, clock, rng), trust, config)
}

/// RFC 7638 thumbprint of an Ed25519 JWK, computed here without the server's code.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// Decodes with `jsonwebtoken` (an independent JOSE implementation) using the JWK's `x`.
fn jose_decode(jws: &str, x: &str) -> jsonwebtoken::errors::Result<Value> {
    let mut validation = Validation::new(Algorithm::EdDSA);
    // The manifest has its own time fields (issuedAt/expiresAt), not JWT `exp`; they are checked below by hand.
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let key = DecodingKey::from_ed_components(x)?;
    jsonwebtoken::decode::<Value>(jws, &key, &validation).map(|d| d.claims)
}

fn payload_of(jws: &str) -> Value {
    let p = jws.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
}

#[tokio::test]
async fn served_manifest_verifies_with_an_independent_jose_library() {
    for backend in Backend::ALL {
        let (app, trust, _) = app_with_trust(backend).await;
        let r = app.get("/.well-known/flatline/manifest", None).await;
        assert_eq!(r.status, 200, "{backend:?}");
        assert_eq!(r.headers["content-type"], "application/jose");
        let jws = String::from_utf8(r.body.clone()).unwrap();

        let header = jsonwebtoken::decode_header(&jws).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.typ.as_deref(), Some("flatline-manifest+jwt"));
        let kid = header.kid.unwrap();

        let unverified = payload_of(&jws);
        let jwk = &unverified["signingKey"];
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        let x = jwk["x"].as_str().unwrap();
        assert_eq!(kid, thumbprint(x), "kid is the RFC 7638 thumbprint");

        let claims = jose_decode(&jws, x).expect("signature verifies");
        let mut fields: Vec<&str> = claims
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "endpoints",
                "expiresAt",
                "identityProviders",
                "issuedAt",
                "name",
                "signingKey",
                "tlsPins",
                "trustRoots",
                "version"
            ]
        );
        let now = app.clock.now().as_secs();
        assert_eq!(claims["version"], 1);
        assert_eq!(claims["issuedAt"], now);
        assert_eq!(claims["expiresAt"], now + 30 * 86_400);
        assert_eq!(claims["name"], "Example");
        assert_eq!(
            claims["endpoints"],
            serde_json::json!({"chat": "https://chat.example.org", "cdn0": "https://chat.example.org", "cdn3": "https://chat.example.org"})
        );
        assert_eq!(claims["tlsPins"], serde_json::json!([]));
        assert_eq!(claims["identityProviders"], serde_json::json!([]));
        // The zkgroup public params are those of the key file, in libsignal's serialization.
        let zk_public = base64::engine::general_purpose::STANDARD
            .decode(claims["trustRoots"]["zkParams"].as_str().unwrap())
            .unwrap();
        assert_eq!(zk_public.len(), flatline_core::zk::SERVER_PUBLIC_PARAMS_LEN);
        assert_eq!(
            claims["trustRoots"]["zkParams"],
            trust.zk().public_base64().as_str()
        );
        let generic_public = base64::engine::general_purpose::STANDARD
            .decode(claims["trustRoots"]["genericZkParams"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            generic_public.len(),
            flatline_core::zk::GENERIC_SERVER_PUBLIC_PARAMS_LEN
        );
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(claims["trustRoots"]["sealedSender"].as_str().unwrap())
            .unwrap();
        assert_eq!(sealed.len(), 33);
        assert_eq!(sealed[0], 0x05);

        // The descriptor names this manifest URL and the same fingerprint.
        let descriptor = Descriptor::parse(&trust.descriptor().to_string()).unwrap();
        assert_eq!(
            descriptor.manifest_url,
            "https://chat.example.org/.well-known/flatline/manifest"
        );
        assert_eq!(descriptor.fingerprint.to_string(), kid);
        assert!(
            trust
                .descriptor()
                .to_string()
                .ends_with(&format!("&fp=sha256:{kid}"))
        );
        // The database pins the same fingerprint.
        assert_eq!(
            app.state
                .store
                .record_key_fingerprint(SIGNING_KEY_NAME, "other", app.clock.now())
                .await
                .unwrap(),
            FingerprintRecord::Existing(kid.clone())
        );

        // The independent library rejects a changed payload and a foreign key.
        let parts: Vec<&str> = jws.split('.').collect();
        let mut tampered = unverified.clone();
        tampered["endpoints"]["chat"] = "https://evil.example".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(tampered.to_string()),
            parts[2]
        );
        assert!(jose_decode(&forged, x).is_err());
        let other = InstanceSigningKey::generate(&SeededRng::new(77));
        assert!(jose_decode(&jws, &other.public_jwk().x).is_err());
    }
}

#[tokio::test]
pub async fn without_trust_material_the_manifest_is_404() {
    let app = TestApp::new(Backend::Memory).await;
    let r = app.get("/.well-known/flatline/manifest", None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "manifest_not_configured");
}

#[tokio::test]
async fn manifest_is_resigned_before_it_expires() {
    let (app, trust, _) = app_with_trust(Backend::Memory).await;
    let fp = trust.descriptor().fingerprint.clone();
    let first =
        String::from_utf8(app.get("/.well-known/flatline/manifest", None).await.body).unwrap();
    // Within the first half of the lifetime the same signature is served.
    app.clock.advance(14 * DAY);
    let same =
        String::from_utf8(app.get("/.well-known/flatline/manifest", None).await.body).unwrap();
    assert_eq!(same, first);
    // Past half of it, a fresh signature with new times and the same version.
    app.clock.advance(DAY + Duration::from_secs(1));
    let fresh =
        String::from_utf8(app.get("/.well-known/flatline/manifest", None).await.body).unwrap();
    assert_ne!(fresh, first);
    let (a, b) = (payload_of(&first), payload_of(&fresh));
    assert_eq!(b["issuedAt"], app.clock.now().as_secs());
    assert_eq!(a["version"], b["version"]);
    // Whenever it is fetched, it is valid for at least half the lifetime, even after long idle gaps.
    for step in [3, 7, 20, 45, 1] {
        app.clock.advance(step * DAY);
        let jws =
            String::from_utf8(app.get("/.well-known/flatline/manifest", None).await.body).unwrap();
        let m = verify(&jws, Some(&fp), Some(1), app.clock.now()).unwrap();
        assert!(
            m.expires_at - app.clock.now().as_secs() >= 15 * 86_400,
            "{m:?}"
        );
        assert_eq!(m.version, 1);
    }
}

#[tokio::test]
async fn version_follows_the_configuration_across_restarts() {
    let keys = scratch_dir();
    let url = sqlite_url();
    let clock = MockClock::default();
    let a = config(&keys, &url);
    let mut b = a.clone();
    b.instance.name = "Renamed".into();
    let mut c = a.clone();
    c.instance
        .endpoints
        .insert("chat".into(), "https://chat2.example.org".into());

    // Each start opens the database anew, as a restarted process does.
    let mut versions = vec![];
    for (cfg, advance) in [
        (&a, 0),
        (&a, 40), // unchanged, even after the old signature expired
        (&b, 1),
        (&a, 1), // rolled back: still a new version
        (&a, 1),
        (&c, 1),
        (&c, 1),
    ] {
        clock.advance(advance * DAY);
        let store = open_sqlite(&url).await;
        let trust = start(cfg, store.as_ref(), &clock).await.unwrap();
        let (m, jws) = trust.signed_manifest(clock.now());
        assert_eq!(m.version, trust.version());
        assert_eq!(
            verify(
                &jws,
                Some(&trust.descriptor().fingerprint),
                None,
                clock.now()
            )
            .unwrap()
            .version,
            m.version
        );
        versions.push(m.version);
    }
    assert_eq!(versions, [1, 1, 2, 3, 3, 4, 4]);
}

#[tokio::test]
async fn a_different_key_file_against_the_same_database_refuses_to_start() {
    let url = sqlite_url();
    let clock = MockClock::default();
    let original = config(&scratch_dir(), &url);
    let store = open_sqlite(&url).await;
    let trust = start(&original, store.as_ref(), &clock).await.unwrap();
    let fp = trust.descriptor().fingerprint.to_string();

    // Another instance's keys (say, a copy from another machine) against the same database.
    let other_keys = scratch_dir();
    let other_rng = SeededRng::new(uuid::Uuid::new_v4().as_u64_pair().0);
    std::fs::write(
        other_keys.join("signing.key"),
        InstanceSigningKey::generate(&other_rng).to_pem().as_str(),
    )
    .unwrap();
    std::fs::write(
        other_keys.join("sealed.key"),
        flatline_core::manifest::SealedSenderRoot::generate(&other_rng)
            .to_pem()
            .as_str(),
    )
    .unwrap();
    let mut swapped = original.clone();
    swapped.instance.signing_key_file = Some(other_keys.join("signing.key"));
    let store = open_sqlite(&url).await;
    let before = store.manifest_state().await.unwrap();
    match start(&swapped, store.as_ref(), &clock).await {
        Err(TrustError::KeyMismatch {
            name,
            recorded,
            actual,
            ..
        }) => {
            assert_eq!(name, SIGNING_KEY_NAME);
            assert_eq!(recorded, fp);
            assert_ne!(actual, fp);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.manifest_state().await.unwrap(),
        before,
        "nothing advanced"
    );

    // The same for a swapped sealed-sender trust root alone.
    let mut swapped = original.clone();
    swapped.instance.sealed_sender_key_file = Some(other_keys.join("sealed.key"));
    let err = start(&swapped, store.as_ref(), &clock).await.unwrap_err();
    assert!(
        matches!(err, TrustError::KeyMismatch { name, .. } if name == SEALED_SENDER_KEY_NAME),
        "{err}"
    );
    assert!(err.to_string().contains("refusing to start"), "{err}");

    // The same for swapped zkgroup params, and a lost zkgroup file is not replaced.
    std::fs::write(
        other_keys.join("zk.key"),
        flatline_core::zk::ZkParams::generate(&other_rng)
            .to_pem()
            .as_str(),
    )
    .unwrap();
    let mut swapped = original.clone();
    swapped.instance.zk_params_file = Some(other_keys.join("zk.key"));
    let err = start(&swapped, store.as_ref(), &clock).await.unwrap_err();
    assert!(
        matches!(err, TrustError::KeyMismatch { name, .. } if name == ZK_PARAMS_NAME),
        "{err}"
    );
    let mut lost = original.clone();
    let missing = scratch_dir().join("zk.key");
    lost.instance.zk_params_file = Some(missing.clone());
    let err = start(&lost, store.as_ref(), &clock).await.unwrap_err();
    assert!(
        matches!(&err, TrustError::KeyMissing { name, .. } if *name == ZK_PARAMS_NAME),
        "{err}"
    );
    assert!(!missing.exists());

    // The original keys still start.
    assert!(start(&original, store.as_ref(), &clock).await.is_ok());

    // A lost key file is reported as such, and no new key is minted in its place.
    let mut lost = original.clone();
    let missing = scratch_dir().join("signing.key");
    lost.instance.signing_key_file = Some(missing.clone());
    let err = start(&lost, store.as_ref(), &clock).await.unwrap_err();
    assert!(
        matches!(&err, TrustError::KeyMissing { name, recorded, .. } if *name == SIGNING_KEY_NAME && *recorded == fp),
        "{err}"
    );
    assert!(!missing.exists());

    // And the real binary exits with a clear error instead of serving.
    let dir = scratch_dir();
    let mut swapped = original.clone();
    swapped.instance.signing_key_file = Some(other_keys.join("signing.key"));
    swapped.server.listen = "127.0.0.1:0".parse().unwrap();
    let out = run_cli(&dir, &swapped, &["serve"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("different key"), "{}", stderr(&out));
}

#[tokio::test]
async fn a_corrupt_key_file_is_refused_not_replaced() {
    let keys = scratch_dir();
    std::fs::write(keys.join("signing.key"), "not a key").unwrap();
    let cfg = config(&keys, &sqlite_url());
    let store = open_sqlite(&cfg.database.url).await;
    let err = start(&cfg, store.as_ref(), &MockClock::default())
        .await
        .unwrap_err();
    assert!(matches!(err, TrustError::KeyFile { .. }), "{err}");
    assert_eq!(
        std::fs::read_to_string(keys.join("signing.key")).unwrap(),
        "not a key"
    );
}

// ----- the CLI, through the real binary -----

fn run_cli(dir: &Path, config: &Config, args: &[&str]) -> Output {
    let path = dir.join("config.toml");
    std::fs::write(&path, toml::to_string(config).unwrap()).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flatline-server"));
    cmd.env_clear()
        .arg("--config")
        .arg(&path)
        .args(args)
        .current_dir(dir);
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A command that should exit but serves instead must not hang the suite.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[cfg(unix)]
#[test]
fn keys_init_creates_key_files_with_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch_dir();
    let cfg = config(&dir.join("keys"), "sqlite://flatline.db");
    let out = run_cli(&dir, &cfg, &["keys", "init"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.matches("(created)").count(), 3, "{text}");
    for file in ["signing.key", "sealed.key", "zk.key"] {
        let meta = std::fs::metadata(dir.join("keys").join(file)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{file}");
    }
    let key = InstanceSigningKey::from_pem(
        &std::fs::read_to_string(dir.join("keys/signing.key")).unwrap(),
    )
    .unwrap();
    assert!(text.contains(&key.fingerprint().with_hash_name()), "{text}");

    // A second run keeps the files.
    let again = run_cli(&dir, &cfg, &["keys", "init"]);
    assert!(again.status.success());
    assert_eq!(stdout(&again).matches("(exists)").count(), 3);
    assert!(stdout(&again).contains(&key.fingerprint().with_hash_name()));
    // `keys init` does not touch the database.
    assert!(!dir.join("flatline.db").exists());
}

#[cfg(unix)]
#[test]
fn first_start_creates_default_key_files_next_to_the_database() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch_dir();
    let mut cfg = Config::default();
    cfg.database.url = format!("sqlite://{}", dir.join("data/flatline.db").display());
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let out = run_cli(&dir, &cfg, &["manifest", "show"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for file in [
        "flatline-signing.key",
        "flatline-sealed-sender.key",
        "flatline-zkgroup.key",
    ] {
        let meta = std::fs::metadata(dir.join("data").join(file)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{file}");
    }
}

#[test]
fn cli_exports_verifies_and_describes_the_manifest() {
    let dir = scratch_dir();
    let cfg = config(
        &dir.join("keys"),
        &format!("sqlite://{}", dir.join("db.sqlite").display()),
    );

    let show = run_cli(&dir, &cfg, &["manifest", "show"]);
    assert!(show.status.success(), "{}", stderr(&show));
    let shown: Value = serde_json::from_str(&stdout(&show)).unwrap();
    assert_eq!(shown["version"], 1);
    let fp = thumbprint(shown["signingKey"]["x"].as_str().unwrap());
    let pinned = format!("sha256:{fp}");

    let file = dir.join("manifest.jws");
    let export = run_cli(&dir, &cfg, &["manifest", "export", file.to_str().unwrap()]);
    assert!(export.status.success(), "{}", stderr(&export));
    let jws = std::fs::read_to_string(&file).unwrap();
    assert_eq!(payload_of(jws.trim())["version"], 1);
    assert!(jose_decode(jws.trim(), shown["signingKey"]["x"].as_str().unwrap()).is_ok());

    let verify_args = |file: &Path, extra: &[&str]| {
        let mut args = vec!["manifest", "verify", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        run_cli(&dir, &cfg, &args)
    };
    let ok = verify_args(&file, &["--fingerprint", &pinned, "--min-version", "1"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(
        stdout(&ok).contains("manifest OK: version 1"),
        "{}",
        stdout(&ok)
    );

    // A lower version than the one accepted before.
    let old = verify_args(&file, &["--fingerprint", &pinned, "--min-version", "2"]);
    assert_eq!(old.status.code(), Some(1));
    assert!(stderr(&old).contains("lower than"), "{}", stderr(&old));

    // Another pinned key.
    let other = InstanceSigningKey::generate(&SeededRng::new(99));
    let wrong = verify_args(
        &file,
        &["--fingerprint", &other.fingerprint().with_hash_name()],
    );
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong).contains("not by the expected key"),
        "{}",
        stderr(&wrong)
    );

    // The same content re-signed by another key, presented under the real fingerprint.
    let mut m: flatline_core::manifest::Manifest = serde_json::from_value(shown.clone()).unwrap();
    m.name = "Impostor".into();
    let resigned = dir.join("resigned.jws");
    std::fs::write(&resigned, other.sign(&m)).unwrap();
    let r = verify_args(&resigned, &["--fingerprint", &pinned]);
    assert_eq!(r.status.code(), Some(1));
    assert!(stderr(&r).contains("manifest rejected"), "{}", stderr(&r));

    // A tampered payload under the original signature.
    let parts: Vec<&str> = jws.trim().split('.').collect();
    let mut payload = payload_of(jws.trim());
    payload["endpoints"]["chat"] = "https://evil.example".into();
    let tampered = dir.join("tampered.jws");
    std::fs::write(
        &tampered,
        format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(payload.to_string()),
            parts[2]
        ),
    )
    .unwrap();
    let t = verify_args(&tampered, &["--fingerprint", &pinned]);
    assert_eq!(t.status.code(), Some(1));
    assert!(
        stderr(&t).contains("signature does not verify"),
        "{}",
        stderr(&t)
    );

    // An expired one, signed with the instance's own key.
    let key = InstanceSigningKey::from_pem(
        &std::fs::read_to_string(dir.join("keys/signing.key")).unwrap(),
    )
    .unwrap();
    let mut expired: flatline_core::manifest::Manifest = serde_json::from_value(shown).unwrap();
    expired.issued_at = 1_000_000_000;
    expired.expires_at = 1_000_086_400;
    let expired_file = dir.join("expired.jws");
    std::fs::write(&expired_file, key.sign(&expired)).unwrap();
    let e = verify_args(&expired_file, &["--fingerprint", &pinned]);
    assert_eq!(e.status.code(), Some(1));
    assert!(stderr(&e).contains("expired"), "{}", stderr(&e));

    // The descriptor, plain and as a QR code.
    let d = run_cli(&dir, &cfg, &["manifest", "descriptor", "--qr"]);
    assert!(d.status.success(), "{}", stderr(&d));
    let text = stdout(&d);
    let first = text.lines().next().unwrap();
    let descriptor = Descriptor::parse(first).unwrap();
    assert_eq!(descriptor.fingerprint, Fingerprint::parse(&pinned).unwrap());
    assert_eq!(
        descriptor.manifest_url,
        "https://chat.example.org/.well-known/flatline/manifest"
    );
    let qr_lines: Vec<&str> = text.lines().skip(1).filter(|l| !l.is_empty()).collect();
    assert!(qr_lines.len() > 10, "{text}");
    assert!(
        qr_lines
            .iter()
            .all(|l| l.chars().all(|c| " █▀▄".contains(c))),
        "{text}"
    );

    // Unchanged configuration: the CLI runs did not bump the version.
    let again = run_cli(&dir, &cfg, &["manifest", "show"]);
    let again: Value = serde_json::from_str(&stdout(&again)).unwrap();
    assert_eq!(again["version"], 1);
}
