//! Registration invites over HTTP (API §5) on every backend: the user API and its refusals, quotas with the mock
//! clock, tree and chain limits built through real registrations (fake IdP), the validity endpoint and its rate
//! limits, the landing page, and codes never appearing in list responses or logs.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Method;
use flatline_core::invites::{InviteCode, InviteId, InviteOwner, NewInvite};
use flatline_core::time::Clock;
use flatline_server::config::{Config, LimiterConfig};
use flatline_testkit::fake_idp::FakeIdp;
use flatline_testkit::{SimClient, UsernameForm};
use serde_json::{Value, json};

use crate::support::{Backend, REDIRECT, Response, TestApp};

const DAY: Duration = Duration::from_secs(86_400);

fn auth(c: &SimClient) -> String {
    c.basic_auth(UsernameForm::Aci)
}

async fn post(app: &TestApp, uri: &str, auth: Option<&str>, body: &Value) -> Response {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
    app.send(Method::POST, uri, &headers, Some(&body.to_string()))
        .await
}

async fn create(app: &TestApp, c: &SimClient, body: Value) -> Response {
    post(app, "/v1/invites", Some(&auth(c)), &body).await
}

async fn list(app: &TestApp, c: &SimClient) -> Vec<Value> {
    let r = app.get("/v1/invites", Some(&auth(c))).await;
    assert_eq!(r.status, 200);
    r.json()["invites"].as_array().unwrap().clone()
}

/// Accounts may invite from day 0 and earn one more invite per day (tests advance the clock to earn several).
fn young_ok(c: &mut Config) {
    c.invites.min_account_age_days = 0;
    c.invites.quota_per_days = 1;
    c.invites.quota_max = 100;
}

fn status(r: &Response) -> (u16, String) {
    (r.status.as_u16(), r.code())
}

#[tokio::test]
pub async fn create_list_and_revoke() {
    for backend in Backend::ALL {
        let mut config = Config::default();
        young_ok(&mut config);
        let app = TestApp::with_config(backend, config).await;
        let alice = app.seed("alice").await;
        let bob = app.seed("bob").await;
        app.clock.advance(10 * DAY);
        let now = app.clock.now().as_secs();

        let r = create(
            &app,
            &alice,
            json!({"maxUses": 2, "expiresInSeconds": 3600, "note": "for Carol"}),
        )
        .await;
        assert_eq!(
            r.status,
            201,
            "{backend:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let j = r.json();
        let code = j["code"].as_str().unwrap().to_owned();
        let parsed = InviteCode::parse(&code).unwrap();
        assert_eq!(
            j["link"],
            json!(format!("http://127.0.0.1:8080/invite#{code}"))
        );
        assert_eq!(
            (&j["maxUses"], &j["uses"], &j["pending"], &j["state"]),
            (&json!(2), &json!(0), &json!(0), &json!("active"))
        );
        assert_eq!(
            (j["createdAt"].as_i64(), j["expiresAt"].as_i64()),
            (Some(now), Some(now + 3600))
        );
        let id: InviteId = serde_json::from_value(j["id"].clone()).unwrap();
        // Only the hash is stored.
        let stored = app
            .state
            .store
            .invite(id, app.clock.now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.code_hash, parsed.hash());
        assert_eq!(stored.owner, InviteOwner::Account(alice.aci));

        // Defaults: one use, seven days.
        let r = create(&app, &alice, json!({})).await;
        assert_eq!(r.status, 201);
        assert_eq!(
            (r.json()["maxUses"].as_u64(), r.json()["expiresAt"].as_i64()),
            (Some(1), Some(now + 7 * 86_400))
        );

        let r = app.get("/v1/invites", Some(&auth(&alice))).await;
        let text = String::from_utf8_lossy(&r.body).into_owned();
        assert!(
            !text.contains(&code) && !text.contains(&code.replace('-', "")),
            "code leaked in list"
        );
        let mine = r.json()["invites"].as_array().unwrap().clone();
        assert_eq!(mine.len(), 2);
        assert!(
            mine.iter()
                .all(|i| i.get("code").is_none() && i.get("link").is_none())
        );
        assert_eq!(mine[1]["note"], json!("for Carol"));
        assert!(list(&app, &bob).await.is_empty());

        // Another account's invite is not found; so is garbage.
        let uri = format!("/v1/invites/{}", id.0);
        let r = app
            .send(
                Method::DELETE,
                &uri,
                &[("authorization", &auth(&bob))],
                None,
            )
            .await;
        assert_eq!(status(&r), (404, "not_found".into()));
        let r = app
            .send(
                Method::DELETE,
                "/v1/invites/nope",
                &[("authorization", &auth(&alice))],
                None,
            )
            .await;
        assert_eq!(r.status, 404);
        assert!(
            app.state
                .store
                .invite(id, app.clock.now())
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_none()
        );

        let r = app
            .send(
                Method::DELETE,
                &uri,
                &[("authorization", &auth(&alice))],
                None,
            )
            .await;
        assert_eq!(r.status, 204);
        let r = app
            .send(
                Method::DELETE,
                &uri,
                &[("authorization", &auth(&alice))],
                None,
            )
            .await;
        assert_eq!(r.status, 204, "revoking twice is fine");
        let mine = list(&app, &alice).await;
        let revoked = mine.iter().find(|i| i["id"] == json!(id.0)).unwrap();
        assert_eq!(revoked["state"], json!("revoked"));
        assert_eq!(revoked["revokedAt"].as_i64(), Some(now));

        // Unauthenticated.
        assert_eq!(
            post(&app, "/v1/invites", None, &json!({})).await.status,
            401
        );
        assert_eq!(app.get("/v1/invites", None).await.status, 401);
    }
}

#[tokio::test]
pub async fn bad_requests_change_nothing() {
    for backend in Backend::ALL {
        let mut config = Config::default();
        young_ok(&mut config);
        let app = TestApp::with_config(backend, config).await;
        let alice = app.seed("alice").await;
        for body in [
            json!({"maxUses": 0}),
            json!({"maxUses": 11}),
            json!({"expiresInSeconds": 0}),
            json!({"expiresInSeconds": 30 * 86_400 + 1}),
            json!({"note": "x".repeat(201)}),
            json!({"note": "line\nbreak"}),
        ] {
            let r = create(&app, &alice, body.clone()).await;
            assert_eq!(
                status(&r),
                (422, "validation_failed".into()),
                "{backend:?} {body}"
            );
        }
        for raw in ["{", r#"{"maxUses": "two"}"#, r#"{"maxUses": -1}"#] {
            let r = app
                .send(
                    Method::POST,
                    "/v1/invites",
                    &[("authorization", &auth(&alice))],
                    Some(raw),
                )
                .await;
            assert_eq!(status(&r), (400, "invalid_json".into()), "{raw}");
        }
        assert!(list(&app, &alice).await.is_empty(), "{backend:?}");
        // The boundaries themselves are fine.
        let r = create(
            &app,
            &alice,
            json!({"maxUses": 10, "expiresInSeconds": 30 * 86_400, "note": "é".repeat(200)}),
        )
        .await;
        assert_eq!(r.status, 201);
    }
}

#[tokio::test]
async fn quota_grows_with_account_age() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let t0 = app.clock.now().as_secs();
        let alice = app.seed("alice").await;
        let r = create(&app, &alice, json!({})).await;
        assert_eq!(status(&r), (403, "quota_exceeded".into()), "{backend:?}");
        assert_eq!(r.json()["availableAt"].as_i64(), Some(t0 + 7 * 86_400));
        app.clock.advance(7 * DAY);
        assert_eq!(
            create(&app, &alice, json!({"expiresInSeconds": 86_400}))
                .await
                .status,
            201
        );
        let r = create(&app, &alice, json!({})).await;
        assert_eq!(status(&r), (403, "quota_exceeded".into()));
        assert_eq!(r.json()["availableAt"].as_i64(), Some(t0 + 14 * 86_400));
        app.clock.advance(6 * DAY);
        assert_eq!(create(&app, &alice, json!({})).await.status, 403);
        app.clock.advance(DAY);
        assert_eq!(create(&app, &alice, json!({})).await.status, 201);
        // Spent quota is not refunded by revocation.
        let id = list(&app, &alice).await[0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = app
            .send(
                Method::DELETE,
                &format!("/v1/invites/{id}"),
                &[("authorization", &auth(&alice))],
                None,
            )
            .await;
        assert_eq!(r.status, 204);
        assert_eq!(create(&app, &alice, json!({})).await.status, 403);
        assert_eq!(list(&app, &alice).await.len(), 2);
    }
}

#[tokio::test]
async fn open_invites_are_capped() {
    for backend in Backend::ALL {
        let mut config = Config::default();
        config.invites.min_account_age_days = 0;
        config.invites.quota_per_days = 1;
        config.invites.quota_max = 100;
        config.invites.max_open_invites = 2;
        let app = TestApp::with_config(backend, config).await;
        let alice = app.seed("alice").await;
        app.clock.advance(30 * DAY);
        let now = app.clock.now().as_secs();
        assert_eq!(
            create(&app, &alice, json!({"expiresInSeconds": 7200}))
                .await
                .status,
            201
        );
        assert_eq!(
            create(&app, &alice, json!({"expiresInSeconds": 3600}))
                .await
                .status,
            201
        );
        let r = create(&app, &alice, json!({})).await;
        assert_eq!(status(&r), (403, "quota_exceeded".into()), "{backend:?}");
        assert_eq!(r.json()["availableAt"].as_i64(), Some(now + 3600));
        // Expiry frees a slot.
        app.clock.advance(Duration::from_secs(3600));
        assert_eq!(create(&app, &alice, json!({})).await.status, 201);
        assert_eq!(create(&app, &alice, json!({})).await.status, 403);
        // So does revocation.
        let open = list(&app, &alice).await;
        let active = open.iter().find(|i| i["state"] == json!("active")).unwrap();
        let uri = format!("/v1/invites/{}", active["id"].as_str().unwrap());
        assert_eq!(
            app.send(
                Method::DELETE,
                &uri,
                &[("authorization", &auth(&alice))],
                None
            )
            .await
            .status,
            204
        );
        assert_eq!(create(&app, &alice, json!({})).await.status, 201);
    }
}

/// Concurrent creations by one account never exceed the open-invite cap (the store re-checks atomically).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creations_respect_the_cap() {
    for backend in Backend::ALL {
        let mut config = Config::default();
        config.invites.min_account_age_days = 0;
        config.invites.quota_per_days = 1;
        config.invites.quota_max = 100;
        config.invites.max_open_invites = 3;
        // This test is about the store's cap, not the per-account limiter.
        config.limits.0.insert(
            "inviteCreate".into(),
            LimiterConfig {
                bucket_size: 100,
                permit_regeneration_seconds: 1.0,
            },
        );
        let app = Arc::new(TestApp::with_config(backend, config).await);
        let alice = Arc::new(app.seed("alice").await);
        app.clock.advance(100 * DAY);
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (app, alice) = (app.clone(), alice.clone());
                tokio::spawn(async move { create(&app, &alice, json!({})).await.status.as_u16() })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                201 => ok += 1,
                403 => {}
                other => panic!("{other}"),
            }
        }
        assert_eq!(ok, 3, "{backend:?}");
        assert_eq!(list(&app, &alice).await.len(), 3);
    }
}

#[tokio::test]
async fn disabled_and_suspended_accounts_cannot_invite() {
    for backend in Backend::ALL {
        let mut config = Config::default();
        config.invites.users_may_invite = false;
        let app = TestApp::with_config(backend, config).await;
        let alice = app.seed("alice").await;
        app.clock.advance(100 * DAY);
        assert_eq!(
            status(&create(&app, &alice, json!({})).await),
            (403, "invites_disabled".into())
        );

        let mut config = Config::default();
        young_ok(&mut config);
        let app = TestApp::with_config(backend, config).await;
        let alice = app.seed("alice").await;
        app.clock.advance(10 * DAY);
        assert_eq!(create(&app, &alice, json!({})).await.status, 201);
        app.state
            .store
            .set_suspended(alice.aci, true, app.clock.now())
            .await
            .unwrap();
        assert_eq!(
            status(&create(&app, &alice, json!({})).await),
            (403, "invites_disabled".into()),
            "{backend:?}"
        );
        assert_eq!(
            list(&app, &alice).await[0]["state"],
            json!("owner_suspended")
        );
        app.state
            .store
            .set_suspended(alice.aci, false, app.clock.now())
            .await
            .unwrap();
        assert_eq!(list(&app, &alice).await[0]["state"], json!("active"));
        assert_eq!(create(&app, &alice, json!({})).await.status, 201);
    }
}

// ---- registrations through the fake IdP ----

pub async fn register_with(
    app: &TestApp,
    idp: &FakeIdp,
    login: &str,
    code: Option<&str>,
) -> Result<SimClient, (u16, String)> {
    let (verifier, challenge) = flatline_testkit::client::pkce(app.rng.as_ref());
    let state = format!("st-{login}");
    let mut body = json!({"providerId": "fake", "codeChallenge": challenge, "state": state, "redirectUri": REDIRECT, "loginHint": login});
    if let Some(code) = code {
        body["inviteCode"] = json!(code);
    }
    let r = post(app, "/v1/verification/session", None, &body).await;
    if r.status != 200 {
        return Err(status(&r));
    }
    let session = r.json();
    let (code, state, iss) = idp
        .approve(session["requestUri"].as_str().unwrap(), login)
        .expect("pending");
    let uri = format!(
        "/v1/verification/session/{}",
        session["id"].as_str().unwrap()
    );
    let r = app
        .send(
            Method::PATCH,
            &uri,
            &[],
            Some(
                &json!({"code": code, "codeVerifier": verifier, "state": state, "iss": iss})
                    .to_string(),
            ),
        )
        .await;
    if r.status != 200 {
        return Err(status(&r));
    }
    let principal = r.json()["principal"].as_str().unwrap().to_owned();
    let mut client = SimClient::new(app.rng.as_ref());
    let body = client.registration_body(session["id"].as_str().unwrap(), app.rng.as_ref());
    let r = app
        .send(
            Method::POST,
            "/v1/registration",
            &[("authorization", &client.registration_auth(&principal))],
            Some(&body.to_string()),
        )
        .await;
    if r.status != 200 {
        return Err(status(&r));
    }
    client.aci = r.json()["uuid"].as_str().unwrap().parse().unwrap();
    client.pni = r.json()["pni"].as_str().unwrap().parse().unwrap();
    Ok(client)
}

pub async fn operator_code(app: &TestApp, max_uses: u32) -> String {
    let code = InviteCode::generate(app.rng.as_ref());
    app.state
        .store
        .create_invite(&NewInvite {
            id: InviteId::random(app.rng.as_ref()),
            code_hash: code.hash(),
            owner: InviteOwner::Operator,
            max_uses,
            expires_at: None,
            note: None,
            created_at: app.clock.now(),
        })
        .await
        .unwrap();
    code.display()
}

async fn code_of(app: &TestApp, c: &SimClient) -> String {
    let r = create(app, c, json!({})).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn fast_chains_are_refused_until_the_window_passes() {
    for backend in Backend::ALL {
        let (app, idp) = TestApp::with_fake_idp(backend, |c, _| {
            c.invites.required = true;
            c.invites.min_account_age_days = 0;
        })
        .await;
        let op = operator_code(&app, 1).await;
        let a = register_with(&app, &idp, "a", Some(&op)).await.unwrap();
        let code = code_of(&app, &a).await;
        app.clock.advance(Duration::from_secs(60));
        let b = register_with(&app, &idp, "b", Some(&code)).await.unwrap();
        let code = code_of(&app, &b).await;
        app.clock.advance(Duration::from_secs(60));
        let c = register_with(&app, &idp, "c", Some(&code)).await.unwrap();
        // c's admission, b's and a's (3 hops) all within 5 minutes: c is at the end of a fast chain.
        let r = create(&app, &c, json!({})).await;
        assert_eq!(status(&r), (403, "chain_limit".into()), "{backend:?}");
        let a_admitted = app
            .state
            .store
            .redemption_of(a.aci)
            .await
            .unwrap()
            .unwrap()
            .at;
        assert_eq!(
            r.json()["availableAt"].as_i64(),
            Some(a_admitted.plus(Duration::from_secs(300)).as_secs())
        );
        // b is only two hops down: not a fast chain (its quota is what stops it now).
        assert_eq!(
            status(&create(&app, &b, json!({})).await),
            (403, "quota_exceeded".into())
        );
        app.clock.advance(Duration::from_secs(181));
        assert_eq!(create(&app, &c, json!({})).await.status, 201);
    }
}

#[tokio::test]
async fn full_trees_stop_inviting() {
    for backend in Backend::ALL {
        let (app, idp) = TestApp::with_fake_idp(backend, |c, _| {
            c.invites.required = true;
            c.invites.min_account_age_days = 0;
            c.invites.tree_size_limit = 3;
        })
        .await;
        let op = operator_code(&app, 2).await;
        let root = register_with(&app, &idp, "root", Some(&op)).await.unwrap();
        let other_root = register_with(&app, &idp, "other", Some(&op)).await.unwrap();
        let code = code_of(&app, &root).await;
        let kid = register_with(&app, &idp, "kid", Some(&code)).await.unwrap();
        app.clock.advance(DAY);
        let code = code_of(&app, &kid).await;
        let grandkid = register_with(&app, &idp, "grandkid", Some(&code))
            .await
            .unwrap();
        // root, kid, grandkid: the tree holds 3, so nobody in it may invite; another tree is unaffected.
        for member in [&root, &kid, &grandkid] {
            assert_eq!(
                status(&create(&app, member, json!({})).await),
                (403, "tree_limit".into()),
                "{backend:?}"
            );
        }
        assert_eq!(create(&app, &other_root, json!({})).await.status, 201);
        // Invites created before the tree filled up still admit (the limit gates creation, not redemption).
        assert_eq!(app.state.invites.tree_size(root.aci, 100).await.unwrap(), 3);
    }
}

#[tokio::test]
async fn suspension_and_revocation_stop_registrations() {
    for backend in Backend::ALL {
        let (app, idp) = TestApp::with_fake_idp(backend, |c, _| {
            c.invites.required = true;
            c.invites.min_account_age_days = 0;
        })
        .await;
        let op = operator_code(&app, 1).await;
        let a = register_with(&app, &idp, "a", Some(&op)).await.unwrap();
        let code = code_of(&app, &a).await;
        app.state
            .store
            .set_suspended(a.aci, true, app.clock.now())
            .await
            .unwrap();
        let r = register_with(&app, &idp, "b", Some(&code)).await.err();
        assert_eq!(r, Some((403, "invite_invalid".into())), "{backend:?}");
        app.state
            .store
            .set_suspended(a.aci, false, app.clock.now())
            .await
            .unwrap();

        // A reservation made before a revocation is not consumed after it.
        let (verifier, challenge) = flatline_testkit::client::pkce(app.rng.as_ref());
        let body = json!({"providerId": "fake", "codeChallenge": challenge, "state": "s", "redirectUri": REDIRECT, "inviteCode": code, "loginHint": "b"});
        let session = post(&app, "/v1/verification/session", None, &body)
            .await
            .json();
        let (c, st, iss) = idp
            .approve(session["requestUri"].as_str().unwrap(), "b")
            .unwrap();
        let uri = format!(
            "/v1/verification/session/{}",
            session["id"].as_str().unwrap()
        );
        let r = app
            .send(
                Method::PATCH,
                &uri,
                &[],
                Some(
                    &json!({"code": c, "codeVerifier": verifier, "state": st, "iss": iss})
                        .to_string(),
                ),
            )
            .await;
        assert_eq!(r.status, 200);
        let principal = r.json()["principal"].as_str().unwrap().to_owned();
        let id = list(&app, &a).await[0]["id"].as_str().unwrap().to_owned();
        assert_eq!(list(&app, &a).await[0]["pending"], json!(1));
        let r = app
            .send(
                Method::DELETE,
                &format!("/v1/invites/{id}"),
                &[("authorization", &auth(&a))],
                None,
            )
            .await;
        assert_eq!(r.status, 204);
        let client = SimClient::new(app.rng.as_ref());
        let reg = client.registration_body(session["id"].as_str().unwrap(), app.rng.as_ref());
        let r = app
            .send(
                Method::POST,
                "/v1/registration",
                &[("authorization", &client.registration_auth(&principal))],
                Some(&reg.to_string()),
            )
            .await;
        assert_eq!(status(&r), (403, "invite_invalid".into()), "{backend:?}");
        let inv = &list(&app, &a).await[0];
        assert_eq!(
            (&inv["uses"], &inv["state"]),
            (&json!(0), &json!("revoked"))
        );
        assert!(
            app.state
                .store
                .redemptions_by(InviteOwner::Account(a.aci))
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn validity_endpoint() {
    for backend in Backend::ALL {
        let mut config = Config::default();
        young_ok(&mut config);
        config.limits.0.insert(
            "inviteAttempt".into(),
            LimiterConfig {
                bucket_size: 100,
                permit_regeneration_seconds: 1.0,
            },
        );
        let app = TestApp::with_config(backend, config).await;
        let alice = app.seed("alice").await;
        let code = create(&app, &alice, json!({})).await.json()["code"]
            .as_str()
            .unwrap()
            .to_owned();
        let valid = |c: &str| json!({"code": c});
        let r = post(
            &app,
            "/v1/invites/validity",
            None,
            &valid(&code.to_lowercase()),
        )
        .await;
        assert_eq!(
            (r.status.as_u16(), r.json()),
            (200, json!({"valid": true})),
            "{backend:?}"
        );
        let r = post(
            &app,
            "/v1/invites/validity",
            None,
            &valid("0000-0000-0000-0000"),
        )
        .await;
        assert_eq!(r.json(), json!({"valid": false}));
        let r = post(&app, "/v1/invites/validity", None, &valid("not a code")).await;
        assert_eq!(r.json(), json!({"valid": false}));
        let r = post(&app, "/v1/invites/validity", None, &json!({})).await;
        assert_eq!(status(&r), (400, "invalid_json".into()));
        let id = list(&app, &alice).await[0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        app.send(
            Method::DELETE,
            &format!("/v1/invites/{id}"),
            &[("authorization", &auth(&alice))],
            None,
        )
        .await;
        // The 400 above did not count: checks four and five of the default bucket (5 per IP) are answered, the
        // sixth is limited.
        for _ in 0..2 {
            let r = post(&app, "/v1/invites/validity", None, &valid(&code)).await;
            assert_eq!(r.json(), json!({"valid": false}));
        }
        let r = post(&app, "/v1/invites/validity", None, &valid(&code)).await;
        assert_eq!(status(&r), (429, "rate_limited".into()), "{backend:?}");
        assert!(r.headers.get("retry-after").is_some());
    }
}

#[tokio::test]
async fn validity_checks_count_as_invite_attempts() {
    for backend in Backend::ALL {
        let mut config = Config::default();
        config.limits.0.insert(
            "inviteValidity".into(),
            LimiterConfig {
                bucket_size: 100,
                permit_regeneration_seconds: 1.0,
            },
        );
        config.limits.0.insert(
            "inviteAttempt".into(),
            LimiterConfig {
                bucket_size: 2,
                permit_regeneration_seconds: 600.0,
            },
        );
        let app = TestApp::with_config(backend, config).await;
        for _ in 0..2 {
            assert_eq!(
                post(&app, "/v1/invites/validity", None, &json!({"code": "x"}))
                    .await
                    .status,
                200
            );
        }
        let r = post(&app, "/v1/invites/validity", None, &json!({"code": "x"})).await;
        assert_eq!(r.status, 429, "{backend:?}");
    }
}

#[tokio::test]
async fn landing_page_keeps_the_code_out_of_requests() {
    let app = TestApp::new(Backend::Memory).await;
    let r = app.get("/invite", None).await;
    assert_eq!(r.status, 200);
    let h = |n: &str| {
        r.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(h("content-type").starts_with("text/html"));
    assert_eq!(h("referrer-policy"), "no-referrer");
    let csp = h("content-security-policy");
    assert!(
        csp.starts_with("default-src 'none'; script-src 'sha256-"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"));
    let html = String::from_utf8_lossy(&r.body);
    assert!(html.contains("location.hash"));
    assert!(html.contains("Flatline"));
}

/// Captures every log line of the test process. A process-wide subscriber, because a thread-local one races with
/// the callsite interest cache while other tests run in parallel.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub static CAPTURE: std::sync::LazyLock<Capture> = std::sync::LazyLock::new(|| {
    let capture = Capture::default();
    let sink = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
    capture
});

#[tokio::test]
async fn codes_never_reach_the_logs() {
    let capture = CAPTURE.clone();
    let (app, idp) = TestApp::with_fake_idp(Backend::Sqlite, |c, _| {
        c.invites.required = true;
        c.invites.min_account_age_days = 0;
    })
    .await;
    let op = operator_code(&app, 1).await;
    let a = register_with(&app, &idp, "a", Some(&op)).await.unwrap();
    let code = code_of(&app, &a).await;
    post(&app, "/v1/invites/validity", None, &json!({"code": code})).await;
    list(&app, &a).await;
    register_with(&app, &idp, "b", Some(&code)).await.unwrap();
    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    let id = list(&app, &a).await[0]["id"].as_str().unwrap().to_owned();
    assert!(logs.contains(&format!("invite={id}")), "the capture works");
    for c in [&op, &code] {
        assert!(!logs.contains(c.as_str()), "code in logs");
        assert!(
            !logs.contains(&c.replace('-', "")),
            "canonical code in logs"
        );
        assert!(!logs.to_lowercase().contains(&c.to_lowercase()));
    }
}

/// F-07: invite creation is limited per account, so refused attempts (which walk the invite tree) cannot be
/// repeated without bound.
#[tokio::test]
async fn invite_creation_is_rate_limited_per_account() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let alice = app.seed("alice").await;
        let bob = app.seed("bob").await;
        let mut statuses = vec![];
        for _ in 0..12 {
            statuses.push(create(&app, &alice, json!({})).await.status.as_u16());
        }
        // Too young to invite: 403 until the limiter steps in.
        assert_eq!(&statuses[..10], &[403; 10], "{backend:?}");
        assert_eq!(&statuses[10..], &[429; 2], "{backend:?}");
        assert_eq!(create(&app, &bob, json!({})).await.status, 403);
    }
}

async fn validity_from(app: &TestApp, peer: &str) -> u16 {
    app.send_from(
        peer.parse().unwrap(),
        Method::POST,
        "/v1/invites/validity",
        &[],
        Some(r#"{"code": "0000-0000-0000-0000"}"#),
    )
    .await
    .status
    .as_u16()
}

/// F-04: per-IP limiters key IPv6 clients by their /64 (configurable) and IPv4-mapped addresses as IPv4.
#[tokio::test]
async fn per_ip_limits_key_ipv6_by_network() {
    let app = TestApp::new(Backend::Memory).await;
    // inviteValidity: 5 at once per client.
    for i in 1..=5 {
        assert_eq!(
            validity_from(&app, &format!("[2001:db8:1:2::{i}]:1")).await,
            200
        );
    }
    assert_eq!(validity_from(&app, "[2001:db8:1:2:ffff::9]:1").await, 429);
    assert_eq!(validity_from(&app, "[2001:db8:1:3::1]:1").await, 200);
    for _ in 0..5 {
        assert_eq!(validity_from(&app, "192.0.2.77:1").await, 200);
    }
    assert_eq!(validity_from(&app, "[::ffff:192.0.2.77]:1").await, 429);

    let config = Config::from_toml_and_env(
        "[server]\nipv6_limit_prefix = 48\n",
        Vec::<(String, String)>::new(),
    )
    .expect("ipv6_limit_prefix is a setting");
    let app = TestApp::with_config(Backend::Memory, config.source().clone()).await;
    for i in 1..=5 {
        assert_eq!(
            validity_from(&app, &format!("[2001:db8:7:{i}::1]:1")).await,
            200
        );
    }
    assert_eq!(validity_from(&app, "[2001:db8:7:99::1]:1").await, 429);
    assert_eq!(validity_from(&app, "[2001:db8:8::1]:1").await, 200);
}
