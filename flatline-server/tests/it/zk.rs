//! `GET /v1/certificate/auth/group` with the instance's real zkgroup params: the range rules, and the official
//! libsignal client (npm 0.103.0, `flatline-testkit/libsignal/zk_receive.mjs`) accepting every credential against
//! the `ServerPublicParams` / `GenericServerPublicParams` taken from the signed manifest.
//!
//! The libsignal part needs `node` and `npm ci --prefix flatline-testkit/libsignal` (`.ci/run` does both);
//! `TESTS_SKIP_NODE=1` skips it on purpose.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use flatline_core::time::Clock;
use flatline_server::config::Config;
use flatline_server::http::AppState;
use flatline_server::trust::Trust;
use flatline_testkit::{MemoryStore, MockClock, SeededRng, UsernameForm};
use serde_json::{Value, json};

use crate::support::TestApp;

pub(crate) const DAY: u64 = 86_400;

fn scratch_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("zk")
        .join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) async fn app_with_trust() -> TestApp {
    let keys = scratch_dir();
    let mut config = Config::default();
    config.database.url = "sqlite://unused.db".into();
    config.server.public_url = "https://chat.example.org".into();
    config.instance.signing_key_file = Some(keys.join("signing.key"));
    config.instance.sealed_sender_key_file = Some(keys.join("sealed.key"));
    config.instance.zk_params_file = Some(keys.join("zk.key"));
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(MockClock::default());
    let rng = Arc::new(SeededRng::new(11));
    let config = config.validate().expect("valid configuration");
    let trust = Trust::bootstrap(&config, store.as_ref(), rng.as_ref(), &[], clock.now())
        .await
        .unwrap();
    let state = AppState::new(config, store, clock.clone(), rng.clone())
        .unwrap()
        .with_trust(Arc::new(trust));
    TestApp::with_state(state, clock, rng)
}

pub(crate) fn today(app: &TestApp) -> u64 {
    let now = u64::try_from(app.clock.now().as_secs()).unwrap();
    now - now % DAY
}

fn uri(start: u64, end: u64) -> String {
    format!("/v1/certificate/auth/group?redemptionStartSeconds={start}&redemptionEndSeconds={end}")
}

/// The manifest's claims, read from the served JWS (its signature is checked in `manifest.rs`).
async fn manifest_claims(app: &TestApp) -> Value {
    let r = app.get("/.well-known/flatline/manifest", None).await;
    assert_eq!(r.status, 200);
    let jws = String::from_utf8(r.body).unwrap();
    let payload = jws.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
pub async fn group_credentials_cover_each_day_of_the_range() {
    let app = app_with_trust().await;
    let client = app.seed("alice").await;
    let auth = client.basic_auth(UsernameForm::Aci);
    let t = today(&app);
    // Desktop appends zkcCredential=true; it is ignored.
    let r = app
        .get(
            &format!("{}&zkcCredential=true", uri(t, t + 7 * DAY)),
            Some(&auth),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert_eq!(body["pni"], client.pni.to_string());
    for (field, len) in [
        (
            "credentials",
            flatline_core::zk::AUTH_CREDENTIAL_WITH_PNI_RESPONSE_LEN,
        ),
        (
            "callLinkAuthCredentials",
            flatline_core::zk::CALL_LINK_AUTH_CREDENTIAL_RESPONSE_LEN,
        ),
    ] {
        let list = body[field].as_array().unwrap();
        assert_eq!(list.len(), 8, "{field}");
        for (i, c) in list.iter().enumerate() {
            assert_eq!(c["redemptionTime"], t + i as u64 * DAY);
            let bytes = STANDARD.decode(c["credential"].as_str().unwrap()).unwrap();
            assert_eq!(bytes.len(), len, "{field}");
        }
    }
    // The credentials verify against the manifest's public params (our own client-side check).
    let claims = manifest_claims(&app).await;
    let public = flatline_core::zk::ServerPublicParams::from_bytes(
        &STANDARD
            .decode(claims["trustRoots"]["zkParams"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let c = &body["credentials"][0];
    flatline_core::zk::receive_auth_credential_with_pni_zkc(
        &public,
        client.aci,
        client.pni,
        t,
        &STANDARD.decode(c["credential"].as_str().unwrap()).unwrap(),
    )
    .unwrap();

    // One day is one credential each.
    let r = app.get(&uri(t + DAY, t + DAY), Some(&auth)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["credentials"].as_array().unwrap().len(), 1);
}

#[tokio::test]
pub async fn bad_ranges_are_400_and_anonymous_is_401() {
    let app = app_with_trust().await;
    let client = app.seed("alice").await;
    let auth = client.basic_auth(UsernameForm::Aci);
    let t = today(&app);
    for (start, end) in [
        (t, t + 8 * DAY),
        (t - DAY, t),
        (t + DAY, t),
        (t + 1, t + DAY),
        (t, t + DAY + 60),
    ] {
        let r = app.get(&uri(start, end), Some(&auth)).await;
        assert_eq!(r.status, 400, "{start}..{end}");
        assert_eq!(r.code(), "invalid_redemption_range");
    }
    for query in [
        "".to_owned(),
        format!("?redemptionStartSeconds={t}"),
        format!("?redemptionStartSeconds=x&redemptionEndSeconds={t}"),
        format!("?redemptionStartSeconds=-1&redemptionEndSeconds={t}"),
    ] {
        let r = app
            .get(&format!("/v1/certificate/auth/group{query}"), Some(&auth))
            .await;
        assert_eq!(r.status, 400, "{query}");
        assert_eq!(r.code(), "invalid_query");
    }
    let r = app.get(&uri(t, t), None).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn without_trust_material_it_is_404() {
    let app = TestApp::new(crate::support::Backend::Memory).await;
    let client = app.seed("alice").await;
    let t = today(&app);
    let r = app
        .get(&uri(t, t), Some(&client.basic_auth(UsernameForm::Aci)))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "zk_not_configured");
}

/// The libsignal clients' directory, or `None` when skipped on purpose.
fn libsignal_dir() -> Option<PathBuf> {
    if std::env::var("TESTS_SKIP_NODE").as_deref() == Ok("1") {
        eprintln!("TESTS_SKIP_NODE=1: skipping the libsignal zkgroup client test");
        return None;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../flatline-testkit/libsignal");
    assert!(
        dir.join("node_modules/@signalapp/libsignal-client")
            .is_dir(),
        "the libsignal test clients' packages are missing: run `npm ci --prefix flatline-testkit/libsignal` \
         (or set TESTS_SKIP_NODE=1)"
    );
    Some(dir)
}

fn run_libsignal(dir: &Path, input: &Value) -> Value {
    run_script(dir, "zk_receive.mjs", input)
}

pub(crate) fn run_script(dir: &Path, script: &str, input: &Value) -> Value {
    let mut child = std::process::Command::new("node")
        .arg(script)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node on PATH");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn libsignal_client_receives_the_credentials_with_the_manifest_params() {
    let Some(dir) = libsignal_dir() else { return };
    let app = app_with_trust().await;
    let client = app.seed("alice").await;
    let auth = client.basic_auth(UsernameForm::Aci);
    let t = today(&app);
    let r = app.get(&uri(t, t + 7 * DAY), Some(&auth)).await;
    assert_eq!(r.status, 200);
    let credentials = r.json();
    let claims = manifest_claims(&app).await;
    let input = |aci: String| {
        json!({
            "serverPublicParams": claims["trustRoots"]["zkParams"],
            "genericServerPublicParams": claims["trustRoots"]["genericZkParams"],
            "aci": aci,
            "pni": client.pni.to_string(),
            "groupCredentials": credentials,
        })
    };
    let out = run_libsignal(&dir, &input(client.aci.to_string()));
    assert_eq!(
        out,
        json!({"ok": true, "received": 8, "callLinkReceived": 8, "presentations": 8})
    );
    // For someone else's ACI the issuance proofs do not verify.
    let out = run_libsignal(&dir, &input(uuid::Uuid::new_v4().to_string()));
    assert_eq!(out["ok"], false, "{out}");
}

/// libsignal loads the server's generated `ServerSecretParams` (from its key file), issues group send endorsements
/// with them as a group server would, and the client's combined token verifies on our side for exactly the other
/// members, and not once expired.
#[tokio::test]
async fn libsignal_group_send_token_from_the_key_file_params_verifies() {
    use flatline_core::ids::ServiceId;
    use flatline_core::zk::service::{
        GroupSendTokenError, parse_group_send_token, verify_group_send_token,
    };
    let Some(dir) = libsignal_dir() else { return };
    let app = app_with_trust().await;
    let trust = app.state.trust.clone().unwrap();
    let key_file = std::fs::read_to_string(&app.state.config.instance.zk_params_file).unwrap();
    let params = flatline_core::zk::ZkParams::from_pem(&key_file).unwrap();
    assert_eq!(params.fingerprint(), trust.zk().fingerprint());
    let now = u64::try_from(app.clock.now().as_secs()).unwrap();
    let expiration = today(&app) + 2 * DAY;
    let members: Vec<ServiceId> = [
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
        format!("PNI:{}", uuid::Uuid::new_v4()),
        uuid::Uuid::new_v4().to_string(),
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let out = run_script(
        &dir,
        "zk_group_send.mjs",
        &json!({
            "serverSecretParams": STANDARD.encode(params.server.to_bytes()),
            "members": members.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "expiration": expiration,
            "now": now,
        }),
    );
    assert_eq!(out["ok"], true, "{out}");
    let token = parse_group_send_token(out["token"].as_str().unwrap()).unwrap();
    assert_eq!(token.expiration(), expiration);
    let recipients = &members[1..];
    let server = &trust.zk().server;
    assert_eq!(
        verify_group_send_token(server, &token, recipients, now),
        Ok(())
    );
    assert_eq!(
        verify_group_send_token(server, &token, &members, now),
        Err(GroupSendTokenError::Invalid)
    );
    assert_eq!(
        verify_group_send_token(server, &token, &recipients[1..], now),
        Err(GroupSendTokenError::Invalid)
    );
    assert_eq!(
        verify_group_send_token(server, &token, recipients, expiration + 1),
        Err(GroupSendTokenError::Invalid)
    );
}

/// A libsignal client's profile key credential request, issued by the core service with the instance's params
/// (what the versioned profile GET will call), is received by libsignal against the manifest's `zkParams`.
#[tokio::test]
async fn libsignal_receives_an_expiring_profile_key_credential() {
    use std::io::{BufRead as _, BufReader};

    use flatline_core::zk::service::issue_profile_key_credential;
    let Some(dir) = libsignal_dir() else { return };
    let app = app_with_trust().await;
    let trust = app.state.trust.clone().unwrap();
    let claims = manifest_claims(&app).await;
    let aci = flatline_core::ids::Aci(uuid::Uuid::new_v4());
    let mut child = std::process::Command::new("node")
        .arg("zk_profile.mjs")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node on PATH");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    writeln!(
        stdin,
        "{}",
        json!({"serverPublicParams": claims["trustRoots"]["zkParams"], "aci": aci.to_string()})
    )
    .unwrap();
    stdout.read_line(&mut line).unwrap();
    let request: Value = serde_json::from_str(&line).unwrap();
    let commitment = STANDARD
        .decode(request["commitment"].as_str().unwrap())
        .unwrap();
    let now = u64::try_from(app.clock.now().as_secs()).unwrap();
    let response = issue_profile_key_credential(
        &trust.zk().server,
        aci,
        &commitment,
        request["request"].as_str().unwrap(),
        now,
        app.rng.as_ref(),
    )
    .unwrap();
    writeln!(
        stdin,
        "{}",
        json!({"response": STANDARD.encode(&response), "now": now})
    )
    .unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    let out: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(out["ok"], true, "{out}");
    let expiration = now + 7 * DAY;
    assert_eq!(out["expiration"], expiration - expiration % DAY);
    drop(stdin);
    assert!(child.wait().unwrap().success());
}
