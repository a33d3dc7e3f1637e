//! Contact gating over HTTP (API §6): policies, contact invites, the flood breaker, decisions, introductions,
//! grants, and the prekey gate, on every backend.

use std::time::Duration;

use axum::http::Method;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flatline_testkit::{SimClient, UsernameForm};
use serde_json::{Value, json};

use crate::support::{Backend, Response, TestApp};

const MIN: Duration = Duration::from_secs(60);

fn auth(c: &SimClient) -> String {
    c.basic_auth(UsernameForm::Aci)
}

async fn post(app: &TestApp, uri: &str, who: &SimClient, body: &Value) -> Response {
    app.send(
        Method::POST,
        uri,
        &[("authorization", &auth(who))],
        Some(&body.to_string()),
    )
    .await
}

async fn delete(app: &TestApp, uri: &str, who: &SimClient) -> Response {
    app.send(Method::DELETE, uri, &[("authorization", &auth(who))], None)
        .await
}

async fn get(app: &TestApp, uri: &str, who: &SimClient) -> Response {
    app.get(uri, Some(&auth(who))).await
}

async fn set_policy(app: &TestApp, who: &SimClient, body: Value) {
    let r = app
        .put_json("/v1/accounts/contact_policy", &auth(who), &body)
        .await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
}

async fn create_invite(app: &TestApp, who: &SimClient, body: Value) -> Value {
    let r = post(app, "/v1/contact_invites", who, &body).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

async fn redeem(app: &TestApp, who: &SimClient, code: &str) -> Response {
    post(
        app,
        "/v1/contact_invites/redeem",
        who,
        &json!({ "code": code }),
    )
    .await
}

/// Status of an authenticated fetch of `target`'s prekeys (ACI, all devices).
async fn fetch(app: &TestApp, who: &SimClient, target: &SimClient) -> u16 {
    get(app, &format!("/v2/keys/{}/*", target.aci), who)
        .await
        .status
        .as_u16()
}

async fn fetch_pni(app: &TestApp, who: &SimClient, target: &SimClient) -> u16 {
    get(app, &format!("/v2/keys/PNI:{}/1", target.pni), who)
        .await
        .status
        .as_u16()
}

fn assert_code(r: &Response, status: u16, code: &str) {
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (status, code.to_owned()),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

/// The scenario: friends over an hour keep access; a flood pauses the invite, quarantines the burst,
/// and Bob's bulk decision lets one in and keeps the rest out for good.
#[tokio::test]
async fn flood_scenario() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let bob = app.seed("bob").await;
        set_policy(&app, &bob, json!({"policy": "invite_only"})).await;
        assert_eq!(
            get(&app, "/v1/accounts/contact_policy", &bob).await.json(),
            json!({"policy": "invite_only", "introductions": "ask"})
        );
        let invite = create_invite(&app, &bob, json!({"maxUses": 100, "label": "friends"})).await;
        let code = invite["code"].as_str().unwrap().to_owned();
        let invite_id = invite["id"].as_str().unwrap().to_owned();
        assert_eq!(
            (
                &invite["maxUses"],
                &invite["uses"],
                &invite["state"],
                &invite["flood"],
                &invite["label"]
            ),
            (
                &json!(100),
                &json!(0),
                &json!("active"),
                &Value::Null,
                &json!("friends")
            )
        );

        // Three friends over an hour.
        let mut friends = vec![];
        for step in 0..3 {
            if step > 0 {
                app.clock.advance(25 * MIN);
            }
            let f = app.seed(&format!("friend{step}")).await;
            assert_eq!(
                fetch(&app, &f, &bob).await,
                403,
                "{backend:?}: before redeeming"
            );
            let r = redeem(&app, &f, &code).await;
            assert_eq!(r.status, 200, "{backend:?}");
            assert_eq!(
                r.json(),
                json!({"owner": bob.aci.to_string(), "state": "active"})
            );
            assert_eq!(fetch(&app, &f, &bob).await, 200, "{backend:?}");
            friends.push(f);
        }

        // Forty accounts within a minute.
        app.clock.advance(15 * MIN);
        let mut crowd = vec![];
        for n in 0..40 {
            crowd.push(app.seed(&format!("crowd{n}")).await);
        }
        let mut statuses = vec![];
        for c in &crowd {
            let r = redeem(&app, c, &code).await;
            statuses.push(r.status.as_u16());
            if r.status == 409 {
                assert_eq!(r.code(), "invite_paused");
            }
            app.clock.advance(Duration::from_secs(1));
        }
        assert_eq!(statuses[..5], [200; 5], "{backend:?}");
        assert!(
            statuses[5..].iter().all(|s| *s == 409),
            "{backend:?}: {statuses:?}"
        );
        let (burst, refused) = crowd.split_at(5);

        let listed = get(&app, "/v1/contact_invites", &bob).await.json();
        let inv = &listed["contactInvites"][0];
        assert_eq!((&inv["state"], &inv["uses"]), (&json!("paused"), &json!(8)));
        assert_eq!((&inv["code"], &inv["link"]), (&Value::Null, &Value::Null));
        let start = flatline_testkit::MockClock::DEFAULT_START.as_secs();
        let flood_start = start + 65 * 60;
        assert_eq!(
            inv["flood"],
            json!({"detectedAt": flood_start + 5, "since": flood_start, "quarantined": 5})
        );
        assert_eq!(inv["pausedUntil"], json!(flood_start + 5 + 86_400));

        for c in burst {
            assert_eq!(fetch(&app, c, &bob).await, 403, "{backend:?}");
            assert_code(
                &get(&app, &format!("/v2/keys/{}/*", bob.aci), c).await,
                403,
                "contact_not_allowed",
            );
            assert_eq!(fetch_pni(&app, c, &bob).await, 403, "{backend:?}");
        }
        for c in refused.iter().take(3) {
            assert_eq!(fetch(&app, c, &bob).await, 403, "{backend:?}");
        }
        for f in &friends {
            assert_eq!(fetch(&app, f, &bob).await, 200, "{backend:?}");
            assert_eq!(fetch_pni(&app, f, &bob).await, 200, "{backend:?}");
        }

        let requests = get(&app, "/v1/contacts/requests?state=quarantined", &bob)
            .await
            .json();
        let listed: Vec<String> = requests["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                assert_eq!(r["state"], "quarantined");
                assert_eq!(
                    r["via"],
                    json!({"kind": "invite", "inviteId": invite_id, "shortcodeId": null, "introducer": null})
                );
                r["aci"].as_str().unwrap().to_owned()
            })
            .collect();
        let mut want: Vec<String> = burst.iter().map(|c| c.aci.to_string()).collect();
        let (mut got, _) = (listed.clone(), want.sort());
        got.sort();
        assert_eq!(got, want, "{backend:?}");
        assert_eq!(
            get(&app, "/v1/contacts/requests?state=pending", &bob)
                .await
                .json(),
            json!({"requests": []})
        );

        // Bob approves one and denies the rest.
        let (approved, denied) = burst.split_first().unwrap();
        let r = post(
            &app,
            "/v1/contacts/requests/decide",
            &bob,
            &json!({
                "approve": [approved.aci.to_string()],
                "deny": denied.iter().map(|c| c.aci.to_string()).collect::<Vec<_>>(),
            }),
        )
        .await;
        assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
        assert!(r.body.is_empty());
        assert_eq!(fetch(&app, approved, &bob).await, 200, "{backend:?}");
        for c in denied {
            assert_code(
                &get(&app, &format!("/v2/keys/{}/*", bob.aci), c).await,
                403,
                "contact_not_allowed",
            );
        }
        assert!(
            get(&app, "/v1/contacts/requests", &bob).await.json()["requests"]
                .as_array()
                .unwrap()
                .is_empty()
        );

        // Bob resumes the invite: the denied cannot come back, a newcomer can.
        let r = post(
            &app,
            &format!("/v1/contact_invites/{invite_id}/resume"),
            &bob,
            &json!({}),
        )
        .await;
        assert_eq!(r.status, 204);
        for c in denied {
            assert_code(&redeem(&app, c, &code).await, 404, "invite_invalid");
            assert_eq!(fetch(&app, c, &bob).await, 403);
        }
        let r = redeem(&app, &refused[0], &code).await;
        assert_eq!(r.status, 200, "{backend:?}");
        assert_eq!(fetch(&app, &refused[0], &bob).await, 200);
        for f in &friends {
            assert_eq!(fetch(&app, f, &bob).await, 200, "{backend:?}");
        }
        // Bob always reaches his own keys.
        assert_eq!(fetch(&app, &bob, &bob).await, 200);
    }
}

/// A one-use contact invite raced by many redeemers over HTTP: exactly one grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_redemptions_of_one_use_invite() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let bob = app.seed("bob").await;
        set_policy(&app, &bob, json!({"policy": "invite_only"})).await;
        let code = create_invite(&app, &bob, json!({})).await["code"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut racers = vec![];
        for n in 0..12 {
            racers.push(app.seed(&format!("racer{n}")).await);
        }
        let results =
            futures_util::future::join_all(racers.iter().map(|r| redeem(&app, r, &code))).await;
        let ok = results.iter().filter(|r| r.status == 200).count();
        assert_eq!(ok, 1, "{backend:?}");
        assert!(
            results
                .iter()
                .filter(|r| r.status != 200)
                .all(|r| r.status == 404 && r.code() == "invite_invalid")
        );
        let grants = get(&app, "/v1/contacts/grants", &bob).await.json();
        assert_eq!(grants["grants"].as_array().unwrap().len(), 1, "{backend:?}");
        let invites = get(&app, "/v1/contact_invites", &bob).await.json();
        assert_eq!(
            (
                &invites["contactInvites"][0]["uses"],
                &invites["contactInvites"][0]["state"]
            ),
            (&json!(1), &json!("exhausted"))
        );
    }
}

/// Creation, listing, rotation and deletion of contact invites; refused input changes nothing.
#[tokio::test]
pub async fn contact_invite_lifecycle() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let bob = app.seed("bob").await;
        let alice = app.seed("alice").await;
        let carol = app.seed("carol").await;
        // No graph for open accounts.
        assert_code(
            &post(&app, "/v1/contact_invites", &bob, &json!({})).await,
            409,
            "contacts_not_invite_only",
        );
        set_policy(&app, &bob, json!({"policy": "invite_only"})).await;
        for (body, status) in [
            (json!({"maxUses": 0}), 422),
            (json!({"maxUses": 1001}), 422),
            (json!({"maxUses": -1}), 422),
            (json!({"expiresInSeconds": 0}), 422),
            (json!({"expiresInSeconds": 40_000_000}), 422),
            (json!({"label": "x".repeat(65)}), 422),
            (json!({"label": "a\nb"}), 422),
            (json!({"maxUses": "many"}), 400),
        ] {
            let r = post(&app, "/v1/contact_invites", &bob, &body).await;
            assert_eq!(r.status, status, "{backend:?} {body}");
        }
        let r = app
            .send(
                Method::POST,
                "/v1/contact_invites",
                &[("authorization", &auth(&bob))],
                Some("{not json"),
            )
            .await;
        assert_code(&r, 400, "invalid_json");
        assert_eq!(
            get(&app, "/v1/contact_invites", &bob).await.json(),
            json!({"contactInvites": []})
        );
        assert_eq!(app.get("/v1/contact_invites", None).await.status, 401);

        let inv = create_invite(&app, &bob, json!({"expiresInSeconds": 3600})).await;
        let code = inv["code"].as_str().unwrap().to_owned();
        let id = inv["id"].as_str().unwrap().to_owned();
        assert!(
            code.len() == 19
                && code.split('-').all(|g| g.len() == 4
                    && g.bytes()
                        .all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b))),
            "{code}"
        );
        assert_eq!(
            inv["link"],
            json!(format!("http://127.0.0.1:8080/contact#{code}"))
        );
        let now = flatline_core::time::Clock::now(app.clock.as_ref()).as_secs();
        assert_eq!(
            (
                &inv["maxUses"],
                &inv["expiresAt"],
                &inv["createdAt"],
                &inv["pausedUntil"]
            ),
            (&json!(1), &json!(now + 3600), &json!(now), &Value::Null)
        );
        let default_expiry = create_invite(&app, &bob, json!({"label": "spare"})).await;
        assert_eq!(default_expiry["expiresAt"], json!(now + 7 * 86_400));

        // Rotation: a new code, the old one dead.
        let r = post(
            &app,
            &format!("/v1/contact_invites/{id}/rotate"),
            &bob,
            &json!({}),
        )
        .await;
        assert_eq!(r.status, 200);
        let new_code = r.json()["code"].as_str().unwrap().to_owned();
        assert_ne!(new_code, code);
        assert_code(&redeem(&app, &alice, &code).await, 404, "invite_invalid");
        // Lower case, no hyphens, confusables: still the code.
        let sloppy = new_code
            .replace('-', "")
            .to_lowercase()
            .replace('0', "o")
            .replace('1', "l");
        assert_eq!(redeem(&app, &alice, &sloppy).await.status, 200);
        // Rotating keeps the grant.
        let r = post(
            &app,
            &format!("/v1/contact_invites/{id}/rotate"),
            &bob,
            &json!({}),
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["uses"], json!(1));
        assert_eq!(fetch(&app, &alice, &bob).await, 200);

        // Other accounts cannot touch Bob's invites.
        for path in [
            format!("/v1/contact_invites/{id}/rotate"),
            format!("/v1/contact_invites/{id}/resume"),
        ] {
            assert_code(
                &post(&app, &path, &carol, &json!({})).await,
                404,
                "not_found",
            );
        }
        assert_code(
            &delete(&app, &format!("/v1/contact_invites/{id}"), &carol).await,
            404,
            "not_found",
        );
        assert_code(
            &delete(&app, "/v1/contact_invites/not-an-id", &bob).await,
            404,
            "not_found",
        );
        let r = delete(&app, &format!("/v1/contact_invites/{id}"), &bob).await;
        assert_eq!(r.status, 204);
        assert_code(
            &delete(&app, &format!("/v1/contact_invites/{id}"), &bob).await,
            404,
            "not_found",
        );
        let listed = get(&app, "/v1/contact_invites", &bob).await.json();
        assert_eq!(listed["contactInvites"].as_array().unwrap().len(), 1);
        assert_eq!(listed["contactInvites"][0]["label"], "spare");
        // The grant outlives the invite.
        assert_eq!(fetch(&app, &alice, &bob).await, 200);

        // Expiry.
        let spare_code = default_expiry["code"].as_str().unwrap().to_owned();
        app.clock.advance(Duration::from_secs(7 * 86_400));
        assert_code(
            &redeem(&app, &carol, &spare_code).await,
            404,
            "invite_invalid",
        );
        assert_eq!(
            get(&app, "/v1/contact_invites", &bob).await.json()["contactInvites"][0]["state"],
            "expired"
        );
    }
}

/// Redemption refusals: no credentials, garbage, own invite, rate limit.
#[tokio::test]
pub async fn redeem_refusals() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let bob = app.seed("bob").await;
        let mallory = app.seed("mallory").await;
        set_policy(&app, &bob, json!({"policy": "invite_only"})).await;
        let code = create_invite(&app, &bob, json!({"maxUses": 5})).await["code"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = app
            .send(
                Method::POST,
                "/v1/contact_invites/redeem",
                &[],
                Some(&json!({ "code": code }).to_string()),
            )
            .await;
        assert_eq!(r.status, 401);
        assert_code(&redeem(&app, &bob, &code).await, 422, "validation_failed");
        assert_code(
            &post(&app, "/v1/contact_invites/redeem", &mallory, &json!({})).await,
            400,
            "invalid_json",
        );
        // Guessing: every miss looks the same, and the limiter stops it (20 per 3 min per account).
        let mut last = None;
        for n in 0..25 {
            let guess = format!("{:016}", n);
            last = Some(redeem(&app, &mallory, &guess).await);
            if last.as_ref().unwrap().status == 429 {
                break;
            }
            assert_code(last.as_ref().unwrap(), 404, "invite_invalid");
        }
        let last = last.unwrap();
        assert_eq!(last.status, 429, "{backend:?}");
        assert!(last.headers.get("retry-after").is_some());
        // Nothing was granted along the way.
        assert_eq!(
            get(&app, "/v1/contacts/grants", &bob).await.json(),
            json!({"grants": []})
        );
        assert_eq!(
            get(&app, "/v1/contact_invites", &bob).await.json()["contactInvites"][0]["uses"],
            0
        );
    }
}

/// Introductions under ask, auto and off; strangers cannot introduce.
#[tokio::test]
async fn introductions_follow_the_recipient_policy() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let bob = app.seed("bob").await;
        let alice = app.seed("alice").await;
        let carol = app.seed("carol").await;
        let dave = app.seed("dave").await;
        let intro = |by: &SimClient, introducee: &SimClient, recipient: &SimClient| {
            let body = json!({"introducee": introducee.aci.to_string(), "recipient": recipient.aci.to_string()});
            let by = auth(by);
            let app = &app;
            async move {
                app.send(
                    Method::POST,
                    "/v1/introductions",
                    &[("authorization", &by)],
                    Some(&body.to_string()),
                )
                .await
            }
        };
        set_policy(&app, &bob, json!({"policy": "invite_only"})).await;
        assert_code(
            &intro(&alice, &carol, &bob).await,
            403,
            "contact_not_allowed",
        );
        let r = app
            .put_json(
                &format!("/v1/contacts/grants/{}", alice.aci),
                &auth(&bob),
                &json!({}),
            )
            .await;
        assert_eq!(r.status, 204);
        let r = intro(&alice, &carol, &bob).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let now = flatline_core::time::Clock::now(app.clock.as_ref()).as_secs();
        assert_eq!(
            r.json(),
            json!({"recipient": bob.aci.to_string(), "introducee": carol.aci.to_string(), "createdAt": now})
        );
        let pending = get(&app, "/v1/contacts/requests?state=pending", &bob)
            .await
            .json();
        assert_eq!(
            pending,
            json!({"requests": [{
                "aci": carol.aci.to_string(),
                "state": "pending",
                "via": {"kind": "introduction", "inviteId": null, "shortcodeId": null, "introducer": alice.aci.to_string()},
                "createdAt": now,
            }]})
        );
        assert_eq!(fetch(&app, &carol, &bob).await, 403);
        // A pending contact cannot introduce further.
        assert_code(
            &intro(&carol, &dave, &bob).await,
            403,
            "contact_not_allowed",
        );
        let r = post(
            &app,
            "/v1/contacts/requests/decide",
            &bob,
            &json!({"approve": [carol.aci.to_string()]}),
        )
        .await;
        assert_eq!(r.status, 204);
        assert_eq!(fetch(&app, &carol, &bob).await, 200);

        set_policy(&app, &bob, json!({"introductions": "auto"})).await;
        assert_eq!(
            get(&app, "/v1/accounts/contact_policy", &bob).await.json(),
            json!({"policy": "invite_only", "introductions": "auto"})
        );
        assert_eq!(intro(&carol, &dave, &bob).await.status, 201);
        assert_eq!(fetch(&app, &dave, &bob).await, 200);

        set_policy(&app, &bob, json!({"introductions": "off"})).await;
        let erin = app.seed("erin").await;
        assert_code(&intro(&alice, &erin, &bob).await, 403, "introductions_off");
        assert_eq!(fetch(&app, &erin, &bob).await, 403);

        // Bad input.
        assert_code(&intro(&alice, &bob, &bob).await, 422, "validation_failed");
        let ghost = SimClient::new(app.rng.as_ref());
        assert_code(&intro(&alice, &ghost, &bob).await, 404, "not_found");
        let r = post(
            &app,
            "/v1/introductions",
            &alice,
            &json!({"introducee": "nope", "recipient": bob.aci.to_string()}),
        )
        .await;
        assert_code(&r, 400, "invalid_json");
    }
}

/// Direct grants, blocks, policy validation and switching back to open.
#[tokio::test]
pub async fn grants_blocks_and_policy_switch() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let bob = app.seed("bob").await;
        let alice = app.seed("alice").await;
        let carol = app.seed("carol").await;
        let grant_uri = |c: &SimClient| format!("/v1/contacts/grants/{}", c.aci);
        // Open accounts keep no graph.
        assert_code(
            &app.put_json(&grant_uri(&alice), &auth(&bob), &json!({}))
                .await,
            409,
            "contacts_not_invite_only",
        );
        for body in [
            json!({"policy": "closed"}),
            json!({"introductions": "always"}),
        ] {
            let r = app
                .put_json("/v1/accounts/contact_policy", &auth(&bob), &body)
                .await;
            assert_code(&r, 422, "validation_failed");
        }
        assert_eq!(
            get(&app, "/v1/accounts/contact_policy", &bob).await.json(),
            json!({"policy": "open", "introductions": "ask"})
        );
        assert_eq!(fetch(&app, &alice, &bob).await, 200);

        set_policy(
            &app,
            &bob,
            json!({"policy": "invite_only", "introductions": "off"}),
        )
        .await;
        assert_eq!(fetch(&app, &alice, &bob).await, 403);
        assert_eq!(
            app.put_json(&grant_uri(&alice), &auth(&bob), &json!({}))
                .await
                .status,
            204
        );
        assert_eq!(fetch(&app, &alice, &bob).await, 200);
        let now = flatline_core::time::Clock::now(app.clock.as_ref()).as_secs();
        assert_eq!(
            get(&app, "/v1/contacts/grants", &bob).await.json(),
            json!({"grants": [{
                "aci": alice.aci.to_string(),
                "state": "active",
                "via": {"kind": "direct", "inviteId": null, "shortcodeId": null, "introducer": null},
                "createdAt": now,
            }]})
        );
        assert_eq!(delete(&app, &grant_uri(&alice), &bob).await.status, 204);
        assert_eq!(fetch(&app, &alice, &bob).await, 403);
        assert_eq!(
            get(&app, "/v1/contacts/grants", &bob).await.json()["grants"][0]["state"],
            "denied"
        );
        // A blocked account cannot redeem Bob's invites.
        let code = create_invite(&app, &bob, json!({"maxUses": 3})).await["code"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_code(&redeem(&app, &alice, &code).await, 404, "invite_invalid");
        assert_eq!(redeem(&app, &carol, &code).await.status, 200);

        // Bad identifiers and unknown accounts.
        assert_code(
            &app.put_json("/v1/contacts/grants/nope", &auth(&bob), &json!({}))
                .await,
            400,
            "invalid_identifier",
        );
        let ghost = SimClient::new(app.rng.as_ref());
        assert_code(
            &app.put_json(&grant_uri(&ghost), &auth(&bob), &json!({}))
                .await,
            404,
            "not_found",
        );
        assert_code(
            &app.put_json(&grant_uri(&bob), &auth(&bob), &json!({}))
                .await,
            422,
            "validation_failed",
        );
        assert_code(
            &app.get("/v1/contacts/requests?state=denied", Some(&auth(&bob)))
                .await,
            422,
            "validation_failed",
        );
        let r = post(
            &app,
            "/v1/contacts/requests/decide",
            &bob,
            &json!({"approve": [carol.aci.to_string()], "deny": [carol.aci.to_string()]}),
        )
        .await;
        assert_code(&r, 422, "validation_failed");
        assert_eq!(
            fetch(&app, &carol, &bob).await,
            200,
            "refused decision changed nothing"
        );

        // Back to open: the graph is deleted and everyone may fetch again.
        set_policy(&app, &bob, json!({"policy": "open"})).await;
        assert_eq!(
            get(&app, "/v1/contacts/grants", &bob).await.json(),
            json!({"grants": []})
        );
        assert_eq!(
            get(&app, "/v1/contact_invites", &bob).await.json(),
            json!({"contactInvites": []})
        );
        assert_eq!(fetch(&app, &alice, &bob).await, 200);
        assert_code(&redeem(&app, &alice, &code).await, 404, "invite_invalid");
    }
}

/// Unidentified fetches of invite_only accounts need the real access key; unrestricted access is ignored.
#[tokio::test]
pub async fn unidentified_access_of_invite_only_accounts() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let bob = app.seed("bob").await;
        let uak = [7u8; 16];
        let attrs = json!({"registrationId": 11, "pniRegistrationId": 12,
            "unidentifiedAccessKey": STANDARD.encode(uak), "unrestrictedUnidentifiedAccess": true});
        assert_eq!(
            app.put_json("/v1/accounts/attributes", &auth(&bob), &attrs)
                .await
                .status,
            204
        );
        let uri = format!("/v2/keys/{}/1", bob.aci);
        let with_key = |k: [u8; 16]| {
            let uri = uri.clone();
            let app = &app;
            async move {
                app.send(
                    Method::GET,
                    &uri,
                    &[("unidentified-access-key", &STANDARD.encode(k))],
                    None,
                )
                .await
                .status
            }
        };
        assert_eq!(with_key([9; 16]).await, 200, "open + unrestricted");
        set_policy(&app, &bob, json!({"policy": "invite_only"})).await;
        assert_eq!(
            with_key([9; 16]).await,
            401,
            "{backend:?}: unrestricted ignored"
        );
        assert_eq!(with_key(uak).await, 200, "{backend:?}: the real key works");
    }
}

/// Deleting an account removes the grants it gave and holds, and its contact invites.
#[tokio::test]
async fn account_deletion_removes_the_graph() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let bob = app.seed("bob").await;
        let alice = app.seed("alice").await;
        set_policy(&app, &bob, json!({"policy": "invite_only"})).await;
        set_policy(&app, &alice, json!({"policy": "invite_only"})).await;
        for (owner, grantee) in [(&bob, &alice), (&alice, &bob)] {
            let r = app
                .put_json(
                    &format!("/v1/contacts/grants/{}", grantee.aci),
                    &auth(owner),
                    &json!({}),
                )
                .await;
            assert_eq!(r.status, 204);
        }
        let code = create_invite(&app, &bob, json!({})).await["code"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(delete(&app, "/v1/accounts/me", &bob).await.status, 204);
        assert_eq!(
            get(&app, "/v1/contacts/grants", &alice).await.json(),
            json!({"grants": []})
        );
        assert!(
            app.state
                .store
                .contact_grants(bob.aci)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            app.state
                .store
                .contact_invites(bob.aci)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(app.state.store.contact_policy(bob.aci).await.unwrap(), None);
        assert_code(&redeem(&app, &alice, &code).await, 404, "invite_invalid");
    }
}

/// Regression (schemathesis): `["invite_only", "off"]` used to set the policy (serde reads a struct from a
/// sequence of its fields). A body that is not a JSON object is 400 `invalid_json` and changes nothing.
#[tokio::test]
async fn policy_body_must_be_an_object() {
    let app = TestApp::new(Backend::Memory).await;
    let bob = app.seed("bob").await;
    let r = app
        .put_json(
            "/v1/accounts/contact_policy",
            &auth(&bob),
            &json!(["invite_only", "off"]),
        )
        .await;
    assert_code(&r, 400, "invalid_json");
    assert_eq!(
        get(&app, "/v1/accounts/contact_policy", &bob).await.json(),
        json!({"policy": "open", "introductions": "ask"})
    );
    // A repeated query parameter and an undecodable path segment get the error body too.
    assert_code(
        &get(
            &app,
            "/v1/contacts/requests?state=pending&state=pending",
            &bob,
        )
        .await,
        400,
        "invalid_query",
    );
    assert_code(
        &delete(&app, "/v1/contact_invites/%C3%28", &bob).await,
        400,
        "invalid_path",
    );
}

/// The cascade (API §6/§15): introducer X introduces three people to Alice (two under `auto`, active, one
/// under `ask`, pending); two of them and a contact who came through an invite send Alice identified messages on
/// both her devices. One decide call denying "everything through X" ends all three grants and deletes the two
/// introducees' queued messages from both devices, while the invite contact's grant and message stay. Bad routes
/// are 422 and change nothing. On every backend.
#[tokio::test]
async fn denying_everything_through_an_introducer_ends_the_grants_and_their_queued_messages() {
    use crate::multi_recipient::{fetch as fetch_queue, seed};
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let alice = seed(&app, "alice@example.org", &[(1, 11), (2, 12)], None, false).await;
        let x = app.seed("x").await;
        let (p1, p2, p3) = (
            app.seed("p1").await,
            app.seed("p2").await,
            app.seed("p3").await,
        );
        let o = app.seed("o").await;
        set_policy(
            &app,
            &alice,
            json!({"policy": "invite_only", "introductions": "auto"}),
        )
        .await;
        let r = app
            .put_json(
                &format!("/v1/contacts/grants/{}", x.aci),
                &auth(&alice),
                &json!({}),
            )
            .await;
        assert_eq!(r.status, 204);
        let intro = |introducee: &SimClient| json!({"introducee": introducee.aci.to_string(), "recipient": alice.aci.to_string()});
        for p in [&p1, &p2] {
            assert_eq!(
                post(&app, "/v1/introductions", &x, &intro(p)).await.status,
                201
            );
        }
        set_policy(&app, &alice, json!({"introductions": "ask"})).await;
        assert_eq!(
            post(&app, "/v1/introductions", &x, &intro(&p3))
                .await
                .status,
            201
        );
        let invite = create_invite(&app, &alice, json!({})).await;
        let r = redeem(&app, &o, invite["code"].as_str().unwrap()).await;
        assert_eq!(r.json()["state"], "active");
        // And one contact through a shortcode.
        let sc = app.seed("sc").await;
        let code = post(&app, "/v1/contact_shortcodes", &alice, &json!({})).await;
        assert_eq!(code.status, 201, "{}", String::from_utf8_lossy(&code.body));
        let code = code.json();
        let r = post(
            &app,
            "/v1/contact_shortcodes/redeem",
            &sc,
            &json!({"shortcode": code["shortcode"]}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

        // p1, p2 and o message Alice on both devices.
        let to_alice = format!("/v1/messages/{}", alice.aci);
        for (sender, text) in [
            (&p1, "from p1"),
            (&p2, "from p2"),
            (&o, "from o"),
            (&sc, "from sc"),
        ] {
            let content = STANDARD.encode(text);
            let body = json!({"messages": [
                {"type": 1, "destinationDeviceId": 1, "destinationRegistrationId": 11, "content": content},
                {"type": 1, "destinationDeviceId": 2, "destinationRegistrationId": 12, "content": content},
            ], "timestamp": 1_700_000_000_123u64});
            let r = app
                .send(
                    Method::PUT,
                    &to_alice,
                    &[("authorization", &auth(sender))],
                    Some(&body.to_string()),
                )
                .await;
            assert_eq!(
                r.status,
                200,
                "{backend:?} {}",
                String::from_utf8_lossy(&r.body)
            );
        }
        for d in [1, 2] {
            assert_eq!(
                fetch_queue(&app, &alice, d, false).await.len(),
                4,
                "{backend:?}"
            );
        }
        let state = |m: &std::collections::BTreeMap<String, String>, c: &SimClient| {
            m[&c.aci.to_string()].clone()
        };

        // Bad routes: 422, nothing changes.
        let before = grant_states(&app, &alice).await;
        for bad in [
            json!({"denyAllVia": [{"kind": "direct"}]}),
            json!({"denyAllVia": [{"kind": "introduction"}]}),
            json!({"denyAllVia": [{"kind": "introduction", "introducer": x.aci.to_string(),
                                   "inviteId": invite["id"]}]}),
            json!({"denyAllVia": [{"kind": "introduction", "introducer": x.aci.to_string()}, {"kind": "all"}]}),
        ] {
            let r = post(&app, "/v1/contacts/requests/decide", &alice, &bad).await;
            assert_code(&r, 422, "validation_failed");
        }
        let r = post(
            &app,
            "/v1/contacts/requests/decide",
            &alice,
            &json!({"denyAllVia": [{"kind": "invite", "inviteId": "not-a-uuid"}]}),
        )
        .await;
        assert_code(&r, 400, "invalid_json");
        assert_eq!(grant_states(&app, &alice).await, before);
        for d in [1, 2] {
            assert_eq!(fetch_queue(&app, &alice, d, false).await.len(), 4);
        }

        // Everything through X, in the shape of a grant's `via`.
        let r = post(
            &app,
            "/v1/contacts/requests/decide",
            &alice,
            &json!({"denyAllVia": [{"kind": "introduction", "inviteId": null, "shortcodeId": null,
                                    "introducer": x.aci.to_string()}]}),
        )
        .await;
        assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
        let after = grant_states(&app, &alice).await;
        for p in [&p1, &p2, &p3] {
            assert_eq!(state(&after, p), "denied", "{backend:?}");
        }
        for other in [&o, &sc, &x] {
            assert_eq!(state(&after, other), "active");
        }
        for d in [1, 2] {
            let queue = fetch_queue(&app, &alice, d, false).await;
            assert_eq!(queue.len(), 2, "{backend:?} device {d}: {queue:?}");
            assert_eq!(queue[0]["sourceUuid"], o.aci.to_string());
            assert_eq!(queue[0]["content"], STANDARD.encode("from o"));
            assert_eq!(queue[1]["sourceUuid"], sc.aci.to_string());
        }
        // And they cannot write again.
        let body = json!({"messages": [
            {"type": 1, "destinationDeviceId": 1, "destinationRegistrationId": 11, "content": "AAAA"},
            {"type": 1, "destinationDeviceId": 2, "destinationRegistrationId": 12, "content": "AAAA"},
        ]});
        let r = app
            .send(
                Method::PUT,
                &to_alice,
                &[("authorization", &auth(&p1))],
                Some(&body.to_string()),
            )
            .await;
        assert_code(&r, 403, "contact_not_allowed");

        // The invite's and the shortcode's routes together, as GET /v1/contacts/grants shows them.
        let vias: Vec<Value> = get(&app, "/v1/contacts/grants", &alice).await.json()["grants"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| {
                [o.aci.to_string(), sc.aci.to_string()]
                    .contains(&g["aci"].as_str().unwrap().to_owned())
            })
            .map(|g| g["via"].clone())
            .collect();
        assert_eq!(vias.len(), 2);
        let r = post(
            &app,
            "/v1/contacts/requests/decide",
            &alice,
            &json!({"denyAllVia": vias}),
        )
        .await;
        assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
        let after = grant_states(&app, &alice).await;
        assert_eq!(state(&after, &o), "denied");
        assert_eq!(state(&after, &sc), "denied");
        assert_eq!(state(&after, &x), "active");
        for d in [1, 2] {
            assert!(
                fetch_queue(&app, &alice, d, false).await.is_empty(),
                "{backend:?}"
            );
        }
    }
}

/// `aci → state` of every grant `owner` gave.
async fn grant_states(
    app: &TestApp,
    owner: &SimClient,
) -> std::collections::BTreeMap<String, String> {
    let list = get(app, "/v1/contacts/grants", owner).await.json();
    list["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["aci"].as_str().unwrap().to_owned(),
                g["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The operator's view of a flood (`flatline-server accounts floods <ACI>`): each contact invite with its uses,
/// pause and flood state, then the account's grants by state.
#[tokio::test]
async fn the_operator_cli_shows_an_accounts_floods() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("floods-cli")
        .join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("flatline.db").display());
    let store = flatline_server::store::sqlite::SqliteStore::open(&url, 2, 5000)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let clock = std::sync::Arc::new(flatline_testkit::MockClock::default());
    let rng = std::sync::Arc::new(flatline_testkit::SeededRng::new(9));
    let mut config = flatline_server::config::Config::default();
    config.database.url = url;
    let app = TestApp::assemble(
        config.clone(),
        std::sync::Arc::new(store),
        clock,
        rng,
        vec![],
    )
    .await;
    let bob = app.seed("bob").await;
    set_policy(&app, &bob, json!({"policy": "invite_only"})).await;
    let invite = create_invite(&app, &bob, json!({"maxUses": 100, "label": "friends"})).await;
    let code = invite["code"].as_str().unwrap().to_owned();
    let mut statuses = vec![];
    for n in 0..12 {
        let c = app.seed(&format!("crowd{n}")).await;
        statuses.push(redeem(&app, &c, &code).await.status.as_u16());
        app.clock.advance(Duration::from_secs(1));
    }
    assert!(statuses.contains(&409), "the breaker tripped: {statuses:?}");

    let path = dir.join("config.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flatline-server"))
        .env_clear()
        .arg("--config")
        .arg(&path)
        .args(["accounts", "floods", &bob.aci.to_string()])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let fields: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(fields[0], invite["id"].as_str().unwrap(), "{stdout}");
    assert_eq!(fields[1], "friends");
    let granted = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(fields[2], format!("{granted}/100"));
    assert_ne!(fields[3], "-", "paused: {stdout}");
    assert_ne!(fields[4], "-", "flood detected: {stdout}");
    let quarantined: u32 = fields[6].parse().unwrap();
    assert!(quarantined > 0, "{stdout}");
    assert!(
        lines[1].starts_with("grants: ")
            && lines[1].contains(&format!("quarantined {quarantined}")),
        "{stdout}"
    );
}
