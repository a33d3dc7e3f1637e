//! `PUT /v1/messages/multi_recipient` (M§2.5, API.md §10): a real libsignal SSv2 SentMessage fanned out to Bob (two
//! devices) and Carol with their combined access key, every device opening what it fetched; then the statuses and
//! bodies of M§2.5 in order (400 malformed, 401 credentials and wrong key, 404 unknown recipient, 409 before 410,
//! 413, 415), stories (unknown recipients skipped, invite_only recipients dropped silently) and `online`.

use axum::http::Method;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flatline_core::account::Device;
use flatline_core::credentials::SaltedTokenHash;
use flatline_core::crypto::KeyPair;
use flatline_core::ids::{Aci, DeviceId, ServiceId};
use flatline_core::messages::MAX_CONTENT_BYTES;
use flatline_core::sealed::multi_recipient;
use flatline_core::time::Clock;
use flatline_testkit::{SeededRng, SimClient};
use serde_json::{Value, json};

use crate::sealed::{
    Libsignal, app_with_trust, fetch_certificate, libsignal_dir, manifest_trust_root,
    seed_with_identity,
};
use crate::support::{Backend, Response, TestApp};

const MRM: &str = "application/vnd.signal-messenger.mrm";

/// An account with devices `(id, registration id)` (the first must be 1), an optional key and the unrestricted flag.
pub(crate) async fn seed(
    app: &TestApp,
    principal: &str,
    devices: &[(u8, u16)],
    uak: Option<[u8; 16]>,
    unrestricted: bool,
) -> SimClient {
    let client = SimClient::new(app.rng.as_ref());
    let mut new = client.new_account(principal, app.rng.as_ref(), app.clock.now());
    new.account.settings.unidentified_access_key = uak;
    new.account.settings.unrestricted_unidentified_access = unrestricted;
    let template: Device = new.account.devices[0].clone();
    new.account.devices.clear();
    for (id, reg) in devices {
        let mut device = template.clone();
        device.id = DeviceId::new(*id).unwrap();
        if *id != 1 {
            device.credential = SaltedTokenHash::generate(&client.password, app.rng.as_ref());
        }
        device.settings.registration_id = *reg;
        new.account.devices.push(device);
    }
    app.state.store.create_account(new).await.unwrap();
    client
}

pub(crate) fn auth(c: &SimClient, d: u8) -> String {
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}.{d}:{}", c.aci, c.password))
    )
}

pub(crate) async fn fetch(app: &TestApp, c: &SimClient, d: u8, stories: bool) -> Vec<Value> {
    let a = auth(c, d);
    let mut headers = vec![("authorization", a.as_str())];
    if stories {
        headers.push(("x-signal-receive-stories", "true"));
    }
    let r = app.send(Method::GET, "/v1/messages", &headers, None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["messages"].as_array().unwrap().clone()
}

async fn put(app: &TestApp, query: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Response {
    let mut h = vec![("content-type", MRM)];
    h.extend_from_slice(headers);
    app.send_bytes(
        Method::PUT,
        &format!("/v1/messages/multi_recipient{query}"),
        &h,
        body,
    )
    .await
}

fn key_header(k: &[u8; 16]) -> String {
    STANDARD.encode(k)
}

fn xor(a: &[u8; 16], b: &[u8; 16]) -> [u8; 16] {
    let mut o = [0u8; 16];
    for i in 0..16 {
        o[i] = a[i] ^ b[i];
    }
    o
}

/// A version-0x23 SentMessage by hand: recipients with `(device, registration id)` lists (empty = excluded), then
/// a shared part of `shared_len` bytes.
fn sent_message(recipients: &[(ServiceId, &[(u8, u16)])], shared_len: usize) -> Vec<u8> {
    let mut out = vec![0x23, u8::try_from(recipients.len()).unwrap()];
    for (i, (id, devices)) in recipients.iter().enumerate() {
        match id {
            ServiceId::Aci(a) => {
                out.push(0);
                out.extend_from_slice(a.as_bytes());
            }
            ServiceId::Pni(p) => {
                out.push(1);
                out.extend_from_slice(p.as_bytes());
            }
        }
        if devices.is_empty() {
            out.push(0);
            continue;
        }
        for (k, (d, reg)) in devices.iter().enumerate() {
            out.push(*d);
            let more = if k + 1 < devices.len() { 0x8000 } else { 0 };
            out.extend_from_slice(&(reg | more).to_be_bytes());
        }
        out.extend_from_slice(&[u8::try_from(i).unwrap() + 1; 48]);
    }
    out.extend(std::iter::repeat_n(0xee, shared_len));
    out
}

pub(crate) fn assert_status(r: &Response, status: u16, code: &str) {
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (status, code.to_owned()),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

#[tokio::test]
async fn a_libsignal_multi_recipient_message_reaches_every_device() {
    let Some(dir) = libsignal_dir() else { return };
    let app = app_with_trust(Backend::Sqlite).await;
    let root = manifest_trust_root(&app).await;
    let mut ls = Libsignal::start(&dir);
    let rng = SeededRng::new(18);

    let alice_identity = KeyPair::generate(&rng);
    let alice = seed_with_identity(&app, "alice@example.org", alice_identity.clone()).await;
    let (bob_key, carol_key) = ([0x42u8; 16], [0x17u8; 16]);
    let bob = seed(
        &app,
        "bob@example.org",
        &[(1, 4321), (2, 16383)],
        Some(bob_key),
        false,
    )
    .await;
    let carol = seed(&app, "carol@example.org", &[(1, 7)], Some(carol_key), false).await;
    ls.call(
        json!({"op": "party", "name": "alice", "aci": alice.aci.to_string(),
        "devices": [{"id": 1, "registrationId": 1111}],
        "identityPrivateKey": STANDARD.encode(alice_identity.private_key.serialize())}),
    )
    .await;
    ls.call(
        json!({"op": "party", "name": "bob", "aci": bob.aci.to_string(),
        "devices": [{"id": 1, "registrationId": 4321}, {"id": 2, "registrationId": 16383}]}),
    )
    .await;
    ls.call(
        json!({"op": "party", "name": "carol", "aci": carol.aci.to_string(),
        "devices": [{"id": 1, "registrationId": 7}]}),
    )
    .await;
    let now = app.clock.now().as_millis();
    let certificate = fetch_certificate(&app, &alice, "").await;
    let excluded = Aci::random(&rng);
    let multi = ls
        .call(json!({"op": "multi", "from": "alice", "certificate": certificate,
            "recipients": [{"name": "bob", "device": 1}, {"name": "bob", "device": 2}, {"name": "carol", "device": 1}],
            "excluded": [excluded.to_string()], "plaintext": STANDARD.encode("hello group")}))
        .await;
    let sent = STANDARD.decode(multi["message"].as_str().unwrap()).unwrap();

    // A wrong combined key (Bob's alone) is a 401 and stores nothing.
    let r = put(
        &app,
        "?ts=1700000000123&online=false&urgent=true",
        &[("unidentified-access-key", &key_header(&bob_key))],
        sent.clone(),
    )
    .await;
    assert_status(&r, 401, "unauthorized");
    assert!(fetch(&app, &bob, 1, false).await.is_empty());

    let combined = xor(&bob_key, &carol_key);
    let r = put(
        &app,
        "?ts=1700000000123&online=false&urgent=true",
        &[("unidentified-access-key", &key_header(&combined))],
        sent.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), json!({"uuids404": []}));

    let parsed = multi_recipient::parse(&sent).unwrap();
    for (name, who, device) in [("bob", &bob, 1), ("bob", &bob, 2), ("carol", &carol, 1)] {
        let messages = fetch(&app, who, device, false).await;
        assert_eq!(messages.len(), 1, "{name}.{device}");
        let m = &messages[0];
        assert_eq!(m["type"], 6);
        assert_eq!(m["timestamp"], 1_700_000_000_123u64);
        assert_eq!(m["sourceUuid"], Value::Null);
        assert_eq!(m["destinationUuid"], who.aci.to_string());
        let content = STANDARD.decode(m["content"].as_str().unwrap()).unwrap();
        let r = parsed
            .recipients
            .iter()
            .find(|r| r.service_id == ServiceId::Aci(who.aci))
            .unwrap();
        assert_eq!(content, parsed.payload_for(r), "{name}.{device}");
        assert_eq!(
            STANDARD.encode(&content),
            multi["parsed"]["payloads"][who.aci.to_string()],
            "libsignal's messageForRecipient"
        );
        let opened = ls
            .call(json!({"op": "openUsmc", "name": name, "device": device,
                "message": STANDARD.encode(&content), "trustRoot": root, "time": now}))
            .await;
        assert_eq!(opened["contents"], multi["contents"], "{name}.{device}");
        assert_eq!(opened["senderUuid"], alice.aci.to_string());
        assert_eq!(opened["certificateValid"], true);
    }
}

#[tokio::test]
pub async fn statuses_and_bodies_in_order() {
    let app = TestApp::new(Backend::Memory).await;
    let (bob_key, carol_key) = ([1u8; 16], [2u8; 16]);
    let bob = seed(
        &app,
        "bob@example.org",
        &[(1, 11), (2, 12)],
        Some(bob_key),
        false,
    )
    .await;
    let carol = seed(
        &app,
        "carol@example.org",
        &[(1, 21)],
        Some(carol_key),
        false,
    )
    .await;
    let (b, c) = (ServiceId::Aci(bob.aci), ServiceId::Aci(carol.aci));
    let key = key_header(&xor(&bob_key, &carol_key));
    let uak = [("unidentified-access-key", key.as_str())];
    let good = sent_message(&[(b, &[(1, 11), (2, 12)]), (c, &[(1, 21)])], 64);

    // Malformed bodies: 400 whatever the credentials.
    for body in [
        vec![],
        vec![0x21, 0],
        sent_message(&[(b, &[(1, 11)])], 10),
        sent_message(&[(b, &[])], 32),
        sent_message(&[(b, &[(1, 11), (1, 11), (2, 12)]), (c, &[(1, 21)])], 32),
    ] {
        assert_status(
            &put(&app, "", &uak, body.clone()).await,
            400,
            "invalid_message",
        );
        assert_status(&put(&app, "", &[], body).await, 400, "invalid_message");
    }
    // Credentials: neither 401, both 400, a token on a story 400, a bad ts 400, wrong content type 415.
    assert_status(&put(&app, "", &[], good.clone()).await, 401, "unauthorized");
    let well_formed = crate::group_send::well_formed_token();
    let both = [uak[0], ("group-send-token", well_formed.as_str())];
    assert_status(
        &put(&app, "", &both, good.clone()).await,
        400,
        "ambiguous_credentials",
    );
    let on_story = [("group-send-token", well_formed.as_str())];
    assert_status(
        &put(&app, "?story=true", &on_story, good.clone()).await,
        400,
        "ambiguous_credentials",
    );
    let token = [("group-send-token", "AAAA")];
    // A token that does not parse is a 401 (Signal-Server's GroupSendTokenHeader), before any other check.
    assert_status(
        &put(&app, "", &token, good.clone()).await,
        401,
        "unauthorized",
    );
    assert_status(
        &put(&app, "?ts=-1", &uak, good.clone()).await,
        400,
        "invalid_message",
    );
    let r = app
        .send_bytes(
            Method::PUT,
            "/v1/messages/multi_recipient",
            &[("content-type", "application/octet-stream"), uak[0]],
            good.clone(),
        )
        .await;
    assert_status(&r, 415, "unsupported_media_type");
    let bad = key_header(&bob_key);
    assert_status(
        &put(&app, "", &[("unidentified-access-key", &bad)], good.clone()).await,
        401,
        "unauthorized",
    );
    assert_status(
        &put(
            &app,
            "",
            &[("unidentified-access-key", "AAAA")],
            good.clone(),
        )
        .await,
        401,
        "unauthorized",
    );

    // An unknown recipient of a key send: 404 (before the device check).
    let stranger = ServiceId::Aci(Aci::random(app.rng.as_ref()));
    let body = sent_message(&[(b, &[(9, 1)]), (stranger, &[(1, 1)])], 32);
    assert_status(&put(&app, "", &uak, body).await, 404, "not_found");

    // 409 (only the mismatched recipient, with both lists) wins over 410.
    let body = sent_message(&[(b, &[(1, 11), (3, 5)]), (c, &[(1, 99)])], 32);
    let r = put(&app, "", &uak, body).await;
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json(),
        json!([{"uuid": bob.aci.to_string(), "devices": {"missingDevices": [2], "extraDevices": [3]}}])
    );
    let body = sent_message(&[(b, &[(1, 11), (2, 13)]), (c, &[(1, 99)])], 32);
    let r = put(&app, "", &uak, body).await;
    assert_eq!(r.status, 410, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json(),
        json!([
            {"uuid": bob.aci.to_string(), "devices": {"staleDevices": [2]}},
            {"uuid": carol.aci.to_string(), "devices": {"staleDevices": [1]}},
        ])
    );
    // 413: a payload over 256 KiB (after the device check).
    let body = sent_message(
        &[(b, &[(1, 11), (2, 12)]), (c, &[(1, 21)])],
        MAX_CONTENT_BYTES,
    );
    assert_status(&put(&app, "", &uak, body).await, 413, "message_too_large");
    let body = sent_message(
        &[(b, &[(1, 11), (2, 12)])],
        32 + MAX_CONTENT_BYTES + 500_001,
    );
    assert_status(&put(&app, "", &uak, body).await, 413, "body_too_large");
    // Nothing was stored by any refusal.
    for (who, d) in [(&bob, 1), (&bob, 2), (&carol, 1)] {
        assert!(fetch(&app, who, d, true).await.is_empty());
    }

    // Online: 200, never stored.
    let r = put(&app, "?online=true", &uak, good.clone()).await;
    assert_eq!(r.status, 200);
    assert!(fetch(&app, &bob, 1, true).await.is_empty());
    // ts=0 takes the server time; the excluded recipient needs no account and no key.
    let with_excluded = sent_message(
        &[(b, &[(1, 11), (2, 12)]), (c, &[(1, 21)]), (stranger, &[])],
        64,
    );
    let r = put(&app, "?ts=0&urgent=false", &uak, with_excluded).await;
    assert_eq!(r.json(), json!({"uuids404": []}));
    let m = fetch(&app, &carol, 1, false).await;
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["timestamp"], app.clock.now().as_millis());
}

#[tokio::test]
async fn stories_skip_unknown_and_invite_only_recipients_and_unrestricted_is_ignored_for_invite_only()
 {
    let app = TestApp::new(Backend::Sqlite).await;
    let bob = seed(&app, "bob@example.org", &[(1, 11)], Some([5; 16]), true).await;
    let carol = seed(&app, "carol@example.org", &[(1, 21)], Some([6; 16]), false).await;
    let (b, c) = (ServiceId::Aci(bob.aci), ServiceId::Aci(carol.aci));
    let stranger = ServiceId::Aci(Aci::random(app.rng.as_ref()));

    // Bob is unrestricted: Carol's key alone authorizes.
    let body = sent_message(&[(b, &[(1, 11)]), (c, &[(1, 21)])], 40);
    let carol_only = key_header(&[6; 16]);
    let r = put(
        &app,
        "",
        &[("unidentified-access-key", &carol_only)],
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(fetch(&app, &bob, 1, false).await.len(), 1);

    // Bob becomes invite_only: unrestricted access no longer counts, his real key is needed.
    let r = app
        .put_json(
            "/v1/accounts/contact_policy",
            &auth(&bob, 1),
            &json!({"policy": "invite_only", "introductions": "ask"}),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_status(
        &put(
            &app,
            "",
            &[("unidentified-access-key", &carol_only)],
            body.clone(),
        )
        .await,
        401,
        "unauthorized",
    );
    let both = key_header(&xor(&[5; 16], &[6; 16]));
    let r = put(
        &app,
        "",
        &[("unidentified-access-key", &both)],
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(fetch(&app, &bob, 1, false).await.len(), 2);

    // A story to Bob (invite_only), Carol and an unknown recipient: only Carol's is stored; the device check is
    // not run for Bob (a wrong device for him changes nothing), unknown recipients are not reported.
    let story = sent_message(
        &[(b, &[(7, 1)]), (c, &[(1, 21)]), (stranger, &[(1, 1)])],
        40,
    );
    let r = put(&app, "?story=true", &[], story).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), json!({"uuids404": []}));
    let stories: Vec<Value> = fetch(&app, &carol, 1, true).await;
    assert_eq!(stories.len(), 3);
    assert_eq!(stories[2]["story"], true);
    assert_eq!(fetch(&app, &carol, 1, false).await.len(), 2);
    assert_eq!(fetch(&app, &bob, 1, true).await.len(), 2);
    // A story to nobody known: 200.
    let r = put(
        &app,
        "?story=true",
        &[],
        sent_message(&[(stranger, &[(1, 1)])], 40),
    )
    .await;
    assert_eq!(r.json(), json!({"uuids404": []}));
}

/// A Group-Send-Token from libsignal (endorsements issued with the instance's params) for Bob and an unknown
/// recipient: 200 with the unknown one in `uuids404`, Bob's device served; the same token for another set is 401.
#[tokio::test]
async fn a_group_send_token_authorizes_exactly_its_recipients_and_reports_unknown_ones() {
    let Some(dir) = libsignal_dir() else { return };
    let app = crate::zk::app_with_trust().await;
    let bob = seed(&app, "bob@example.org", &[(1, 11)], None, false).await;
    let carol = seed(&app, "carol@example.org", &[(1, 21)], Some([3; 16]), false).await;
    let sender = ServiceId::Aci(Aci::random(app.rng.as_ref()));
    let unknown = ServiceId::Aci(Aci::random(app.rng.as_ref()));
    let b = ServiceId::Aci(bob.aci);
    let params = &app.state.trust.as_ref().unwrap().zk().server;
    let now = u64::try_from(app.clock.now().as_secs()).unwrap();
    let out = crate::zk::run_script(
        &dir,
        "zk_group_send.mjs",
        &json!({
            "serverSecretParams": STANDARD.encode(params.to_bytes()),
            "members": [sender.to_string(), b.to_string(), unknown.to_string()],
            "expiration": crate::zk::today(&app) + crate::zk::DAY,
            "now": now,
        }),
    );
    assert_eq!(out["ok"], true, "{out}");
    let token = out["token"].as_str().unwrap().to_owned();
    let headers = [("group-send-token", token.as_str())];

    let body = sent_message(&[(b, &[(1, 11)]), (unknown, &[(1, 1)])], 40);
    let r = put(&app, "", &headers, body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), json!({"uuids404": [unknown.to_string()]}));
    assert_eq!(fetch(&app, &bob, 1, false).await.len(), 1);

    // Another recipient set (Carol added, or the unknown one left out): 401, nothing stored.
    let c = ServiceId::Aci(carol.aci);
    for body in [
        sent_message(
            &[(b, &[(1, 11)]), (unknown, &[(1, 1)]), (c, &[(1, 21)])],
            40,
        ),
        sent_message(&[(b, &[(1, 11)])], 40),
    ] {
        assert_status(&put(&app, "", &headers, body).await, 401, "unauthorized");
    }
    assert!(fetch(&app, &carol, 1, false).await.is_empty());
    assert_eq!(fetch(&app, &bob, 1, false).await.len(), 1);
}

/// One insert for all recipients: when any recipient's queue is full the whole send is a 429 and no recipient gets
/// anything, on every backend.
#[tokio::test]
async fn a_full_queue_of_one_recipient_stores_nothing_for_any() {
    for backend in Backend::ALL {
        let mut config = flatline_server::config::Config::default();
        config.messages.max_queue_bytes = 1 << 20;
        let app = TestApp::with_config(backend, config).await;
        let bob = seed(&app, "bob@example.org", &[(1, 11)], Some([1; 16]), false).await;
        let carol = seed(
            &app,
            "carol@example.org",
            &[(1, 21), (2, 22)],
            Some([2; 16]),
            false,
        )
        .await;
        let (b, c) = (ServiceId::Aci(bob.aci), ServiceId::Aci(carol.aci));
        let bob_key = key_header(&[1; 16]);
        // Four sends of ~250 kB fill most of Bob's 1 MiB queue.
        for _ in 0..4 {
            let r = put(
                &app,
                "",
                &[("unidentified-access-key", &bob_key)],
                sent_message(&[(b, &[(1, 11)])], 250_000),
            )
            .await;
            assert_eq!(r.status, 200, "{backend:?}");
        }
        let both = key_header(&xor(&[1; 16], &[2; 16]));
        let r = put(
            &app,
            "",
            &[("unidentified-access-key", &both)],
            sent_message(&[(c, &[(1, 21), (2, 22)]), (b, &[(1, 11)])], 250_000),
        )
        .await;
        assert_status(&r, 429, "queue_full");
        assert_eq!(fetch(&app, &bob, 1, false).await.len(), 4, "{backend:?}");
        assert!(
            fetch(&app, &carol, 1, false).await.is_empty(),
            "{backend:?}"
        );
        assert!(
            fetch(&app, &carol, 2, false).await.is_empty(),
            "{backend:?}"
        );
        // Without Bob it goes through, to both of Carol's devices.
        let carol_key = key_header(&[2; 16]);
        let r = put(
            &app,
            "",
            &[("unidentified-access-key", &carol_key)],
            sent_message(&[(c, &[(1, 21), (2, 22)])], 250_000),
        )
        .await;
        assert_eq!(r.status, 200, "{backend:?}");
        assert_eq!(fetch(&app, &carol, 2, false).await.len(), 1, "{backend:?}");
    }
}
