//! `Group-Send-Token` on single-recipient sends (`PUT /v1/messages/{destination}`, M§2.1 step 4) and on the
//! unversioned profile read (`GET /v1/profile/{serviceId}`, M§4), with tokens npm libsignal made from group send
//! endorsements issued with the instance's own zkgroup params (`zk_group_send.mjs`, as the multi-recipient test).
//!
//! Signal-Server's rules: a valid token for exactly the destination → 200 (and it passes invite_only gating, API.md
//! §10); a token for another member set, or expired → 401; a header that does not parse → 401
//! (`GroupSendTokenHeader`); a token beside an access key → 400; on sends also beside Basic auth or on a story →
//! 400; a valid token for a missing account → 404.

use std::path::Path;
use std::time::Duration;

use axum::http::Method;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flatline_core::ids::{Aci, ServiceId};
use flatline_core::time::Clock;
use flatline_testkit::SimClient;
use serde_json::{Value, json};

use crate::multi_recipient::{assert_status, auth, fetch, seed};
use crate::support::{Response, TestApp};
use crate::zk::{DAY, app_with_trust, run_script, today};

/// A token that parses (version 0, a 16-byte raw token, an expiration) but verifies for nobody.
pub(crate) fn well_formed_token() -> String {
    let mut bytes = vec![0u8];
    bytes.extend_from_slice(&16u64.to_le_bytes());
    bytes.extend_from_slice(&[7u8; 16]);
    bytes.extend_from_slice(&(2 * DAY).to_le_bytes());
    STANDARD.encode(bytes)
}

/// A Group-Send-Token libsignal made for a group of `sender` and `recipients`, covering `recipients`.
fn token(
    app: &TestApp,
    dir: &Path,
    sender: ServiceId,
    recipients: &[ServiceId],
    exp: u64,
) -> String {
    let params = &app.state.trust.as_ref().unwrap().zk().server;
    let now = u64::try_from(app.clock.now().as_secs()).unwrap();
    let mut members = vec![sender.to_string()];
    members.extend(recipients.iter().map(ToString::to_string));
    let out = run_script(
        dir,
        "zk_group_send.mjs",
        &json!({
            "serverSecretParams": STANDARD.encode(params.to_bytes()),
            "members": members,
            "expiration": exp,
            "now": now,
        }),
    );
    assert_eq!(out["ok"], true, "{out}");
    out["token"].as_str().unwrap().to_owned()
}

fn sealed_body(reg: u16) -> Value {
    json!({
        "messages": [{"type": 6, "destinationDeviceId": 1, "destinationRegistrationId": reg, "content": "c2VhbGVk"}],
        "online": false,
        "urgent": true,
        "timestamp": 1_700_000_000_123_i64,
    })
}

async fn put(
    app: &TestApp,
    dest: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Response {
    app.send(
        Method::PUT,
        &format!("/v1/messages/{dest}{query}"),
        headers,
        Some(&body.to_string()),
    )
    .await
}

async fn get_profile(app: &TestApp, target: &str, headers: &[(&str, &str)]) -> Response {
    app.send(Method::GET, &format!("/v1/profile/{target}"), headers, None)
        .await
}

async fn make_invite_only(app: &TestApp, c: &SimClient) {
    let a = auth(c, 1);
    let r = app
        .send(
            Method::PUT,
            "/v1/accounts/contact_policy",
            &[("authorization", a.as_str())],
            Some(r#"{"policy":"invite_only","introductions":"ask"}"#),
        )
        .await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test]
async fn a_group_send_token_authorizes_a_sealed_send_to_exactly_its_member() {
    let Some(dir) = crate::sealed::libsignal_dir() else {
        return;
    };
    let app = app_with_trust().await;
    // Bob is invite_only with no access key: only the token can open a sealed send to him.
    let bob = seed(&app, "bob@example.org", &[(1, 11)], None, false).await;
    let carol = seed(&app, "carol@example.org", &[(1, 21)], Some([3; 16]), false).await;
    make_invite_only(&app, &bob).await;
    let sender = ServiceId::Aci(Aci::random(app.rng.as_ref()));
    let (b, c) = (ServiceId::Aci(bob.aci), ServiceId::Aci(carol.aci));
    let exp = today(&app) + DAY;
    let for_bob = token(&app, &dir, sender, &[b], exp);
    let for_bob_and_carol = token(&app, &dir, sender, &[b, c], exp);
    let bob_id = b.to_string();

    // Valid for exactly Bob: 200, queued for his device, as a sealed envelope without a source.
    let r = put(
        &app,
        &bob_id,
        "",
        &[("group-send-token", &for_bob)],
        &sealed_body(11),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), json!({"needsSync": false}));
    let queued = fetch(&app, &bob, 1, false).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0]["type"], 6);
    assert_eq!(queued[0]["content"], "c2VhbGVk");
    assert_eq!(queued[0]["sourceUuid"], Value::Null);

    // The token of another member set (Bob and Carol), or Bob's token used for Carol: 401, nothing stored.
    let r = put(
        &app,
        &bob_id,
        "",
        &[("group-send-token", &for_bob_and_carol)],
        &sealed_body(11),
    )
    .await;
    assert_status(&r, 401, "unauthorized");
    let r = put(
        &app,
        &c.to_string(),
        "",
        &[("group-send-token", &for_bob)],
        &sealed_body(21),
    )
    .await;
    assert_status(&r, 401, "unauthorized");
    // A header that does not parse (not base64, not a token): 401.
    for bad in ["AAAA", "!!not base64!!", ""] {
        let r = put(
            &app,
            &bob_id,
            "",
            &[("group-send-token", bad)],
            &sealed_body(11),
        )
        .await;
        assert_status(&r, 401, "unauthorized");
    }
    // Beside an access key, beside Basic auth, or on a story: 400, even with a valid token.
    let key = STANDARD.encode([3u8; 16]);
    let carol_auth = auth(&carol, 1);
    for (query, other) in [
        ("", ("unidentified-access-key", key.as_str())),
        ("", ("authorization", carol_auth.as_str())),
    ] {
        let r = put(
            &app,
            &bob_id,
            query,
            &[("group-send-token", &for_bob), other],
            &sealed_body(11),
        )
        .await;
        assert_status(&r, 400, "ambiguous_credentials");
    }
    let r = put(
        &app,
        &bob_id,
        "?story=true",
        &[("group-send-token", &for_bob)],
        &sealed_body(11),
    )
    .await;
    assert_status(&r, 400, "ambiguous_credentials");
    assert_eq!(fetch(&app, &bob, 1, true).await.len(), 1);
    assert!(fetch(&app, &carol, 1, true).await.is_empty());

    // A valid token for an account that does not exist: 404 (verified before the lookup).
    let nobody = ServiceId::Aci(Aci::random(app.rng.as_ref()));
    let for_nobody = token(&app, &dir, sender, &[nobody], exp);
    let r = put(
        &app,
        &nobody.to_string(),
        "",
        &[("group-send-token", &for_nobody)],
        &sealed_body(1),
    )
    .await;
    assert_status(&r, 404, "not_found");
    // ... and an invalid one for it: 401, no existence oracle.
    let r = put(
        &app,
        &nobody.to_string(),
        "",
        &[("group-send-token", &for_bob)],
        &sealed_body(1),
    )
    .await;
    assert_status(&r, 401, "unauthorized");

    // Expired: the server's clock past the token's expiration → 401, nothing more stored.
    app.clock.advance(Duration::from_secs(2 * DAY));
    let r = put(
        &app,
        &bob_id,
        "",
        &[("group-send-token", &for_bob)],
        &sealed_body(11),
    )
    .await;
    assert_status(&r, 401, "unauthorized");
    assert_eq!(fetch(&app, &bob, 1, false).await.len(), 1);
}

#[tokio::test]
async fn a_group_send_token_reaches_a_pni() {
    let Some(dir) = crate::sealed::libsignal_dir() else {
        return;
    };
    let app = app_with_trust().await;
    let bob = seed(&app, "bob@example.org", &[(1, 11)], None, false).await;
    let account = app.state.store.account(bob.aci).await.unwrap().unwrap();
    let pni_reg = account.devices[0].settings.pni_registration_id;
    let sender = ServiceId::Aci(Aci::random(app.rng.as_ref()));
    let pni = ServiceId::Pni(bob.pni);
    let exp = today(&app) + DAY;
    let for_pni = token(&app, &dir, sender, &[pni], exp);
    let for_aci = token(&app, &dir, sender, &[ServiceId::Aci(bob.aci)], exp);
    let r = put(
        &app,
        &pni.to_string(),
        "",
        &[("group-send-token", &for_aci)],
        &sealed_body(pni_reg),
    )
    .await;
    assert_status(&r, 401, "unauthorized");
    let r = put(
        &app,
        &pni.to_string(),
        "",
        &[("group-send-token", &for_pni)],
        &sealed_body(pni_reg),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let queued = fetch(&app, &bob, 1, false).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0]["destinationUuid"], pni.to_string());
}

#[tokio::test]
async fn a_group_send_token_opens_the_unversioned_profile_of_exactly_its_member() {
    let Some(dir) = crate::sealed::libsignal_dir() else {
        return;
    };
    let app = app_with_trust().await;
    let bob = seed(&app, "bob@example.org", &[(1, 11)], Some([5; 16]), false).await;
    let carol = seed(&app, "carol@example.org", &[(1, 21)], Some([3; 16]), false).await;
    make_invite_only(&app, &bob).await;
    let sender = ServiceId::Aci(Aci::random(app.rng.as_ref()));
    let (b, c, bp) = (
        ServiceId::Aci(bob.aci),
        ServiceId::Aci(carol.aci),
        ServiceId::Pni(bob.pni),
    );
    let exp = today(&app) + DAY;
    let for_bob = token(&app, &dir, sender, &[b], exp);
    let for_bob_and_carol = token(&app, &dir, sender, &[b, c], exp);
    let for_bob_pni = token(&app, &dir, sender, &[bp], exp);
    let bob_id = b.to_string();

    // Exactly Bob: 200 with his base profile (an invite_only account too).
    let r = get_profile(&app, &bob_id, &[("group-send-token", &for_bob)]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert_eq!(body["uuid"], bob_id);
    let account = app.state.store.account(bob.aci).await.unwrap().unwrap();
    assert_eq!(
        body["identityKey"],
        STANDARD.encode(&account.aci_identity_key)
    );
    assert!(body["unidentifiedAccess"].is_string(), "{body}");
    // His PNI with a token for the PNI: the PNI identity, no checksum.
    let r = get_profile(&app, &bp.to_string(), &[("group-send-token", &for_bob_pni)]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["uuid"], bp.to_string());
    assert_eq!(
        r.json()["identityKey"],
        STANDARD.encode(&account.pni_identity_key)
    );
    assert_eq!(r.json()["unidentifiedAccess"], Value::Null);

    // Another member set, another target, the ACI token for the PNI: 401.
    for (target, t) in [
        (bob_id.as_str(), for_bob_and_carol.as_str()),
        (&c.to_string(), for_bob.as_str()),
        (&bp.to_string(), for_bob.as_str()),
    ] {
        assert_status(
            &get_profile(&app, target, &[("group-send-token", t)]).await,
            401,
            "unauthorized",
        );
    }
    // Does not parse: 401.
    for bad in ["AAAA", "%%%", ""] {
        assert_status(
            &get_profile(&app, &bob_id, &[("group-send-token", bad)]).await,
            401,
            "unauthorized",
        );
    }
    // Beside the (right) access key: 400.
    let key = STANDARD.encode([5u8; 16]);
    let r = get_profile(
        &app,
        &bob_id,
        &[
            ("group-send-token", &for_bob),
            ("unidentified-access-key", &key),
        ],
    )
    .await;
    assert_status(&r, 400, "ambiguous_credentials");
    // Beside Basic auth the token decides, as Signal-Server does: valid → 200, for others → 401.
    let carol_auth = auth(&carol, 1);
    let r = get_profile(
        &app,
        &bob_id,
        &[
            ("group-send-token", &for_bob),
            ("authorization", &carol_auth),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = get_profile(
        &app,
        &bob_id,
        &[
            ("group-send-token", &for_bob_and_carol),
            ("authorization", &carol_auth),
        ],
    )
    .await;
    assert_status(&r, 401, "unauthorized");

    // A valid token for a missing account: 404; an invalid one for it: 401.
    let nobody = ServiceId::Aci(Aci::random(app.rng.as_ref()));
    let for_nobody = token(&app, &dir, sender, &[nobody], exp);
    let r = get_profile(
        &app,
        &nobody.to_string(),
        &[("group-send-token", &for_nobody)],
    )
    .await;
    assert_status(&r, 404, "not_found");
    let r = get_profile(&app, &nobody.to_string(), &[("group-send-token", &for_bob)]).await;
    assert_status(&r, 401, "unauthorized");

    // Expired: 401.
    app.clock.advance(Duration::from_secs(2 * DAY));
    assert_status(
        &get_profile(&app, &bob_id, &[("group-send-token", &for_bob)]).await,
        401,
        "unauthorized",
    );
}
