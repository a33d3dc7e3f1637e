//! `/v2/keys`: uploads, counts, checks and fetches with real keys from the simulated client.

use std::collections::HashSet;
use std::sync::Arc;

use axum::http::Method;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use flatline_core::crypto::PublicKey;
use flatline_core::ids::{DeviceId, IdentityType, ServiceId};
use flatline_core::keys::KeyUpload;
use flatline_server::config::{Config, LimiterConfig};
use flatline_testkit::{SimClient, UsernameForm};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{Backend, TestApp};

fn b64(v: &Value) -> Vec<u8> {
    STANDARD.decode(v.as_str().unwrap()).unwrap()
}

async fn counts(app: &TestApp, auth: &str, identity: &str) -> Value {
    app.get(&format!("/v2/keys?identity={identity}"), Some(auth))
        .await
        .json()
}

#[tokio::test]
pub async fn upload_then_fetch_hands_out_lowest_ids_then_last_resort() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let bob = app.seed("bob").await;
        let alice = app.seed("alice").await;
        let bob_auth = bob.basic_auth(UsernameForm::Aci);
        let body = bob.set_keys_body(IdentityType::Aci, 100, 3, 2, app.rng.as_ref());
        let r = app
            .put_json("/v2/keys?identity=aci", &bob_auth, &body)
            .await;
        assert_eq!(
            r.status,
            204,
            "{backend:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.body.is_empty());
        assert_eq!(
            counts(&app, &bob_auth, "aci").await,
            json!({"count": 3, "pqCount": 2})
        );
        assert_eq!(
            counts(&app, &bob_auth, "PNI").await,
            json!({"count": 0, "pqCount": 0})
        );

        let alice_auth = alice.basic_auth(UsernameForm::Dot);
        let identity = PublicKey::from_bytes(&bob.aci_identity.public_key.serialize()).unwrap();
        let mut seen = vec![];
        for round in 0..4 {
            let r = app
                .get(&format!("/v2/keys/{}/1", bob.aci), Some(&alice_auth))
                .await;
            assert_eq!(r.status, 200, "{backend:?} round {round}");
            let j = r.json();
            assert_eq!(
                b64(&j["identityKey"]),
                bob.aci_identity.public_key.serialize()
            );
            let d = &j["devices"][0];
            assert_eq!(
                (d["deviceId"].as_u64(), d["registrationId"].as_u64()),
                (Some(1), Some(11))
            );
            // Signed keys verify under the identity key; signatures come unpadded, keys padded.
            for field in ["signedPreKey", "pqPreKey"] {
                let k = &d[field];
                let sig = k["signature"].as_str().unwrap();
                assert!(!sig.ends_with('='), "signature must be unpadded");
                assert!(identity.verify_signature(
                    &b64(&k["publicKey"]),
                    &STANDARD_NO_PAD.decode(sig).unwrap()
                ));
            }
            assert_eq!(d["signedPreKey"]["keyId"], json!(10_100));
            seen.push((
                d["preKey"]["keyId"].as_u64(),
                d["pqPreKey"]["keyId"].as_u64(),
            ));
        }
        assert_eq!(
            seen,
            vec![
                (Some(100), Some(100)),
                (Some(101), Some(101)),
                (Some(102), Some(20_100)),
                (None, Some(20_100))
            ],
            "{backend:?}"
        );
        assert_eq!(
            counts(&app, &bob_auth, "aci").await,
            json!({"count": 0, "pqCount": 0})
        );
    }
}

#[tokio::test]
async fn empty_lists_keep_and_nonempty_lists_replace() {
    let app = TestApp::new(Backend::Sqlite).await;
    let bob = app.seed("bob").await;
    let auth = bob.basic_auth(UsernameForm::Aci);
    let rng = app.rng.as_ref();
    assert_eq!(
        app.put_json(
            "/v2/keys",
            &auth,
            &bob.set_keys_body(IdentityType::Aci, 1, 5, 5, rng)
        )
        .await
        .status,
        204
    );
    assert_eq!(
        app.put_json("/v2/keys", &auth, &json!({"preKeys": [], "pqPreKeys": []}))
            .await
            .status,
        204
    );
    assert_eq!(
        counts(&app, &auth, "aci").await,
        json!({"count": 5, "pqCount": 5})
    );
    assert_eq!(
        app.put_json("/v2/keys", &auth, &json!({})).await.status,
        204
    );
    assert_eq!(
        counts(&app, &auth, "aci").await,
        json!({"count": 5, "pqCount": 5})
    );
    let replace = bob.set_keys_body(IdentityType::Aci, 50, 2, 0, rng);
    assert_eq!(
        app.put_json("/v2/keys", &auth, &json!({"preKeys": replace["preKeys"]}))
            .await
            .status,
        204
    );
    assert_eq!(
        counts(&app, &auth, "aci").await,
        json!({"count": 2, "pqCount": 5})
    );
}

/// Mutations of a valid 100 + 100 upload; each must be refused with 422 and store nothing.
#[tokio::test]
pub async fn any_bad_key_refuses_the_whole_upload() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let bob = app.seed("bob").await;
        let auth = bob.basic_auth(UsernameForm::Aci);
        let rng = app.rng.as_ref();
        let owner = ServiceId::Aci(bob.aci);
        let signed_before = app
            .state
            .store
            .signed_pre_key(owner, DeviceId::PRIMARY)
            .await
            .unwrap();
        let valid = bob.set_keys_body(IdentityType::Aci, 1, 100, 100, rng);
        let raw_ec = bob.one_time_ec(9, rng).public_key;
        let mut raw32_signed = valid["signedPreKey"].clone();
        let raw32 = b64(&raw32_signed["publicKey"])[1..].to_vec();
        raw32_signed["signature"] =
            json!(STANDARD_NO_PAD.encode(bob.aci_identity.private_key.sign(&raw32, rng)));
        let flip = |v: &Value| {
            let mut s = STANDARD_NO_PAD.decode(v.as_str().unwrap()).unwrap();
            s[10] ^= 1;
            json!(STANDARD_NO_PAD.encode(s))
        };
        let retype = |v: &Value, t: u8| {
            let mut k = b64(v);
            k[0] = t;
            json!(STANDARD.encode(k))
        };
        type Mutation = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "signed prekey signature",
                Box::new(move |b| {
                    b["signedPreKey"]["signature"] = flip(&b["signedPreKey"]["signature"])
                }),
            ),
            (
                "57th kyber signature",
                Box::new(move |b| {
                    b["pqPreKeys"][57]["signature"] = flip(&b["pqPreKeys"][57]["signature"])
                }),
            ),
            (
                "last resort signature",
                Box::new(move |b| {
                    b["pqLastResortPreKey"]["signature"] =
                        flip(&b["pqLastResortPreKey"]["signature"])
                }),
            ),
            (
                "signed by the PNI key",
                Box::new({
                    let pni_signed = bob.signed_ec(IdentityType::Pni, 3, rng);
                    move |b| b["signedPreKey"] = flatline_testkit::client::signed_json(&pni_signed)
                }),
            ),
            (
                "signature over the raw 32 bytes",
                Box::new(move |b| b["signedPreKey"] = raw32_signed.clone()),
            ),
            (
                "kyber type 0x07",
                Box::new(move |b| {
                    b["pqPreKeys"][3]["publicKey"] = retype(&b["pqPreKeys"][3]["publicKey"], 0x07)
                }),
            ),
            (
                "kyber type 0x0A",
                Box::new(move |b| {
                    b["pqLastResortPreKey"]["publicKey"] =
                        retype(&b["pqLastResortPreKey"]["publicKey"], 0x0A)
                }),
            ),
            (
                "kyber 1568 bytes",
                Box::new(move |b| {
                    b["pqPreKeys"][0]["publicKey"] =
                        json!(STANDARD.encode(&b64(&b["pqPreKeys"][0]["publicKey"])[..1568]))
                }),
            ),
            (
                "63-byte signature",
                Box::new(move |b| {
                    let s = STANDARD_NO_PAD
                        .decode(b["signedPreKey"]["signature"].as_str().unwrap())
                        .unwrap();
                    b["signedPreKey"]["signature"] = json!(STANDARD_NO_PAD.encode(&s[..63]));
                }),
            ),
            (
                "65-byte signature",
                Box::new(move |b| {
                    let mut s = STANDARD_NO_PAD
                        .decode(b["signedPreKey"]["signature"].as_str().unwrap())
                        .unwrap();
                    s.push(0);
                    b["signedPreKey"]["signature"] = json!(STANDARD_NO_PAD.encode(s));
                }),
            ),
            (
                "EC key with a trailing byte",
                Box::new(move |b| {
                    let mut k = raw_ec.clone();
                    k.push(0);
                    b["preKeys"][99]["publicKey"] = json!(STANDARD.encode(k));
                }),
            ),
            (
                "EC key of type 0x06",
                Box::new(move |b| {
                    b["preKeys"][0]["publicKey"] = retype(&b["preKeys"][0]["publicKey"], 0x06)
                }),
            ),
            (
                "101 EC keys",
                Box::new(move |b| {
                    let first = b["preKeys"][0].clone();
                    let list = b["preKeys"].as_array_mut().unwrap();
                    let mut extra = first;
                    extra["keyId"] = json!(5000);
                    list.push(extra);
                }),
            ),
            (
                "key id 2^31",
                Box::new(|b| b["preKeys"][5]["keyId"] = json!(2_147_483_648u64)),
            ),
            (
                "key id -1",
                Box::new(|b| b["pqPreKeys"][5]["keyId"] = json!(-1)),
            ),
            (
                "duplicate key id",
                Box::new(|b| b["preKeys"][1]["keyId"] = b["preKeys"][0]["keyId"].clone()),
            ),
        ];
        for (name, mutate) in cases {
            let mut body = valid.clone();
            mutate(&mut body);
            let r = app.put_json("/v2/keys?identity=aci", &auth, &body).await;
            assert_eq!(
                r.status,
                422,
                "{backend:?}: {name}: {}",
                String::from_utf8_lossy(&r.body)
            );
            assert_eq!(
                counts(&app, &auth, "aci").await,
                json!({"count": 0, "pqCount": 0}),
                "{backend:?}: {name}"
            );
            assert_eq!(
                app.state
                    .store
                    .signed_pre_key(owner, DeviceId::PRIMARY)
                    .await
                    .unwrap(),
                signed_before,
                "{backend:?}: {name}"
            );
        }
        // The unmodified upload is fine, and PNI keys must be signed by the PNI identity.
        assert_eq!(app.put_json("/v2/keys", &auth, &valid).await.status, 204);
        assert_eq!(
            app.put_json("/v2/keys?identity=pni", &auth, &valid)
                .await
                .status,
            422
        );
        let pni_body = bob.set_keys_body(IdentityType::Pni, 1, 1, 1, rng);
        assert_eq!(
            app.put_json("/v2/keys?identity=pni", &auth, &pni_body)
                .await
                .status,
            204
        );
    }
}

#[tokio::test]
async fn malformed_key_requests_are_400() {
    let app = TestApp::new(Backend::Memory).await;
    let bob = app.seed("bob").await;
    let auth = bob.basic_auth(UsernameForm::Aci);
    let cases = [
        ("/v2/keys?identity=xyz", json!({})),
        (
            "/v2/keys",
            json!({"preKeys": [{"keyId": 1, "publicKey": "not base64!"}]}),
        ),
        ("/v2/keys", json!({"preKeys": "nope"})),
    ];
    for (uri, body) in cases {
        assert_eq!(
            app.put_json(uri, &auth, &body).await.status,
            400,
            "{uri} {body}"
        );
    }
}

#[tokio::test]
async fn padding_is_optional_on_input() {
    let app = TestApp::new(Backend::Memory).await;
    let bob = app.seed("bob").await;
    let auth = bob.basic_auth(UsernameForm::Aci);
    let mut body = bob.set_keys_body(IdentityType::Aci, 1, 1, 1, app.rng.as_ref());
    let unpad = |v: &mut Value| *v = json!(v.as_str().unwrap().trim_end_matches('='));
    unpad(&mut body["preKeys"][0]["publicKey"]);
    unpad(&mut body["pqPreKeys"][0]["publicKey"]);
    let padded = STANDARD.encode(
        STANDARD_NO_PAD
            .decode(body["signedPreKey"]["signature"].as_str().unwrap())
            .unwrap(),
    );
    body["signedPreKey"]["signature"] = json!(padded);
    assert_eq!(app.put_json("/v2/keys", &auth, &body).await.status, 204);
}

#[tokio::test]
pub async fn check_compares_the_digest() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let bob = app.seed("bob").await;
        let auth = bob.basic_auth(UsernameForm::Aci);
        let owner = ServiceId::Aci(bob.aci);
        let signed = app
            .state
            .store
            .signed_pre_key(owner, DeviceId::PRIMARY)
            .await
            .unwrap()
            .unwrap();
        let last = app
            .state
            .store
            .last_resort_key(owner, DeviceId::PRIMARY)
            .await
            .unwrap()
            .unwrap();
        let digest = Sha256::new()
            .chain_update(bob.aci_identity.public_key.serialize())
            .chain_update(u64::from(signed.key_id.get()).to_be_bytes())
            .chain_update(&signed.public_key)
            .chain_update(u64::from(last.key_id.get()).to_be_bytes())
            .chain_update(&last.public_key)
            .finalize();
        let post = |digest: Vec<u8>, identity: &'static str| {
            let body =
                json!({"identityType": identity, "digest": STANDARD.encode(digest)}).to_string();
            let auth = auth.clone();
            let app = &app;
            async move {
                app.send(
                    Method::POST,
                    "/v2/keys/check",
                    &[("authorization", &auth)],
                    Some(&body),
                )
                .await
                .status
            }
        };
        assert_eq!(post(digest.to_vec(), "aci").await, 200, "{backend:?}");
        assert_eq!(post(digest.to_vec(), "pni").await, 409, "{backend:?}");
        let mut wrong = digest.to_vec();
        wrong[0] ^= 1;
        assert_eq!(post(wrong, "aci").await, 409, "{backend:?}");
        assert_eq!(post(vec![0; 31], "aci").await, 422, "{backend:?}");
    }
}

/// (name, uri, headers, expected status).
type FetchCase<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, u16);

/// Who may fetch what: authenticated 404s, anonymous 401s, access keys in constant time, PNI never by access key.
#[tokio::test]
pub async fn fetch_access_rules() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let bob = app.seed("bob").await;
        let alice = app.seed("alice").await;
        let stranger = SimClient::new(app.rng.as_ref());
        let uak = [7u8; 16];
        let attrs = json!({"registrationId": 11, "pniRegistrationId": 12, "unidentifiedAccessKey": STANDARD.encode(uak)});
        assert_eq!(
            app.put_json(
                "/v1/accounts/attributes",
                &bob.basic_auth(UsernameForm::Aci),
                &attrs
            )
            .await
            .status,
            204
        );
        let alice_auth = alice.basic_auth(UsernameForm::Aci);
        let good_key = STANDARD.encode(uak);
        let wrong_key = STANDARD.encode([8u8; 16]);
        let short_key = STANDARD.encode([7u8; 15]);
        let bob_aci = bob.aci.to_string();
        let bob_pni = format!("PNI:{}", bob.pni);
        let nobody = stranger.aci.to_string();
        let cases: Vec<FetchCase> = vec![
            (
                "authenticated",
                format!("/v2/keys/{bob_aci}/1"),
                vec![("authorization", &alice_auth)],
                200,
            ),
            (
                "authenticated, all devices",
                format!("/v2/keys/{bob_aci}/*"),
                vec![("authorization", &alice_auth)],
                200,
            ),
            (
                "authenticated, PNI",
                format!("/v2/keys/{bob_pni}/1"),
                vec![("authorization", &alice_auth)],
                200,
            ),
            (
                "authenticated, unknown account",
                format!("/v2/keys/{nobody}/1"),
                vec![("authorization", &alice_auth)],
                404,
            ),
            (
                "authenticated, unknown device",
                format!("/v2/keys/{bob_aci}/5"),
                vec![("authorization", &alice_auth)],
                404,
            ),
            (
                "access key",
                format!("/v2/keys/{bob_aci}/1"),
                vec![("unidentified-access-key", &good_key)],
                200,
            ),
            (
                "access key, unpadded",
                format!("/v2/keys/{bob_aci}/*"),
                vec![("unidentified-access-key", good_key.trim_end_matches('='))],
                200,
            ),
            (
                "wrong access key",
                format!("/v2/keys/{bob_aci}/1"),
                vec![("unidentified-access-key", &wrong_key)],
                401,
            ),
            (
                "15-byte access key",
                format!("/v2/keys/{bob_aci}/1"),
                vec![("unidentified-access-key", &short_key)],
                401,
            ),
            (
                "garbage access key",
                format!("/v2/keys/{bob_aci}/1"),
                vec![("unidentified-access-key", "%%")],
                401,
            ),
            (
                "access key, PNI",
                format!("/v2/keys/{bob_pni}/1"),
                vec![("unidentified-access-key", &good_key)],
                401,
            ),
            (
                "access key, unknown account",
                format!("/v2/keys/{nobody}/1"),
                vec![("unidentified-access-key", &good_key)],
                401,
            ),
            (
                "access key, unknown device",
                format!("/v2/keys/{bob_aci}/5"),
                vec![("unidentified-access-key", &good_key)],
                401,
            ),
            ("anonymous", format!("/v2/keys/{bob_aci}/1"), vec![], 401),
            (
                "both credentials",
                format!("/v2/keys/{bob_aci}/1"),
                vec![
                    ("authorization", &alice_auth),
                    ("unidentified-access-key", &good_key),
                ],
                400,
            ),
            (
                "bad identifier",
                "/v2/keys/bob/1".to_owned(),
                vec![("authorization", &alice_auth)],
                400,
            ),
            (
                "device 0",
                format!("/v2/keys/{bob_aci}/0"),
                vec![("authorization", &alice_auth)],
                422,
            ),
            (
                "device 128",
                format!("/v2/keys/{bob_aci}/128"),
                vec![("authorization", &alice_auth)],
                422,
            ),
        ];
        for (name, uri, headers, status) in &cases {
            let r = app.send(Method::GET, uri, headers, None).await;
            assert_eq!(
                r.status.as_u16(),
                *status,
                "{backend:?}: {name}: {}",
                String::from_utf8_lossy(&r.body)
            );
        }
        // Unrestricted access accepts any 16-byte key.
        let attrs = json!({"registrationId": 11, "unidentifiedAccessKey": STANDARD.encode(uak), "unrestrictedUnidentifiedAccess": true});
        assert_eq!(
            app.put_json(
                "/v1/accounts/attributes",
                &bob.basic_auth(UsernameForm::Aci),
                &attrs
            )
            .await
            .status,
            204
        );
        let r = app
            .send(
                Method::GET,
                &format!("/v2/keys/{bob_aci}/1"),
                &[("unidentified-access-key", &wrong_key)],
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{backend:?}: unrestricted");
    }
}

#[tokio::test]
async fn authenticated_fetches_are_rate_limited() {
    let mut config = Config::default();
    config.limits.0.insert(
        "prekeys".into(),
        LimiterConfig {
            bucket_size: 2,
            permit_regeneration_seconds: 60.0,
        },
    );
    let app = TestApp::with_config(Backend::Sqlite, config).await;
    let bob = app.seed("bob").await;
    let alice = app.seed("alice").await;
    let auth = alice.basic_auth(UsernameForm::Aci);
    let uri = format!("/v2/keys/{}/1", bob.aci);
    assert_eq!(app.get(&uri, Some(&auth)).await.status, 200);
    assert_eq!(app.get(&uri, Some(&auth)).await.status, 200);
    let r = app.get(&uri, Some(&auth)).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.headers.get("retry-after").unwrap(), "60");
    // A different target device is a different bucket; unidentified fetches are not limited.
    assert_eq!(
        app.get(&format!("/v2/keys/{}/*", bob.aci), Some(&auth))
            .await
            .status,
        200
    );
    app.clock.advance(std::time::Duration::from_secs(30));
    assert_eq!(
        app.get(&uri, Some(&auth))
            .await
            .headers
            .get("retry-after")
            .unwrap(),
        "30"
    );
    app.clock.advance(std::time::Duration::from_secs(30));
    assert_eq!(app.get(&uri, Some(&auth)).await.status, 200);
}

/// 500 one-time keys and 1000 concurrent fetches over HTTP: 500 distinct keys, the rest get the last-resort key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_fetches_hand_out_each_key_once() {
    for backend in Backend::ALL {
        let app = Arc::new(TestApp::new(backend).await);
        let bob = app.seed("bob").await;
        let rng = app.rng.as_ref();
        let uak = [3u8; 16];
        let attrs = json!({"registrationId": 11, "unidentifiedAccessKey": STANDARD.encode(uak)});
        assert_eq!(
            app.put_json(
                "/v1/accounts/attributes",
                &bob.basic_auth(UsernameForm::Aci),
                &attrs
            )
            .await
            .status,
            204
        );
        // Uploads are capped at 100 per list, so 500 keys go in through the store.
        let upload = KeyUpload {
            ec: Some((0..500).map(|i| bob.one_time_ec(i, rng)).collect()),
            kem: Some(
                (0..500)
                    .map(|i| bob.kem(IdentityType::Aci, i, rng))
                    .collect(),
            ),
            ..Default::default()
        };
        app.state
            .store
            .store_keys(ServiceId::Aci(bob.aci), DeviceId::PRIMARY, &upload)
            .await
            .unwrap();
        let last_resort = app
            .state
            .store
            .last_resort_key(ServiceId::Aci(bob.aci), DeviceId::PRIMARY)
            .await
            .unwrap()
            .unwrap();
        let key = STANDARD.encode(uak);
        let uri = format!("/v2/keys/{}/1", bob.aci);
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let (app, key, uri) = (app.clone(), key.clone(), uri.clone());
                tokio::spawn(async move {
                    let r = app
                        .send(
                            Method::GET,
                            &uri,
                            &[("unidentified-access-key", &key)],
                            None,
                        )
                        .await;
                    assert_eq!(r.status, 200);
                    let d = r.json()["devices"][0].clone();
                    (
                        d["preKey"]["keyId"].as_u64(),
                        d["pqPreKey"]["publicKey"].as_str().unwrap().to_owned(),
                    )
                })
            })
            .collect();
        let last_resort_b64 = STANDARD.encode(&last_resort.public_key);
        let mut ec = vec![];
        let mut kem = vec![];
        let mut last_resorts = 0;
        for t in tasks {
            let (e, k) = t.await.unwrap();
            ec.extend(e);
            if k == last_resort_b64 {
                last_resorts += 1;
            } else {
                kem.push(k);
            }
        }
        assert_eq!(ec.len(), 500, "{backend:?}");
        assert_eq!(
            ec.iter().collect::<HashSet<_>>().len(),
            500,
            "{backend:?}: EC key handed out twice"
        );
        assert_eq!(kem.len(), 500, "{backend:?}");
        assert_eq!(
            kem.iter().collect::<HashSet<_>>().len(),
            500,
            "{backend:?}: Kyber key handed out twice"
        );
        assert_eq!(last_resorts, 500, "{backend:?}");
        assert_eq!(
            app.state
                .store
                .key_counts(ServiceId::Aci(bob.aci), DeviceId::PRIMARY)
                .await
                .unwrap()
                .ec,
            0
        );
    }
}

/// Regression (schemathesis): a repeated query parameter and an undecodable path segment were answered with
/// axum's plain-text rejections; they are 400 with the usual `{code, message}` body, and store nothing.
#[tokio::test]
async fn query_and_path_rejections_have_the_error_body() {
    let app = TestApp::new(Backend::Memory).await;
    let bob = app.seed("bob").await;
    let auth = bob.basic_auth(UsernameForm::Aci);
    let body = bob.set_keys_body(IdentityType::Aci, 1, 2, 2, app.rng.as_ref());
    let r = app
        .put_json("/v2/keys?identity=aci&identity=pni", &auth, &body)
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "invalid_query")
    );
    assert_eq!(r.headers["content-type"], "application/json");
    let r = app
        .get("/v2/keys?identity=aci&identity=aci", Some(&auth))
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "invalid_query")
    );
    // The refused upload stored nothing.
    assert_eq!(
        counts(&app, &auth, "aci").await,
        json!({"count": 0, "pqCount": 0})
    );
    let r = app.get("/v2/keys/%FF%FE/1", Some(&auth)).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "invalid_path")
    );
    assert_eq!(r.headers["content-type"], "application/json");
}

/// Regression (schemathesis): a JSON array was accepted where the body is an object, because serde's derived
/// structs also read a sequence of their fields. It is 400 `invalid_json` and stores nothing.
#[tokio::test]
async fn a_json_array_is_not_a_body() {
    let app = TestApp::new(Backend::Memory).await;
    let bob = app.seed("bob").await;
    let auth = bob.basic_auth(UsernameForm::Aci);
    let body = bob.set_keys_body(IdentityType::Aci, 1, 2, 2, app.rng.as_ref());
    // The same keys in field order: preKeys, signedPreKey, pqPreKeys, pqLastResortPreKey.
    let as_array = json!([
        body["preKeys"],
        body["signedPreKey"],
        body["pqPreKeys"],
        body["pqLastResortPreKey"]
    ]);
    let r = app.put_json("/v2/keys", &auth, &as_array).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "invalid_json")
    );
    assert_eq!(
        counts(&app, &auth, "aci").await,
        json!({"count": 0, "pqCount": 0})
    );
    // Whitespace before the object is still JSON.
    let r = app
        .send(
            Method::PUT,
            "/v2/keys",
            &[("authorization", &auth)],
            Some(&format!("\n  {body}")),
        )
        .await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        counts(&app, &auth, "aci").await,
        json!({"count": 2, "pqCount": 2})
    );
}
