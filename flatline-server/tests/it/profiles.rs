//! `/v1/profile*`, the avatar form and its POST, avatar downloads, `/v1/config` (M§4, API.md §13).

use axum::http::Method;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flatline_core::contacts::{ContactPolicy, GrantState, IntroductionPolicy, PolicyMode};
use flatline_core::time::Clock as _;
use flatline_testkit::{SimClient, UsernameForm};
use serde_json::{Value, json};

use crate::support::{Backend, TestApp};

const UAK: [u8; 16] = [7; 16];

/// libsignal 0.103.0's vectors: a real ProfileKeyCommitment and a matching credential request for `aci`.
fn vectors() -> Value {
    serde_json::from_str(include_str!("../../../flatline-core/testdata/zkgroup.json")).unwrap()
}

fn commitment() -> String {
    vectors()["expiring_profile_key_credential"]["commitment_b64"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn version(c: char) -> String {
    c.to_string().repeat(64)
}

fn profile_body(v: &str, name_len: usize, avatar: bool, same: bool) -> Value {
    json!({
        "commitment": commitment(),
        "version": v,
        "name": STANDARD.encode(vec![1u8; name_len]),
        "aboutEmoji": STANDARD.encode([2u8; 60]),
        "about": "",
        "paymentAddress": null,
        "phoneNumberSharing": STANDARD.encode([4u8; 29]),
        "avatar": avatar,
        "sameAvatar": same,
        "badgeIds": [],
    })
}

async fn set_uak(app: &TestApp, c: &SimClient, unrestricted: bool) {
    let attrs = json!({"registrationId": 11, "pniRegistrationId": 12,
        "unidentifiedAccessKey": STANDARD.encode(UAK), "unrestrictedUnidentifiedAccess": unrestricted});
    let r = app
        .put_json(
            "/v1/accounts/attributes",
            &c.basic_auth(UsernameForm::Aci),
            &attrs,
        )
        .await;
    assert_eq!(r.status, 204);
}

async fn get_with(app: &TestApp, uri: &str, headers: &[(&str, &str)]) -> crate::support::Response {
    app.send(Method::GET, uri, headers, None).await
}

#[tokio::test]
pub async fn set_and_read_authenticated_and_with_the_access_key() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let bob = app.seed("bob").await;
        let alice = app.seed("alice").await;
        set_uak(&app, &bob, false).await;
        let bob_auth = bob.basic_auth(UsernameForm::Aci);
        let alice_auth = alice.basic_auth(UsernameForm::Aci);
        let v = version('a');

        let r = app
            .put_json(
                "/v1/profile",
                &bob_auth,
                &profile_body(&v, 81, false, false),
            )
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert!(r.body.is_empty(), "no avatar change: empty body");

        let uri = format!("/v1/profile/{}/{v}", bob.aci);
        for headers in [
            vec![("authorization", alice_auth.as_str())],
            vec![("unidentified-access-key", "BwcHBwcHBwcHBwcHBwcHBw==")],
        ] {
            let r = get_with(&app, &uri, &headers).await;
            assert_eq!(r.status, 200);
            let p = r.json();
            assert_eq!(p["uuid"], bob.aci.to_string());
            assert_eq!(p["name"], STANDARD.encode([1u8; 81]));
            assert_eq!(p["aboutEmoji"], STANDARD.encode([2u8; 60]));
            assert_eq!(p["about"], Value::Null);
            assert_eq!(p["paymentAddress"], Value::Null);
            assert_eq!(p["phoneNumberSharing"], STANDARD.encode([4u8; 29]));
            assert_eq!(p["avatar"], Value::Null);
            assert_eq!(p["badges"], json!([]));
            assert_eq!(p["unrestrictedUnidentifiedAccess"], false);
            assert_eq!(p["capabilities"]["storage"], false);
            assert_eq!(
                STANDARD.decode(p["identityKey"].as_str().unwrap()).unwrap(),
                bob.aci_identity.public_key.serialize().to_vec()
            );
            // HMAC-SHA256(key = 16 × 0x07, 32 zero bytes), computed independently.
            assert_eq!(
                hex::encode(
                    STANDARD
                        .decode(p["unidentifiedAccess"].as_str().unwrap())
                        .unwrap()
                ),
                "655d16a7873fe0befd6ce7edb89dab35e48ad91c0c3488b8b5356e0aeb594651"
            );
        }

        // A version that does not exist: the base profile with null content.
        let r = get_with(
            &app,
            &format!("/v1/profile/{}/{}", bob.aci, version('b')),
            &[("authorization", &alice_auth)],
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["name"], Value::Null);

        // Base profile by PNI: the PNI identity key, no checksum; an access key does not open a PNI.
        let pni = format!("/v1/profile/PNI:{}", bob.pni);
        let r = get_with(&app, &pni, &[("authorization", &alice_auth)]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["uuid"], format!("PNI:{}", bob.pni));
        assert_eq!(r.json()["unidentifiedAccess"], Value::Null);
        assert_eq!(
            STANDARD
                .decode(r.json()["identityKey"].as_str().unwrap())
                .unwrap(),
            bob.pni_identity.public_key.serialize().to_vec()
        );
        let r = get_with(
            &app,
            &pni,
            &[("unidentified-access-key", "BwcHBwcHBwcHBwcHBwcHBw==")],
        )
        .await;
        assert_eq!(r.status, 401);

        // Access-key failures are all 401, including an account that does not exist; authenticated misses are 404.
        let nobody = SimClient::new(app.rng.as_ref()).aci;
        for (uri, key) in [
            (
                format!("/v1/profile/{}", bob.aci),
                STANDARD.encode([8u8; 16]),
            ),
            (
                format!("/v1/profile/{}", bob.aci),
                STANDARD.encode([7u8; 15]),
            ),
            (format!("/v1/profile/{}", alice.aci), STANDARD.encode(UAK)), // alice has no access key
            (format!("/v1/profile/{nobody}"), STANDARD.encode(UAK)),
            (format!("/v1/profile/{nobody}/{v}"), STANDARD.encode(UAK)),
        ] {
            let r = get_with(&app, &uri, &[("unidentified-access-key", &key)]).await;
            assert_eq!(r.status, 401, "{uri}");
        }
        assert_eq!(
            get_with(&app, &format!("/v1/profile/{}", bob.aci), &[])
                .await
                .status,
            401
        );
        let r = get_with(
            &app,
            &format!("/v1/profile/{nobody}"),
            &[("authorization", &alice_auth)],
        )
        .await;
        assert_eq!(r.status, 404);
        let r = get_with(
            &app,
            &format!("/v1/profile/{}", bob.aci),
            &[
                ("authorization", &alice_auth),
                ("unidentified-access-key", "BwcHBwcHBwcHBwcHBwcHBw=="),
            ],
        )
        .await;
        assert_eq!(r.status, 400);

        // The credential variant: null credential, other credential types 400.
        let cred = format!(
            "/v1/profile/{}/{v}/00ff?credentialType=expiringProfileKey",
            bob.aci
        );
        let r = get_with(&app, &cred, &[("authorization", &alice_auth)]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["credential"], Value::Null);
        assert_eq!(r.json()["name"], STANDARD.encode([1u8; 81]));
        let r = get_with(
            &app,
            &format!("/v1/profile/{}/{v}/00ff?credentialType=other", bob.aci),
            &[("authorization", &alice_auth)],
        )
        .await;
        assert_eq!(r.status, 400);
    }
}

#[tokio::test]
pub async fn wrong_sizes_are_422_and_the_old_profile_stays() {
    let app = TestApp::new(Backend::Sqlite).await;
    let bob = app.seed("bob").await;
    let auth = bob.basic_auth(UsernameForm::Aci);
    let v = version('c');
    assert_eq!(
        app.put_json("/v1/profile", &auth, &profile_body(&v, 285, false, false))
            .await
            .status,
        200
    );
    let bad_fields: Vec<(&str, Value)> = vec![
        ("name", json!(STANDARD.encode([1u8; 80]))),
        ("name", Value::Null),
        ("aboutEmoji", json!(STANDARD.encode([1u8; 59]))),
        ("about", json!(STANDARD.encode([1u8; 155]))),
        ("paymentAddress", json!(STANDARD.encode([1u8; 583]))),
        ("phoneNumberSharing", json!(STANDARD.encode([1u8; 28]))),
        ("version", json!("abc")),
        ("version", json!("z".repeat(64))),
    ];
    for (field, value) in bad_fields {
        let mut body = profile_body(&v, 81, false, false);
        body[field] = value;
        let r = app.put_json("/v1/profile", &auth, &body).await;
        assert_eq!(r.status, 422, "{field}");
        assert_eq!(r.code(), "validation_failed");
    }
    let mut body = profile_body(&v, 81, false, false);
    body["commitment"] = json!(STANDARD.encode([1u8; 96]));
    assert_eq!(app.put_json("/v1/profile", &auth, &body).await.status, 400);
    body["commitment"] = json!(STANDARD.encode([1u8; 97]));
    let r = app.put_json("/v1/profile", &auth, &body).await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (400, "invalid_commitment".into()),
        "97 bytes that are no commitment"
    );
    body["commitment"] = json!("%%%");
    assert_eq!(app.put_json("/v1/profile", &auth, &body).await.status, 400);
    assert_eq!(
        app.send(
            Method::PUT,
            "/v1/profile",
            &[],
            Some(&profile_body(&v, 81, false, false).to_string())
        )
        .await
        .status,
        401
    );

    let r = app
        .get(&format!("/v1/profile/{}/{v}", bob.aci), Some(&auth))
        .await;
    assert_eq!(
        r.json()["name"],
        STANDARD.encode([1u8; 285]),
        "old profile stays"
    );
}

#[tokio::test]
pub async fn invite_only_accounts_show_strangers_only_the_base_profile() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let bob = app.seed("bob").await;
        let friend = app.seed("friend").await;
        let stranger = app.seed("stranger").await;
        set_uak(&app, &bob, true).await;
        let v = version('d');
        let bob_auth = bob.basic_auth(UsernameForm::Aci);
        assert_eq!(
            app.put_json(
                "/v1/profile",
                &bob_auth,
                &profile_body(&v, 81, false, false)
            )
            .await
            .status,
            200
        );
        let store = &app.state.store;
        assert!(
            store
                .set_contact_policy(
                    bob.aci,
                    ContactPolicy {
                        mode: PolicyMode::InviteOnly,
                        introductions: IntroductionPolicy::Ask
                    }
                )
                .await
                .unwrap()
        );
        assert!(
            store
                .set_contact_grant(bob.aci, friend.aci, GrantState::Active, app.clock.now())
                .await
                .unwrap()
        );

        let uri = format!("/v1/profile/{}/{v}", bob.aci);
        let read = |auth: String| {
            let uri = uri.clone();
            let app = &app;
            async move {
                get_with(app, &uri, &[("authorization", &auth)])
                    .await
                    .json()
            }
        };
        let s = read(stranger.basic_auth(UsernameForm::Aci)).await;
        assert_eq!(s["name"], Value::Null, "names are hidden from strangers");
        assert_eq!(s["aboutEmoji"], Value::Null);
        assert_eq!(s["phoneNumberSharing"], Value::Null);
        assert_eq!(
            STANDARD.decode(s["identityKey"].as_str().unwrap()).unwrap(),
            bob.aci_identity.public_key.serialize().to_vec(),
            "the identity key is visible"
        );
        assert_eq!(
            s["unrestrictedUnidentifiedAccess"], false,
            "ignored for invite_only"
        );
        let cred = get_with(
            &app,
            &format!("{uri}/00?credentialType=expiringProfileKey"),
            &[("authorization", &stranger.basic_auth(UsernameForm::Aci))],
        )
        .await
        .json();
        assert_eq!(cred["name"], Value::Null);

        assert_eq!(
            read(friend.basic_auth(UsernameForm::Aci)).await["name"],
            STANDARD.encode([1u8; 81])
        );
        assert_eq!(
            read(bob_auth.clone()).await["name"],
            STANDARD.encode([1u8; 81])
        );
        // The real access key opens it; unrestricted access no longer does (any 16 bytes).
        let r = get_with(
            &app,
            &uri,
            &[("unidentified-access-key", &STANDARD.encode(UAK))],
        )
        .await;
        assert_eq!(r.json()["name"], STANDARD.encode([1u8; 81]));
        let r = get_with(
            &app,
            &uri,
            &[("unidentified-access-key", &STANDARD.encode([0u8; 16]))],
        )
        .await;
        assert_eq!(r.status, 401);
    }
}

/// A multipart body with `fields`, then `file`.
fn multipart(fields: &[(&str, &str)], file: &[u8]) -> (String, Vec<u8>) {
    let boundary = "XxFlatlineBoundaryxX";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn post_form(app: &TestApp, form: &Value, key: &str, file: &[u8]) -> u16 {
    let f = |n: &str| form[n].as_str().unwrap().to_owned();
    let fields = [
        ("key", key.to_owned()),
        ("acl", f("acl")),
        ("Content-Type", "application/octet-stream".to_owned()),
        ("x-amz-algorithm", f("algorithm")),
        ("x-amz-credential", f("credential")),
        ("x-amz-date", f("date")),
        ("policy", f("policy")),
        ("x-amz-signature", f("signature")),
        ("signature", f("signature")),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (ct, body) = multipart(&fields, file);
    app.send_bytes(Method::POST, "/", &[("content-type", &ct)], body)
        .await
        .status
        .as_u16()
}

#[tokio::test]
async fn avatar_form_post_and_download() {
    for kind in crate::object_stores::StoreKind::ALL {
        avatar_form_post_and_download_on(kind).await;
    }
}

async fn avatar_form_post_and_download_on(kind: crate::object_stores::StoreKind) {
    let storage = crate::object_stores::TestStorage::new(kind).await;
    let mut config = flatline_server::config::Config::default();
    storage.apply(&mut config);
    let app = TestApp::with_config(Backend::Memory, config).await;
    let bob = app.seed("bob").await;
    let auth = bob.basic_auth(UsernameForm::Aci);
    let v = version('e');
    let r = app
        .put_json("/v1/profile", &auth, &profile_body(&v, 81, true, false))
        .await;
    assert_eq!(r.status, 200);
    let form = r.json();
    let key = form["key"].as_str().unwrap().to_owned();
    assert!(
        key.starts_with("profiles/") && key.len() == "profiles/".len() + 22,
        "{key}"
    );
    assert_eq!(form["acl"], "private");
    assert_eq!(form["algorithm"], "AWS4-HMAC-SHA256");
    let policy: Value =
        serde_json::from_slice(&STANDARD.decode(form["policy"].as_str().unwrap()).unwrap())
            .unwrap();
    assert_eq!(policy["conditions"][1], json!(["eq", "$key", key]));
    assert_eq!(
        policy["conditions"][4],
        json!(["content-length-range", 1, 10 * 1024 * 1024])
    );

    // The profile names the avatar; sameAvatar keeps it.
    let r = app
        .get(&format!("/v1/profile/{}/{v}", bob.aci), Some(&auth))
        .await;
    assert_eq!(r.json()["avatar"], key);
    let r = app
        .put_json("/v1/profile", &auth, &profile_body(&v, 81, true, true))
        .await;
    assert!(r.body.is_empty());
    assert_eq!(
        app.get(&format!("/v1/profile/{}/{v}", bob.aci), Some(&auth))
            .await
            .json()["avatar"],
        key
    );

    // Rejections: another key, an empty file, a file over 10 MiB, a forged signature, an expired policy.
    let other = "profiles/AAAAAAAAAAAAAAAAAAAAAA";
    assert_eq!(post_form(&app, &form, other, b"x").await, 403);
    assert_eq!(post_form(&app, &form, &key, b"").await, 400);
    assert_eq!(
        post_form(&app, &form, &key, &vec![0u8; 10 * 1024 * 1024 + 1]).await,
        400
    );
    let mut forged = form.clone();
    forged["signature"] = json!("00".repeat(32));
    assert_eq!(post_form(&app, &forged, &key, b"x").await, 403);
    assert_eq!(
        app.get(&format!("/{key}"), None).await.status,
        404,
        "nothing stored by a rejected POST"
    );

    let avatar: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(post_form(&app, &form, &key, &avatar).await, 204);
    let r = app.get(&format!("/{key}"), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, avatar);
    assert!(r.headers.contains_key("etag"));
    assert_eq!(
        storage.keys("objects/").await,
        vec![format!("objects/{key}")],
        "{kind:?}: stored in the configured store"
    );

    app.clock.advance(std::time::Duration::from_secs(30 * 60));
    assert_eq!(
        post_form(&app, &form, &key, b"late").await,
        403,
        "expired policy"
    );

    // avatar=false clears it.
    assert_eq!(
        app.put_json("/v1/profile", &auth, &profile_body(&v, 81, false, false))
            .await
            .status,
        200
    );
    assert_eq!(
        app.get(&format!("/v1/profile/{}/{v}", bob.aci), Some(&auth))
            .await
            .json()["avatar"],
        Value::Null
    );
}

#[tokio::test]
async fn remote_config_has_no_grpc_keys() {
    let app = TestApp::new(Backend::Memory).await;
    let bob = app.seed("bob").await;
    assert_eq!(app.get("/v1/config", None).await.status, 401);
    let r = app
        .get("/v1/config", Some(&bob.basic_auth(UsernameForm::Aci)))
        .await;
    assert_eq!(r.status, 200);
    let config = r.json()["config"].as_array().unwrap().clone();
    assert!(!config.is_empty());
    assert!(
        config
            .iter()
            .all(|e| !e["name"].as_str().unwrap().contains(".grpc."))
    );
}

/// With zkgroup parameters, the credential variant issues an ExpiringProfileKeyCredentialResponse for the current
/// version (libsignal's vector request against its commitment), null for an older version, 400 for a bad request.
#[tokio::test]
async fn expiring_profile_key_credential_for_the_current_version() {
    use std::sync::Arc;

    use flatline_server::http::AppState;
    use flatline_server::trust::Trust;
    use flatline_testkit::{MemoryStore, MockClock, SeededRng};

    let keys = tempfile::tempdir().unwrap();
    let mut config = flatline_server::config::Config::default();
    config.database.url = "sqlite://unused.db".into();
    config.instance.signing_key_file = Some(keys.path().join("signing.key"));
    config.instance.sealed_sender_key_file = Some(keys.path().join("sealed.key"));
    config.instance.zk_params_file = Some(keys.path().join("zk.key"));
    config.registration.principal_secret_file = keys.path().join("principal.key");
    config.storage.path = Some(keys.path().join("storage"));
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(MockClock::default());
    let rng = Arc::new(SeededRng::new(12));
    let config = config.validate().expect("valid configuration");
    let trust = Trust::bootstrap(&config, store.as_ref(), rng.as_ref(), &[], clock.now())
        .await
        .unwrap();
    let state = AppState::new(config, store, clock.clone(), rng.clone())
        .unwrap()
        .with_trust(Arc::new(trust));
    let app = TestApp::with_state(state, clock, rng);

    let v = vectors();
    let vec = &v["expiring_profile_key_credential"];
    let mut bob = SimClient::new(app.rng.as_ref());
    bob.aci = vec["aci"].as_str().unwrap().parse().unwrap();
    let new = bob.new_account("bob", app.rng.as_ref(), app.clock.now());
    app.state.store.create_account(new).await.unwrap();
    let alice = app.seed("alice").await;
    let (bob_auth, alice_auth) = (
        bob.basic_auth(UsernameForm::Aci),
        alice.basic_auth(UsernameForm::Aci),
    );
    let request = hex::encode(
        STANDARD
            .decode(vec["request_b64"].as_str().unwrap())
            .unwrap(),
    );
    let (old, current) = (version('1'), version('2'));
    for ver in [&old, &current] {
        assert_eq!(
            app.put_json(
                "/v1/profile",
                &bob_auth,
                &profile_body(ver, 81, false, false)
            )
            .await
            .status,
            200
        );
    }
    let uri = |ver: &str, req: &str| {
        format!(
            "/v1/profile/{}/{ver}/{req}?credentialType=expiringProfileKey",
            bob.aci
        )
    };
    let r = app.get(&uri(&current, &request), Some(&alice_auth)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let credential = STANDARD
        .decode(r.json()["credential"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        credential.len(),
        vec["response_len"].as_u64().unwrap() as usize
    );
    assert_eq!(r.json()["name"], STANDARD.encode([1u8; 81]));
    let r = app.get(&uri(&old, &request), Some(&alice_auth)).await;
    assert_eq!(
        r.json()["credential"],
        Value::Null,
        "not the current version"
    );
    let mut bad = request.clone();
    bad.replace_range(10..12, if &bad[10..12] == "00" { "01" } else { "00" });
    assert_eq!(
        app.get(&uri(&current, &bad), Some(&alice_auth))
            .await
            .status,
        400
    );
    assert_eq!(
        app.get(&uri(&current, "zz"), Some(&alice_auth))
            .await
            .status,
        400
    );
}

/// A real libsignal client sets its profile with a real commitment and version, and another client reads it with the
/// access key libsignal derives from the profile key (and its checksum matches).
#[tokio::test]
async fn libsignal_profile_key_commitment_version_and_access_key() {
    if std::env::var("TESTS_SKIP_NODE").as_deref() == Ok("1") {
        eprintln!("TESTS_SKIP_NODE=1: skipping the libsignal profile test");
        return;
    }
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../flatline-testkit/libsignal");
    assert!(
        dir.join("node_modules/@signalapp/libsignal-client")
            .is_dir(),
        "run `npm ci --prefix flatline-testkit/libsignal` (or set TESTS_SKIP_NODE=1)"
    );
    let app = TestApp::new(Backend::Sqlite).await;
    let bob = app.seed("bob").await;
    let out = std::process::Command::new("node")
        .arg("profile_keys.mjs")
        .arg(bob.aci.to_string())
        .arg("9")
        .current_dir(&dir)
        .output()
        .expect("node on PATH");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys: Value = serde_json::from_slice(&out.stdout).unwrap();
    let access_key = keys["accessKey"].as_str().unwrap();
    let version = keys["version"].as_str().unwrap();
    assert_eq!(version.len(), 64);

    let auth = bob.basic_auth(UsernameForm::Aci);
    let attrs =
        json!({"registrationId": 11, "pniRegistrationId": 12, "unidentifiedAccessKey": access_key});
    assert_eq!(
        app.put_json("/v1/accounts/attributes", &auth, &attrs)
            .await
            .status,
        204
    );
    let mut body = profile_body(version, 81, false, false);
    body["commitment"] = keys["commitment"].clone();
    let r = app.put_json("/v1/profile", &auth, &body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    let r = get_with(
        &app,
        &format!("/v1/profile/{}/{version}", bob.aci),
        &[("unidentified-access-key", access_key)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], STANDARD.encode([1u8; 81]));
    let key: [u8; 16] = STANDARD.decode(access_key).unwrap().try_into().unwrap();
    assert_eq!(
        r.json()["unidentifiedAccess"],
        STANDARD.encode(flatline_core::profiles::unidentified_access_checksum(&key))
    );
    // Another profile key's access key does not open it.
    let other = std::process::Command::new("node")
        .args(["profile_keys.mjs", &bob.aci.to_string(), "10"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let other: Value = serde_json::from_slice(&other.stdout).unwrap();
    let r = get_with(
        &app,
        &format!("/v1/profile/{}/{version}", bob.aci),
        &[(
            "unidentified-access-key",
            other["accessKey"].as_str().unwrap(),
        )],
    )
    .await;
    assert_eq!(r.status, 401);
}
