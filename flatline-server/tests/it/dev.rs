//! `flatline-server dev`: the development server in-process on a random loopback port, registering through its
//! built-in IdP over real HTTP; restarts keep the pinned key valid; the IdP exists only in dev mode.

use std::time::Duration;

use flatline_server::config::Config;
use flatline_server::dev_idp::{self, DevOptions, DevServer};
use flatline_server::system::OsRandom;
use flatline_testkit::remote::{Browser, Callback, Remote};
use serde_json::json;
use tokio::sync::oneshot;

use crate::support::{Backend, TestApp};

struct Running {
    remote: Remote,
    tls_port: u16,
    certificate: flatline_server::tls::DevCertificate,
    redirect: String,
    issuer: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(data_dir: &std::path::Path) -> Running {
        let opts = DevOptions {
            data_dir: data_dir.to_owned(),
            listen: "127.0.0.1:0".parse().unwrap(),
            tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        };
        let server: DevServer = dev_idp::prepare(Config::default().validate().unwrap(), &opts)
            .await
            .expect("dev server prepares");
        let base = format!("http://{}", server.addr);
        let issuer = server.idp.issuer().to_owned();
        let tls_port = server.tls_addr.expect("TLS listener").port();
        let certificate = server.certificate.clone().expect("dev certificate");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("dev server runs");
        });
        Running {
            remote: Remote::new(&base).unwrap(),
            tls_port,
            certificate,
            redirect: format!("{base}/dev-idp/callback"),
            issuer,
            stop: Some(stop),
            task,
        }
    }

    /// `GET /healthz` over the TLS listener, trusting only the development certificate, by the name `localhost`.
    async fn healthz_over_tls(&self) -> u16 {
        let pem = std::fs::read(&self.certificate.cert_file).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
            .resolve(
                "localhost",
                std::net::SocketAddr::from(([127, 0, 0, 1], self.tls_port)),
            )
            .build()
            .unwrap();
        let r = http
            .get(format!("https://localhost:{}/healthz", self.tls_port))
            .send()
            .await
            .unwrap();
        assert!(r.headers().contains_key("x-signal-timestamp"));
        r.status().as_u16()
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), &mut self.task)
            .await
            .expect("dev server stops")
            .expect("dev server task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_through_the_built_in_idp_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Running::start(dir.path()).await;
    // The TLS listener serves the same API with the self-signed localhost certificate.
    assert_eq!(dev.healthz_over_tls().await, 200);
    let fingerprint = dev.certificate.sha256.clone();
    assert_eq!(fingerprint.len(), 64);
    let providers = dev.remote.providers().await.unwrap();
    assert_eq!(
        providers,
        vec![
            json!({"id": "dev", "name": "INSECURE development login", "issuer": dev.issuer,
            "authorizationEndpoint": format!("{}/authorize", dev.issuer), "principalClaim": "email", "inviteRequired": false})
        ]
    );
    let browser = Browser::new(vec![dev.redirect.clone()]).unwrap();
    let (client, j) = dev
        .remote
        .register_through(&browser, "dev", &dev.redirect, Some("erin"), &OsRandom)
        .await
        .unwrap();
    assert_eq!(
        (j["principal"].clone(), j["reregistration"].clone()),
        (json!("erin@dev.invalid"), json!(false))
    );
    let who = dev.remote.whoami(&client).await.unwrap();
    assert_eq!(
        (who.status, who.body["uuid"].clone()),
        (200, j["uuid"].clone())
    );

    // Without a login hint the IdP logs in as dev-user.
    let (_, d) = dev
        .remote
        .register_through(&browser, "dev", &dev.redirect, None, &OsRandom)
        .await
        .unwrap();
    assert_eq!(d["principal"], json!("dev-user@dev.invalid"));

    // The IdP checks PKCE and spends codes once.
    let (_, attempt) = dev
        .remote
        .start("dev", &dev.redirect, Some("mallory"), &OsRandom)
        .await
        .unwrap();
    let callback = browser
        .authorize(&attempt.session, &dev.redirect)
        .await
        .unwrap();
    assert_eq!(callback.iss.as_deref(), Some(dev.issuer.as_str()));
    let mut wrong = attempt.clone();
    wrong.verifier = "x".repeat(43);
    let v = dev.remote.verify(&wrong, &callback).await.unwrap();
    assert_eq!((v.status, v.code()), (401, "code_invalid"), "{}", v.body);
    // The request URI was used up by the first authorization.
    assert!(
        browser
            .authorize(&attempt.session, &dev.redirect)
            .await
            .is_err()
    );
    // A forged code is refused too.
    let (_, attempt2) = dev
        .remote
        .start("dev", &dev.redirect, Some("mallory"), &OsRandom)
        .await
        .unwrap();
    let forged = Callback {
        code: "forged".into(),
        state: attempt2.state.clone(),
        iss: callback.iss.clone(),
    };
    let v = dev.remote.verify(&attempt2, &forged).await.unwrap();
    assert_eq!((v.status, v.code()), (401, "code_invalid"));

    // The callback page shows what the app would send.
    let page = dev
        .remote
        .get(
            &format!(
                "/dev-idp/callback?code=abc%3Cdef&state=st&iss={}",
                dev.issuer
            ),
            None,
        )
        .await
        .unwrap();
    let text = page.body.as_str().unwrap_or_default();
    assert_eq!(page.status, 200);
    assert!(text.contains("\ncode=abc&lt;def\nstate=st\n"), "{text}");
    assert!(text.contains("INSECURE"));

    // A restart (new port, same data directory) keeps the account and the key the server pinned.
    dev.stop().await;
    let dev = Running::start(dir.path()).await;
    assert_eq!(
        dev.certificate.sha256, fingerprint,
        "the certificate (clients pin it) survives a restart"
    );
    assert_eq!(dev.healthz_over_tls().await, 200);
    let browser = Browser::new(vec![dev.redirect.clone()]).unwrap();
    let (again, j2) = dev
        .remote
        .register_through(&browser, "dev", &dev.redirect, Some("erin"), &OsRandom)
        .await
        .unwrap();
    assert_eq!(
        (j2["uuid"].clone(), j2["reregistration"].clone()),
        (j["uuid"].clone(), json!(true))
    );
    assert_eq!(dev.remote.whoami(&again).await.unwrap().status, 200);
    dev.stop().await;
}

#[tokio::test]
async fn dev_mode_refuses_public_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DevOptions {
        data_dir: dir.path().to_owned(),
        listen: "0.0.0.0:0".parse().unwrap(),
        tls_listen: None,
    };
    let e = dev_idp::prepare(Config::default().validate().unwrap(), &opts)
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("loopback"), "{e}");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing created"
    );
}

#[tokio::test]
async fn the_normal_server_has_no_development_idp() {
    let app = TestApp::new(Backend::Memory).await;
    for path in [
        "/dev-idp/.well-known/openid-configuration",
        "/dev-idp/jwks",
        "/dev-idp/callback",
    ] {
        assert_eq!(app.get(path, None).await.status, 404, "{path}");
    }
    // And no configuration key can mount it.
    assert!(Config::from_toml_and_env("[dev]\nenabled = true\n", []).is_err());
    assert!(Config::from_toml_and_env("dev_idp = true\n", []).is_err());
}
