//! Basic authentication in all three username forms, and every way it fails.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flatline_testkit::UsernameForm;
use serde_json::json;

use crate::support::{Backend, TestApp};

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

#[tokio::test]
async fn each_username_form_authenticates() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let client = app.seed("alice@example.org").await;
        for form in [UsernameForm::Aci, UsernameForm::Dot, UsernameForm::Nul] {
            let r = app
                .get("/v1/accounts/whoami", Some(&client.basic_auth(form)))
                .await;
            assert_eq!(r.status, 200, "{backend:?} {form:?}");
            assert_eq!(r.json()["uuid"], json!(client.aci.to_string()));
        }
    }
}

#[tokio::test]
async fn bad_credentials_are_401() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let client = app.seed("alice").await;
        let other = flatline_testkit::SimClient::new(app.rng.as_ref());
        let aci = client.aci.to_string();
        let cases: Vec<(&str, String)> = vec![
            ("wrong password", basic(&aci, "not-the-password")),
            (
                "unknown aci",
                basic(&other.aci.to_string(), &client.password),
            ),
            (
                "unknown device",
                basic(&format!("{aci}.2"), &client.password),
            ),
            ("device 0", basic(&format!("{aci}.0"), &client.password)),
            ("not a uuid", basic("alice", &client.password)),
            ("no colon", format!("Basic {}", STANDARD.encode(&aci))),
            ("not base64", "Basic %%%".to_owned()),
            (
                "wrong scheme",
                format!(
                    "Bearer {}",
                    STANDARD.encode(format!("{aci}:{}", client.password))
                ),
            ),
            ("empty password", basic(&aci, "")),
        ];
        for (name, header) in &cases {
            let r = app.get("/v1/accounts/whoami", Some(header)).await;
            assert_eq!(r.status, 401, "{backend:?}: {name}");
            assert_eq!(r.code(), "unauthorized");
        }
        assert_eq!(
            app.get("/v1/accounts/whoami", None).await.status,
            401,
            "{backend:?}: no header"
        );

        // A locked credential refuses even the right password.
        assert!(app.state.store.lock_credentials(client.aci).await.unwrap());
        let r = app
            .get(
                "/v1/accounts/whoami",
                Some(&client.basic_auth(UsernameForm::Aci)),
            )
            .await;
        assert_eq!(r.status, 401, "{backend:?}: locked");
    }
}

#[tokio::test]
async fn failures_are_counted_by_reason() {
    let app = TestApp::new(Backend::Memory).await;
    let client = app.seed("alice").await;
    app.get(
        "/v1/accounts/whoami",
        Some(&basic(&client.aci.to_string(), "nope")),
    )
    .await;
    let metrics = app.get("/metrics", None).await;
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(
        text.contains(r#"flatline_auth_failures_total{reason="wrong_password"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn whoami_has_documented_shape_with_explicit_nulls() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let client = app.seed("alice@example.org").await;
        let r = app
            .get(
                "/v1/accounts/whoami",
                Some(&client.basic_auth(UsernameForm::Dot)),
            )
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.json(),
            json!({
                "uuid": client.aci.to_string(),
                "principal": "alice@example.org",
                "pni": client.pni.to_string(),
                "usernameHash": null,
                "usernameLinkHandle": null,
                "storageCapable": false,
                "entitlements": {"badges": [], "backup": null},
            }),
            "{backend:?}"
        );
    }
}

fn peer(s: &str) -> std::net::SocketAddr {
    s.parse().unwrap()
}

async fn whoami_from(app: &TestApp, from: &str, header: &str) -> u16 {
    app.send_from(
        peer(from),
        axum::http::Method::GET,
        "/v1/accounts/whoami",
        &[("authorization", header)],
        None,
    )
    .await
    .status
    .as_u16()
}

/// F-12: failed authentication is limited per (account, client network); the owner elsewhere is unaffected.
#[tokio::test]
async fn failed_authentication_is_limited_per_account_and_network() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let alice = app.seed("alice").await;
        let bob = app.seed("bob").await;
        let aci = alice.aci.to_string();
        let wrong = basic(&aci, "not-the-password-at-all");
        let right = alice.basic_auth(UsernameForm::Aci);
        let attacker = "[2001:db8:bad:1::1]:1";
        let mut statuses = vec![];
        for _ in 0..12 {
            statuses.push(whoami_from(&app, attacker, &wrong).await);
        }
        assert_eq!(&statuses[..10], &[401; 10], "{backend:?}");
        assert_eq!(&statuses[10..], &[429; 2], "{backend:?}");
        // Limited before the password check: even the right password from that network waits.
        assert_eq!(
            whoami_from(&app, attacker, &right).await,
            429,
            "{backend:?}"
        );
        // Another address of the same /64 is the same network.
        assert_eq!(
            whoami_from(&app, "[2001:db8:bad:1::2]:1", &wrong).await,
            429
        );
        // The owner from their own network, and other accounts from the attacker's, are unaffected.
        assert_eq!(whoami_from(&app, "198.51.100.7:1", &right).await, 200);
        assert_eq!(
            whoami_from(&app, attacker, &bob.basic_auth(UsernameForm::Aci)).await,
            200
        );
        let r = app
            .send_from(
                peer(attacker),
                axum::http::Method::GET,
                "/v1/accounts/whoami",
                &[("authorization", &wrong)],
                None,
            )
            .await;
        assert!(r.headers.contains_key("retry-after"));
    }
}

/// F-12: guessing from many networks exhausts a per-account budget; after that every network gets a single try
/// per regeneration period, while the owner (whose network has no failures) still gets in.
#[tokio::test]
async fn distributed_guessing_slows_down_without_locking_out_the_owner() {
    let app = TestApp::new(Backend::Memory).await;
    let alice = app.seed("alice").await;
    let wrong = basic(&alice.aci.to_string(), "not-the-password-at-all");
    let right = alice.basic_auth(UsernameForm::Aci);
    for i in 0..120 {
        let from = format!("[2001:db8:{i:x}::1]:1");
        assert_eq!(whoami_from(&app, &from, &wrong).await, 401, "network {i}");
    }
    // A fresh network: one failure, then it waits.
    let fresh = "[2001:db8:ffff::1]:1";
    assert_eq!(whoami_from(&app, fresh, &wrong).await, 401);
    assert_eq!(whoami_from(&app, fresh, &wrong).await, 429);
    // The owner is never locked out from a network without failures.
    assert_eq!(whoami_from(&app, "198.51.100.7:1", &right).await, 200);
    assert_eq!(whoami_from(&app, "[2001:db8:eeee::1]:1", &right).await, 200);
}
