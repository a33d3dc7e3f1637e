//! Registration through an identity provider (the test kit's fake IdP over real HTTP): the happy paths, the
//! account lifecycle, invites, back-channel logout and every hostile token.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use flatline_core::ids::{DeviceId, IdentityType, ServiceId};
use flatline_core::invites::{InviteCode, InviteId, InviteOwner, NewInvite};
use flatline_core::time::Clock;
use flatline_testkit::client::pkce;
use flatline_testkit::fake_idp::{CLIENT_ID, FakeIdp, Signing, TokenKnobs};
use flatline_testkit::{SimClient, UsernameForm};
use serde_json::{Value, json};

use crate::support::{Backend, REDIRECT, Response, TestApp};

/// One app-side attempt: PKCE pair, state, and the session once started.
struct Attempt {
    verifier: String,
    state: String,
    session: Value,
}

async fn start(
    app: &TestApp,
    invite: Option<&str>,
    login_hint: Option<&str>,
) -> (Response, Attempt) {
    let (verifier, challenge) = pkce(app.rng.as_ref());
    let state = format!("st-{}", &verifier[..8]);
    let mut body = json!({"providerId": "fake", "codeChallenge": challenge, "state": state, "redirectUri": REDIRECT});
    if let Some(code) = invite {
        body["inviteCode"] = json!(code);
    }
    if let Some(hint) = login_hint {
        body["loginHint"] = json!(hint);
    }
    let r = app
        .send(
            Method::POST,
            "/v1/verification/session",
            &[],
            Some(&body.to_string()),
        )
        .await;
    let session = if r.status == 200 {
        r.json()
    } else {
        Value::Null
    };
    (
        r,
        Attempt {
            verifier,
            state,
            session,
        },
    )
}

async fn patch(app: &TestApp, a: &Attempt, code: &str, state: &str, iss: Option<&str>) -> Response {
    let mut body = json!({"code": code, "codeVerifier": a.verifier, "state": state});
    if let Some(iss) = iss {
        body["iss"] = json!(iss);
    }
    let uri = format!(
        "/v1/verification/session/{}",
        a.session["id"].as_str().unwrap_or("missing")
    );
    app.send(Method::PATCH, &uri, &[], Some(&body.to_string()))
        .await
}

/// Start + browser + PATCH as `login`; returns the PATCH response and the attempt.
async fn verify_as(
    app: &TestApp,
    idp: &FakeIdp,
    login: &str,
    invite: Option<&str>,
) -> (Response, Attempt) {
    let (r, a) = start(app, invite, Some(login)).await;
    assert_eq!(r.status, 200, "start: {}", String::from_utf8_lossy(&r.body));
    let (code, state, iss) = idp
        .approve(a.session["requestUri"].as_str().unwrap(), login)
        .expect("pending request");
    let r = patch(app, &a, &code, &state, Some(&iss)).await;
    (r, a)
}

async fn register(
    app: &TestApp,
    client: &SimClient,
    principal: &str,
    session_id: &str,
) -> Response {
    let body = client.registration_body(session_id, app.rng.as_ref());
    app.send(
        Method::POST,
        "/v1/registration",
        &[("authorization", &client.registration_auth(principal))],
        Some(&body.to_string()),
    )
    .await
}

/// The full flow; returns the registered client (its `aci`/`pni` updated) and the response JSON.
async fn register_as(
    app: &TestApp,
    idp: &FakeIdp,
    login: &str,
    invite: Option<&str>,
) -> (SimClient, Value) {
    let (r, a) = verify_as(app, idp, login, invite).await;
    assert_eq!(
        r.status,
        200,
        "verify: {}",
        String::from_utf8_lossy(&r.body)
    );
    let principal = r.json()["principal"].as_str().unwrap().to_owned();
    let mut client = SimClient::new(app.rng.as_ref());
    let r = register(app, &client, &principal, a.session["id"].as_str().unwrap()).await;
    assert_eq!(
        r.status,
        200,
        "register: {}",
        String::from_utf8_lossy(&r.body)
    );
    let j = r.json();
    client.aci = j["uuid"].as_str().unwrap().parse().unwrap();
    client.pni = j["pni"].as_str().unwrap().parse().unwrap();
    (client, j)
}

async fn account_count(app: &TestApp, acis: &[&SimClient]) -> usize {
    let mut n = 0;
    for c in acis {
        n += usize::from(app.state.store.account(c.aci).await.unwrap().is_some());
    }
    n
}

#[tokio::test]
pub async fn registers_and_authenticates() {
    for backend in Backend::ALL {
        let (app, idp) = TestApp::with_fake_idp(backend, |_, _| {}).await;
        let providers = app.get("/v1/verification", None).await.json();
        assert_eq!(
            providers,
            json!({"providers": [{"id": "fake", "name": "Fake IdP", "issuer": idp.issuer(),
                "authorizationEndpoint": format!("{}/authorize", idp.issuer()), "principalClaim": null, "inviteRequired": false}]})
        );
        let (r, a) = start(&app, None, Some("alice")).await;
        assert_eq!(r.status, 200);
        let s = &a.session;
        assert_eq!(
            (
                s["clientId"].as_str(),
                s["verified"].as_bool(),
                s["requestUriLifetime"].as_u64()
            ),
            (Some(CLIENT_ID), Some(false), Some(60))
        );
        let uri = format!("/v1/verification/session/{}", s["id"].as_str().unwrap());
        assert_eq!(app.get(&uri, None).await.json()["verified"], json!(false));
        let (code, state, iss) = idp
            .approve(s["requestUri"].as_str().unwrap(), "alice")
            .unwrap();
        let r = patch(&app, &a, &code, &state, Some(&iss)).await;
        assert_eq!(
            r.status,
            200,
            "{backend:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let principal = r.json()["principal"].as_str().unwrap().to_owned();
        assert_eq!(principal.len(), 64, "opaque principal is hex HMAC");
        assert_eq!(app.get(&uri, None).await.json()["verified"], json!(true));
        // Verifying twice is a conflict.
        assert_eq!(patch(&app, &a, &code, &state, None).await.status, 409);

        let client = SimClient::new(app.rng.as_ref());
        let r = register(&app, &client, &principal, s["id"].as_str().unwrap()).await;
        assert_eq!(
            r.status,
            200,
            "{backend:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let j = r.json();
        assert_eq!(j["reregistration"], json!(false));
        assert_eq!(j["principal"], json!(principal));
        let mut client = client;
        client.aci = j["uuid"].as_str().unwrap().parse().unwrap();
        let whoami = app
            .get(
                "/v1/accounts/whoami",
                Some(&client.basic_auth(UsernameForm::Dot)),
            )
            .await;
        assert_eq!(whoami.status, 200);
        assert_eq!(whoami.json()["uuid"], j["uuid"]);
        // The verified session was single-use.
        assert_eq!(
            register(&app, &client, &principal, s["id"].as_str().unwrap())
                .await
                .status,
            404
        );
    }
}

#[tokio::test]
pub async fn reregistration_keeps_the_aci_and_replaces_the_device() {
    for backend in Backend::ALL {
        let (app, idp) = TestApp::with_fake_idp(backend, |_, _| {}).await;
        let (first, j1) = register_as(&app, &idp, "alice", None).await;
        let body = first.set_keys_body(IdentityType::Aci, 1, 5, 5, app.rng.as_ref());
        assert_eq!(
            app.put_json("/v2/keys", &first.basic_auth(UsernameForm::Aci), &body)
                .await
                .status,
            204
        );
        let (second, j2) = register_as(&app, &idp, "alice", None).await;
        assert_eq!(
            (
                j2["uuid"].clone(),
                j2["pni"].clone(),
                j2["reregistration"].clone()
            ),
            (j1["uuid"].clone(), j1["pni"].clone(), json!(true))
        );
        assert_eq!(
            app.get(
                "/v1/accounts/whoami",
                Some(&first.basic_auth(UsernameForm::Aci))
            )
            .await
            .status,
            401,
            "old device gone"
        );
        assert_eq!(
            app.get(
                "/v1/accounts/whoami",
                Some(&second.basic_auth(UsernameForm::Aci))
            )
            .await
            .status,
            200
        );
        let counts = app
            .get("/v2/keys", Some(&second.basic_auth(UsernameForm::Aci)))
            .await
            .json();
        assert_eq!(
            counts,
            json!({"count": 0, "pqCount": 0}),
            "one-time keys wiped"
        );
    }
}

#[tokio::test]
async fn changed_principal_rotates_the_pni_and_conflicts_are_refused() {
    for backend in Backend::ALL {
        let (app, idp) =
            TestApp::with_fake_idp(backend, |_, p| p.principal_claim = Some("email".into())).await;
        idp.set_user_claims("alice", json!({"email": "alice@old.example"}));
        let (_, j1) = register_as(&app, &idp, "alice", None).await;
        assert_eq!(j1["principal"], json!("alice@old.example"));
        idp.set_user_claims("alice", json!({"email": "alice@new.example"}));
        let (_, j2) = register_as(&app, &idp, "alice", None).await;
        assert_eq!(j2["uuid"], j1["uuid"], "ACI kept");
        assert_ne!(j2["pni"], j1["pni"], "PNI rotated");
        assert_eq!(j2["principal"], json!("alice@new.example"));

        // Another subject presenting alice's principal is refused at verification.
        idp.set_user_claims("mallory", json!({"email": "alice@new.example"}));
        let (r, _) = verify_as(&app, &idp, "mallory", None).await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (403, "principal_conflict"),
            "{backend:?}"
        );
        // The old principal is free again for someone else.
        idp.set_user_claims("bob", json!({"email": "alice@old.example"}));
        let (_, jb) = register_as(&app, &idp, "bob", None).await;
        assert_ne!(jb["uuid"], j1["uuid"]);
    }
}

#[tokio::test]
async fn principal_conflict_discovered_at_registration() {
    let (app, idp) = TestApp::with_fake_idp(Backend::Sqlite, |_, p| {
        p.principal_claim = Some("email".into())
    })
    .await;
    idp.set_user_claims("a1", json!({"email": "same@example"}));
    idp.set_user_claims("a2", json!({"email": "same@example"}));
    // Both verify before either registers: the race the store must close.
    let (r1, s1) = verify_as(&app, &idp, "a1", None).await;
    let (r2, s2) = verify_as(&app, &idp, "a2", None).await;
    assert_eq!((r1.status.as_u16(), r2.status.as_u16()), (200, 200));
    let c = SimClient::new(app.rng.as_ref());
    assert_eq!(
        register(&app, &c, "same@example", s1.session["id"].as_str().unwrap())
            .await
            .status,
        200
    );
    let r = register(&app, &c, "same@example", s2.session["id"].as_str().unwrap()).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (403, "principal_conflict")
    );
}

#[tokio::test]
async fn deletion_tombstone_and_end_session_url() {
    for backend in Backend::ALL {
        let (app, idp) = TestApp::with_fake_idp(backend, |_, _| {}).await;
        let (client, j) = register_as(&app, &idp, "carol", None).await;
        let r = app
            .send(
                Method::DELETE,
                "/v1/accounts/me",
                &[("authorization", &client.basic_auth(UsernameForm::Aci))],
                None,
            )
            .await;
        assert_eq!(r.status, 204);
        assert_eq!(
            r.headers
                .get("flatline-end-session")
                .and_then(|v| v.to_str().ok()),
            Some(format!("{}/end-session?client_id={CLIENT_ID}", idp.issuer()).as_str())
        );
        app.clock.advance(Duration::from_secs(29 * 86_400));
        let (_, again) = register_as(&app, &idp, "carol", None).await;
        assert_eq!(
            (again["uuid"].clone(), again["reregistration"].clone()),
            (j["uuid"].clone(), json!(false)),
            "{backend:?}: ACI reused"
        );
    }
}

#[tokio::test]
async fn removed_provider_keeps_accounts_but_starts_nothing() {
    let (app, idp) = TestApp::with_fake_idp(Backend::Sqlite, |_, _| {}).await;
    let (client, _) = register_as(&app, &idp, "dave", None).await;
    // Same database, provider gone from the configuration.
    let rebuilt = TestApp::assemble(
        flatline_server::config::Config::default(),
        app.state.store.clone(),
        app.clock.clone(),
        app.rng.clone(),
        vec![],
    )
    .await;
    assert_eq!(
        rebuilt
            .get(
                "/v1/accounts/whoami",
                Some(&client.basic_auth(UsernameForm::Aci))
            )
            .await
            .status,
        200
    );
    assert_eq!(
        rebuilt.get("/v1/verification", None).await.json(),
        json!({"providers": []})
    );
    let (r, _) = start(&rebuilt, None, None).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "unknown_provider")
    );
}

/// Every hostile or broken input: status, code, and nothing left behind.
#[tokio::test]
async fn hostile_tokens_and_requests_are_refused() {
    for backend in Backend::ALL {
        let (app, idp) = TestApp::with_fake_idp(backend, |_, p| {
            p.principal_claim = Some("email".into());
            p.trusted_audiences = vec!["trusted-other".into()];
        })
        .await;
        let now = app.clock.now().as_secs();
        let knobs = |set: Value| TokenKnobs {
            set: set.as_object().unwrap().clone(),
            ..Default::default()
        };
        let cases: Vec<(&str, TokenKnobs, u16, &str)> = vec![
            (
                "wrong nonce",
                knobs(json!({"nonce": "not-ours"})),
                401,
                "id_token_invalid",
            ),
            (
                "wrong aud",
                knobs(json!({"aud": "someone-else"})),
                401,
                "id_token_invalid",
            ),
            (
                "extra untrusted aud",
                knobs(json!({"aud": [CLIENT_ID, "untrusted"], "azp": CLIENT_ID})),
                401,
                "id_token_invalid",
            ),
            (
                "several audiences without azp",
                knobs(json!({"aud": [CLIENT_ID, "trusted-other"]})),
                401,
                "id_token_invalid",
            ),
            (
                "foreign azp",
                knobs(json!({"azp": "someone-else"})),
                401,
                "id_token_invalid",
            ),
            (
                "expired",
                knobs(json!({"exp": now - 120, "iat": now - 600})),
                401,
                "id_token_invalid",
            ),
            (
                "iat in the future",
                knobs(json!({"iat": now + 3600})),
                401,
                "id_token_invalid",
            ),
            (
                "wrong iss",
                knobs(json!({"iss": "https://evil.example"})),
                401,
                "id_token_invalid",
            ),
            (
                "missing sub",
                TokenKnobs {
                    remove: vec!["sub".into()],
                    ..Default::default()
                },
                401,
                "id_token_invalid",
            ),
            (
                "empty sub",
                knobs(json!({"sub": ""})),
                401,
                "id_token_invalid",
            ),
            (
                "alg none",
                TokenKnobs {
                    signing: Signing::None,
                    ..Default::default()
                },
                401,
                "id_token_invalid",
            ),
            (
                "HS256 keyed with the public key",
                TokenKnobs {
                    signing: Signing::Hs256WithPublicKey,
                    ..Default::default()
                },
                401,
                "id_token_invalid",
            ),
            (
                "unknown kid",
                TokenKnobs {
                    signing: Signing::UnknownKid,
                    ..Default::default()
                },
                401,
                "id_token_invalid",
            ),
            (
                "email not verified",
                knobs(json!({"email_verified": false})),
                401,
                "principal_invalid",
            ),
            (
                "principal with a control character",
                knobs(json!({"email": "a\u{7}b@example"})),
                401,
                "principal_invalid",
            ),
            (
                "principal of 2049 bytes",
                knobs(json!({"email": "x".repeat(2049)})),
                401,
                "principal_invalid",
            ),
            (
                "principal claim missing",
                TokenKnobs {
                    remove: vec!["email".into()],
                    ..Default::default()
                },
                401,
                "principal_invalid",
            ),
        ];
        for (i, (name, knob, status, code)) in cases.into_iter().enumerate() {
            let login = format!("hostile{i}");
            idp.next_token(knob);
            let (r, a) = verify_as(&app, &idp, &login, None).await;
            assert_eq!(
                (r.status.as_u16(), r.code().as_str()),
                (status, code),
                "{backend:?}: {name}: {}",
                String::from_utf8_lossy(&r.body)
            );
            let uri = format!(
                "/v1/verification/session/{}",
                a.session["id"].as_str().unwrap()
            );
            assert_eq!(
                app.get(&uri, None).await.json()["verified"],
                json!(false),
                "{backend:?}: {name}: session stayed unverified"
            );
            let subject = flatline_core::registration::Subject {
                provider: "fake".into(),
                sub: login,
            };
            assert!(
                app.state
                    .store
                    .account_of_subject(&subject)
                    .await
                    .unwrap()
                    .is_none()
            );
        }
        let metrics = String::from_utf8(app.get("/metrics", None).await.body).unwrap();
        assert!(
            metrics.contains("flatline_jwks_unknown_kid_total 1"),
            "{metrics}"
        );

        // A different key in the pinned set's algorithm family still works (ES256).
        idp.next_token(TokenKnobs {
            signing: Signing::Es256,
            ..Default::default()
        });
        assert_eq!(
            verify_as(&app, &idp, "es-user", None).await.0.status,
            200,
            "{backend:?}: ES256"
        );

        // Request-level refusals.
        let (r, a) = start(&app, None, Some("ok1")).await;
        assert_eq!(r.status, 200);
        let (code, state, iss) = idp
            .approve(a.session["requestUri"].as_str().unwrap(), "ok1")
            .unwrap();
        assert_eq!(
            patch(&app, &a, &code, "other-state", None).await.code(),
            "state_mismatch"
        );
        assert_eq!(
            patch(&app, &a, &code, &state, Some("https://evil.example"))
                .await
                .code(),
            "issuer_mismatch"
        );
        assert_eq!(patch(&app, &a, &code, &state, Some(&iss)).await.status, 200);
        // Replaying the same code on a new session: the IdP refuses it.
        let (_, b) = start(&app, None, Some("ok1")).await;
        let r = patch(&app, &b, &code, &b.state, None).await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (401, "code_invalid"),
            "{backend:?}: replayed code"
        );
        // A wrong PKCE verifier looks the same to us.
        let (_, c) = start(&app, None, Some("ok2")).await;
        let (code, state, _) = idp
            .approve(c.session["requestUri"].as_str().unwrap(), "ok2")
            .unwrap();
        let wrong = Attempt {
            verifier: "x".repeat(43),
            state: c.state.clone(),
            session: c.session.clone(),
        };
        assert_eq!(
            patch(&app, &wrong, &code, &state, None).await.code(),
            "code_invalid"
        );

        let bad_starts: Vec<(Value, u16, &str)> = vec![
            (
                json!({"providerId": "nope", "codeChallenge": "a".repeat(43), "state": "s", "redirectUri": REDIRECT}),
                400,
                "unknown_provider",
            ),
            (
                json!({"providerId": "fake", "codeChallenge": "short", "state": "s", "redirectUri": REDIRECT}),
                422,
                "validation_failed",
            ),
            (
                json!({"providerId": "fake", "codeChallenge": "a".repeat(43), "state": "s", "redirectUri": "https://evil.example/cb"}),
                422,
                "validation_failed",
            ),
            (
                json!({"providerId": "fake", "codeChallenge": "a".repeat(43), "state": "", "redirectUri": REDIRECT}),
                422,
                "validation_failed",
            ),
            (
                json!({"providerId": "fake", "codeChallenge": "a".repeat(43), "state": "s", "redirectUri": REDIRECT, "inviteCode": "0000-0000-0000-0000"}),
                403,
                "invite_invalid",
            ),
        ];
        for (body, status, code) in bad_starts {
            let r = app
                .send(
                    Method::POST,
                    "/v1/verification/session",
                    &[],
                    Some(&body.to_string()),
                )
                .await;
            assert_eq!(
                (r.status.as_u16(), r.code().as_str()),
                (status, code),
                "{backend:?}: {body}"
            );
        }
        assert_eq!(
            app.get("/v1/verification/session/nonexistent-session-id", None)
                .await
                .status,
            404
        );
        let r = app
            .send(
                Method::PATCH,
                "/v1/verification/session/AAAAAAAAAAAAAAAAAAAAAA",
                &[],
                Some(r#"{"code":"c","codeVerifier":"v","state":"s"}"#),
            )
            .await;
        assert_eq!(r.status, 404);

        // The IdP failing is the one intended 5xx.
        idp.fail(true, false);
        let (r, _) = start(&app, None, None).await;
        assert_eq!((r.status.as_u16(), r.code().as_str()), (502, "idp_error"));
        idp.fail(false, true);
        let (r, a) = start(&app, None, Some("ok3")).await;
        assert_eq!(r.status, 200);
        let (code, state, _) = idp
            .approve(a.session["requestUri"].as_str().unwrap(), "ok3")
            .unwrap();
        assert_eq!(patch(&app, &a, &code, &state, None).await.status, 502);
        idp.fail(false, false);
    }
}

#[tokio::test]
pub async fn registration_request_rules() {
    let (app, idp) = TestApp::with_fake_idp(Backend::Memory, |_, _| {}).await;
    let (r, a) = verify_as(&app, &idp, "erin", None).await;
    let principal = r.json()["principal"].as_str().unwrap().to_owned();
    let session_id = a.session["id"].as_str().unwrap().to_owned();
    let client = SimClient::new(app.rng.as_ref());
    let valid = client.registration_body(&session_id, app.rng.as_ref());
    let auth = client.registration_auth(&principal);
    let with = |patch: Value| {
        let mut b = valid.clone();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let mut bad_sig = valid.clone();
    bad_sig["pniSignedPreKey"] = flatline_testkit::client::signed_json(&client.signed_ec(
        IdentityType::Aci,
        9,
        app.rng.as_ref(),
    ));
    let cases: Vec<(&str, Value, &str, u16)> = vec![
        ("PNI key signed by the ACI identity", bad_sig, &auth, 422),
        (
            "recovery password instead of session",
            with(json!({"sessionId": null, "recoveryPassword": "AAAA"})),
            &auth,
            422,
        ),
        (
            "both session and recovery password",
            with(json!({"recoveryPassword": "AAAA"})),
            &auth,
            422,
        ),
        (
            "push token and fetchesMessages",
            with(json!({"gcmToken": {"gcmRegistrationId": "x"}})),
            &auth,
            422,
        ),
        (
            "missing identity key",
            with(json!({"pniIdentityKey": null})),
            &auth,
            422,
        ),
        (
            "registration id 0",
            with(json!({"accountAttributes": {"fetchesMessages": true, "registrationId": 0}})),
            &auth,
            422,
        ),
        (
            "malformed identity key",
            with(json!({"aciIdentityKey": "!!"})),
            &auth,
            400,
        ),
        (
            "unknown session",
            with(json!({"sessionId": "AAAAAAAAAAAAAAAAAAAAAA"})),
            &auth,
            404,
        ),
    ];
    for (name, body, auth, status) in cases {
        let r = app
            .send(
                Method::POST,
                "/v1/registration",
                &[("authorization", auth)],
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(
            r.status.as_u16(),
            status,
            "{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let other = client.registration_auth("someone-else");
    let r = app
        .send(
            Method::POST,
            "/v1/registration",
            &[("authorization", &other)],
            Some(&valid.to_string()),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "principal_mismatch")
    );
    let r = app
        .send(
            Method::POST,
            "/v1/registration",
            &[],
            Some(&valid.to_string()),
        )
        .await;
    assert_eq!(r.status, 401);
    // An unverified session.
    let (_, unverified) = start(&app, None, None).await;
    let body =
        client.registration_body(unverified.session["id"].as_str().unwrap(), app.rng.as_ref());
    let r = app
        .send(
            Method::POST,
            "/v1/registration",
            &[("authorization", &auth)],
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (401, "session_unverified")
    );
    // Nothing was created by any of it; the valid request still works.
    let subject = flatline_core::registration::Subject {
        provider: "fake".into(),
        sub: "erin".into(),
    };
    assert!(
        app.state
            .store
            .account_of_subject(&subject)
            .await
            .unwrap()
            .is_none()
    );
    let r = app
        .send(
            Method::POST,
            "/v1/registration",
            &[("authorization", &auth)],
            Some(&valid.to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

async fn operator_invite(app: &TestApp, max_uses: u32) -> (InviteId, String) {
    let code = InviteCode::generate(app.rng.as_ref());
    let id = InviteId::random(app.rng.as_ref());
    let invite = NewInvite {
        id,
        code_hash: code.hash(),
        owner: InviteOwner::Operator,
        max_uses,
        expires_at: None,
        note: None,
        created_at: app.clock.now(),
    };
    app.state.store.create_invite(&invite).await.unwrap();
    (id, code.display())
}

#[tokio::test]
async fn invites_gate_new_subjects_only() {
    for backend in Backend::ALL {
        let (app, idp) = TestApp::with_fake_idp(backend, |_, p| p.invite_required = true).await;
        let (invite, code) = operator_invite(&app, 1).await;
        let (r, _) = verify_as(&app, &idp, "frank", None).await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (403, "invite_required"),
            "{backend:?}"
        );
        let (_, j) = register_as(&app, &idp, "frank", Some(&code.to_lowercase())).await;
        let i = app
            .state
            .store
            .invite(invite, app.clock.now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((i.uses, i.pending), (1, 0));
        let frank: flatline_core::ids::Aci = j["uuid"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            app.state
                .store
                .redemption_of(frank)
                .await
                .unwrap()
                .map(|r| r.invite),
            Some(invite)
        );
        // A known subject re-registers without an invite; the used-up code no longer starts sessions.
        register_as(&app, &idp, "frank", None).await;
        let (r, _) = start(&app, Some(&code), None).await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (403, "invite_invalid")
        );
    }
}

#[tokio::test]
async fn abandoned_reservation_is_released_when_the_session_expires() {
    for backend in Backend::ALL {
        let (app, idp) = TestApp::with_fake_idp(backend, |c, _| c.invites.required = true).await;
        let (invite, code) = operator_invite(&app, 1).await;
        let (r, _) = verify_as(&app, &idp, "gina", Some(&code)).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            app.state
                .store
                .invite(invite, app.clock.now())
                .await
                .unwrap()
                .unwrap()
                .pending,
            1
        );
        // Someone else cannot reserve the last use meanwhile.
        let (r, _) = start(&app, Some(&code), None).await;
        assert_eq!(r.code(), "invite_invalid");
        app.clock.advance(Duration::from_secs(601));
        assert_eq!(
            app.state
                .store
                .invite(invite, app.clock.now())
                .await
                .unwrap()
                .unwrap()
                .pending,
            0,
            "{backend:?}"
        );
        let (_, j) = register_as(&app, &idp, "hank", Some(&code)).await;
        assert_eq!(j["reregistration"], json!(false));
    }
}

/// 200 new subjects race for an invite with 5 uses over HTTP: exactly 5 accounts, the rest `invite_invalid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_never_exceed_max_uses() {
    for backend in Backend::ALL {
        let (app, idp) = TestApp::with_fake_idp(backend, |c, _| {
            c.invites.required = true;
            for limiter in ["verificationAuthorization", "inviteAttempt"] {
                c.limits.0.insert(
                    limiter.into(),
                    flatline_server::config::LimiterConfig {
                        bucket_size: 10_000,
                        permit_regeneration_seconds: 1.0,
                    },
                );
            }
        })
        .await;
        let (invite, code) = operator_invite(&app, 5).await;
        let app = Arc::new(app);
        let idp = Arc::new(idp);
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let (app, idp, code) = (app.clone(), idp.clone(), code.clone());
                tokio::spawn(async move {
                    let login = format!("racer{i}");
                    let (r, a) = start(&app, Some(&code), Some(&login)).await;
                    if r.status != 200 {
                        return (None, r.code());
                    }
                    let (c, state, _) = idp
                        .approve(a.session["requestUri"].as_str().unwrap(), &login)
                        .unwrap();
                    let r = patch(&app, &a, &c, &state, None).await;
                    if r.status != 200 {
                        return (None, r.code());
                    }
                    let principal = r.json()["principal"].as_str().unwrap().to_owned();
                    let client = SimClient::new(app.rng.as_ref());
                    let r = register(&app, &client, &principal, a.session["id"].as_str().unwrap())
                        .await;
                    assert_eq!(r.status, 200, "a reserved use must register");
                    (
                        Some(r.json()["uuid"].as_str().unwrap().to_owned()),
                        String::new(),
                    )
                })
            })
            .collect();
        let mut accounts = HashSet::new();
        let mut refusals = 0;
        for t in tasks {
            match t.await.unwrap() {
                (Some(aci), _) => {
                    accounts.insert(aci);
                }
                (None, code) => {
                    assert_eq!(code, "invite_invalid", "{backend:?}");
                    refusals += 1;
                }
            }
        }
        assert_eq!((accounts.len(), refusals), (5, 195), "{backend:?}");
        let i = app
            .state
            .store
            .invite(invite, app.clock.now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((i.uses, i.pending), (5, 0), "{backend:?}");
        assert_eq!(
            app.state
                .store
                .redemptions_by(InviteOwner::Operator)
                .await
                .unwrap()
                .len(),
            5
        );
    }
}

#[tokio::test]
async fn backchannel_logout_locks_until_reregistration() {
    for backend in Backend::ALL {
        let (app, idp) = TestApp::with_fake_idp(backend, |_, _| {}).await;
        let (client, _) = register_as(&app, &idp, "ivy", None).await;
        let post = |token: String| {
            let app = &app;
            async move {
                let body = format!("logout_token={token}");
                app.send(
                    Method::POST,
                    "/v1/verification/providers/fake/backchannel-logout",
                    &[("content-type", "application/x-www-form-urlencoded")],
                    Some(&body),
                )
                .await
            }
        };
        let mut with_nonce = idp.logout_claims(Some("ivy"), None);
        with_nonce["nonce"] = json!("n");
        let mut without_event = idp.logout_claims(Some("ivy"), None);
        without_event["events"] = json!({});
        let neither = idp.logout_claims(None, None);
        let bad: Vec<(&str, String)> = vec![
            (
                "nonce present",
                idp.sign(&with_nonce, Some("logout+jwt"), Signing::EdDsa),
            ),
            (
                "no logout event",
                idp.sign(&without_event, Some("logout+jwt"), Signing::EdDsa),
            ),
            (
                "neither sub nor sid",
                idp.sign(&neither, Some("logout+jwt"), Signing::EdDsa),
            ),
            (
                "wrong typ",
                idp.sign(
                    &idp.logout_claims(Some("ivy"), None),
                    Some("JWT"),
                    Signing::EdDsa,
                ),
            ),
            (
                "alg none",
                idp.sign(
                    &idp.logout_claims(Some("ivy"), None),
                    Some("logout+jwt"),
                    Signing::None,
                ),
            ),
            ("not a token", "garbage".to_owned()),
        ];
        for (name, token) in bad {
            let r = post(token).await;
            assert_eq!(r.status, 400, "{backend:?}: {name}");
            assert_eq!(r.json(), json!({"error": "invalid_request"}));
            assert_eq!(r.headers.get("cache-control").unwrap(), "no-store");
        }
        assert_eq!(
            app.get(
                "/v1/accounts/whoami",
                Some(&client.basic_auth(UsernameForm::Aci))
            )
            .await
            .status,
            200,
            "still in"
        );

        // A sid-only token finds the account through the sid stored at verification.
        let token = idp.sign(
            &idp.logout_claims(None, Some("sid-ivy")),
            Some("logout+jwt"),
            Signing::EdDsa,
        );
        let r = post(token.clone()).await;
        assert_eq!(
            r.status,
            200,
            "{backend:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.headers.get("cache-control").unwrap(), "no-store");
        assert_eq!(
            app.get(
                "/v1/accounts/whoami",
                Some(&client.basic_auth(UsernameForm::Aci))
            )
            .await
            .status,
            401,
            "locked"
        );
        assert_eq!(post(token).await.status, 400, "{backend:?}: replayed jti");

        let (again, _) = register_as(&app, &idp, "ivy", None).await;
        assert_eq!(
            app.get(
                "/v1/accounts/whoami",
                Some(&again.basic_auth(UsernameForm::Aci))
            )
            .await
            .status,
            200,
            "re-registration restores access"
        );
        let keys = app
            .state
            .store
            .signed_pre_key(ServiceId::Aci(again.aci), DeviceId::PRIMARY)
            .await
            .unwrap();
        assert!(keys.is_some());
    }
}

#[tokio::test]
async fn logout_effect_ignore_changes_nothing() {
    let (app, idp) = TestApp::with_fake_idp(Backend::Memory, |_, p| {
        p.logout = flatline_core::registration::oidc::LogoutEffect::Ignore
    })
    .await;
    let (client, _) = register_as(&app, &idp, "jack", None).await;
    let token = idp.sign(
        &idp.logout_claims(Some("jack"), None),
        Some("logout+jwt"),
        Signing::EdDsa,
    );
    let body = format!("logout_token={token}");
    let r = app
        .send(
            Method::POST,
            "/v1/verification/providers/fake/backchannel-logout",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(&body),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        app.get(
            "/v1/accounts/whoami",
            Some(&client.basic_auth(UsernameForm::Aci))
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn sessions_expire() {
    let (app, idp) = TestApp::with_fake_idp(Backend::Sqlite, |c, _| {
        c.registration.session_lifetime_seconds = 60
    })
    .await;
    let (r, a) = verify_as(&app, &idp, "kate", None).await;
    assert_eq!(r.status, 200);
    app.clock.advance(Duration::from_secs(61));
    let uri = format!(
        "/v1/verification/session/{}",
        a.session["id"].as_str().unwrap()
    );
    assert_eq!(app.get(&uri, None).await.status, 404);
    let client = SimClient::new(app.rng.as_ref());
    let principal = r.json()["principal"].as_str().unwrap().to_owned();
    assert_eq!(
        register(&app, &client, &principal, a.session["id"].as_str().unwrap())
            .await
            .status,
        404
    );
    assert_eq!(account_count(&app, &[&client]).await, 0);
}

fn basic_header(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// F-03 (b): requests naming someone else's principal with a session that is not theirs never touch that
/// principal's registration limiter, so a stranger cannot keep the owner at 429.
#[tokio::test]
async fn strangers_cannot_lock_a_principal_out_of_registration() {
    let (app, idp) = TestApp::with_fake_idp(Backend::Memory, |_, _| {}).await;
    let (r, a) = verify_as(&app, &idp, "alice", None).await;
    let principal = r.json()["principal"].as_str().unwrap().to_owned();
    let stranger = SimClient::new(app.rng.as_ref());
    for _ in 0..20 {
        let r = register(&app, &stranger, &principal, "AAAAAAAAAAAAAAAAAAAAAA").await;
        assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    }
    let owner = SimClient::new(app.rng.as_ref());
    let r = register(&app, &owner, &principal, a.session["id"].as_str().unwrap()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// F-03 (a): unauthenticated registration work (four signature checks each) is limited per client network.
#[tokio::test]
async fn registration_attempts_are_limited_per_network() {
    let (app, _idp) = TestApp::with_fake_idp(Backend::Memory, |_, _| {}).await;
    let client = SimClient::new(app.rng.as_ref());
    let body = client
        .registration_body("AAAAAAAAAAAAAAAAAAAAAA", app.rng.as_ref())
        .to_string();
    let mut statuses = vec![];
    for i in 0..80 {
        let auth = client.registration_auth(&format!("random-{i}"));
        let r = app
            .send(
                Method::POST,
                "/v1/registration",
                &[("authorization", &auth)],
                Some(&body),
            )
            .await;
        statuses.push(r.status.as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| [404, 429].contains(s)),
        "{statuses:?}"
    );
    // Another network is not affected.
    let r = app
        .send_from(
            "[2001:db8:99::1]:1".parse().unwrap(),
            Method::POST,
            "/v1/registration",
            &[("authorization", &client.registration_auth("random-x"))],
            Some(&body),
        )
        .await;
    assert_eq!(r.status, 404);
}

/// F-03 (c) and F-08: hostile Basic usernames (NUL, control characters, longer than a principal) are a clear 4xx on
/// every backend, never a 500 from the database.
#[tokio::test]
pub async fn hostile_registration_usernames_are_4xx() {
    for backend in Backend::ALL {
        let (app, _idp) = TestApp::with_fake_idp(backend, |_, _| {}).await;
        let client = SimClient::new(app.rng.as_ref());
        let body = client
            .registration_body("AAAAAAAAAAAAAAAAAAAAAA", app.rng.as_ref())
            .to_string();
        let long = "x".repeat(3000);
        for user in ["a\0b", "tab\there", long.as_str(), ""] {
            let r = app
                .send(
                    Method::POST,
                    "/v1/registration",
                    &[("authorization", &client.registration_auth(user))],
                    Some(&body),
                )
                .await;
            assert!(
                r.status.is_client_error(),
                "{backend:?} {:?}: {} {}",
                &user[..user.len().min(8)],
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
    }
}

/// F-12: a new device password must be at least as long as what Signal clients generate (16+ characters).
#[tokio::test]
async fn short_device_passwords_are_refused_at_registration() {
    let (app, idp) = TestApp::with_fake_idp(Backend::Memory, |_, _| {}).await;
    let (r, a) = verify_as(&app, &idp, "pat", None).await;
    let principal = r.json()["principal"].as_str().unwrap().to_owned();
    let session_id = a.session["id"].as_str().unwrap();
    let client = SimClient::new(app.rng.as_ref());
    let body = client
        .registration_body(session_id, app.rng.as_ref())
        .to_string();
    for password in ["x", "123456", "fifteen-chars-x"] {
        let r = app
            .send(
                Method::POST,
                "/v1/registration",
                &[("authorization", &basic_header(&principal, password))],
                Some(&body),
            )
            .await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (422, "validation_failed"),
            "{password}"
        );
    }
    let r = register(&app, &client, &principal, session_id).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// F-08: NUL and other control characters in capability names are refused before they reach a TEXT column.
#[tokio::test]
async fn control_characters_in_stored_strings_are_4xx() {
    for backend in Backend::ALL {
        let (app, idp) = TestApp::with_fake_idp(backend, |_, _| {}).await;
        let (r, a) = verify_as(&app, &idp, "cap", None).await;
        let principal = r.json()["principal"].as_str().unwrap().to_owned();
        let session_id = a.session["id"].as_str().unwrap();
        let mut client = SimClient::new(app.rng.as_ref());
        for name in ["nul\u{0}cap", "line\ncap"] {
            let mut body = client.registration_body(session_id, app.rng.as_ref());
            body["accountAttributes"]["capabilities"] = json!({ name: true });
            let r = app
                .send(
                    Method::POST,
                    "/v1/registration",
                    &[("authorization", &client.registration_auth(&principal))],
                    Some(&body.to_string()),
                )
                .await;
            assert!(
                r.status.is_client_error(),
                "{backend:?} {name:?}: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        let r = register(&app, &client, &principal, session_id).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        client.aci = r.json()["uuid"].as_str().unwrap().parse().unwrap();
        let auth = client.basic_auth(UsernameForm::Aci);
        for attrs in [
            json!({"fetchesMessages": true, "registrationId": 1, "capabilities": {"a\u{0}b": true}}),
            json!({"fetchesMessages": true, "registrationId": 1, "name": "bad\u{0}name"}),
        ] {
            let r = app.put_json("/v1/accounts/attributes", &auth, &attrs).await;
            assert!(
                r.status.is_client_error(),
                "{backend:?} {attrs}: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
    }
}

/// Security review F-06: every PAR and token call to a provider takes a permit of its `idpRequests` bucket, over
/// all clients together; when it is empty the registration step answers 429 with `Retry-After` and makes no call.
#[tokio::test]
async fn the_idp_request_ceiling_is_per_provider() {
    let (app, idp) = TestApp::with_fake_idp(Backend::Memory, |config, _| {
        config.limits.0.insert(
            "idpRequests".into(),
            flatline_server::config::LimiterConfig {
                bucket_size: 3,
                permit_regeneration_seconds: 3600.0,
            },
        );
    })
    .await;
    // Two sessions: two PAR calls.
    let (r, first) = start(&app, None, Some("alice")).await;
    assert_eq!(r.status, 200);
    let (r, _second) = start(&app, None, Some("bob")).await;
    assert_eq!(r.status, 200);
    // The token call of the first takes the last permit.
    let (code, state, iss) = idp
        .approve(first.session["requestUri"].as_str().unwrap(), "alice")
        .unwrap();
    let r = patch(&app, &first, &code, &state, Some(&iss)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Now every client is refused before any call is made: a third session.
    let (r, third) = start(&app, None, Some("carol")).await;
    assert_eq!(r.status, 429);
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(third.session, Value::Null);
    // An hour later a permit is back.
    app.clock.advance(Duration::from_secs(3600));
    let (r, _) = start(&app, None, Some("carol")).await;
    assert_eq!(r.status, 200);
}

/// Re-registering (a new primary device and password) closes the old device's sockets with 4401, and the old
/// password no longer opens one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reregistration_closes_the_old_devices_sockets() {
    let (app, idp) = TestApp::with_fake_idp(Backend::Sqlite, |_, _| {}).await;
    let (first, _) = register_as(&app, &idp, "alice", None).await;
    let addr = app.listen().await;
    let old_auth = first.basic_auth(UsernameForm::Dot);
    let mut socket = crate::socket::WsClient::connect(addr, Some(&old_auth))
        .await
        .expect("socket");
    assert_eq!(
        socket
            .request("GET", "/v1/keepalive", &[], b"")
            .await
            .status,
        200
    );
    let (second, _) = register_as(&app, &idp, "alice", None).await;
    assert_eq!(second.aci, first.aci);
    assert_eq!(
        socket.closed().await,
        Some((4401, "Reauthentication required".into()))
    );
    assert_eq!(
        crate::socket::WsClient::connect(addr, Some(&old_auth))
            .await
            .err(),
        Some(403)
    );
}
