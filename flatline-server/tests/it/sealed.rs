//! Sealed sender against the real npm libsignal (flatline-testkit/libsignal/sealed.mjs): a sender certificate fetched
//! from `GET /v1/certificate/delivery` validates under the manifest's trust root (and not under another root or
//! after expiry); Alice seals to Bob with it and Bob's libsignal decrypts and sees Alice; an SSv2 multi-recipient
//! SentMessage from libsignal is parsed by the core parser, fanned out, and every device opens its payload.
//!
//! Needs `node` and `npm ci --prefix flatline-testkit/libsignal` (`.ci/run` does both); `TESTS_SKIP_NODE=1` skips.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use flatline_core::crypto::{KeyPair, PrivateKey};
use flatline_core::ids::{Aci, ServiceId};
use flatline_core::sealed::{multi_recipient, service};
use flatline_core::store::Store;
use flatline_core::time::Clock;
use flatline_server::config::Config;
use flatline_server::http::AppState;
use flatline_server::trust::Trust;
use flatline_testkit::client::{SimClient, UsernameForm};
use flatline_testkit::{MemoryStore, MockClock, SeededRng};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::support::{Backend, TestApp};

const HOUR_MS: i64 = 3_600_000;

pub(crate) fn libsignal_dir() -> Option<PathBuf> {
    if std::env::var("TESTS_SKIP_NODE").as_deref() == Ok("1") {
        eprintln!("TESTS_SKIP_NODE=1: skipping the sealed-sender tests against npm libsignal");
        return None;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../flatline-testkit/libsignal");
    assert!(
        dir.join("node_modules/@signalapp/libsignal-client")
            .is_dir(),
        "npm libsignal is missing: run `npm ci --prefix flatline-testkit/libsignal` (or set TESTS_SKIP_NODE=1)"
    );
    Some(dir)
}

/// The node client: one JSON request per line, one answer per line.
pub(crate) struct Libsignal {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Libsignal {
    pub(crate) fn start(dir: &Path) -> Libsignal {
        let mut child = tokio::process::Command::new("node")
            .arg(dir.join("sealed.mjs"))
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node (is Node.js installed?)");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Libsignal {
            _child: child,
            stdin,
            lines,
        }
    }

    /// Sends one request; returns the answer (`ok` true or false).
    pub(crate) async fn try_call(&mut self, request: Value) -> Value {
        let line = format!("{request}\n");
        self.stdin.write_all(line.as_bytes()).await.expect("write");
        self.stdin.flush().await.expect("flush");
        let answer = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
            .await
            .expect("libsignal answered in time")
            .expect("read")
            .expect("an answer line");
        serde_json::from_str(&answer).expect("JSON answer")
    }

    pub(crate) async fn call(&mut self, request: Value) -> Value {
        let op = request["op"].clone();
        let answer = self.try_call(request).await;
        assert_eq!(answer["ok"], true, "{op}: {answer}");
        answer
    }
}

fn scratch_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("sealed")
        .join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) async fn app_with_trust(backend: Backend) -> TestApp {
    let keys = scratch_dir();
    let mut config = Config::default();
    config.server.public_url = "https://chat.example.org".into();
    config.instance.name = "Example".into();
    config.instance.signing_key_file = Some(keys.join("signing.key"));
    config.instance.sealed_sender_key_file = Some(keys.join("sealed.key"));
    let store: Arc<dyn Store> = match backend {
        Backend::Memory => Arc::new(MemoryStore::new()),
        Backend::Sqlite => crate::support::sqlite_store().await,
        Backend::Postgres => crate::support::pg_store().await,
    };
    let clock = Arc::new(MockClock::at(flatline_core::time::Timestamp::from_secs(
        1_800_000_000,
    )));
    let rng = Arc::new(SeededRng::new(uuid::Uuid::new_v4().as_u64_pair().0));
    let config = config.validate().expect("valid configuration");
    let trust = Trust::bootstrap(&config, store.as_ref(), rng.as_ref(), &[], clock.now())
        .await
        .unwrap();
    let state = AppState::new(config, store, clock.clone(), rng.clone())
        .unwrap()
        .with_trust(Arc::new(trust));
    TestApp::with_state(state, clock, rng)
}

/// The trust root as a client learns it: `trustRoots.sealedSender` of the served manifest.
pub(crate) async fn manifest_trust_root(app: &TestApp) -> String {
    let r = app.get("/.well-known/flatline/manifest", None).await;
    assert_eq!(r.status, 200);
    let jws = String::from_utf8(r.body).unwrap();
    let payload = jws.split('.').nth(1).unwrap();
    let manifest: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    manifest["trustRoots"]["sealedSender"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Seeds an account whose ACI identity key is `identity` and returns its client.
pub(crate) async fn seed_with_identity(
    app: &TestApp,
    principal: &str,
    identity: KeyPair,
) -> SimClient {
    let mut client = SimClient::new(app.rng.as_ref());
    client.aci_identity = identity;
    let new = client.new_account(principal, app.rng.as_ref(), app.clock.now());
    app.state.store.create_account(new).await.unwrap();
    client
}

pub(crate) async fn fetch_certificate(app: &TestApp, client: &SimClient, query: &str) -> String {
    let r = app
        .get(
            &format!("/v1/certificate/delivery{query}"),
            Some(&client.basic_auth(UsernameForm::Aci)),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    body["certificate"].as_str().unwrap().to_owned()
}

#[tokio::test]
pub async fn delivery_certificate_on_every_backend() {
    for backend in Backend::ALL {
        let app = app_with_trust(backend).await;
        let rng = SeededRng::new(5);
        let alice = seed_with_identity(&app, "alice@example.org", KeyPair::generate(&rng)).await;
        // Unauthenticated → 401; a bad password → 401.
        assert_eq!(app.get("/v1/certificate/delivery", None).await.status, 401);
        let mut wrong = SimClient::new(&rng);
        wrong.aci = alice.aci;
        let r = app
            .get(
                "/v1/certificate/delivery",
                Some(&wrong.basic_auth(UsernameForm::Aci)),
            )
            .await;
        assert_eq!(r.status, 401);
        // Bare, includeE164=true/false and nonsense are all 200 and equivalent.
        let mut signers = vec![];
        for q in [
            "",
            "?includeE164=true",
            "?includeE164=false",
            "?includeE164=maybe",
        ] {
            let b64 = fetch_certificate(&app, &alice, q).await;
            let cert = flatline_core::sealed::SenderCertificate::deserialize(
                &STANDARD.decode(b64).unwrap(),
            )
            .unwrap();
            assert_eq!(cert.sender().aci, alice.aci, "{backend:?}");
            assert_eq!(cert.sender_e164(), None);
            assert_eq!(cert.sender().identity_key, alice.aci_identity.public_key);
            assert_eq!(
                cert.expires() as i64,
                app.clock.now().as_millis() + 24 * HOUR_MS
            );
            signers.push(cert.signer().id());
        }
        // One server certificate signs them all (issued once, then reused).
        assert!(signers.windows(2).all(|w| w[0] == w[1]), "{signers:?}");
        assert_eq!(
            app.state.store.server_certificates().await.unwrap().len(),
            1
        );
    }
}

#[tokio::test]
async fn configured_lifetime_and_no_trust_material() {
    // Without trust material the endpoint says so (404), never a 5xx.
    let app = TestApp::new(Backend::Memory).await;
    let alice = app.seed("alice@example.org").await;
    let r = app
        .get(
            "/v1/certificate/delivery",
            Some(&alice.basic_auth(UsernameForm::Aci)),
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "sealed_sender_not_configured");
    // An out-of-range lifetime is a configuration error.
    let mut c = Config::default();
    c.sealed_sender.certificate_lifetime_hours = 0;
    assert!(c.validate().is_err());
    c.sealed_sender.certificate_lifetime_hours = 721;
    assert!(c.validate().is_err());
    c.sealed_sender.certificate_lifetime_hours = 720;
    assert!(c.validate().is_ok());
}

#[tokio::test]
async fn libsignal_validates_certificates_and_opens_sealed_messages() {
    let Some(dir) = libsignal_dir() else { return };
    let app = app_with_trust(Backend::Sqlite).await;
    let root = manifest_trust_root(&app).await;
    let mut ls = Libsignal::start(&dir);
    let rng = SeededRng::new(9);

    let alice_identity = KeyPair::generate(&rng);
    let alice = seed_with_identity(&app, "alice@example.org", alice_identity.clone()).await;
    let (bob, carol) = (Aci::random(&rng), Aci::random(&rng));
    ls.call(
        json!({"op": "party", "name": "alice", "aci": alice.aci.to_string(),
        "devices": [{"id": 1, "registrationId": 1111}],
        "identityPrivateKey": STANDARD.encode(alice_identity.private_key.serialize())}),
    )
    .await;
    ls.call(json!({"op": "party", "name": "bob", "aci": bob.to_string(),
        "devices": [{"id": 1, "registrationId": 4321}, {"id": 2, "registrationId": 16383}]}))
        .await;
    ls.call(
        json!({"op": "party", "name": "carol", "aci": carol.to_string(),
        "devices": [{"id": 1, "registrationId": 7}]}),
    )
    .await;

    let now = app.clock.now().as_millis();
    let certificate = fetch_certificate(&app, &alice, "").await;

    // Validation by libsignal: the manifest's root, another root, expiry.
    let other_root = STANDARD.encode(PrivateKey::generate(&rng).public_key().serialize());
    let v = ls
        .call(json!({"op": "validate", "certificate": certificate, "trustRoots": [root], "time": now}))
        .await;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["senderUuid"], alice.aci.to_string());
    assert_eq!(v["senderDevice"], 1);
    assert_eq!(v["senderE164"], Value::Null);
    assert_eq!(
        v["identityKey"],
        STANDARD.encode(alice_identity.public_key.serialize())
    );
    let expiration = now + 24 * HOUR_MS;
    assert_eq!(v["expiration"], expiration);
    for (roots, time, valid) in [
        (json!([other_root]), now, false),
        (json!([other_root, root]), now, true),
        (json!([root]), expiration, true),
        (json!([root]), expiration + 1, false),
    ] {
        let v = ls
            .call(json!({"op": "validate", "certificate": certificate, "trustRoots": roots, "time": time}))
            .await;
        assert_eq!(v["valid"], valid, "{roots} at {time}");
    }

    // SSv1: Alice seals to Bob's two devices; Bob's libsignal opens them and sees Alice.
    for (op, device) in [("seal", 1), ("sealUsmc", 2)] {
        let plaintext = STANDARD.encode(format!("hello bob.{device}"));
        let sealed = ls
            .call(
                json!({"op": op, "from": "alice", "certificate": certificate, "to": "bob",
                "device": device, "plaintext": plaintext}),
            )
            .await;
        let opened = ls
            .call(
                json!({"op": "open", "name": "bob", "device": device, "message": sealed["message"],
                "trustRoot": root, "time": now + 1000}),
            )
            .await;
        assert_eq!(opened["plaintext"], plaintext);
        assert_eq!(opened["senderUuid"], alice.aci.to_string());
        assert_eq!(opened["senderDevice"], 1);
    }
    // Under another root, or after expiry, Bob refuses.
    let sealed = ls
        .call(
            json!({"op": "seal", "from": "alice", "certificate": certificate, "to": "carol",
            "device": 1, "plaintext": STANDARD.encode("x")}),
        )
        .await;
    let refused = ls
        .try_call(
            json!({"op": "open", "name": "carol", "device": 1, "message": sealed["message"],
            "trustRoot": other_root, "time": now}),
        )
        .await;
    assert_eq!(refused["ok"], false);
    assert!(
        refused["error"].as_str().unwrap().contains("trust root"),
        "{refused}"
    );

    // SSv2: libsignal's SentMessage to Bob (2 devices) and Carol, one excluded recipient, parsed by the core.
    let excluded = Aci::random(&rng);
    let plaintext = STANDARD.encode("hello group");
    let multi = ls
        .call(json!({"op": "multi", "from": "alice", "certificate": certificate,
            "recipients": [{"name": "bob", "device": 1}, {"name": "bob", "device": 2}, {"name": "carol", "device": 1}],
            "excluded": [excluded.to_string()], "plaintext": plaintext}))
        .await;
    let sent = STANDARD.decode(multi["message"].as_str().unwrap()).unwrap();
    let parsed = multi_recipient::parse(&sent).unwrap();
    parsed.check_recipients().unwrap();
    assert_eq!(parsed.version, 0x23);
    assert_eq!(parsed.excluded, vec![ServiceId::Aci(excluded)]);
    let got: Vec<(String, Vec<(u8, u16)>)> = parsed
        .recipients_with_devices()
        .map(|(r, ds)| {
            (
                r.service_id.to_string(),
                ds.iter()
                    .map(|d| (d.device.get(), d.registration_id))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (bob.to_string(), vec![(1, 4321), (2, 16383)]),
            (carol.to_string(), vec![(1, 7)]),
        ]
    );
    // The same view as libsignal's own server-side parser, byte-identical payloads.
    let theirs = &multi["parsed"];
    assert_eq!(theirs["excluded"], json!([excluded.to_string()]));
    for (r, ds) in parsed.recipients_with_devices() {
        let sid = r.service_id.to_string();
        let ids: Vec<u8> = ds.iter().map(|d| d.device.get()).collect();
        let regs: Vec<u16> = ds.iter().map(|d| d.registration_id).collect();
        assert_eq!(theirs["recipients"][&sid]["deviceIds"], json!(ids));
        assert_eq!(theirs["recipients"][&sid]["registrationIds"], json!(regs));
        assert_eq!(
            theirs["payloads"][&sid],
            STANDARD.encode(parsed.payload_for(r))
        );
    }
    // Every device opens the payload the server would deliver to it.
    for (name, aci, device) in [("bob", bob, 1), ("bob", bob, 2), ("carol", carol, 1)] {
        let r = parsed
            .recipients
            .iter()
            .find(|r| r.service_id == ServiceId::Aci(aci))
            .unwrap();
        let payload = parsed.payload_for(r);
        assert_eq!(payload[0], 0x22);
        let opened = ls
            .call(json!({"op": "openUsmc", "name": name, "device": device,
                "message": STANDARD.encode(&payload), "trustRoot": root, "time": now}))
            .await;
        assert_eq!(opened["contents"], multi["contents"], "{name}.{device}");
        assert_eq!(opened["senderUuid"], alice.aci.to_string());
        assert_eq!(opened["certificateValid"], true);
    }

    // Rotation: the old certificate stays valid for libsignal, the new one is signed by another server certificate.
    let root_key = &app
        .state
        .trust
        .as_ref()
        .unwrap()
        .sealed_sender()
        .0
        .private_key;
    let rotation = service::rotate(
        app.state.store.as_ref(),
        root_key,
        app.rng.as_ref(),
        app.clock.now(),
        app.state.config.sealed_sender.certificate_lifetime,
    )
    .await
    .unwrap();
    let newer = fetch_certificate(&app, &alice, "").await;
    let old_v = ls
        .call(json!({"op": "validate", "certificate": certificate, "trustRoots": [root], "time": now}))
        .await;
    let new_v = ls
        .call(json!({"op": "validate", "certificate": newer, "trustRoots": [root], "time": now}))
        .await;
    assert_eq!(old_v["valid"], true);
    assert_eq!(new_v["valid"], true);
    assert_eq!(new_v["signerId"], rotation.signer.certificate.id());
    assert_ne!(old_v["signerId"], new_v["signerId"]);
}

#[test]
fn cli_rotates_and_lists_server_certificates() {
    let dir = scratch_dir();
    let mut config = Config::default();
    config.database.url = format!("sqlite://{}", dir.join("db.sqlite").display());
    config.server.public_url = "https://chat.example.org".into();
    config.instance.name = "Example".into();
    config.instance.signing_key_file = Some(dir.join("signing.key"));
    config.instance.sealed_sender_key_file = Some(dir.join("sealed.key"));
    let path = dir.join("config.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flatline-server"))
            .env_clear()
            .arg("--config")
            .arg(&path)
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let id = |line: &str| -> u32 { line.split_whitespace().nth(2).unwrap().parse().unwrap() };
    let first = run(&["sealed-sender", "rotate"]);
    assert!(first.contains("is current; 0 expired"), "{first}");
    let second = run(&["sealed-sender", "rotate"]);
    assert!(
        second.contains(&format!("(replaces {})", id(&first))),
        "{second}"
    );
    let list = run(&["sealed-sender", "list"]);
    let rows: Vec<&str> = list.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{list}");
    assert!(rows[0].trim_start().starts_with(&id(&second).to_string()));
    assert!(rows[0].ends_with("current"));
    assert!(rows[1].trim_start().starts_with(&id(&first).to_string()));
}
