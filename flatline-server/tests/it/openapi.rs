//! `/openapi.json`: the document is well-formed OpenAPI 3.1 with the expected security schemes, and it describes
//! exactly the routes the router serves — derived from the router and the source, not from a hand-kept list.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use axum::http::Method;
use flatline_server::config::Config;
use serde_json::Value;

use crate::support::{Backend, TestApp};

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];

async fn served_document(app: &TestApp) -> Value {
    let r = app.get("/openapi.json", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["cache-control"], "public, max-age=3600");
    r.json()
}

/// `(METHOD, path template) -> operation` for every operation of the document.
fn operations(doc: &Value) -> BTreeMap<(String, String), Value> {
    let mut ops = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths object") {
        for (method, op) in item.as_object().expect("path item object") {
            assert!(
                METHODS.contains(&method.as_str()),
                "{path}: unexpected key {method}"
            );
            ops.insert((method.to_uppercase(), path.clone()), op.clone());
        }
    }
    ops
}

/// Every `$ref` in `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(s)) => out.push(s),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

/// A concrete path for a template: UUIDs where the document says `format: uuid`, `1` elsewhere.
fn concrete(path: &str, op: &Value) -> String {
    let mut out = path.to_owned();
    for p in op["parameters"].as_array().into_iter().flatten() {
        if p["in"] != "path" {
            continue;
        }
        let name = p["name"].as_str().expect("parameter name");
        let value = if p["schema"]["format"] == "uuid" {
            "9d0652a3-dcc3-4d11-975f-74d61598733f"
        } else {
            "1"
        };
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

#[tokio::test]
async fn the_document_is_openapi_3_1_with_the_security_schemes() {
    let app = TestApp::new(Backend::Memory).await;
    let doc = served_document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "Flatline");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["basicAuth"]["type"], "http");
    assert_eq!(schemes["basicAuth"]["scheme"], "basic");
    assert_eq!(schemes["registrationAuth"]["scheme"], "basic");
    assert_eq!(schemes["unidentifiedAccessKey"]["type"], "apiKey");
    assert_eq!(schemes["unidentifiedAccessKey"]["in"], "header");
    assert_eq!(
        schemes["unidentifiedAccessKey"]["name"],
        "Unidentified-Access-Key"
    );

    let ops = operations(&doc);
    let mut operation_ids = BTreeSet::new();
    for ((method, path), op) in &ops {
        let at = format!("{method} {path}");
        let id = op["operationId"].as_str().expect("operationId");
        assert!(operation_ids.insert(id.to_owned()), "{at}: duplicate {id}");
        let summary = op["summary"]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: no summary"));
        assert!(!summary.contains('\n'), "{at}: the summary is one line");
        // Responses: at least one, keyed by a status code, each with a description.
        let responses = op["responses"].as_object().expect("responses");
        assert!(!responses.is_empty(), "{at}: no responses");
        for (status, response) in responses {
            let code: u16 = status.parse().unwrap_or_else(|_| panic!("{at}: {status}"));
            assert!((100..600).contains(&code), "{at}: {status}");
            assert!(response["description"].is_string(), "{at} {status}");
            // Error answers carry a JSON body (the back-channel logout has its own OpenID error shape), except
            // the health check's plain-text 503.
            if code >= 400 && code != 503 {
                let content = &response["content"]["application/json"]["schema"];
                assert!(content["$ref"].is_string(), "{at} {status}: no JSON body");
            }
        }
        // The only intended 5xx is 502; 500 is documented as "a bug or the database"; 503 is the health check.
        for status in responses.keys().filter(|s| s.starts_with('5')) {
            assert!(
                ["500", "502", "503"].contains(&status.as_str()),
                "{at}: {status}"
            );
        }
        // Every template parameter is declared as a required path parameter, and nothing else is.
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .inspect(|p| assert_eq!(p["required"], true, "{at}"))
            .filter_map(|p| p["name"].as_str())
            .collect();
        let templated: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        assert_eq!(declared, templated, "{at}");
        // Security requirements name defined schemes.
        for requirement in op["security"].as_array().into_iter().flatten() {
            for name in requirement.as_object().expect("requirement").keys() {
                assert!(schemes[name].is_object(), "{at}: unknown scheme {name}");
            }
        }
        // A JSON request body is a documented object.
        if let Some(body) = op["requestBody"].as_object() {
            assert_eq!(body["required"], true, "{at}");
            assert!(body["content"].is_object(), "{at}");
        }
    }
    // Every reference resolves within the document.
    let mut all = vec![];
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r.strip_prefix('#').expect("local reference");
        assert!(doc.pointer(pointer).is_some(), "dangling {r}");
    }
    // The device scheme is used, and the key fetch accepts either credential.
    let fetch = &ops[&(
        "GET".to_owned(),
        "/v2/keys/{identifier}/{device}".to_owned(),
    )];
    assert_eq!(
        fetch["security"],
        serde_json::json!([{"basicAuth": []}, {"unidentifiedAccessKey": []}])
    );
    let delete = &ops[&("DELETE".to_owned(), "/v1/accounts/me".to_owned())];
    assert!(delete["responses"]["204"]["headers"]["Flatline-End-Session"].is_object());
    // What `flatline-server openapi` prints is what the server serves.
    assert_eq!(
        serde_json::to_value(flatline_server::http::openapi_document(
            &Config::default().validate().unwrap()
        ))
        .expect("serializes"),
        doc
    );
}

/// Every documented operation reaches a handler, and every other method on a documented path is 405: the router
/// serves nothing on these paths that the document does not describe.
#[tokio::test]
async fn every_documented_operation_is_routed_and_nothing_else_on_its_path() {
    let app = TestApp::new(Backend::Memory).await;
    let doc = served_document(&app).await;
    let ops = operations(&doc);
    let paths: BTreeSet<&String> = ops.keys().map(|(_, p)| p).collect();
    for path in paths {
        let item = &doc["paths"][path];
        let any_op = item
            .as_object()
            .and_then(|m| m.values().next())
            .expect("an operation");
        let uri = concrete(path, any_op);
        for method in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
            let documented = ops.contains_key(&(method.to_owned(), path.clone()));
            let r = app
                .send(
                    Method::from_bytes(method.as_bytes()).expect("method"),
                    &uri,
                    &[],
                    None,
                )
                .await;
            let fallback = r.status == 404
                && serde_json::from_slice::<Value>(&r.body)
                    .is_ok_and(|b| b["message"] == "no such endpoint");
            if documented {
                assert!(
                    !fallback && r.status != 405,
                    "{method} {uri}: documented but not routed ({})",
                    r.status
                );
            } else {
                assert_eq!(r.status, 405, "{method} {uri}: routed but not documented");
            }
        }
    }
}

/// The routes come only from `utoipa_axum::routes!` (which documents them), and the handlers named there are
/// exactly the document's operations.
#[tokio::test]
async fn routes_are_registered_only_with_their_documentation() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut handlers = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("src/http") {
        let path = entry.expect("entry").path();
        let source = std::fs::read_to_string(&path).expect("source");
        let name = path.display().to_string();
        // Plain axum registration would serve a route the document does not describe.
        for bypass in [".route(", ".route_service(", ".nest(", ".nest_service("] {
            assert!(!source.contains(bypass), "{name} registers with {bypass}");
        }
        for (i, _) in source.match_indices("routes!(") {
            let rest = &source[i + "routes!(".len()..];
            let list = &rest[..rest.find(')').expect("closing parenthesis")];
            handlers.extend(
                list.split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(str::to_owned),
            );
        }
    }
    let app = TestApp::new(Backend::Memory).await;
    let doc = served_document(&app).await;
    let operation_ids: BTreeSet<String> = operations(&doc)
        .values()
        .map(|op| op["operationId"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(handlers, operation_ids);
    assert!(operation_ids.contains("healthz") && operation_ids.contains("openapi_json"));
}

/// With a separate admin listener, `/healthz` and `/metrics` leave the main router and its document together.
#[tokio::test]
async fn the_admin_listener_takes_health_and_metrics_out_of_the_document() {
    let mut config = Config::default();
    config.server.admin_listen = Some("127.0.0.1:0".parse().expect("address"));
    let app = TestApp::with_config(Backend::Memory, config).await;
    let doc = served_document(&app).await;
    for path in ["/healthz", "/metrics"] {
        assert!(doc["paths"][path].is_null(), "{path} documented");
        assert_eq!(app.get(path, None).await.status, 404, "{path} served");
    }
    assert!(doc["paths"]["/v1/accounts/whoami"].is_object());
}
