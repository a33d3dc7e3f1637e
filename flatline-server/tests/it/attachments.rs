//! Attachments v4: the upload form, the TUS server and ranged downloads (M§6, API.md §13).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flatline_core::time::Clock as _;
use flatline_server::config::Config;
use flatline_testkit::UsernameForm;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use crate::support::{Backend, Response, TestApp};

const MIB: usize = 1024 * 1024;

async fn app_with_storage(max: u64) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.storage.path = Some(dir.path().to_path_buf());
    config.storage.max_attachment_bytes = max;
    (TestApp::with_config(Backend::Memory, config).await, dir)
}

/// Sends `body` (any [`Body`], so a test can break the stream midway).
async fn send(
    app: &TestApp,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> Response {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut request = b.body(body).unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 1], 40000))));
    let response = flatline_server::http::app(app.state.clone())
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    Response {
        status,
        headers,
        body,
    }
}

struct Form {
    key: String,
    auth: String,
    metadata: String,
    location: String,
}

async fn form(app: &TestApp, auth: &str, query: &str) -> Form {
    let r = app
        .get(&format!("/v4/attachments/form/upload{query}"), Some(auth))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let f = r.json();
    assert_eq!(f["cdn"], 3);
    let key = f["key"].as_str().unwrap().to_owned();
    assert_eq!(key.len(), 20);
    assert_eq!(
        f["headers"]["Upload-Metadata"],
        format!("filename {}", STANDARD.encode(&key))
    );
    let location = f["signedUploadLocation"].as_str().unwrap().to_owned();
    assert_eq!(
        location,
        format!("{}/attachments", app.state.config.server.public_url)
    );
    Form {
        key,
        auth: f["headers"]["Authorization"].as_str().unwrap().to_owned(),
        metadata: f["headers"]["Upload-Metadata"].as_str().unwrap().to_owned(),
        location,
    }
}

fn offset(r: &Response) -> u64 {
    r.headers["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 256) as u8).collect()
}

const OCTETS: (&str, &str) = ("content-type", "application/offset+octet-stream");

#[tokio::test]
async fn one_mib_in_two_patches_resumed_after_a_dropped_connection() {
    let (app, _dir) = app_with_storage(2 * MIB as u64).await;
    let bob = app.seed("bob").await;
    let f = form(
        &app,
        &bob.basic_auth(UsernameForm::Aci),
        "?uploadLength=1048576",
    )
    .await;
    let path = format!("/attachments/{}", f.key);
    let tus = [
        ("tus-resumable", "1.0.0"),
        ("authorization", f.auth.as_str()),
    ];
    let length = MIB.to_string();
    let create = [
        tus[0],
        tus[1],
        ("upload-length", length.as_str()),
        ("upload-metadata", f.metadata.as_str()),
    ];
    let r = send(&app, Method::POST, "/attachments", &create, Body::empty()).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.headers["location"], format!("{}/{}", f.location, f.key));
    assert_eq!(r.headers["tus-resumable"], "1.0.0");
    assert_eq!(offset(&r), 0);

    let bytes = data(MIB);
    // The first PATCH's connection drops after 300 KiB of its 600 KiB.
    let sent = bytes[..300 * 1024].to_vec();
    let broken = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(axum::body::Bytes::from(sent)),
        Err(std::io::Error::other("connection reset")),
    ]);
    let patch = |off: String| {
        vec![
            tus[0],
            tus[1],
            OCTETS,
            ("upload-offset", Box::leak(off.into_boxed_str())),
        ]
    };
    let r = send(
        &app,
        Method::PATCH,
        &path,
        &patch("0".into()),
        Body::from_stream(broken),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "upload_interrupted");

    // Nothing is served before the upload completes.
    assert_eq!(app.get(&path, None).await.status, 404);

    // Resume: HEAD gives the offset the server has.
    let r = send(&app, Method::HEAD, &path, &tus, Body::empty()).await;
    assert_eq!(r.status, 200);
    assert_eq!(offset(&r), 300 * 1024);
    assert_eq!(r.headers["upload-length"], length.as_str());
    assert_eq!(r.headers["cache-control"], "no-store");

    // A wrong offset is 409 and writes nothing.
    let r = send(
        &app,
        Method::PATCH,
        &path,
        &patch("0".into()),
        Body::from(vec![1u8; 10]),
    )
    .await;
    assert_eq!(r.status, 409);
    let r = send(
        &app,
        Method::PATCH,
        &path,
        &patch("1048575".into()),
        Body::from(vec![1u8; 1]),
    )
    .await;
    assert_eq!(r.status, 409);

    // The second PATCH sends the rest.
    let r = send(
        &app,
        Method::PATCH,
        &path,
        &patch((300 * 1024).to_string()),
        Body::from(bytes[300 * 1024..].to_vec()),
    )
    .await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(offset(&r), MIB as u64);
    let r = send(&app, Method::HEAD, &path, &tus, Body::empty()).await;
    assert_eq!(offset(&r), MIB as u64);

    // Whole and by range, identical bytes; ETag and If-None-Match.
    let whole = app.get(&path, None).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, bytes);
    assert_eq!(whole.headers["accept-ranges"], "bytes");
    let etag = whole.headers["etag"].to_str().unwrap().to_owned();
    let mut stitched = Vec::new();
    for (range, want) in [
        ("bytes=0-99999", 0..100_000),
        ("bytes=100000-999999", 100_000..1_000_000),
        ("bytes=1000000-", 1_000_000..MIB),
    ] {
        let r = send(&app, Method::GET, &path, &[("range", range)], Body::empty()).await;
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(
            r.headers["content-range"],
            format!("bytes {}-{}/{MIB}", want.start, want.end - 1)
        );
        assert_eq!(r.body, bytes[want].to_vec());
        stitched.extend_from_slice(&r.body);
    }
    assert_eq!(stitched, bytes);
    let r = send(
        &app,
        Method::GET,
        &path,
        &[("range", "bytes=-10")],
        Body::empty(),
    )
    .await;
    assert_eq!(r.body, bytes[MIB - 10..].to_vec());
    let r = send(
        &app,
        Method::GET,
        &path,
        &[("range", "bytes=1048576-")],
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, 416);
    assert_eq!(r.headers["content-range"], format!("bytes */{MIB}"));
    let r = send(
        &app,
        Method::GET,
        &path,
        &[("if-none-match", &etag)],
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, 304);
    let r = send(&app, Method::HEAD, &path, &[], Body::empty()).await;
    assert_eq!(r.headers["content-length"], length.as_str());

    // A finished upload takes no more bytes and cannot be terminated.
    let r = send(
        &app,
        Method::PATCH,
        &path,
        &patch(MIB.to_string()),
        Body::from(vec![1u8]),
    )
    .await;
    assert_eq!(r.status, 409);
    assert_eq!(
        send(&app, Method::DELETE, &path, &tus, Body::empty())
            .await
            .status,
        404
    );
}

#[tokio::test]
pub async fn limits_tokens_creation_with_upload_and_termination() {
    let (app, _dir) = app_with_storage(MIB as u64).await;
    let bob = app.seed("bob").await;
    let auth = bob.basic_auth(UsernameForm::Aci);
    // The form needs device credentials; its uploadLength is capped.
    assert_eq!(
        app.get("/v4/attachments/form/upload", None).await.status,
        401
    );
    let r = app
        .get(
            "/v4/attachments/form/upload?uploadLength=1048577",
            Some(&auth),
        )
        .await;
    assert_eq!(r.status, 413);
    assert_eq!(
        app.get("/v4/attachments/form/upload?uploadLength=0", Some(&auth))
            .await
            .status,
        400
    );

    let f = form(&app, &auth, "").await;
    let path = format!("/attachments/{}", f.key);
    let create = |len: &'static str, token: String| {
        vec![
            ("tus-resumable", "1.0.0"),
            ("authorization", Box::leak(token.into_boxed_str()) as &str),
            ("upload-length", len),
            (
                "upload-metadata",
                Box::leak(f.metadata.clone().into_boxed_str()) as &str,
            ),
        ]
    };
    // Over the cap: 413 at creation.
    let r = send(
        &app,
        Method::POST,
        "/attachments",
        &create("1048577", f.auth.clone()),
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, 413);
    // A token for another key, a forged token, none: 401.
    let other = form(&app, &auth, "").await;
    assert_eq!(
        send(
            &app,
            Method::POST,
            "/attachments",
            &create("10", other.auth.clone()),
            Body::empty()
        )
        .await
        .status,
        401
    );
    assert_eq!(
        send(
            &app,
            Method::POST,
            "/attachments",
            &create("10", "Bearer 1.2.AAAA".into()),
            Body::empty()
        )
        .await
        .status,
        401
    );
    assert_eq!(
        send(
            &app,
            Method::HEAD,
            &path,
            &[("authorization", "Bearer x")],
            Body::empty()
        )
        .await
        .status,
        401
    );
    // No token at all: 401 before the metadata is read (found by schemathesis: it was a 400).
    assert_eq!(
        send(&app, Method::POST, "/attachments", &[], Body::empty())
            .await
            .status,
        401
    );
    // A form's uploadLength bounds its upload.
    let small = form(&app, &auth, "?uploadLength=5").await;
    let c = vec![
        ("authorization", small.auth.as_str()),
        ("upload-length", "6"),
        ("upload-metadata", small.metadata.as_str()),
    ];
    assert_eq!(
        send(&app, Method::POST, "/attachments", &c, Body::empty())
            .await
            .status,
        413
    );
    // Another TUS version: 412.
    let mut v2 = create("10", f.auth.clone());
    v2[0] = ("tus-resumable", "0.2.2");
    assert_eq!(
        send(&app, Method::POST, "/attachments", &v2, Body::empty())
            .await
            .status,
        412
    );

    // Creation with upload: the body is the first chunk.
    let mut c = create("10", f.auth.clone());
    c.push(OCTETS);
    let r = send(
        &app,
        Method::POST,
        "/attachments",
        &c,
        Body::from(b"hello".to_vec()),
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(offset(&r), 5);
    assert_eq!(
        send(
            &app,
            Method::POST,
            "/attachments",
            &c,
            Body::from(b"hello".to_vec())
        )
        .await
        .status,
        409,
        "the key exists"
    );
    // A body past Upload-Length: 413.
    let tus = [
        ("tus-resumable", "1.0.0"),
        ("authorization", f.auth.as_str()),
    ];
    let p = [tus[0], tus[1], OCTETS, ("upload-offset", "5")];
    assert_eq!(
        send(
            &app,
            Method::PATCH,
            &path,
            &p,
            Body::from(b"0123456789".to_vec())
        )
        .await
        .status,
        413
    );
    let np = [tus[0], tus[1], ("upload-offset", "5")];
    assert_eq!(
        send(&app, Method::PATCH, &path, &np, Body::from(b"x".to_vec()))
            .await
            .status,
        415
    );
    // Termination.
    assert_eq!(
        send(&app, Method::DELETE, &path, &tus, Body::empty())
            .await
            .status,
        204
    );
    assert_eq!(
        send(&app, Method::HEAD, &path, &tus, Body::empty())
            .await
            .status,
        404
    );
    assert_eq!(
        send(&app, Method::PATCH, &path, &p, Body::from(b"x".to_vec()))
            .await
            .status,
        404
    );
    assert_eq!(app.get(&path, None).await.status, 404);
    assert_eq!(
        app.get("/attachments/..%2F..%2Fetc%2Fpasswd", None)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn cleanup_removes_expired_unfinished_uploads() {
    let (app, dir) = app_with_storage(MIB as u64).await;
    let bob = app.seed("bob").await;
    let f = form(&app, &bob.basic_auth(UsernameForm::Aci), "").await;
    let c = [
        ("authorization", f.auth.as_str()),
        ("upload-length", "100"),
        ("upload-metadata", f.metadata.as_str()),
        OCTETS,
    ];
    assert_eq!(
        send(
            &app,
            Method::POST,
            "/attachments",
            &c,
            Body::from(vec![1u8; 10])
        )
        .await
        .status,
        201
    );
    let storage = app.state.storage.clone();
    assert_eq!(
        storage.cleanup(app.clock.now()).await.unwrap(),
        0,
        "not expired yet"
    );
    app.clock
        .advance(std::time::Duration::from_secs(86_400 + 3601));
    assert_eq!(storage.cleanup(app.clock.now()).await.unwrap(), 1);
    let left: Vec<_> = std::fs::read_dir(dir.path().join("uploads"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "no upload files left");
    let tus = [("authorization", f.auth.as_str())];
    let path = format!("/attachments/{}", f.key);
    assert_eq!(
        send(&app, Method::HEAD, &path, &tus, Body::empty())
            .await
            .status,
        401,
        "the token expired with it"
    );
}

/// `OPTIONS /attachments` tells a TUS client what is served, with no credentials.
#[tokio::test]
async fn tus_options_lists_the_version_extensions_and_limit() {
    let (app, _dir) = app_with_storage(5 * 1024 * 1024).await;
    let r = app
        .send(axum::http::Method::OPTIONS, "/attachments", &[], None)
        .await;
    assert_eq!(r.status, 204);
    let h = |n: &str| {
        r.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(h("tus-resumable").as_deref(), Some("1.0.0"));
    assert_eq!(h("tus-version").as_deref(), Some("1.0.0"));
    assert_eq!(
        h("tus-extension").as_deref(),
        Some("creation,creation-with-upload,termination")
    );
    assert_eq!(h("tus-max-size").as_deref(), Some("5242880"));
}
