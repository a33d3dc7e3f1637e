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

use crate::object_stores::{StoreKind, TestStorage};
use crate::support::{Backend, Response, TestApp};

const MIB: usize = 1024 * 1024;

async fn app_with_storage(kind: StoreKind, max: u64) -> (TestApp, TestStorage) {
    app_with(kind, max, Config::default()).await
}

async fn app_with(kind: StoreKind, max: u64, mut config: Config) -> (TestApp, TestStorage) {
    let storage = TestStorage::new(kind).await;
    storage.apply(&mut config);
    config.storage.max_attachment_bytes = max;
    (TestApp::with_config(Backend::Memory, config).await, storage)
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
    for kind in StoreKind::ALL {
        one_mib_in_two_patches(kind).await;
    }
}

async fn one_mib_in_two_patches(kind: StoreKind) {
    let (app, _storage) = app_with_storage(kind, 2 * MIB as u64).await;
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
    for kind in StoreKind::ALL {
        limits_tokens_creation_and_termination(kind).await;
    }
}

async fn limits_tokens_creation_and_termination(kind: StoreKind) {
    let (app, _storage) = app_with_storage(kind, MIB as u64).await;
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
    for kind in StoreKind::ALL {
        cleanup_removes_expired_uploads(kind).await;
    }
}

async fn cleanup_removes_expired_uploads(kind: StoreKind) {
    let (app, storage) = app_with_storage(kind, MIB as u64).await;
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
    assert!(
        !storage.keys("uploads/").await.is_empty(),
        "{kind:?}: upload state kept"
    );
    let objects = app.state.storage.clone();
    assert_eq!(
        objects.cleanup(app.clock.now()).await.unwrap(),
        0,
        "not expired yet"
    );
    app.clock
        .advance(std::time::Duration::from_secs(86_400 + 3601));
    assert_eq!(objects.cleanup(app.clock.now()).await.unwrap(), 1);
    assert_eq!(
        storage.keys("uploads/").await,
        Vec::<String>::new(),
        "{kind:?}: no upload state left"
    );
    let tus = [("authorization", f.auth.as_str())];
    let path = format!("/attachments/{}", f.key);
    assert_eq!(
        send(&app, Method::HEAD, &path, &tus, Body::empty())
            .await
            .status,
        401,
        "the token expired with it"
    );

    // Retention: finished attachments older than `attachment_retention_days` (by the object's own modification
    // time, so the clock moves to the real present first) are deleted; a younger one stays.
    app.clock.set(flatline_core::time::Clock::now(
        &flatline_server::system::SystemClock,
    ));
    let g = form(&app, &bob.basic_auth(UsernameForm::Aci), "").await;
    let c = [
        ("authorization", g.auth.as_str()),
        ("upload-length", "10"),
        ("upload-metadata", g.metadata.as_str()),
        OCTETS,
    ];
    let r = send(
        &app,
        Method::POST,
        "/attachments",
        &c,
        Body::from(vec![7u8; 10]),
    )
    .await;
    assert_eq!(r.status, 201);
    let finished = format!("/attachments/{}", g.key);
    assert_eq!(app.get(&finished, None).await.status, 200);
    app.clock
        .advance(std::time::Duration::from_secs(44 * 86_400));
    assert_eq!(
        objects.cleanup(app.clock.now()).await.unwrap(),
        0,
        "{kind:?}: kept 44 days"
    );
    assert_eq!(app.get(&finished, None).await.status, 200);
    app.clock
        .advance(std::time::Duration::from_secs(2 * 86_400));
    assert_eq!(
        objects.cleanup(app.clock.now()).await.unwrap(),
        1,
        "{kind:?}: gone after 45"
    );
    assert_eq!(app.get(&finished, None).await.status, 404);
    assert_eq!(
        storage.keys("objects/").await,
        Vec::<String>::new(),
        "{kind:?}"
    );
}

/// `OPTIONS /attachments` tells a TUS client what is served, with no credentials.
#[tokio::test]
async fn tus_options_lists_the_version_extensions_and_limit() {
    let (app, _storage) = app_with_storage(StoreKind::Local, 5 * 1024 * 1024).await;
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

/// `attachmentCreateBytes` (M§6) takes the KiB of a declared `uploadLength`, all or nothing; a form without
/// `uploadLength` takes none (only `attachmentCreate`).
#[tokio::test]
async fn attachment_create_bytes_counts_declared_lengths_only() {
    let mut config = Config::default();
    config.limits.0.insert(
        "attachmentCreateBytes".into(),
        flatline_server::config::LimiterConfig {
            bucket_size: 3,
            permit_regeneration_seconds: 3600.0,
        },
    );
    let (app, _storage) = app_with(StoreKind::Local, MIB as u64, config).await;
    let bob = app.seed("bob").await;
    let auth = bob.basic_auth(UsernameForm::Aci);
    let status = |q: &'static str| {
        let (app, auth) = (&app, auth.clone());
        async move {
            app.get(&format!("/v4/attachments/form/upload{q}"), Some(&auth))
                .await
        }
    };
    // Forms without a length are not counted: after several, all 3 KiB are still there.
    for _ in 0..5 {
        assert_eq!(status("").await.status, 200);
    }
    assert_eq!(status("?uploadLength=2048").await.status, 200);
    // 1025 bytes are 2 KiB; 1 KiB is left: refused, and one KiB (an hour) short.
    let r = status("?uploadLength=1025").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.code(), "rate_limited");
    assert_eq!(r.headers["retry-after"], "3600");
    // The refused form took nothing: the last KiB is still there, then the bucket is empty.
    assert_eq!(status("?uploadLength=1024").await.status, 200);
    assert_eq!(status("?uploadLength=1").await.status, 429);
    assert_eq!(status("").await.status, 200, "no uploadLength: not counted");
    // Per account.
    let alice = app.seed("alice").await;
    let r = app
        .get(
            "/v4/attachments/form/upload?uploadLength=3072",
            Some(&alice.basic_auth(UsernameForm::Aci)),
        )
        .await;
    assert_eq!(r.status, 200);
    // An hour later one KiB is back.
    app.clock.advance(std::time::Duration::from_secs(3600));
    assert_eq!(status("?uploadLength=1000").await.status, 200);
}

/// An upload larger than an S3 part (5 MiB) in uneven PATCHes, one of them broken off: what HEAD reports is what
/// the store kept, the finished object is byte-identical whole and across the part boundaries, and a terminated
/// large upload leaves nothing behind (no upload state, no open S3 multipart upload).
#[tokio::test]
async fn an_upload_larger_than_a_part_in_uneven_patches() {
    for kind in StoreKind::ALL {
        larger_than_a_part(kind).await;
    }
}

async fn larger_than_a_part(kind: StoreKind) {
    const LEN: usize = 12 * MIB + 7;
    let (app, storage) = app_with_storage(kind, 16 * MIB as u64).await;
    let bob = app.seed("bob").await;
    let auth = bob.basic_auth(UsernameForm::Aci);
    let bytes = data(LEN);
    let f = form(&app, &auth, "").await;
    let path = format!("/attachments/{}", f.key);
    let tus = [
        ("tus-resumable", "1.0.0"),
        ("authorization", f.auth.as_str()),
    ];
    let len = LEN.to_string();
    let create = [
        tus[0],
        tus[1],
        ("upload-length", len.as_str()),
        ("upload-metadata", f.metadata.as_str()),
        OCTETS,
    ];
    // Creation with the first 3 MiB (short of a part).
    let r = send(
        &app,
        Method::POST,
        "/attachments",
        &create,
        Body::from(bytes[..3 * MIB].to_vec()),
    )
    .await;
    assert_eq!(r.status, 201, "{kind:?}");
    assert_eq!(offset(&r), 3 * MIB as u64);
    let head = || {
        let (app, tus, path) = (&app, tus, path.clone());
        async move { offset(&send(app, Method::HEAD, &path, &tus, Body::empty()).await) }
    };
    assert_eq!(head().await, 3 * MIB as u64);
    // 4 MiB more in 64 KiB chunks, then the connection drops: one part is full, 2 MiB wait for the next.
    let mut chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = bytes[3 * MIB..7 * MIB]
        .chunks(64 * 1024)
        .map(|c| Ok(axum::body::Bytes::copy_from_slice(c)))
        .collect();
    chunks.push(Err(std::io::Error::other("connection reset")));
    let off = (3 * MIB).to_string();
    let p = [tus[0], tus[1], OCTETS, ("upload-offset", off.as_str())];
    let r = send(
        &app,
        Method::PATCH,
        &path,
        &p,
        Body::from_stream(futures_util::stream::iter(chunks)),
    )
    .await;
    assert_eq!(r.code(), "upload_interrupted");
    assert_eq!(head().await, 7 * MIB as u64, "{kind:?}");
    assert_eq!(
        app.get(&path, None).await.status,
        404,
        "not served before the end"
    );
    // The rest in two PATCHes: 4 MiB (crossing the second part boundary), then 1 MiB + 7.
    for (from, to) in [(7 * MIB, 11 * MIB), (11 * MIB, LEN)] {
        let off = from.to_string();
        let p = [tus[0], tus[1], OCTETS, ("upload-offset", off.as_str())];
        let r = send(
            &app,
            Method::PATCH,
            &path,
            &p,
            Body::from(bytes[from..to].to_vec()),
        )
        .await;
        assert_eq!(
            r.status,
            204,
            "{kind:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(offset(&r), to as u64);
    }
    let whole = app.get(&path, None).await;
    assert_eq!(whole.status, 200);
    assert!(whole.body == bytes, "{kind:?}: identical bytes");
    let range = format!("bytes={}-{}", 5 * MIB - 3, 10 * MIB + 2);
    let r = send(
        &app,
        Method::GET,
        &path,
        &[("range", &range)],
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, 206);
    assert!(
        r.body == bytes[5 * MIB - 3..10 * MIB + 3],
        "{kind:?}: range across parts"
    );
    assert_eq!(
        storage.keys("uploads/").await,
        Vec::<String>::new(),
        "{kind:?}"
    );
    assert_eq!(
        storage.keys("objects/").await,
        vec![format!("objects/attachments/{}", f.key)]
    );

    // A terminated upload of more than a part leaves nothing.
    let g = form(&app, &auth, "").await;
    let gtus = [
        ("tus-resumable", "1.0.0"),
        ("authorization", g.auth.as_str()),
    ];
    let c = [
        gtus[0],
        gtus[1],
        ("upload-length", len.as_str()),
        ("upload-metadata", g.metadata.as_str()),
        OCTETS,
    ];
    let r = send(
        &app,
        Method::POST,
        "/attachments",
        &c,
        Body::from(bytes[..6 * MIB].to_vec()),
    )
    .await;
    assert_eq!(offset(&r), 6 * MIB as u64);
    if kind == StoreKind::S3 {
        assert_eq!(storage.open_multipart_uploads().await, 1);
    }
    let gpath = format!("/attachments/{}", g.key);
    assert_eq!(
        send(&app, Method::DELETE, &gpath, &gtus, Body::empty())
            .await
            .status,
        204
    );
    assert_eq!(
        storage.keys("uploads/").await,
        Vec::<String>::new(),
        "{kind:?}"
    );
    assert_eq!(storage.open_multipart_uploads().await, 0, "aborted");
    assert_eq!(app.get(&gpath, None).await.status, 404);
}

/// `kill -9` of a real server process halfway through a PATCH (7 of 12 MiB sent, the request still open), then a
/// restart on the same data directory and database: the partial object was never stored as an object (nothing
/// under `objects/`) and is not served (404); the upload still exists, as TUS wants, and HEAD reports the bytes
/// the store kept (at least what HEAD said before the kill, at most what was sent); the client resumes from there
/// and the finished attachment is byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_an_upload_never_leaves_a_servable_partial_object() {
    for kind in StoreKind::ALL {
        kill_9_during_an_upload(kind).await;
    }
}

async fn kill_9_during_an_upload(kind: StoreKind) {
    use tokio::io::AsyncWriteExt as _;
    const LEN: usize = 12 * MIB;
    const SENT: usize = 7 * MIB;
    let storage = TestStorage::new(kind).await;
    let dir = storage.dir.path();
    let db = format!("sqlite://{}/flatline.db?mode=rwc", dir.display());
    let store = crate::message_processes::open_store(&db).await;
    let bob = crate::message_processes::seed(store.as_ref(), "bob").await;
    drop(store);
    let extra = format!(
        "[storage]\n{}max_attachment_bytes = {}\n",
        storage.toml(),
        16 * MIB
    );
    let mut first = crate::socket::start_process_with(dir, "first", &db, None, &extra).await;
    let http = reqwest::Client::new();
    let base = |port: u16| format!("http://127.0.0.1:{port}");
    let f: serde_json::Value = http
        .get(format!(
            "{}/v4/attachments/form/upload?uploadLength={LEN}",
            base(first.port)
        ))
        .header("authorization", bob.basic_auth(UsernameForm::Dot))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = f["key"].as_str().unwrap().to_owned();
    let bearer = f["headers"]["Authorization"].as_str().unwrap().to_owned();
    let r = http
        .post(format!("{}/attachments", base(first.port)))
        .header("tus-resumable", "1.0.0")
        .header("authorization", &bearer)
        .header("upload-length", LEN.to_string())
        .header(
            "upload-metadata",
            f["headers"]["Upload-Metadata"].as_str().unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let head = |port: u16| {
        let (http, bearer, key) = (http.clone(), bearer.clone(), key.clone());
        async move {
            let r = http
                .head(format!("http://127.0.0.1:{port}/attachments/{key}"))
                .header("tus-resumable", "1.0.0")
                .header("authorization", &bearer)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.headers()
                    .get("upload-offset")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok()),
            )
        }
    };

    // A PATCH that declares all 12 MiB and sends 7 MiB, then stalls with the connection open.
    let bytes = data(LEN);
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", first.port))
        .await
        .unwrap();
    let request = format!(
        "PATCH /attachments/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nAuthorization: {bearer}\r\n\
         Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: {LEN}\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp.write_all(&bytes[..SENT]).await.unwrap();
    tcp.flush().await.unwrap();
    // Wait until the store has kept at least one S3 part's worth (the local store: that many bytes written).
    let mut before = 0;
    for _ in 0..2400 {
        before = head(first.port).await.1.unwrap_or(0);
        if before >= 5 * MIB as u64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        before >= 5 * MIB as u64,
        "{kind:?}: the server took {before} bytes"
    );
    first.child.start_kill().expect("SIGKILL");
    first.child.wait().await.expect("killed");
    drop(tcp);
    assert_eq!(
        storage.keys("objects/").await,
        Vec::<String>::new(),
        "{kind:?}: no object, partial or not, after kill -9"
    );

    let second = crate::socket::start_process_with(dir, "second", &db, None, &extra).await;
    let download = format!("{}/attachments/{key}", base(second.port));
    assert_eq!(http.get(&download).send().await.unwrap().status(), 404);
    let (status, resumed) = head(second.port).await;
    assert_eq!(status, 200, "{kind:?}: the upload survives the crash");
    let resumed = resumed.expect("Upload-Offset");
    assert!(
        (before..=SENT as u64).contains(&resumed),
        "{kind:?}: resumes at {resumed} (HEAD said {before} before the kill, {SENT} were sent)"
    );
    let from = usize::try_from(resumed).unwrap();
    let r = http
        .patch(&download)
        .header("tus-resumable", "1.0.0")
        .header("authorization", &bearer)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", resumed.to_string())
        .body(bytes[from..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{kind:?}");
    let got = http.get(&download).send().await.unwrap();
    assert_eq!(got.status(), 200);
    let got = got.bytes().await.unwrap();
    assert!(
        got.as_ref() == bytes.as_slice(),
        "{kind:?}: identical bytes after the restart"
    );
}

/// The object store failing under the server (here the local store's directory replaced by a file, as a lost mount
/// or a full disk would make every write fail) is a 503 `storage_unavailable` with `Retry-After`, never a 500, and
/// nothing is published; once the directory is back, uploads work again without a restart.
#[tokio::test]
async fn a_failing_object_store_is_a_503_and_recovers() {
    let (app, storage) = app_with_storage(StoreKind::Local, 2 * MIB as u64).await;
    let bob = app.seed("bob").await;
    let auth = bob.basic_auth(UsernameForm::Aci);
    let root = storage.dir.path().join("store");
    let create = |f: &Form| {
        vec![
            ("tus-resumable", "1.0.0"),
            (
                "authorization",
                Box::leak(f.auth.clone().into_boxed_str()) as &str,
            ),
            ("upload-length", "4"),
            (
                "upload-metadata",
                Box::leak(f.metadata.clone().into_boxed_str()),
            ),
        ]
    };
    let f = form(&app, &auth, "?uploadLength=4").await;
    let _ = std::fs::remove_dir_all(&root);
    std::fs::write(&root, b"not a directory").unwrap();
    let r = send(
        &app,
        Method::POST,
        "/attachments",
        &create(&f),
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["code"], "storage_unavailable");
    assert!(r.headers.contains_key("retry-after"));
    let r = send(
        &app,
        Method::GET,
        &format!("/attachments/{}", f.key),
        &[],
        Body::empty(),
    )
    .await;
    assert_eq!(
        r.status, 503,
        "a read of a broken store is unavailable, not missing"
    );

    std::fs::remove_file(&root).unwrap();
    std::fs::create_dir_all(&root).unwrap();
    let f = form(&app, &auth, "?uploadLength=4").await;
    let r = send(
        &app,
        Method::POST,
        "/attachments",
        &create(&f),
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}
