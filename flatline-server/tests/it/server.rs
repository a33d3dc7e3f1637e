//! The server over a real socket: health, metrics, graceful shutdown.

use std::time::Duration;

use flatline_server::config::Config;
use flatline_server::http::AppState;
use flatline_server::serve;
use flatline_testkit::{MockClock, SeededRng, UsernameForm};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::sqlite_store;

async fn http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn serves_over_tcp_and_shuts_down_gracefully() {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    let store = sqlite_store().await;
    let clock = std::sync::Arc::new(MockClock::default());
    let rng = std::sync::Arc::new(SeededRng::new(9));
    let state = AppState::new(
        config.validate().unwrap(),
        store.clone(),
        clock.clone(),
        rng.clone(),
    )
    .unwrap();
    let client = flatline_testkit::SimClient::new(rng.as_ref());
    let new = client.new_account(
        "carol",
        rng.as_ref(),
        flatline_core::time::Clock::now(clock.as_ref()),
    );
    flatline_core::store::AccountStore::create_account(store.as_ref(), new)
        .await
        .unwrap();

    let listeners = serve::bind(&state.config).await.unwrap();
    let addr = listeners.main.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve::run(state, listeners, async {
        let _ = stopped.await;
    }));

    let health = http(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let whoami = http(
        addr,
        &format!(
            "GET /v1/accounts/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
            client.basic_auth(UsernameForm::Nul)
        ),
    )
    .await;
    assert!(whoami.starts_with("HTTP/1.1 200"), "{whoami}");
    assert!(whoami.contains(&client.aci.to_string()));
    let metrics = http(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(metrics.contains(r#"flatline_http_requests_total{method="GET",route="/v1/accounts/whoami",status="200"} 1"#), "{metrics}");
    let missing = http(
        addr,
        "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("stops in time")
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
}

/// Security review F-01: an extension method never becomes a metric label (nor a log field).
#[tokio::test]
async fn unknown_methods_share_one_metric_label() {
    let app = crate::support::TestApp::new(crate::support::Backend::Memory).await;
    let method = axum::http::Method::from_bytes(b"XCARDINALITYPROBE").unwrap();
    let r = app.send(method, "/v1/nope", &[], None).await;
    assert_eq!(r.status, 404);
    assert!(r.headers.contains_key("x-signal-timestamp"));
    let metrics = String::from_utf8(app.get("/metrics", None).await.body).unwrap();
    assert!(!metrics.contains("XCARDINALITYPROBE"));
    assert!(metrics.contains("method=\"other\""), "{metrics}");
}
