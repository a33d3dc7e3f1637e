//! Black-box regressions for the security review (shared/reference/security-review.md): a hostile identity
//! provider stub (discovery, PAR and JWKS answers chosen by the test, hits counted) and IPv6 limiter keying.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use flatline_core::store::Store;
use flatline_server::config::Config;
use flatline_server::oidc::ProviderRuntime;
use flatline_testkit::fake_idp::CLIENT_SECRET;
use flatline_testkit::{MemoryStore, MockClock, SeededRng};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::support::{REDIRECT, TestApp, fake_provider_config};

const JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k1","alg":"EdDSA","use":"sig"}]}"#;

/// What the stub answers, and how often each path was asked.
#[derive(Default)]
struct StubState {
    /// Overrides merged into the discovery document.
    discovery: Value,
    discovery_status: Option<u16>,
    par: Option<(u16, String)>,
    jwks: Option<String>,
    hits: HashMap<&'static str, usize>,
}

#[derive(Clone)]
struct Stub {
    issuer: String,
    state: Arc<Mutex<StubState>>,
}

impl Stub {
    async fn start(setup: impl FnOnce(&mut StubState)) -> Stub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let mut st = StubState::default();
        setup(&mut st);
        let stub = Stub {
            issuer,
            state: Arc::new(Mutex::new(st)),
        };
        let s1 = stub.clone();
        let s2 = stub.clone();
        let s3 = stub.clone();
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    let s = s1.clone();
                    async move {
                        let mut st = s.state.lock().unwrap();
                        *st.hits.entry("discovery").or_default() += 1;
                        if let Some(code) = st.discovery_status {
                            return (StatusCode::from_u16(code).unwrap(), "broken").into_response();
                        }
                        let mut doc = json!({
                            "issuer": s.issuer,
                            "authorization_endpoint": format!("{}/authorize", s.issuer),
                            "token_endpoint": format!("{}/token", s.issuer),
                            "pushed_authorization_request_endpoint": format!("{}/par", s.issuer),
                            "jwks_uri": format!("{}/jwks", s.issuer),
                        });
                        if let Some(o) = st.discovery.as_object() {
                            for (k, v) in o {
                                doc[k] = v.clone();
                            }
                        }
                        axum::Json(doc).into_response()
                    }
                }),
            )
            .route(
                "/par",
                post(move || {
                    let s = s2.clone();
                    async move {
                        let mut st = s.state.lock().unwrap();
                        *st.hits.entry("par").or_default() += 1;
                        match st.par.clone() {
                            Some((code, body)) => {
                                (StatusCode::from_u16(code).unwrap(), body).into_response()
                            }
                            None => axum::Json(json!({"request_uri": "urn:x", "expires_in": 60}))
                                .into_response(),
                        }
                    }
                }),
            )
            .route(
                "/jwks",
                get(move || {
                    let s = s3.clone();
                    async move {
                        let mut st = s.state.lock().unwrap();
                        *st.hits.entry("jwks").or_default() += 1;
                        st.jwks.clone().unwrap_or_else(|| JWKS.to_owned())
                    }
                }),
            );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        stub
    }

    fn hits(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    async fn app(&self) -> TestApp {
        let mut provider = fake_provider_config(&self.issuer);
        provider.allowed_algs = vec!["EdDSA".into()];
        let config = Config {
            providers: vec![provider.clone()],
            ..Config::default()
        };
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        TestApp::assemble(
            config,
            store,
            Arc::new(MockClock::default()),
            Arc::new(SeededRng::new(3)),
            vec![ProviderRuntime {
                config: provider,
                secret: Zeroizing::new(CLIENT_SECRET.to_owned()),
            }],
        )
        .await
    }
}

async fn start_session(app: &TestApp) -> crate::support::Response {
    let body = json!({"providerId": "fake", "codeChallenge": "a".repeat(43), "state": "st", "redirectUri": REDIRECT});
    app.send(
        Method::POST,
        "/v1/verification/session",
        &[],
        Some(&body.to_string()),
    )
    .await
}

async fn logout(app: &TestApp, provider: &str, token: &str) -> u16 {
    app.send(
        Method::POST,
        &format!("/v1/verification/providers/{provider}/backchannel-logout"),
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(&format!("logout_token={token}")),
    )
    .await
    .status
    .as_u16()
}

/// F-05: a discovered `jwks_uri` must be https (or loopback http); `file://` is only for configuration.
#[tokio::test]
async fn discovered_file_jwks_uri_is_refused() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("hardening");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&file, JWKS).unwrap();
    let uri = format!("file://{}", file.display());
    let stub = Stub::start(|s| {
        s.discovery = json!({"jwks_uri": uri, "end_session_endpoint": "http://logout.example/end"})
    })
    .await;
    let app = stub.app().await;
    assert!(
        app.state.registration.refresh_jwks("fake").await.is_err(),
        "a discovered file:// JWKS must not be read"
    );
    let provider = app.state.registration.provider("fake").unwrap().clone();
    let endpoints = app.state.registration.client().endpoints(&provider).await;
    assert!(
        endpoints.map_or(true, |e| e.end_session.is_none()),
        "a discovered plain-http end_session_endpoint must not reach apps"
    );
}

/// F-05: an unauthenticated back-channel logout never triggers the first JWKS fetch and pin.
#[tokio::test]
async fn logout_requests_do_not_pin_the_jwks() {
    let stub = Stub::start(|_| {}).await;
    let app = stub.app().await;
    assert_eq!(logout(&app, "fake", "e30.e30.e30").await, 400);
    assert_eq!(stub.hits("jwks"), 0);
    assert!(app.state.store.pinned_jwks("fake").await.unwrap().is_none());
}

/// F-11: what the identity provider said stays in the log; the client gets a fixed 502.
#[tokio::test]
async fn idp_error_details_are_not_returned() {
    let stub = Stub::start(|s| {
        s.par = Some((400, "SECRET-IDP-DETAIL at /var/lib/idp".into()));
    })
    .await;
    let app = stub.app().await;
    let r = start_session(&app).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (502, "idp_error"));
    let body = String::from_utf8_lossy(&r.body);
    for leak in ["SECRET-IDP-DETAIL", "127.0.0.1", "/var/lib", "PAR"] {
        assert!(!body.contains(leak), "{body}");
    }
    // Discovery failures too.
    let broken = Stub::start(|s| s.discovery_status = Some(500)).await;
    let app = broken.app().await;
    let r = start_session(&app).await;
    assert_eq!(r.status, 502);
    assert!(!String::from_utf8_lossy(&r.body).contains("127.0.0.1"));
}

/// F-06: a failed discovery is remembered for a short while, so unauthenticated requests do not re-fetch it each
/// time.
#[tokio::test]
async fn failed_discovery_is_not_refetched_per_request() {
    let stub = Stub::start(|s| s.discovery_status = Some(500)).await;
    let app = stub.app().await;
    for _ in 0..3 {
        let r = app.get("/v1/verification", None).await;
        assert_eq!(r.json()["providers"], json!([]));
        assert_eq!(start_session(&app).await.status, 502);
    }
    assert_eq!(stub.hits("discovery"), 1);
}

/// F-13: IdP bodies are read up to a cap, not until the connection ends.
#[tokio::test]
async fn oversized_idp_bodies_are_refused() {
    let padded = format!("{}{}", JWKS, " ".repeat(2 << 20));
    let stub = Stub::start(|s| s.jwks = Some(padded)).await;
    let app = stub.app().await;
    assert!(app.state.registration.refresh_jwks("fake").await.is_err());
    let normal = Stub::start(|_| {}).await;
    let app = normal.app().await;
    assert_eq!(
        app.state.registration.refresh_jwks("fake").await.unwrap(),
        1
    );
}

/// F-15: attacker-chosen provider segments and JWS `alg` values cannot start a log line of their own.
#[tokio::test]
async fn logout_rejections_cannot_inject_log_lines() {
    use base64::Engine as _;
    let capture = crate::invites::CAPTURE.clone();
    let stub = Stub::start(|_| {}).await;
    let app = stub.app().await;
    app.state.registration.refresh_jwks("fake").await.unwrap();
    assert_eq!(
        logout(&app, "x%0AFLPROBE-INJECTED-PROVIDER", "e30.e30.e30").await,
        400
    );
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(r#"{"alg":"EdDSA\nFLPROBE-INJECTED-ALG","kid":"k1"}"#);
    let token = format!("{header}.e30.AAAA");
    assert_eq!(logout(&app, "fake", &token).await, 400);
    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("FLPROBE-INJECTED-PROVIDER"),
        "the capture works"
    );
    for line in logs.lines() {
        assert!(!line.starts_with("FLPROBE-INJECTED"), "{line}");
    }
}
