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
