//! Linked devices over HTTP (API.md §12, M§5): link tokens, linking, the device limit, removal, capabilities,
//! `wait_for_linked_device`, and the provisioning relay, on every backend; the relay and the wait across two
//! processes on PostgreSQL.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flatline_core::chat;
use flatline_core::ids::DeviceId;
use flatline_testkit::SimClient;
use flatline_testkit::client::UsernameForm;
use serde_json::{Value, json};

use crate::socket::WsClient;
use crate::support::{Backend, Response, TestApp};

const NEW_PASSWORD: &str = "a-new-device-password-0123";

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

fn device_auth(client: &SimClient, device: u8, password: &str) -> String {
    basic(&format!("{}.{device}", client.aci), password)
}

async fn code(app: &TestApp, client: &SimClient) -> (String, String) {
    let r = app
        .get(
            "/v1/devices/provisioning/code",
            Some(&client.basic_auth(UsernameForm::Aci)),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let v = r.json();
    (
        v["verificationCode"].as_str().unwrap().to_owned(),
        v["tokenIdentifier"].as_str().unwrap().to_owned(),
    )
}

async fn link(
    app: &TestApp,
    client: &SimClient,
    token: &str,
    password: &str,
    reg: u16,
) -> Response {
    let body = client.link_body(token, reg, app.rng.as_ref());
    app.put_json("/v1/devices/link", &basic("anything", password), &body)
        .await
}

async fn device_ids(app: &TestApp, auth: &str) -> Vec<u64> {
    let r = app.get("/v1/devices", Some(auth)).await;
    assert_eq!(r.status, StatusCode::OK);
    r.json()["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_u64().unwrap())
        .collect()
}

async fn delete(app: &TestApp, uri: &str, auth: &str) -> Response {
    app.send(Method::DELETE, uri, &[("authorization", auth)], None)
        .await
}

#[tokio::test]
pub async fn link_list_and_remove_a_device() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let alice = app.seed("alice").await;
        let bob = app.seed("bob").await;
        let primary = alice.basic_auth(UsernameForm::Aci);
        let (token, identifier) = code(&app, &alice).await;
        assert_eq!(identifier.len(), 43, "{backend:?}");

        let r = link(&app, &alice, &token, NEW_PASSWORD, 300).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{backend:?} {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(
            r.json(),
            json!({"uuid": alice.aci.to_string(), "pni": alice.pni.0.to_string(), "deviceId": 2})
        );
        let linked = device_auth(&alice, 2, NEW_PASSWORD);
        assert_eq!(device_ids(&app, &linked).await, vec![1, 2]);
        let r = app.get("/v1/devices", Some(&primary)).await;
        let two = &r.json()["devices"][1];
        assert_eq!(two["registrationId"], 300);
        assert_eq!(two["name"], STANDARD.encode(b"linked device name"));
        assert_eq!(
            two["created"],
            flatline_core::time::Clock::now(app.clock.as_ref()).as_millis()
        );

        // The token is single-use.
        let r = link(&app, &alice, &token, NEW_PASSWORD, 301).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::FORBIDDEN, "invalid_link_token")
        );
        assert_eq!(device_ids(&app, &primary).await, vec![1, 2]);

        // Others see the new device's keys.
        let bob_auth = bob.basic_auth(UsernameForm::Aci);
        let keys = format!("/v2/keys/{}/2", alice.aci);
        let r = app.get(&keys, Some(&bob_auth)).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}");
        assert_eq!(r.json()["devices"][0]["registrationId"], 300);

        // Only the primary issues tokens; a linked device removes only itself; nobody removes the primary.
        let r = app
            .get("/v1/devices/provisioning/code", Some(&linked))
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            delete(&app, "/v1/devices/1", &linked).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            delete(&app, "/v1/devices/3", &linked).await.status,
            StatusCode::UNAUTHORIZED
        );
        let r = delete(&app, "/v1/devices/1", &primary).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::FORBIDDEN, "primary_device")
        );
        assert_eq!(
            delete(&app, "/v1/devices/x", &primary).await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(device_ids(&app, &primary).await, vec![1, 2]);

        // Removal: the device, its keys and its credentials are gone.
        assert_eq!(
            delete(&app, "/v1/devices/2", &primary).await.status,
            StatusCode::NO_CONTENT
        );
        assert_eq!(device_ids(&app, &primary).await, vec![1]);
        assert_eq!(
            app.get(&keys, Some(&bob_auth)).await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            app.get("/v1/devices", Some(&linked)).await.status,
            StatusCode::UNAUTHORIZED
        );
        // Removing it again is no error (as upstream).
        assert_eq!(
            delete(&app, "/v1/devices/2", &primary).await.status,
            StatusCode::NO_CONTENT
        );

        // A linked device may remove itself; the id is reused. (A token is "<aci>.<millis>" signed: one issued in
        // the same millisecond would be the used one.)
        app.clock.advance(Duration::from_millis(1));
        let (token, _) = code(&app, &alice).await;
        let r = link(&app, &alice, &token, NEW_PASSWORD, 302).await;
        assert_eq!(r.json()["deviceId"], 2);
        assert_eq!(
            delete(&app, "/v1/devices/2", &linked).await.status,
            StatusCode::NO_CONTENT
        );
        assert_eq!(device_ids(&app, &primary).await, vec![1]);
    }
}

#[tokio::test]
pub async fn bad_links_change_nothing() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let alice = app.seed("alice").await;
        let primary = alice.basic_auth(UsernameForm::Aci);
        let ids = || device_ids(&app, &primary);

        // No Basic credentials, or a password clients never generate.
        let (token, _) = code(&app, &alice).await;
        let body = alice.link_body(&token, 300, app.rng.as_ref());
        let r = app
            .send(
                Method::PUT,
                "/v1/devices/link",
                &[],
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{backend:?}");
        let r = link(&app, &alice, &token, "short", 300).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{backend:?}");

        // Keys signed by the wrong identity key: 422.
        let mut body = alice.link_body(&token, 300, app.rng.as_ref());
        body["aciSignedPreKey"] = body["pniSignedPreKey"].clone();
        let r = app
            .put_json("/v1/devices/link", &basic("x", NEW_PASSWORD), &body)
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{backend:?}");
        // A forged or garbled token: 403.
        let r = link(&app, &alice, &format!("{token}x"), NEW_PASSWORD, 300).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{backend:?}");
        let forged = format!(
            "{}.{}:AAAA",
            alice.aci,
            flatline_core::time::Clock::now(app.clock.as_ref()).as_millis()
        );
        let r = link(&app, &alice, &forged, NEW_PASSWORD, 300).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{backend:?}");
        assert_eq!(ids().await, vec![1]);

        // The refusals above did not use the token up.
        let r = link(&app, &alice, &token, NEW_PASSWORD, 300).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}");

        // Expired after ten minutes.
        let (late, _) = code(&app, &alice).await;
        app.clock.advance(Duration::from_secs(601));
        let r = link(&app, &alice, &late, NEW_PASSWORD, 301).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::FORBIDDEN, "invalid_link_token")
        );
        assert_eq!(ids().await, vec![1, 2]);

        // The limit: six devices. Tokens taken while there is room; the seventh device is 411.
        let mut tokens = vec![];
        for _ in 0..5 {
            tokens.push(code(&app, &alice).await.0);
            app.clock.advance(Duration::from_secs(25));
        }
        for (i, t) in tokens.iter().take(4).enumerate() {
            let r = link(&app, &alice, t, NEW_PASSWORD, 310 + i as u16).await;
            assert_eq!(r.status, StatusCode::OK, "{backend:?} link {i}");
        }
        assert_eq!(ids().await, vec![1, 2, 3, 4, 5, 6]);
        let r = link(&app, &alice, &tokens[4], NEW_PASSWORD, 320).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::LENGTH_REQUIRED, "too_many_devices")
        );
        let r = app
            .get("/v1/devices/provisioning/code", Some(&primary))
            .await;
        assert_eq!(r.status, StatusCode::LENGTH_REQUIRED);
        assert_eq!(ids().await, vec![1, 2, 3, 4, 5, 6]);
        let r = app
            .get(&format!("/v2/keys/{}/7", alice.aci), Some(&primary))
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
pub async fn capabilities_are_per_device() {
    let app = TestApp::new(Backend::Sqlite).await;
    let alice = app.seed("alice").await;
    let primary = alice.basic_auth(UsernameForm::Aci);
    let r = app
        .put_json(
            "/v1/devices/capabilities",
            &primary,
            &json!({"storage": true, "versionedExpirationTimer": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let account = app.state.store.account(alice.aci).await.unwrap().unwrap();
    assert_eq!(
        account.device(DeviceId::PRIMARY).unwrap().capabilities,
        ["storage".to_owned()].into_iter().collect()
    );
    let r = app
        .put_json(
            "/v1/devices/capabilities",
            &primary,
            &json!({"bad\u{1}name": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .put_json("/v1/devices/capabilities", &primary, &json!(["storage"]))
        .await;
    assert_eq!(r.status.as_u16() / 100, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_linked_device_answers_early_late_and_on_timeout() {
    let app = TestApp::new(Backend::Sqlite).await;
    let alice = app.seed("alice").await;
    let primary = alice.basic_auth(UsernameForm::Aci);
    let wait = |id: &str, timeout: &str| {
        format!("/v1/devices/wait_for_linked_device/{id}?timeout={timeout}")
    };

    let r = app.get(&wait("short", "1"), Some(&primary)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let (token, identifier) = code(&app, &alice).await;
    for bad in ["0", "3601", "x"] {
        let r = app.get(&wait(&identifier, bad), Some(&primary)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "timeout {bad}");
    }
    // Nothing linked: 204 after the timeout.
    let r = app.get(&wait(&identifier, "1"), Some(&primary)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    // A waiter that started before the link.
    let addr = app.listen().await;
    let url = format!("http://{addr}{}", wait(&identifier, "20"));
    let auth = primary.clone();
    let waiter = tokio::spawn(async move {
        reqwest::Client::new()
            .get(url)
            .header("authorization", auth)
            .send()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = link(&app, &alice, &token, NEW_PASSWORD, 300).await;
    assert_eq!(r.status, StatusCode::OK);
    let answer = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter is answered before its timeout")
        .unwrap();
    assert_eq!(answer.status(), 200);
    let info: Value = answer.json().await.unwrap();
    assert_eq!(
        (info["id"].clone(), info["registrationId"].clone()),
        (json!(2), json!(300))
    );

    // A waiter that starts late gets it at once; another account does not.
    let r = app.get(&wait(&identifier, "5"), Some(&primary)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["id"], 2);
    let bob = app.seed("bob").await;
    let r = app
        .get(
            &wait(&identifier, "1"),
            Some(&bob.basic_auth(UsernameForm::Aci)),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

async fn open_provisioning(addr: std::net::SocketAddr) -> (WsClient, String) {
    let mut socket = WsClient::open(
        &format!("ws://{addr}/v1/websocket/provisioning/"),
        &[],
        None,
    )
    .await
    .expect("provisioning socket");
    let first = socket.push().await;
    assert_eq!(first.path, "/v1/address");
    let address = <chat::ProvisioningAddress as prost::Message>::decode(first.body.as_slice())
        .unwrap()
        .address
        .unwrap();
    socket.ack(first.id.unwrap(), 200).await;
    (socket, address)
}

#[tokio::test]
async fn the_provisioning_relay_delivers_once() {
    let app = TestApp::new(Backend::Sqlite).await;
    let alice = app.seed("alice").await;
    let auth = alice.basic_auth(UsernameForm::Aci);
    let addr = app.listen().await;
    let (mut socket, address) = open_provisioning(addr).await;
    let envelope: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let put = |body: Value| {
        let address = address.clone();
        let auth = auth.clone();
        let app = &app;
        async move {
            app.put_json(&format!("/v1/provisioning/{address}"), &auth, &body)
                .await
        }
    };
    // Bad bodies: 400, nothing relayed.
    assert_eq!(
        put(json!({"body": "***"})).await.status,
        StatusCode::BAD_REQUEST
    );
    let huge = "A".repeat(256 * 1024 + 4);
    assert_eq!(
        put(json!({"body": huge})).await.status,
        StatusCode::BAD_REQUEST
    );
    let r = app
        .put_json(
            "/v1/provisioning/nobody-listens-here",
            &auth,
            &json!({"body": STANDARD.encode(b"x")}),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "no_listener")
    );
    // MIME base64 (line breaks) is accepted.
    let encoded = STANDARD.encode(&envelope);
    let mime: String = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\r\n");
    assert_eq!(
        put(json!({"body": mime})).await.status,
        StatusCode::NO_CONTENT
    );
    let message = socket.push().await;
    assert_eq!(
        (message.verb.as_str(), message.path.as_str()),
        ("PUT", "/v1/message")
    );
    assert_eq!(message.body, envelope);
    assert_eq!(
        put(json!({"body": encoded})).await.status,
        StatusCode::NOT_FOUND
    );
    socket.ack(message.id.unwrap(), 200).await;
    assert_eq!(socket.closed().await, Some((1000, "Closed".into())));
    // Without credentials: 401.
    let r = app
        .send(
            Method::PUT,
            &format!("/v1/provisioning/{address}"),
            &[],
            Some(&json!({"body": "AA=="}).to_string()),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_wait_work_across_processes_on_postgres() {
    use flatline_server::system::{OsRandom, SystemClock};
    let dir = tempfile::tempdir().unwrap();
    let db = crate::multiprocess::fresh_database().await;
    let one = crate::socket::start_process(dir.path(), "one", &db).await;
    let two = crate::socket::start_process(dir.path(), "two", &db).await;
    let store = flatline_server::store::open(&crate::support::database(&db))
        .await
        .unwrap();
    let alice = SimClient::new(&OsRandom);
    store
        .create_account(alice.new_account(
            "alice",
            &OsRandom,
            flatline_core::time::Clock::now(&SystemClock),
        ))
        .await
        .unwrap();
    let auth = alice.basic_auth(UsernameForm::Aci);
    let http = reqwest::Client::new();
    let base = |p: &crate::socket::Process| format!("http://127.0.0.1:{}", p.port);

    // The new device's socket is on process one; the primary relays through process two.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", one.port).parse().unwrap();
    let (mut socket, address) = open_provisioning(addr).await;
    let envelope: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let r = http
        .put(format!("{}/v1/provisioning/{address}", base(&two)))
        .header("authorization", &auth)
        .json(&json!({"body": STANDARD.encode(&envelope)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let message = socket.push().await;
    assert_eq!(
        message.body, envelope,
        "the exact bytes, larger than a notification"
    );
    socket.ack(message.id.unwrap(), 200).await;
    assert_eq!(socket.closed().await, Some((1000, "Closed".into())));
    let r = http
        .put(format!("{}/v1/provisioning/{address}", base(&two)))
        .header("authorization", &auth)
        .json(&json!({"body": "AA=="}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a closed socket's address is unlisted");

    // The token comes from process one, the waiter waits on process one, the link happens on process two.
    let r = http
        .get(format!("{}/v1/devices/provisioning/code", base(&one)))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let token = v["verificationCode"].as_str().unwrap().to_owned();
    let identifier = v["tokenIdentifier"].as_str().unwrap().to_owned();
    let waiter = {
        let url = format!(
            "{}/v1/devices/wait_for_linked_device/{identifier}?timeout=30",
            base(&one)
        );
        let auth = auth.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .get(url)
                .header("authorization", auth)
                .send()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = http
        .put(format!("{}/v1/devices/link", base(&two)))
        .header("authorization", basic("x", NEW_PASSWORD))
        .json(&alice.link_body(&token, 300, &OsRandom))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("answered on the notification, not at the timeout")
        .unwrap();
    assert_eq!(answer.status(), 200);
    let info: Value = answer.json().await.unwrap();
    assert_eq!(info["id"], 2);

    // Removing the device on process one closes its socket on process two with 4401.
    let linked = device_auth(&alice, 2, NEW_PASSWORD);
    let addr_two: std::net::SocketAddr = format!("127.0.0.1:{}", two.port).parse().unwrap();
    let mut chat_socket = WsClient::connect(addr_two, Some(&linked)).await.unwrap();
    assert_eq!(
        chat_socket
            .request("GET", "/v1/keepalive", &[], b"")
            .await
            .status,
        200
    );
    let r = http
        .delete(format!("{}/v1/devices/2", base(&one)))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        chat_socket.closed().await,
        Some((4401, "Reauthentication required".into()))
    );
}

/// npm libsignal-client 0.103.0 (flatline-testkit/libsignal/linking.mjs): a second device joins through
/// libsignal-net's provisioning connection, links, uploads keys and connects; a send naming only device 1 is 409
/// `missingDevices: [2]`, a send to both is decrypted by both, a sync message from device 1 reaches device 2 only,
/// and removing device 2 interrupts its connection (4401) and removes its keys. Needs `node` and
/// `npm ci --prefix flatline-testkit/libsignal`; `TESTS_SKIP_NODE=1` skips it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_libsignal_device_links_and_receives() {
    if std::env::var("TESTS_SKIP_NODE").as_deref() == Ok("1") {
        eprintln!("TESTS_SKIP_NODE=1: skipping the libsignal linking test");
        return;
    }
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../flatline-testkit/libsignal");
    assert!(
        dir.join("node_modules/@signalapp/libsignal-client")
            .is_dir(),
        "the libsignal test clients are missing: run `npm ci --prefix flatline-testkit/libsignal` \
         (or set TESTS_SKIP_NODE=1)"
    );
    let app = TestApp::new(Backend::Sqlite).await;
    let mut users = vec![];
    for name in ["alice", "bob"] {
        let client = app.seed(name).await;
        users.push(json!({
            "aci": client.aci.to_string(),
            "password": client.password,
            "identityPrivate": STANDARD.encode(client.aci_identity.private_key.serialize()),
            "pniIdentityPrivate": STANDARD.encode(client.pni_identity.private_key.serialize()),
            // The seeded primary's registration id (testkit fixtures).
            "registrationId": app.state.store.account(client.aci).await.unwrap().unwrap()
                .device(DeviceId::PRIMARY).unwrap().settings.registration_id,
        }));
    }
    let addr = app.listen().await;
    let (der, acceptor) = crate::socket::test_tls();
    let tls = app.serve(Some(acceptor)).await;
    let work = tempfile::tempdir().unwrap();
    let cert = work.path().join("root.der");
    std::fs::write(&cert, &der).unwrap();
    let config_file = work.path().join("clients.json");
    std::fs::write(
        &config_file,
        json!({"base": format!("http://{addr}"), "alice": users[0], "bob": users[1],
               "chat": {"port": tls.port(), "rootCertificate": cert}})
        .to_string(),
    )
    .unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new("node")
            .arg(dir.join("linking.mjs"))
            .arg(&config_file)
            .current_dir(&dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("node finished")
    .expect("node (Node.js 20) on PATH");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "linking.mjs failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["steps"].as_array().unwrap().len(), 7, "{report}");
    assert_eq!(
        report["missing"],
        json!({"missingDevices": [2], "extraDevices": []}),
        "{report}"
    );
    // libsignal reports the server's 4401 close as ConnectionInvalidated (error code 40).
    assert_eq!(report["device2Interrupted"], 40, "{report}");
    assert_eq!(report["keysAfterRemoval"], 404, "{report}");
    // The server closed the provisioning socket after the envelope's ack (1000 "Closed" on the wire, see
    // the_provisioning_relay_delivers_once); libsignal-net reports a server-initiated close as IoError (21).
    assert_eq!(report["provisioningClose"], 21, "{report}");
    let alice = app
        .state
        .store
        .account(users[0]["aci"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(alice.devices.len(), 1);
}

/// Security review F-10: a request that authenticated as a device just before the device was removed and its id
/// given to a new device (or before a re-registration replaced it) writes neither keys nor attributes into the new
/// device. The authentication snapshot is taken, then the device is replaced, then the write runs.
#[tokio::test]
async fn a_stale_authentication_writes_nothing_into_a_new_device() {
    use flatline_core::account::RawAccountAttributes;
    use flatline_core::auth::AuthenticatedDevice;
    use flatline_core::ids::{IdentityType, ServiceId};
    use flatline_core::keys::{KeyError, RawKeyUpload};
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let alice = app.seed("alice").await;
        let primary = alice.basic_auth(UsernameForm::Aci);
        let (token, _) = code(&app, &alice).await;
        assert_eq!(
            link(&app, &alice, &token, NEW_PASSWORD, 300).await.status,
            StatusCode::OK
        );
        let stale = AuthenticatedDevice {
            account: app.state.store.account(alice.aci).await.unwrap().unwrap(),
            device_id: DeviceId::new(2).unwrap(),
        };
        // Device 2 goes and a new device 2 arrives.
        assert_eq!(
            delete(&app, "/v1/devices/2", &primary).await.status,
            StatusCode::NO_CONTENT
        );
        app.clock.advance(Duration::from_millis(1));
        let (token, _) = code(&app, &alice).await;
        assert_eq!(
            link(&app, &alice, &token, NEW_PASSWORD, 400).await.json()["deviceId"],
            2
        );
        let owner = ServiceId::Aci(alice.aci);
        let two = DeviceId::new(2).unwrap();
        let signed_before = app.state.store.signed_pre_key(owner, two).await.unwrap();

        let raw = |k: &flatline_core::keys::SignedPreKey| flatline_core::keys::RawKey {
            key_id: i64::from(k.key_id.get()),
            public_key: k.public_key.clone(),
            signature: k.signature.clone(),
        };
        let upload = RawKeyUpload {
            ec: vec![],
            signed: Some(raw(&alice.signed_ec(
                IdentityType::Aci,
                55,
                app.rng.as_ref(),
            ))),
            kem: vec![raw(&alice.kem(IdentityType::Aci, 56, app.rng.as_ref()))],
            last_resort: None,
        };
        let r = app
            .state
            .keys
            .upload(&stale, IdentityType::Aci, &upload)
            .await;
        assert!(matches!(r, Err(KeyError::DeviceGone)), "{backend:?}: {r:?}");
        assert_eq!(
            app.state.store.signed_pre_key(owner, two).await.unwrap(),
            signed_before
        );
        assert_eq!(app.state.store.key_counts(owner, two).await.unwrap().kem, 0);

        let attributes = RawAccountAttributes {
            registration_id: 999,
            fetches_messages: true,
            ..RawAccountAttributes::default()
        };
        assert!(
            app.state
                .accounts
                .set_attributes(&stale, attributes)
                .await
                .is_err()
        );
        let account = app.state.store.account(alice.aci).await.unwrap().unwrap();
        assert_eq!(
            account.device(two).unwrap().settings.registration_id,
            400,
            "{backend:?}"
        );

        // The current device itself still writes.
        let current = AuthenticatedDevice {
            account,
            device_id: two,
        };
        app.state
            .keys
            .upload(&current, IdentityType::Aci, &upload)
            .await
            .unwrap();
        assert_eq!(app.state.store.key_counts(owner, two).await.unwrap().kem, 1);
    }
}
