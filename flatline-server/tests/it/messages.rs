//! Messages over HTTP (API.md §10, M§2): sends with every status and body of M§2.1, sync and `needsSync`, REST
//! fetch and acknowledgement with delivery receipts, contact gating, the queue bound, TTL expiry, sealed sends
//! with the access key, online messages and spam reports, on every backend.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::http::Method;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flatline_core::account::Device;
use flatline_core::contacts::GrantState;
use flatline_core::credentials::SaltedTokenHash;
use flatline_core::ids::{Aci, DeviceId};
use flatline_core::messages::service::{LiveMessage, MessageNotifier};
use flatline_core::messages::{Envelope, MAX_CONTENT_BYTES};
use flatline_core::time::Clock;
use flatline_server::config::Config;
use flatline_testkit::SimClient;
use serde_json::{Value, json};

use crate::support::{Backend, Response, TestApp};

/// A seeded account: its client (primary device) and how many devices it has (device k has registration id
/// 10 + k and PNI registration id 20 + k, except the primary's 11/12 from the test kit).
struct User {
    client: SimClient,
}

impl User {
    fn aci(&self) -> Aci {
        self.client.aci
    }
    /// Basic auth for device `d` (all devices share the password).
    fn auth(&self, d: u8) -> String {
        format!(
            "Basic {}",
            STANDARD.encode(format!("{}.{d}:{}", self.client.aci, self.client.password))
        )
    }
}

const REG: u32 = 11;
const PNI_REG: u32 = 12;

fn reg(d: u8) -> u32 {
    if d == 1 { REG } else { 10 + u32::from(d) }
}

fn pni_reg(d: u8) -> u32 {
    if d == 1 { PNI_REG } else { 20 + u32::from(d) }
}

async fn seed_with(
    app: &TestApp,
    principal: &str,
    devices: u8,
    uak: Option<[u8; 16]>,
    unrestricted: bool,
) -> User {
    let client = SimClient::new(app.rng.as_ref());
    let now = app.clock.now();
    let mut new = client.new_account(principal, app.rng.as_ref(), now);
    new.account.settings.unidentified_access_key = uak;
    new.account.settings.unrestricted_unidentified_access = unrestricted;
    for d in 2..=devices {
        let mut device: Device = new.account.devices[0].clone();
        device.id = DeviceId::new(d).unwrap();
        device.credential = SaltedTokenHash::generate(&client.password, app.rng.as_ref());
        device.settings.registration_id = u16::try_from(reg(d)).unwrap();
        device.settings.pni_registration_id = u16::try_from(pni_reg(d)).unwrap();
        new.account.devices.push(device);
    }
    app.state.store.create_account(new).await.unwrap();
    User { client }
}

async fn seed(app: &TestApp, principal: &str) -> User {
    seed_with(app, principal, 1, None, false).await
}

/// A send body addressing `(device, registration id, content)` triples.
fn body(messages: &[(u8, u32, &[u8])]) -> Value {
    let list: Vec<Value> = messages
        .iter()
        .map(|(d, r, c)| {
            json!({"type": 1, "destinationDeviceId": d, "destinationRegistrationId": r,
                   "content": STANDARD.encode(c)})
        })
        .collect();
    json!({"messages": list, "timestamp": 1_700_000_000_123u64, "online": false, "urgent": true})
}

async fn put(app: &TestApp, dest: &str, headers: &[(&str, &str)], body: &Value) -> Response {
    app.send(
        Method::PUT,
        &format!("/v1/messages/{dest}"),
        headers,
        Some(&body.to_string()),
    )
    .await
}

async fn send(app: &TestApp, from: &User, from_device: u8, to: &str, body: &Value) -> Response {
    put(app, to, &[("authorization", &from.auth(from_device))], body).await
}

async fn fetch_with(app: &TestApp, who: &User, d: u8, stories: bool) -> Value {
    let auth = who.auth(d);
    let mut headers = vec![("authorization", auth.as_str())];
    if stories {
        headers.push(("x-signal-receive-stories", "true"));
    }
    let r = app.send(Method::GET, "/v1/messages", &headers, None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

async fn fetch(app: &TestApp, who: &User, d: u8) -> Vec<Value> {
    fetch_with(app, who, d, false).await["messages"]
        .as_array()
        .unwrap()
        .clone()
}

async fn ack(app: &TestApp, who: &User, d: u8, guid: &str) -> Response {
    app.send(
        Method::DELETE,
        &format!("/v1/messages/uuid/{guid}"),
        &[("authorization", &who.auth(d))],
        None,
    )
    .await
}

fn content(m: &Value) -> Vec<u8> {
    STANDARD.decode(m["content"].as_str().unwrap()).unwrap()
}

fn ok(r: &Response) -> Value {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

fn assert_code(r: &Response, status: u16, code: &str) {
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (status, code.to_owned()),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

async fn set_invite_only(app: &TestApp, who: &User) {
    let r = app
        .put_json(
            "/v1/accounts/contact_policy",
            &who.auth(1),
            &json!({"policy": "invite_only", "introductions": "ask"}),
        )
        .await;
    assert_eq!(r.status, 204);
}

#[tokio::test]
pub async fn two_accounts_exchange_messages_and_receipts() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let alice = seed(&app, "alice").await;
        let bob = seed(&app, "bob").await;
        let now = app.clock.now().as_millis();
        for i in 0..3u8 {
            let r = send(
                &app,
                &alice,
                1,
                &bob.aci().to_string(),
                &body(&[(1, REG, &[i; 5])]),
            )
            .await;
            assert_eq!(ok(&r), json!({"needsSync": false}), "{backend:?}");
        }
        let got = fetch_with(&app, &bob, 1, false).await;
        assert_eq!(got["more"], false);
        let msgs = got["messages"].as_array().unwrap().clone();
        assert_eq!(msgs.len(), 3, "{backend:?}");
        let first = &msgs[0];
        assert_eq!(first["type"], 1);
        assert_eq!(first["sourceUuid"], alice.aci().to_string());
        assert_eq!(first["sourceDevice"], 1);
        assert_eq!(first["destinationUuid"], bob.aci().to_string());
        assert_eq!(first["timestamp"], 1_700_000_000_123u64);
        assert_eq!(first["serverTimestamp"], now);
        assert_eq!(
            (first["urgent"].clone(), first["story"].clone()),
            (json!(true), json!(false))
        );
        assert!(first["updatedPni"].is_null() && first["reportSpamToken"].is_null());
        // FIFO.
        let contents: Vec<Vec<u8>> = msgs.iter().map(content).collect();
        assert_eq!(contents, vec![vec![0; 5], vec![1; 5], vec![2; 5]]);
        // At-least-once: a second fetch without acknowledging returns the same.
        assert_eq!(fetch(&app, &bob, 1).await, msgs);
        let guid = first["guid"].as_str().unwrap();
        assert_eq!(ack(&app, &bob, 1, guid).await.status, 204);
        assert_eq!(ack(&app, &bob, 1, guid).await.status, 204, "idempotent");
        assert_eq!(fetch(&app, &bob, 1).await, msgs[1..].to_vec());
        // Alice got exactly one server delivery receipt for the acknowledged message.
        let receipts = fetch(&app, &alice, 1).await;
        assert_eq!(receipts.len(), 1, "{backend:?}");
        let r = &receipts[0];
        assert_eq!(r["type"], 5);
        assert_eq!(r["sourceUuid"], bob.aci().to_string());
        assert_eq!(r["sourceDevice"], 1);
        assert_eq!(r["destinationUuid"], alice.aci().to_string());
        assert_eq!(r["timestamp"], 1_700_000_000_123u64);
        assert_eq!(r["urgent"], false);
        assert!(r["content"].is_null());
        // Acknowledging a receipt sends no receipt back.
        assert_eq!(
            ack(&app, &alice, 1, r["guid"].as_str().unwrap())
                .await
                .status,
            204
        );
        assert!(fetch(&app, &bob, 1).await.len() == 2);
        // Bob answers.
        ok(&send(
            &app,
            &bob,
            1,
            &alice.aci().to_string(),
            &body(&[(1, REG, b"hi alice")]),
        )
        .await);
        let back = fetch(&app, &alice, 1).await;
        assert_eq!(back.len(), 1);
        assert_eq!(content(&back[0]), b"hi alice");
        assert_eq!(back[0]["sourceUuid"], bob.aci().to_string());
        // A bad guid is 400; someone else's guid deletes nothing.
        assert_code(&ack(&app, &bob, 1, "nope").await, 400, "invalid_guid");
        let alices = back[0]["guid"].as_str().unwrap().to_owned();
        assert_eq!(ack(&app, &bob, 1, &alices).await.status, 204);
        assert_eq!(fetch(&app, &alice, 1).await.len(), 1);
    }
}

#[tokio::test]
pub async fn device_mismatches_answer_409_and_410_with_their_bodies() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let alice = seed(&app, "alice").await;
        let bob = seed_with(&app, "bob", 2, None, false).await;
        let to = bob.aci().to_string();
        let cases: Vec<(Value, u16, Value)> = vec![
            (
                body(&[(1, REG, b"x")]),
                409,
                json!({"missingDevices": [2], "extraDevices": []}),
            ),
            (
                body(&[(1, REG, b"x"), (2, reg(2), b"x"), (3, 1, b"x")]),
                409,
                json!({"missingDevices": [], "extraDevices": [3]}),
            ),
            (
                body(&[(1, REG, b"x"), (2, 999, b"x")]),
                410,
                json!({"staleDevices": [2]}),
            ),
            // Stale wins over missing on single-recipient sends.
            (body(&[(2, 999, b"x")]), 410, json!({"staleDevices": [2]})),
            (
                body(&[]),
                409,
                json!({"missingDevices": [1, 2], "extraDevices": []}),
            ),
        ];
        for (b, status, want) in cases {
            let r = send(&app, &alice, 1, &to, &b).await;
            assert_eq!(r.status, status, "{backend:?} {b}");
            assert_eq!(r.headers["content-type"], "application/json");
            assert_eq!(r.json(), want, "{backend:?} {b}");
        }
        // A PNI destination is checked against PNI registration ids.
        let pni = format!("PNI:{}", bob.client.pni);
        let r = send(
            &app,
            &alice,
            1,
            &pni,
            &body(&[(1, REG, b"x"), (2, reg(2), b"x")]),
        )
        .await;
        assert_eq!(
            (r.status.as_u16(), r.json()),
            (410, json!({"staleDevices": [1, 2]}))
        );
        let r = send(
            &app,
            &alice,
            1,
            &pni,
            &body(&[(1, PNI_REG, b"p"), (2, pni_reg(2), b"p")]),
        )
        .await;
        ok(&r);
        let m = fetch(&app, &bob, 2).await;
        assert_eq!(m.len(), 1);
        assert_eq!(m[0]["destinationUuid"], pni);
        // 413 after the device check: an oversized message to the wrong devices is still a 409.
        let big = vec![0u8; MAX_CONTENT_BYTES + 1];
        let r = send(&app, &alice, 1, &to, &body(&[(1, REG, &big)])).await;
        assert_eq!(r.status, 409);
        let r = send(
            &app,
            &alice,
            1,
            &to,
            &body(&[(1, REG, &big), (2, reg(2), b"x")]),
        )
        .await;
        assert_code(&r, 413, "message_too_large");
        let exact = vec![1u8; MAX_CONTENT_BYTES];
        ok(&send(
            &app,
            &alice,
            1,
            &to,
            &body(&[(1, REG, &exact), (2, reg(2), b"x")]),
        )
        .await);
        // Only the two accepted sends were stored.
        assert_eq!(fetch(&app, &bob, 1).await.len(), 2, "{backend:?}");
        assert_eq!(fetch(&app, &bob, 2).await.len(), 2);
    }
}

#[tokio::test]
pub async fn authorization_and_validation_statuses() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let alice = seed(&app, "alice").await;
        let bob = seed_with(&app, "bob", 1, Some([7; 16]), false).await;
        let b1 = body(&[(1, REG, b"x")]);
        let nobody = Aci::random(app.rng.as_ref()).to_string();
        assert_code(&send(&app, &alice, 1, &nobody, &b1).await, 404, "not_found");
        // Sealed sends: no oracle for unknown accounts or PNIs, and no credentials at all is 401.
        let key = STANDARD.encode([7u8; 16]);
        let uak = [("unidentified-access-key", key.as_str())];
        assert_code(&put(&app, &nobody, &uak, &b1).await, 401, "unauthorized");
        let pni = format!("PNI:{}", bob.client.pni);
        assert_code(&put(&app, &pni, &uak, &b1).await, 401, "unauthorized");
        assert_code(
            &put(&app, &bob.aci().to_string(), &[], &b1).await,
            401,
            "unauthorized",
        );
        let wrong = STANDARD.encode([8u8; 16]);
        assert_code(
            &put(
                &app,
                &bob.aci().to_string(),
                &[("unidentified-access-key", &wrong)],
                &b1,
            )
            .await,
            401,
            "unauthorized",
        );
        let short = STANDARD.encode([7u8; 15]);
        assert_code(
            &put(
                &app,
                &bob.aci().to_string(),
                &[("unidentified-access-key", &short)],
                &b1,
            )
            .await,
            401,
            "unauthorized",
        );
        // Bad credentials are 401 even with a valid access key.
        let bad = format!(
            "Basic {}",
            STANDARD.encode(format!("{}:wrong", alice.aci()))
        );
        assert_code(
            &put(
                &app,
                &bob.aci().to_string(),
                &[("authorization", &bad)],
                &b1,
            )
            .await,
            401,
            "unauthorized",
        );
        // Own PNI.
        let own_pni = format!("PNI:{}", alice.client.pni);
        assert_code(&send(&app, &alice, 1, &own_pni, &b1).await, 403, "own_pni");
        assert_code(
            &send(&app, &alice, 1, "not-a-uuid", &b1).await,
            400,
            "invalid_destination",
        );
        // A (well-formed) Group-Send-Token alongside other credentials is 400; one that does not parse is 401.
        let token = crate::group_send::well_formed_token();
        let r = put(
            &app,
            &bob.aci().to_string(),
            &[
                ("authorization", &alice.auth(1)),
                ("group-send-token", &token),
            ],
            &b1,
        )
        .await;
        assert_code(&r, 400, "ambiguous_credentials");
        let r = put(
            &app,
            &bob.aci().to_string(),
            &[
                ("authorization", &alice.auth(1)),
                ("group-send-token", "AAAA"),
            ],
            &b1,
        )
        .await;
        assert_code(&r, 401, "unauthorized");
        let to = bob.aci().to_string();
        for bad_body in [
            json!({"timestamp": 1}),
            json!({"messages": [{"type": 5, "destinationDeviceId": 1, "destinationRegistrationId": 11, "content": "AAAA"}]}),
            json!({"messages": [{"type": 2, "destinationDeviceId": 1, "destinationRegistrationId": 11, "content": "AAAA"}]}),
            json!({"messages": [{"type": 1, "destinationDeviceId": 0, "destinationRegistrationId": 11, "content": "AAAA"}]}),
            json!({"messages": [{"type": 1, "destinationDeviceId": 1, "destinationRegistrationId": -1, "content": "AAAA"}]}),
            json!({"messages": [{"type": 1, "destinationDeviceId": 1, "destinationRegistrationId": 11, "content": ""}]}),
            json!({"messages": [{"type": 1, "destinationDeviceId": 1, "destinationRegistrationId": 11, "content": "!!"}]}),
            json!({"messages": [
                {"type": 1, "destinationDeviceId": 1, "destinationRegistrationId": 11, "content": "AAAA"},
                {"type": 1, "destinationDeviceId": 1, "destinationRegistrationId": 11, "content": "AAAA"}]}),
            json!({"messages": [], "timestamp": -1}),
            json!({"messages": [], "timestamp": 8_640_000_000_000_001i64}),
        ] {
            let r = send(&app, &alice, 1, &to, &bad_body).await;
            assert_code(&r, 422, "validation_failed");
        }
        let r = app
            .send(
                Method::PUT,
                &format!("/v1/messages/{to}"),
                &[("authorization", &alice.auth(1))],
                Some("{\"messages\": 3}"),
            )
            .await;
        assert_code(&r, 400, "invalid_json");
        // Unpadded base64 and unknown fields are fine.
        let r = send(
            &app,
            &alice,
            1,
            &to,
            &json!({"messages": [{"type": 3, "destinationDeviceId": 1, "destinationRegistrationId": 11,
                                   "content": "AAA"}], "requireAtomic": true}),
        )
        .await;
        ok(&r);
        assert_eq!(
            fetch(&app, &bob, 1).await.len(),
            1,
            "{backend:?}: only the valid send was stored"
        );
    }
}

#[tokio::test]
pub async fn sync_messages_and_needs_sync() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let alice = seed_with(&app, "alice", 2, None, false).await;
        let bob = seed(&app, "bob").await;
        let carol = seed(&app, "carol").await;
        // A sender with another device is told to sync.
        let r = send(
            &app,
            &alice,
            1,
            &bob.aci().to_string(),
            &body(&[(1, REG, b"to bob")]),
        )
        .await;
        assert_eq!(ok(&r), json!({"needsSync": true}));
        // The transcript to one's own ACI excludes the sending device.
        let own = alice.aci().to_string();
        let r = send(&app, &alice, 1, &own, &body(&[(2, reg(2), b"transcript")])).await;
        assert_eq!(ok(&r), json!({"needsSync": false}));
        let got = fetch(&app, &alice, 2).await;
        assert_eq!(got.len(), 1);
        assert_eq!(content(&got[0]), b"transcript");
        assert_eq!(got[0]["sourceUuid"], own);
        assert_eq!(got[0]["sourceDevice"], 1);
        assert!(fetch(&app, &alice, 1).await.is_empty());
        // Listing the sending device is an extra device; leaving out the other one a missing device.
        let r = send(
            &app,
            &alice,
            1,
            &own,
            &body(&[(1, REG, b"x"), (2, reg(2), b"x")]),
        )
        .await;
        assert_eq!(
            (r.status.as_u16(), r.json()),
            (409, json!({"missingDevices": [], "extraDevices": [1]}))
        );
        let r = send(&app, &alice, 2, &own, &json!({"messages": []})).await;
        assert_eq!(
            (r.status.as_u16(), r.json()),
            (409, json!({"missingDevices": [1], "extraDevices": []}))
        );
        // API.md §10: an empty sync with no other device is 200 {"needsSync": false}, nothing stored.
        let r = send(
            &app,
            &carol,
            1,
            &carol.aci().to_string(),
            &json!({"messages": [], "timestamp": 5}),
        )
        .await;
        assert_eq!(ok(&r), json!({"needsSync": false}));
        assert!(fetch(&app, &carol, 1).await.is_empty());
        // A single-device sender is not told to sync; the destination must address every device.
        let r = send(
            &app,
            &bob,
            1,
            &own,
            &body(&[(1, REG, b"a"), (2, reg(2), b"b")]),
        )
        .await;
        assert_eq!(ok(&r), json!({"needsSync": false}));
        assert_eq!(content(&fetch(&app, &alice, 1).await[0]), b"a");
        assert_eq!(content(&fetch(&app, &alice, 2).await[1]), b"b");
    }
}

#[tokio::test]
pub async fn invite_only_accounts_refuse_strangers_before_the_device_check() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let bob = seed_with(&app, "bob", 2, Some([3; 16]), true).await;
        let stranger = seed(&app, "stranger").await;
        let friend = seed(&app, "friend").await;
        let held = seed(&app, "held").await;
        set_invite_only(&app, &bob).await;
        let to = bob.aci().to_string();
        let full = body(&[(1, REG, b"hello"), (2, reg(2), b"hello")]);
        // A stranger is refused, whatever the devices, and nothing is stored.
        for b in [&full, &body(&[(9, 1, b"probe")])] {
            assert_code(
                &send(&app, &stranger, 1, &to, b).await,
                403,
                "contact_not_allowed",
            );
        }
        assert!(
            fetch_with(&app, &bob, 1, true).await["messages"]
                .as_array()
                .unwrap()
                .is_empty()
        );
        // Stories from non-grantees, authenticated or not, are dropped with 200.
        let story = format!("{to}?story=true");
        assert_eq!(
            ok(&put(&app, &story, &[], &full).await),
            json!({"needsSync": false})
        );
        let r = put(&app, &story, &[("authorization", &stranger.auth(1))], &full).await;
        assert_eq!(ok(&r), json!({"needsSync": false}));
        assert!(
            fetch_with(&app, &bob, 1, true).await["messages"]
                .as_array()
                .unwrap()
                .is_empty()
        );
        // Unrestricted unidentified access does not open an invite_only account; its real key does.
        let zero = STANDARD.encode([0u8; 16]);
        let r = put(&app, &to, &[("unidentified-access-key", &zero)], &full).await;
        assert_code(&r, 401, "unauthorized");
        let real = STANDARD.encode([3u8; 16]);
        ok(&put(&app, &to, &[("unidentified-access-key", &real)], &full).await);
        // A grantee passes; a quarantined grant does not.
        let r = app
            .send(
                Method::PUT,
                &format!("/v1/contacts/grants/{}", friend.aci()),
                &[("authorization", &bob.auth(1))],
                None,
            )
            .await;
        assert_eq!(r.status, 204);
        assert!(
            app.state
                .store
                .set_contact_grant(
                    bob.aci(),
                    held.aci(),
                    GrantState::Quarantined,
                    app.clock.now()
                )
                .await
                .unwrap()
        );
        ok(&send(&app, &friend, 1, &to, &full).await);
        assert_code(
            &send(&app, &held, 1, &to, &full).await,
            403,
            "contact_not_allowed",
        );
        // A grantee's authenticated story is stored, and only shown to a device that asks for stories.
        let r = put(
            &app,
            &story,
            &[("authorization", &friend.auth(1))],
            &body(&[(1, REG, b"story"), (2, reg(2), b"story")]),
        )
        .await;
        ok(&r);
        // Own devices are never gated.
        ok(&send(&app, &bob, 2, &to, &body(&[(1, REG, b"own")])).await);
        let plain: Vec<Vec<u8>> = fetch(&app, &bob, 1).await.iter().map(content).collect();
        assert_eq!(
            plain,
            vec![b"hello".to_vec(), b"hello".to_vec(), b"own".to_vec()],
            "{backend:?}"
        );
        let with_stories = fetch_with(&app, &bob, 1, true).await["messages"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(with_stories.len(), 4);
        let s = &with_stories[2];
        assert_eq!(
            (s["story"].clone(), content(s)),
            (json!(true), b"story".to_vec())
        );
        assert!(s["sourceUuid"].is_null(), "stories carry no source");
    }
}

#[tokio::test]
async fn a_full_queue_refuses_with_429_and_stores_nothing() {
    for backend in Backend::ALL {
        let mut config = Config::default();
        config.messages.max_queue_bytes = 1 << 20;
        let app = TestApp::with_config(backend, config).await;
        let alice = seed(&app, "alice").await;
        let bob = seed_with(&app, "bob", 2, None, false).await;
        let to = bob.aci().to_string();
        let big = vec![5u8; MAX_CONTENT_BYTES];
        // Device 2 gets only small messages; device 1 fills up after three maximal ones.
        for _ in 0..3 {
            ok(&send(
                &app,
                &alice,
                1,
                &to,
                &body(&[(1, REG, &big), (2, reg(2), b"s")]),
            )
            .await);
        }
        let r = send(
            &app,
            &alice,
            1,
            &to,
            &body(&[(1, REG, &big), (2, reg(2), b"s")]),
        )
        .await;
        assert_code(&r, 429, "queue_full");
        assert!(
            r.headers["retry-after"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                >= 1
        );
        // Nothing of the refused send was stored, on either device, and nothing was dropped.
        assert_eq!(fetch(&app, &bob, 1).await.len(), 3, "{backend:?}");
        assert_eq!(fetch(&app, &bob, 2).await.len(), 3, "{backend:?}");
        // Acknowledging frees room.
        let first = fetch(&app, &bob, 1).await[0]["guid"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(ack(&app, &bob, 1, &first).await.status, 204);
        ok(&send(
            &app,
            &alice,
            1,
            &to,
            &body(&[(1, REG, &big), (2, reg(2), b"s")]),
        )
        .await);
    }
}

#[tokio::test]
async fn unacknowledged_messages_expire_after_the_ttl() {
    for backend in Backend::ALL {
        let mut config = Config::default();
        config.messages.ttl_days = 2;
        let app = TestApp::with_config(backend, config).await;
        let alice = seed(&app, "alice").await;
        let bob = seed(&app, "bob").await;
        let to = bob.aci().to_string();
        ok(&send(&app, &alice, 1, &to, &body(&[(1, REG, b"old")])).await);
        app.clock.advance(Duration::from_secs(86_400));
        ok(&send(&app, &alice, 1, &to, &body(&[(1, REG, b"new")])).await);
        app.clock
            .advance(Duration::from_secs(86_400) - Duration::from_millis(1));
        assert_eq!(app.state.messages.expire().await.unwrap(), 0);
        app.clock.advance(Duration::from_millis(1));
        assert_eq!(app.state.messages.expire().await.unwrap(), 1, "{backend:?}");
        let left: Vec<Vec<u8>> = fetch(&app, &bob, 1).await.iter().map(content).collect();
        assert_eq!(left, vec![b"new".to_vec()]);
        app.clock.advance(Duration::from_secs(86_400));
        assert_eq!(app.state.messages.expire().await.unwrap(), 1);
        assert!(fetch(&app, &bob, 1).await.is_empty());
    }
}

#[tokio::test]
pub async fn sealed_sends_with_the_access_key_carry_no_sender() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let bob = seed_with(&app, "bob", 1, Some([9; 16]), false).await;
        let open = seed_with(&app, "open", 1, None, true).await;
        let key = STANDARD.encode([9u8; 16]);
        let sealed = json!({"messages": [{"type": 6, "destinationDeviceId": 1, "destinationRegistrationId": 11,
            "content": STANDARD.encode(b"sealed")}], "timestamp": 42, "urgent": false});
        let r = put(
            &app,
            &bob.aci().to_string(),
            &[("unidentified-access-key", &key)],
            &sealed,
        )
        .await;
        assert_eq!(ok(&r), json!({"needsSync": false}));
        let m = fetch(&app, &bob, 1).await;
        assert_eq!(m.len(), 1);
        assert_eq!(m[0]["type"], 6);
        assert!(m[0]["sourceUuid"].is_null());
        assert_eq!(m[0]["sourceDevice"], 0);
        assert_eq!(
            (m[0]["timestamp"].clone(), m[0]["urgent"].clone()),
            (json!(42), json!(false))
        );
        // Acknowledging a sealed message sends no receipt to anyone.
        assert_eq!(
            ack(&app, &bob, 1, m[0]["guid"].as_str().unwrap())
                .await
                .status,
            204
        );
        // Unrestricted accounts take any 16 bytes (libsignal sends zeros).
        let zero = STANDARD.encode([0u8; 16]);
        ok(&put(
            &app,
            &open.aci().to_string(),
            &[("unidentified-access-key", &zero)],
            &sealed,
        )
        .await);
        assert_eq!(fetch(&app, &open, 1).await.len(), 1, "{backend:?}");
        // An account without a key refuses every key unless unrestricted.
        let keyless = seed(&app, "keyless").await;
        let r = put(
            &app,
            &keyless.aci().to_string(),
            &[("unidentified-access-key", &zero)],
            &sealed,
        )
        .await;
        assert_code(&r, 401, "unauthorized");
        // A story needs no credentials; a story to an unknown account is 200 and stores nothing.
        let story = format!("{}?story=true", bob.aci());
        ok(&put(&app, &story, &[], &sealed).await);
        let nobody = format!("{}?story=true", Aci::random(app.rng.as_ref()));
        assert_eq!(
            ok(&put(&app, &nobody, &[], &sealed).await),
            json!({"needsSync": false})
        );
        assert!(
            fetch(&app, &bob, 1).await.is_empty(),
            "stories hidden by default"
        );
        assert_eq!(
            fetch_with(&app, &bob, 1, true).await["messages"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
}

/// Records what the service hands to the live-delivery hooks.
#[derive(Default)]
struct Recorder {
    stored: Mutex<Vec<(Aci, DeviceId)>>,
    online: Mutex<Vec<LiveMessage>>,
}

#[async_trait]
impl MessageNotifier for Recorder {
    async fn messages_stored(&self, queues: &[(Aci, DeviceId)]) {
        self.stored.lock().unwrap().extend_from_slice(queues);
    }
    async fn deliver_online(&self, messages: Vec<LiveMessage>) {
        self.online.lock().unwrap().extend(messages);
    }
}

#[tokio::test]
async fn online_messages_are_never_stored_and_the_notifier_hears_of_stored_ones() {
    let base = TestApp::new(Backend::Memory).await;
    let recorder = Arc::new(Recorder::default());
    let app = TestApp::with_state(
        base.state.clone().with_notifier(recorder.clone()),
        base.clock.clone(),
        base.rng.clone(),
    );
    let alice = seed(&app, "alice").await;
    let bob = seed_with(&app, "bob", 2, None, false).await;
    let to = bob.aci().to_string();
    let mut b = body(&[(1, REG, b"typing"), (2, reg(2), b"typing")]);
    b["online"] = json!(true);
    ok(&send(&app, &alice, 1, &to, &b).await);
    assert!(fetch(&app, &bob, 1).await.is_empty() && fetch(&app, &bob, 2).await.is_empty());
    assert!(recorder.stored.lock().unwrap().is_empty());
    let online = recorder.online.lock().unwrap().clone();
    assert_eq!(online.len(), 2);
    let devices: BTreeSet<u8> = online.iter().map(|m| m.device.get()).collect();
    assert_eq!(devices, BTreeSet::from([1, 2]));
    let e = Envelope::from_bytes(&online[0].envelope).unwrap();
    assert_eq!(e.ephemeral, Some(true));
    assert_eq!(e.server_guid, Some(online[0].guid.0.to_string()));
    assert_eq!(
        e.server_guid_binary.as_deref(),
        Some(online[0].guid.0.as_bytes().as_slice())
    );
    assert_eq!(
        e.source_service_id_binary.as_deref(),
        Some(alice.aci().as_bytes().as_slice())
    );
    assert_eq!(
        e.destination_service_id_binary.as_deref(),
        Some(bob.aci().as_bytes().as_slice())
    );
    // A stored send notifies once per queue.
    ok(&send(
        &app,
        &alice,
        1,
        &to,
        &body(&[(1, REG, b"m"), (2, reg(2), b"m")]),
    )
    .await);
    assert_eq!(
        *recorder.stored.lock().unwrap(),
        vec![
            (bob.aci(), DeviceId::new(1).unwrap()),
            (bob.aci(), DeviceId::new(2).unwrap())
        ]
    );
    // PNI destinations carry the 17-byte binary form.
    let pni = format!("PNI:{}", bob.client.pni);
    let mut b = body(&[(1, PNI_REG, b"p"), (2, pni_reg(2), b"p")]);
    b["online"] = json!(true);
    ok(&send(&app, &alice, 1, &pni, &b).await);
    let last = recorder.online.lock().unwrap().last().cloned().unwrap();
    let e = Envelope::from_bytes(&last.envelope).unwrap();
    let mut want = vec![1u8];
    want.extend_from_slice(bob.client.pni.as_bytes());
    assert_eq!(e.destination_service_id_binary, Some(want));
    assert_eq!(e.destination_service_id, Some(pni));
}

#[tokio::test]
async fn the_messages_limiter_applies_per_sender_and_destination() {
    let mut config = Config::default();
    config.limits.0.insert(
        "messages".into(),
        flatline_server::config::LimiterConfig {
            bucket_size: 2,
            permit_regeneration_seconds: 60.0,
        },
    );
    let app = TestApp::with_config(Backend::Memory, config).await;
    let alice = seed_with(&app, "alice", 2, None, false).await;
    let bob = seed(&app, "bob").await;
    let carol = seed(&app, "carol").await;
    let b = body(&[(1, REG, b"x")]);
    for _ in 0..2 {
        ok(&send(&app, &alice, 1, &bob.aci().to_string(), &b).await);
    }
    let r = send(&app, &alice, 1, &bob.aci().to_string(), &b).await;
    assert_code(&r, 429, "rate_limited");
    assert_eq!(r.headers["retry-after"], "60");
    // Another destination, and sync messages, are not limited by this bucket.
    ok(&send(&app, &alice, 1, &carol.aci().to_string(), &b).await);
    for _ in 0..3 {
        ok(&send(
            &app,
            &alice,
            1,
            &alice.aci().to_string(),
            &body(&[(2, reg(2), b"s")]),
        )
        .await);
    }
    app.clock.advance(Duration::from_secs(60));
    ok(&send(&app, &alice, 1, &bob.aci().to_string(), &b).await);
}

#[tokio::test]
async fn spam_reports_are_recorded_for_the_operator() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let alice = seed(&app, "alice").await;
        let bob = seed(&app, "bob").await;
        let guid = "9d0652a3-dcc3-4d11-975f-74d61598733f";
        let uri = format!("/v1/messages/report/{}/{guid}", alice.aci());
        let auth = bob.auth(1);
        let r = app
            .send(Method::POST, &uri, &[("authorization", &auth)], None)
            .await;
        assert_eq!(r.status, 202);
        let r = app
            .send(
                Method::POST,
                &uri,
                &[("authorization", &auth)],
                Some(r#"{"token":"AQID"}"#),
            )
            .await;
        assert_eq!(r.status, 202, "a repeat is accepted (and counted once)");
        let reports = app.state.store.spam_reports(10).await.unwrap();
        assert_eq!(reports.len(), 1, "{backend:?}");
        assert_eq!(
            (reports[0].reporter, reports[0].source),
            (bob.aci(), alice.aci())
        );
        assert_eq!(reports[0].guid.0.to_string(), guid);
        let bad = format!("/v1/messages/report/nope/{guid}");
        assert_code(
            &app.send(Method::POST, &bad, &[("authorization", &auth)], None)
                .await,
            400,
            "invalid_aci",
        );
        let r = app.send(Method::POST, &uri, &[], None).await;
        assert_code(&r, 401, "unauthorized");
    }
}

#[tokio::test]
async fn the_operator_cli_lists_spam_reports() {
    use flatline_core::messages::MessageGuid;
    use flatline_core::messages::store::SpamReport;
    use flatline_core::store::MessageStore as _;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("messages-cli")
        .join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("flatline.db").display());
    let store = flatline_server::store::sqlite::SqliteStore::open(&url, 2, 5000)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let rng = flatline_testkit::SeededRng::new(5);
    let report = SpamReport {
        reporter: Aci::random(&rng),
        source: Aci::random(&rng),
        guid: MessageGuid(uuid::Uuid::new_v4()),
        token: Some(vec![1, 2, 3]),
        reported_at: flatline_core::time::Timestamp::from_secs(1_800_000_000),
    };
    store.record_spam_report(&report).await.unwrap();
    let mut config = Config::default();
    config.database.url = url;
    let path = dir.join("config.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flatline-server"))
        .env_clear()
        .arg("--config")
        .arg(&path)
        .args(["messages", "reports", "--limit", "5"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "1800000000\t{}\t{}\t{}\ttoken\n",
            report.reporter, report.source, report.guid.0
        )
    );
    // Per reported account: that sender's reports only.
    let about = |aci: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_flatline-server"))
            .env_clear()
            .arg("--config")
            .arg(&path)
            .args(["messages", "reports", "--account", aci])
            .current_dir(&dir)
            .output()
            .unwrap()
    };
    let out = about(&report.source.to_string());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    let out = about(&report.reporter.to_string());
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert_eq!(about("not-an-aci").status.code(), Some(2));
}

/// Two real npm libsignal-client 0.103.0 clients (flatline-testkit/libsignal/messages.mjs) against the server on a
/// real socket: prekey upload, bundle fetch, PQXDH, a PreKey message and a Whisper reply sent with PUT, fetched
/// with GET /v1/messages, decrypted and acknowledged (with the delivery receipt), then a sealed-sender message
/// sent with the recipient's real access key and opened. First, Bob is online with libsignal-net's
/// `AuthenticatedChatConnection` over the TLS listener: Alice's PreKey message is pushed to it (`onIncomingMessage`),
/// decrypted with `signalDecryptPreKey` and acknowledged with `ack.send(200)`, and is then gone from the queue.
/// Needs `node` and `npm ci --prefix flatline-testkit/libsignal` (`.ci/run` does both); `TESTS_SKIP_NODE=1` skips
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_libsignal_clients_exchange_messages() {
    if std::env::var("TESTS_SKIP_NODE").as_deref() == Ok("1") {
        eprintln!("TESTS_SKIP_NODE=1: skipping the libsignal messaging test");
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
            "registrationId": REG,
        }));
    }
    // REST over plain HTTP; the chat socket over the native TLS listener, as libsignal-net requires.
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
            .arg(dir.join("messages.mjs"))
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
        "libsignal clients failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["steps"].as_array().unwrap().len(), 5, "{report}");
}

#[tokio::test]
async fn a_send_to_six_devices_at_the_size_limit_fits_the_body_limit() {
    let app = TestApp::new(Backend::Memory).await;
    let alice = seed(&app, "alice").await;
    let bob = seed_with(&app, "bob", 6, None, false).await;
    let big = vec![7u8; MAX_CONTENT_BYTES];
    let list: Vec<(u8, u32, &[u8])> = (1..=6).map(|d| (d, reg(d), big.as_slice())).collect();
    let b = body(&list);
    assert!(b.to_string().len() > Config::default().server.max_body_bytes);
    ok(&send(&app, &alice, 1, &bob.aci().to_string(), &b).await);
    for d in 1..=6 {
        assert_eq!(
            content(&fetch(&app, &bob, d).await[0]).len(),
            MAX_CONTENT_BYTES
        );
    }
    // Far beyond it is still refused before parsing.
    let huge = vec![0u8; 3 * flatline_server::http::messages::SEND_BODY_LIMIT / 4 + 1];
    let r = send(
        &app,
        &alice,
        1,
        &bob.aci().to_string(),
        &body(&[(1, REG, &huge)]),
    )
    .await;
    assert_code(&r, 413, "body_too_large");
    // Other endpoints keep server.max_body_bytes.
    let r = app
        .send(
            Method::POST,
            &format!(
                "/v1/messages/report/{}/9d0652a3-dcc3-4d11-975f-74d61598733f",
                alice.aci()
            ),
            &[("authorization", &bob.auth(1))],
            Some(&format!("{{\"token\":\"{}\"}}", "A".repeat(2 << 20))),
        )
        .await;
    assert_code(&r, 413, "body_too_large");
}

#[tokio::test]
pub async fn the_rest_fetch_pages_by_100_and_says_when_more_wait() {
    use flatline_core::messages::MessageGuid;
    use flatline_core::messages::store::{InsertOutcome, NewMessage};
    let app = TestApp::new(Backend::Sqlite).await;
    let bob = seed(&app, "bob").await;
    let now = app.clock.now();
    let batch: Vec<NewMessage> = (0..101u32)
        .map(|i| {
            let guid = MessageGuid(uuid::Uuid::new_v4());
            NewMessage {
                aci: bob.aci(),
                device: DeviceId::PRIMARY,
                guid,
                envelope: Envelope {
                    r#type: Some(1),
                    content: Some(i.to_be_bytes().to_vec()),
                    server_guid: Some(guid.0.to_string()),
                    ..Default::default()
                }
                .to_bytes(),
                server_timestamp: now,
                expires_at: now.plus(Duration::from_secs(60)),
                story: false,
                source: None,
                gated: false,
                shared: None,
            }
        })
        .collect();
    assert_eq!(
        app.state
            .store
            .insert_messages(&batch, u64::MAX)
            .await
            .unwrap(),
        InsertOutcome::Stored
    );
    let page = fetch_with(&app, &bob, 1, false).await;
    assert_eq!(page["more"], true);
    let msgs = page["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 100);
    assert_eq!(content(&msgs[99]), 99u32.to_be_bytes());
    for m in msgs {
        assert_eq!(
            ack(&app, &bob, 1, m["guid"].as_str().unwrap()).await.status,
            204
        );
    }
    let rest = fetch_with(&app, &bob, 1, false).await;
    assert_eq!(rest["more"], false);
    assert_eq!(content(&rest["messages"][0]), 100u32.to_be_bytes());
}

/// A suspended account (operator: `flatline-server accounts suspend`) is refused 403 `account_suspended` for sends
/// to anyone else, on every backend, and stores nothing; its sync messages to its own devices still go through.
#[tokio::test]
async fn suspended_accounts_reach_only_their_own_devices() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let alice = seed_with(&app, "alice", 2, None, false).await;
        let bob = seed(&app, "bob").await;
        app.state
            .store
            .set_suspended(alice.aci(), true, app.clock.now())
            .await
            .unwrap();
        let r = send(
            &app,
            &alice,
            1,
            &bob.aci().to_string(),
            &body(&[(1, REG, b"hi")]),
        )
        .await;
        assert_code(&r, 403, "account_suspended");
        assert!(fetch(&app, &bob, 1).await.is_empty(), "{backend:?}");
        ok(&send(
            &app,
            &alice,
            1,
            &alice.aci().to_string(),
            &body(&[(2, reg(2), b"sync")]),
        )
        .await);
        assert_eq!(fetch(&app, &alice, 2).await.len(), 1, "{backend:?}");
        app.state
            .store
            .set_suspended(alice.aci(), false, app.clock.now())
            .await
            .unwrap();
        ok(&send(
            &app,
            &alice,
            1,
            &bob.aci().to_string(),
            &body(&[(1, REG, b"hi")]),
        )
        .await);
    }
}

/// The libsignal client description a script reads for `client`: ids, password, identity key, registration id,
/// and where it talks to (`base` for REST, `chat` for libsignal-net: TLS port and root certificate file).
pub(crate) fn libsignal_party(
    client: &SimClient,
    base: &str,
    chat_port: u16,
    root_der_file: &std::path::Path,
) -> Value {
    json!({
        "aci": client.aci.to_string(),
        "password": client.password,
        "identityPrivate": STANDARD.encode(client.aci_identity.private_key.serialize()),
        "registrationId": REG,
        "base": base,
        "chat": {"port": chat_port, "rootCertificate": root_der_file},
    })
}

/// Runs `script` of flatline-testkit/libsignal with `config` (written to a file) and returns the JSON line it
/// prints; `None` (after saying so) when `TESTS_SKIP_NODE=1`. `env` is added to node's environment.
pub(crate) async fn run_libsignal_script(
    script: &str,
    config: &Value,
    env: &[(&str, &std::path::Path)],
) -> Option<Value> {
    if std::env::var("TESTS_SKIP_NODE").as_deref() == Ok("1") {
        eprintln!("TESTS_SKIP_NODE=1: skipping {script}");
        return None;
    }
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../flatline-testkit/libsignal");
    assert!(
        dir.join("node_modules/@signalapp/libsignal-client")
            .is_dir(),
        "the libsignal test clients are missing: run `npm ci --prefix flatline-testkit/libsignal` \
         (or set TESTS_SKIP_NODE=1)"
    );
    let work = tempfile::tempdir().unwrap();
    let config_file = work.path().join("config.json");
    std::fs::write(&config_file, config.to_string()).unwrap();
    let mut command = tokio::process::Command::new("node");
    command
        .arg(dir.join(script))
        .arg(&config_file)
        .current_dir(&dir)
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(300), command.output())
        .await
        .expect("node finished")
        .expect("node (Node.js 20) on PATH");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_str(stdout.trim()).expect("one JSON line"))
}

/// What net_messages.mjs observed of the backlog and the redelivery: asserted the same way on one process and
/// across processes.
pub(crate) fn assert_backlog_and_redelivery(seen: &Value, alice: &SimClient, bob: &SimClient) {
    let first = &seen["first"];
    // The backlog of three, in queue order, all before onQueueEmpty, from Alice, as PreKey messages (Bob never
    // answered), decrypted in order.
    assert_eq!(first["queueEmptyAfter"], 3, "{seen}");
    assert_eq!(first["types"], json!([3, 3, 3]), "{seen}");
    let a = alice.aci.to_string();
    assert_eq!(first["sources"], json!([a, a, a]), "{seen}");
    assert_eq!(first["texts"], json!(["one", "two", "three"]), "{seen}");
    let guids: BTreeSet<&str> = first["guids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert_eq!(guids.len(), 3, "three distinct server guids: {seen}");
    // The unacknowledged third message only, with its guid and its exact bytes; libsignal has consumed its key
    // already, so it refuses the replay as a DuplicatedMessage (code 1).
    let second = &seen["second"];
    assert_eq!(second["queueEmptyAfter"], 1, "{seen}");
    assert_eq!(second["guids"], json!([first["guids"][2]]), "{seen}");
    assert_eq!(second["sameBytes"], true, "{seen}");
    assert_eq!(second["redecrypt"], 1, "{seen}");
    // Acknowledged, it is gone; each acknowledgement gave Alice a server delivery receipt from Bob.
    assert_eq!(seen["third"]["queueEmptyAfter"], 0, "{seen}");
    let b = bob.aci.to_string();
    assert_eq!(
        seen["receipts"],
        json!([{"type": 5, "source": b}, {"type": 5, "source": b}, {"type": 5, "source": b}]),
        "{seen}"
    );
}

/// libsignal-net end to end (flatline-testkit/libsignal/net_messages.mjs): Alice sends three messages with the
/// typed `AuthenticatedChatConnection.sendMessage` while Bob is offline; Bob's `connectAuthenticatedChat` gets them
/// in queue order before `onQueueEmpty`; the one he does not acknowledge comes back on the next connection with
/// the same `serverGuid` and bytes. Then the failing sends of M§2.1, each through libsignal's typed send (its
/// typed error) and through the connection's raw `fetch` (status, headers and body): 404, 409, 410, 413, 401 and
/// 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libsignal_net_backlog_redelivery_and_failing_sends() {
    let mut config = Config::default();
    // A small `messages` bucket (Alice → Bob), so that the 429 comes after a few sends; the mock clock never
    // refills it.
    config.limits.0.insert(
        "messages".into(),
        flatline_server::config::LimiterConfig {
            bucket_size: 20,
            permit_regeneration_seconds: 3600.0,
        },
    );
    let app = TestApp::with_config(Backend::Sqlite, config).await;
    let alice = app.seed("alice").await;
    let bob = app.seed("bob").await;
    let addr = app.listen().await;
    let (der, acceptor) = crate::socket::test_tls();
    let tls = app.serve(Some(acceptor)).await;
    let work = tempfile::tempdir().unwrap();
    let cert = work.path().join("root.der");
    std::fs::write(&cert, &der).unwrap();
    let base = format!("http://{addr}");
    let config = json!({
        "alice": libsignal_party(&alice, &base, tls.port(), &cert),
        "bob": libsignal_party(&bob, &base, tls.port(), &cert),
        "statuses": true,
    });
    let Some(seen) = run_libsignal_script("net_messages.mjs", &config, &[]).await else {
        return;
    };
    assert_backlog_and_redelivery(&seen, &alice, &bob);
    assert_failing_sends(&seen, &bob);
}

/// The failing sends net_messages.mjs made (with `"statuses": true`), each through libsignal's typed send and
/// through the connection's raw `fetch`, with a `messages` bucket of 20 for Alice → Bob.
pub(crate) fn assert_failing_sends(seen: &Value, bob: &SimClient) {
    let s = &seen["statuses"];
    // 404: libsignal's ServiceIdNotFound (50); the raw answer is Flatline's error body.
    assert_eq!(s["404"]["typed"]["code"], 50, "{s}");
    assert_eq!(s["404"]["raw"]["status"], 404, "{s}");
    assert_eq!(s["404"]["raw"]["body"]["code"], "not_found", "{s}");
    // 409 and 410: MismatchedDevicesError (49) with the entry for Bob, and Signal's bodies.
    let b = bob.aci.to_string();
    assert_eq!(s["409"]["typed"]["code"], 49, "{s}");
    assert_eq!(
        s["409"]["typed"]["entries"],
        json!([{"account": b, "missingDevices": [1], "extraDevices": [2], "staleDevices": []}]),
        "{s}"
    );
    assert_eq!(s["409"]["raw"]["status"], 409, "{s}");
    assert_eq!(
        s["409"]["raw"]["body"],
        json!({"missingDevices": [1], "extraDevices": [2]}),
        "{s}"
    );
    assert_eq!(s["410"]["typed"]["code"], 49, "{s}");
    assert_eq!(
        s["410"]["typed"]["entries"],
        json!([{"account": b, "missingDevices": [], "extraDevices": [], "staleDevices": [1]}]),
        "{s}"
    );
    assert_eq!(s["410"]["raw"]["status"], 410, "{s}");
    assert_eq!(s["410"]["raw"]["body"], json!({"staleDevices": [1]}), "{s}");
    for status in ["409", "410"] {
        assert_eq!(s[status]["raw"]["contentType"], "application/json", "{s}");
    }
    // 413: libsignal has no typed error for it: an IoError (21), "unexpected response status 413".
    assert_eq!(s["413"]["typed"]["code"], 21, "{s}");
    assert!(
        s["413"]["typed"]["message"]
            .as_str()
            .unwrap()
            .contains("unexpected response status 413"),
        "{s}"
    );
    assert!(
        s["413"]["contentBytes"].as_u64().unwrap() > MAX_CONTENT_BYTES as u64,
        "{s}"
    );
    assert_eq!(s["413"]["raw"]["status"], 413, "{s}");
    assert_eq!(s["413"]["raw"]["body"]["code"], "message_too_large", "{s}");
    // 401 on the unauthenticated connection: RequestUnauthorizedError (48), for a known and an unknown account.
    for (typed, raw) in [("typed", "raw"), ("typedUnknown", "rawUnknown")] {
        assert_eq!(s["401"][typed]["code"], 48, "{s}");
        assert_eq!(s["401"][raw]["status"], 401, "{s}");
        assert_eq!(s["401"][raw]["body"]["code"], "unauthorized", "{s}");
    }
    // 429: RateLimitedError (29) with the server's Retry-After, after the bucket's permits: 20, minus the three
    // backlog sends and the six failing sends to Bob (typed and raw 409, 410 and 413).
    assert_eq!(s["429"]["sentBefore"], 20 - 3 - 6, "{s}");
    assert_eq!(s["429"]["typed"]["code"], 29, "{s}");
    assert_eq!(s["429"]["raw"]["status"], 429, "{s}");
    assert_eq!(s["429"]["raw"]["body"]["code"], "rate_limited", "{s}");
    let retry: u64 = s["429"]["raw"]["retryAfter"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // One permit comes back per hour; on a real clock (the multi-process test) the two answers, a few
    // milliseconds apart, may round to neighbouring seconds.
    assert!((1..=3600).contains(&retry), "{s}");
    let typed = s["429"]["typed"]["retryAfterSecs"].as_u64().unwrap();
    assert!(
        typed.abs_diff(retry) <= 1,
        "libsignal's retryAfterSecs is the Retry-After: {s}"
    );
}
