//! `PUT /v1/accounts/attributes` and `DELETE /v1/accounts/me`.

use axum::http::Method;
use flatline_testkit::UsernameForm;
use serde_json::json;

use crate::support::{Backend, TestApp};

fn valid_attributes() -> serde_json::Value {
    json!({
        "fetchesMessages": true,
        "registrationId": 1234,
        "pniRegistrationId": 4321,
        "name": "AQID",
        "unidentifiedAccessKey": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16],
        "unrestrictedUnidentifiedAccess": false,
        "capabilities": {"storage": true, "transfer": false, "spqr": true},
        "discoverableByPrincipal": true,
        "registrationLock": null,
        "recoveryPassword": null,
        "someFutureField": {"ignored": true}
    })
}

#[tokio::test]
pub async fn attributes_are_applied() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let client = app.seed("alice").await;
        let auth = client.basic_auth(UsernameForm::Aci);
        let r = app
            .put_json("/v1/accounts/attributes", &auth, &valid_attributes())
            .await;
        assert_eq!(
            r.status,
            204,
            "{backend:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let account = app.state.store.account(client.aci).await.unwrap().unwrap();
        let device = &account.devices[0];
        assert_eq!(device.settings.registration_id, 1234);
        assert_eq!(device.settings.pni_registration_id, 4321);
        assert_eq!(device.settings.name.as_deref(), Some(&[1u8, 2, 3][..]));
        assert_eq!(
            device
                .capabilities
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            vec!["spqr", "storage"]
        );
        assert_eq!(
            account.settings.unidentified_access_key,
            Some(core::array::from_fn(|i| i as u8 + 1))
        );
        assert!(account.settings.discoverable_by_principal);
        let whoami = app.get("/v1/accounts/whoami", Some(&auth)).await.json();
        assert_eq!(whoami["storageCapable"], json!(true));
    }
}

#[tokio::test]
async fn upstream_alias_and_defaults() {
    let app = TestApp::new(Backend::Memory).await;
    let client = app.seed("alice").await;
    let auth = client.basic_auth(UsernameForm::Aci);
    let r = app
        .put_json(
            "/v1/accounts/attributes",
            &auth,
            &json!({"registrationId": 5, "discoverableByPhoneNumber": true}),
        )
        .await;
    assert_eq!(r.status, 204);
    assert!(
        app.state
            .store
            .account(client.aci)
            .await
            .unwrap()
            .unwrap()
            .settings
            .discoverable_by_principal
    );
    // Absent means false (Flatline's default), not "keep".
    let r = app
        .put_json(
            "/v1/accounts/attributes",
            &auth,
            &json!({"registrationId": 5}),
        )
        .await;
    assert_eq!(r.status, 204);
    assert!(
        !app.state
            .store
            .account(client.aci)
            .await
            .unwrap()
            .unwrap()
            .settings
            .discoverable_by_principal
    );
}

#[tokio::test]
pub async fn bad_bodies_are_refused_and_write_nothing() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let client = app.seed("alice").await;
        let auth = client.basic_auth(UsernameForm::Aci);
        let before = app.state.store.account(client.aci).await.unwrap();
        let with = |patch: serde_json::Value| {
            let mut v = valid_attributes();
            for (k, val) in patch.as_object().unwrap() {
                v[k] = val.clone();
            }
            v.to_string()
        };
        let cases: Vec<(&str, String, u16, &str)> = vec![
            (
                "truncated JSON",
                "{\"registrationId\": 12".into(),
                400,
                "invalid_json",
            ),
            ("not JSON", "registrationId=12".into(), 400, "invalid_json"),
            (
                "wrong type",
                with(json!({"registrationId": "twelve"})),
                400,
                "invalid_json",
            ),
            (
                "bad base64 name",
                with(json!({"name": "***"})),
                400,
                "invalid_json",
            ),
            (
                "access key element out of range",
                with(json!({"unidentifiedAccessKey": [300]})),
                400,
                "invalid_json",
            ),
            (
                "registration id 0",
                with(json!({"registrationId": 0})),
                422,
                "validation_failed",
            ),
            (
                "registration id missing",
                json!({"fetchesMessages": true}).to_string(),
                422,
                "validation_failed",
            ),
            (
                "registration id too big",
                with(json!({"registrationId": 16384})),
                422,
                "validation_failed",
            ),
            (
                "pni registration id too big",
                with(json!({"pniRegistrationId": 70000})),
                422,
                "validation_failed",
            ),
            (
                "name too long",
                with(json!({"name": base64_of(226)})),
                422,
                "validation_failed",
            ),
            (
                "access key 15 bytes",
                with(json!({"unidentifiedAccessKey": base64_of(15)})),
                422,
                "validation_failed",
            ),
        ];
        for (name, body, status, code) in cases {
            let r = app
                .send(
                    Method::PUT,
                    "/v1/accounts/attributes",
                    &[("authorization", &auth)],
                    Some(&body),
                )
                .await;
            assert_eq!(
                (r.status.as_u16(), r.code().as_str()),
                (status, code),
                "{backend:?}: {name}"
            );
            assert_eq!(
                app.state.store.account(client.aci).await.unwrap(),
                before,
                "{backend:?}: {name} wrote something"
            );
        }
        let r = app
            .send(
                Method::PUT,
                "/v1/accounts/attributes",
                &[("authorization", &auth), ("content-type", "text/plain")],
                Some("{}"),
            )
            .await;
        assert_eq!(r.status, 400, "{backend:?}: wrong content type");
    }
}

fn base64_of(n: usize) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(vec![7u8; n])
}

#[tokio::test]
pub async fn deleting_the_account_removes_it() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let client = app.seed("alice").await;
        let auth = client.basic_auth(UsernameForm::Aci);
        let r = app
            .send(
                Method::DELETE,
                "/v1/accounts/me",
                &[("authorization", &auth)],
                None,
            )
            .await;
        assert_eq!(r.status, 204, "{backend:?}");
        assert!(app.state.store.account(client.aci).await.unwrap().is_none());
        assert!(
            app.state
                .store
                .account_by_pni(client.pni)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            app.get("/v1/accounts/whoami", Some(&auth)).await.status,
            401
        );
        // The principal is free again.
        app.seed("alice").await;
    }
}
