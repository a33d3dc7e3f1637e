//! Usernames, username links and principal discovery over HTTP, on every backend.

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use flatline_server::config::{Config, LimiterConfig};
use flatline_testkit::usernames::decrypt_username_link;
use flatline_testkit::{SimClient, SimUsername, UsernameForm};
use serde_json::{Value, json};

use crate::support::{Backend, Response, TestApp};

const RESERVE: &str = "/v1/accounts/username_hash/reserve";
const CONFIRM: &str = "/v1/accounts/username_hash/confirm";
const LINK: &str = "/v1/accounts/username_link";

fn auth(c: &SimClient) -> String {
    c.basic_auth(UsernameForm::Aci)
}

async fn reserve(app: &TestApp, c: &SimClient, names: &[&SimUsername]) -> Response {
    app.put_json(RESERVE, &auth(c), &SimUsername::reserve_body(names))
        .await
}

async fn confirm(app: &TestApp, c: &SimClient, u: &SimUsername, with_link: bool) -> Response {
    app.put_json(
        CONFIRM,
        &auth(c),
        &u.confirm_body(app.rng.as_ref(), with_link),
    )
    .await
}

async fn delete(app: &TestApp, c: &SimClient, uri: &str) -> Response {
    app.send(Method::DELETE, uri, &[("authorization", &auth(c))], None)
        .await
}

/// Reserve and confirm (both must succeed); returns the confirm response body.
async fn take(app: &TestApp, c: &SimClient, u: &SimUsername, with_link: bool) -> Value {
    let r = reserve(app, c, &[u]).await;
    assert_eq!(
        r.status,
        200,
        "reserve {}",
        String::from_utf8_lossy(&r.body)
    );
    let r = confirm(app, c, u, with_link).await;
    assert_eq!(
        r.status,
        200,
        "confirm {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

async fn lookup(app: &TestApp, hash: &str) -> Response {
    app.get(&format!("/v1/accounts/username_hash/{hash}"), None)
        .await
}

async fn whoami(app: &TestApp, c: &SimClient) -> Value {
    app.get("/v1/accounts/whoami", Some(&auth(c))).await.json()
}

/// What the store holds for an account's usernames (to assert that refused requests change nothing).
async fn snapshot(app: &TestApp, c: &SimClient) -> impl PartialEq + std::fmt::Debug {
    let store = &app.state.store;
    // Authentication records device use; that is not a change under test.
    let mut account = store.account(c.aci).await.unwrap();
    for d in account.iter_mut().flat_map(|a| a.devices.iter_mut()) {
        d.last_seen = flatline_core::time::Timestamp(0);
    }
    (
        account,
        store.username_claims_of(c.aci).await.unwrap(),
        store.account_username_state(c.aci).await.unwrap(),
    )
}

#[tokio::test]
pub async fn full_flow_reserve_confirm_lookup_link_delete() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let alice = app.seed("alice@example.org").await;
        let taken = SimUsername::pick("taken", app.rng.as_ref());
        let bob = app.seed("bob@example.org").await;
        take(&app, &bob, &taken, false).await;

        // The first available candidate is reserved, in request order.
        let u = SimUsername::pick("alice", app.rng.as_ref());
        let r = reserve(&app, &alice, &[&taken, &u]).await;
        assert_eq!(r.status, 200, "{backend:?}");
        assert_eq!(r.json(), json!({"usernameHash": u.hash_b64()}));

        let r = confirm(&app, &alice, &u, true).await;
        assert_eq!(r.status, 200, "{backend:?}");
        let body = r.json();
        assert_eq!(body["usernameHash"], u.hash_b64());
        let handle = body["usernameLinkHandle"].as_str().unwrap().to_owned();
        let me = whoami(&app, &alice).await;
        assert_eq!(me["usernameHash"], u.hash_b64());
        assert_eq!(me["usernameLinkHandle"], handle.as_str());

        // Lookup by hash: unauthenticated only; padded input is accepted too.
        let r = lookup(&app, &u.hash_b64()).await;
        assert_eq!(
            (r.status.as_u16(), r.json()),
            (200, json!({"uuid": alice.aci.to_string()}))
        );
        assert_eq!(lookup(&app, &URL_SAFE.encode(u.hash)).await.status, 200);
        let r = app
            .get(
                &format!("/v1/accounts/username_hash/{}", u.hash_b64()),
                Some(&auth(&bob)),
            )
            .await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (400, "authenticated_lookup".into())
        );

        // The link blob decrypts to the username with the client's entropy.
        let r = app.get(&format!("{LINK}/{handle}"), None).await;
        assert_eq!(r.status, 200, "{backend:?}");
        let body = r.json();
        assert_eq!(body["keepLinkHandle"], false);
        let blob = URL_SAFE_NO_PAD
            .decode(body["usernameLinkEncryptedValue"].as_str().unwrap())
            .unwrap();
        assert_eq!(decrypt_username_link(&u.entropy, &blob).unwrap(), u.name);
        assert_eq!(
            app.get(&format!("{LINK}/{handle}"), Some(&auth(&bob)))
                .await
                .status,
            400
        );

        // A retried confirm answers the same.
        let r = confirm(&app, &alice, &u, true).await;
        assert_eq!(r.json()["usernameLinkHandle"], handle.as_str());

        // Deletion clears the username and the link.
        assert_eq!(
            delete(&app, &alice, "/v1/accounts/username_hash")
                .await
                .status,
            204
        );
        assert_eq!(lookup(&app, &u.hash_b64()).await.status, 404);
        assert_eq!(app.get(&format!("{LINK}/{handle}"), None).await.status, 404);
        let me = whoami(&app, &alice).await;
        assert_eq!(
            (me["usernameHash"].clone(), me["usernameLinkHandle"].clone()),
            (Value::Null, Value::Null)
        );
        // Deleting again is fine.
        assert_eq!(
            delete(&app, &alice, "/v1/accounts/username_hash")
                .await
                .status,
            204
        );
    }
}

#[tokio::test]
pub async fn reserve_and_confirm_conflicts_409_410() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let alice = app.seed("alice").await;
        let bob = app.seed("bob").await;
        let u = SimUsername::pick("shared", app.rng.as_ref());

        // Confirm without a reservation: 409.
        let r = confirm(&app, &alice, &u, false).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (409, "no_reservation".into()),
            "{backend:?}"
        );

        assert_eq!(reserve(&app, &alice, &[&u]).await.status, 200);
        // Bob cannot reserve it while Alice's reservation lives (5 minutes).
        app.clock.advance(Duration::from_secs(299));
        let r = reserve(&app, &bob, &[&u]).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (409, "username_unavailable".into())
        );
        let r = confirm(&app, &bob, &u, false).await;
        assert_eq!(r.status, 409);

        // After the TTL Bob takes it over; Alice's confirm is then 410, and then 409.
        app.clock.advance(Duration::from_secs(2));
        assert_eq!(reserve(&app, &bob, &[&u]).await.status, 200);
        let r = confirm(&app, &alice, &u, false).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (410, "username_taken".into()),
            "{backend:?}"
        );
        assert_eq!(confirm(&app, &alice, &u, false).await.status, 409);
        assert_eq!(confirm(&app, &bob, &u, false).await.status, 200);
        assert_eq!(
            lookup(&app, &u.hash_b64()).await.json()["uuid"],
            bob.aci.to_string()
        );
        // A confirmed username is never available to others.
        app.clock.advance(Duration::from_secs(365 * 24 * 3600));
        assert_eq!(reserve(&app, &alice, &[&u]).await.status, 409);
        // Reserving one's own confirmed username succeeds and changes nothing.
        let before = snapshot(&app, &bob).await;
        let r = reserve(&app, &bob, &[&u]).await;
        assert_eq!(
            (r.status.as_u16(), r.json()),
            (200, json!({"usernameHash": u.hash_b64()}))
        );
        assert_eq!(snapshot(&app, &bob).await, before);
    }
}

#[tokio::test]
pub async fn invalid_requests_are_422_or_400_and_change_nothing() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let alice = app.seed("alice").await;
        let a = auth(&alice);
        let u = SimUsername::pick("alice", app.rng.as_ref());
        let other = SimUsername::pick("other", app.rng.as_ref());
        assert_eq!(reserve(&app, &alice, &[&u]).await.status, 200);
        let before = snapshot(&app, &alice).await;

        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let proof = u.proof(app.rng.as_ref());
        let mut non_canonical = proof;
        non_canonical[..32].copy_from_slice(&[0xff; 32]);
        let mut flipped = proof;
        flipped[40] ^= 1;
        let cases: Vec<(&str, Value, u16)> = vec![
            (RESERVE, json!({"usernameHashes": []}), 422),
            (RESERVE, json!({}), 422),
            (
                RESERVE,
                json!({"usernameHashes": vec![u.hash_b64(); 21]}),
                422,
            ),
            (RESERVE, json!({"usernameHashes": [b64(&[1; 31])]}), 422),
            (RESERVE, json!({"usernameHashes": [b64(&[1; 33])]}), 422),
            (RESERVE, json!({"usernameHashes": ["!!not base64!!"]}), 400),
            (RESERVE, json!({"usernameHashes": "nope"}), 400),
            // A proof for one hash presented with another.
            (
                CONFIRM,
                json!({"usernameHash": other.hash_b64(), "zkProof": b64(&proof)}),
                422,
            ),
            (
                CONFIRM,
                json!({"usernameHash": u.hash_b64(), "zkProof": b64(&non_canonical)}),
                422,
            ),
            (
                CONFIRM,
                json!({"usernameHash": u.hash_b64(), "zkProof": b64(&flipped)}),
                422,
            ),
            (
                CONFIRM,
                json!({"usernameHash": u.hash_b64(), "zkProof": b64(&proof[..96])}),
                422,
            ),
            (CONFIRM, json!({"usernameHash": u.hash_b64()}), 422),
            (
                CONFIRM,
                json!({"usernameHash": b64(&u.hash[..31]), "zkProof": b64(&proof)}),
                422,
            ),
            (
                CONFIRM,
                json!({"usernameHash": u.hash_b64(), "zkProof": b64(&proof), "encryptedUsername": ""}),
                422,
            ),
            (
                CONFIRM,
                json!({"usernameHash": u.hash_b64(), "zkProof": b64(&proof), "encryptedUsername": b64(&[7; 129])}),
                422,
            ),
            (
                CONFIRM,
                json!({"usernameHash": u.hash_b64(), "zkProof": "%%%"}),
                400,
            ),
        ];
        for (uri, body, want) in cases {
            let r = app.put_json(uri, &a, &body).await;
            assert_eq!(r.status.as_u16(), want, "{backend:?} {uri} {body}");
            assert_eq!(
                snapshot(&app, &alice).await,
                before,
                "{backend:?} {uri} {body}"
            );
        }
        let r = app
            .put_json(
                CONFIRM,
                &a,
                &json!({"usernameHash": other.hash_b64(), "zkProof": b64(&proof)}),
            )
            .await;
        assert_eq!(r.code(), "invalid_proof");

        // Lookup: bad encodings and lengths are 422, unknown hashes 404.
        for bad in ["abc", "!!!!", &b64(&[1; 31])] {
            assert_eq!(lookup(&app, bad).await.status, 422, "{backend:?} {bad}");
        }
        assert_eq!(lookup(&app, &b64(&[1; 32])).await.status, 404);
        // Reservations are not found by lookup.
        assert_eq!(lookup(&app, &u.hash_b64()).await.status, 404);

        // A valid 128-byte proof with a 129-byte link... and finally the right request works.
        assert_eq!(confirm(&app, &alice, &u, true).await.status, 200);
        // Unauthenticated writes are 401.
        let r = app
            .send(
                Method::PUT,
                RESERVE,
                &[],
                Some(&SimUsername::reserve_body(&[&u]).to_string()),
            )
            .await;
        assert_eq!(r.status, 401);
    }
}

#[tokio::test]
pub async fn holds_last_seven_days_and_at_most_three() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let alice = app.seed("alice").await;
        let bob = app.seed("bob").await;
        let rng = app.rng.as_ref();
        let names: Vec<SimUsername> = (0..6)
            .map(|i| SimUsername::pick(&format!("name{i}x"), rng))
            .collect();

        take(&app, &alice, &names[0], false).await;
        take(&app, &alice, &names[1], false).await;
        // names[0] is held for Alice: Bob cannot reserve it, Alice can take it back.
        assert_eq!(
            reserve(&app, &bob, &[&names[0]]).await.status,
            409,
            "{backend:?}"
        );
        app.clock.advance(Duration::from_secs(7 * 24 * 3600));
        assert_eq!(
            reserve(&app, &bob, &[&names[0]]).await.status,
            409,
            "{backend:?} at 7 days"
        );
        app.clock.advance(Duration::from_secs(1));
        assert_eq!(
            reserve(&app, &bob, &[&names[0]]).await.status,
            200,
            "{backend:?} after 7 days"
        );

        // Cap: the lapsed hold on 0 is pruned; moving through 2, 3, 4 holds 1, 2, 3; moving to 5 releases the
        // oldest (1).
        take(&app, &alice, &names[2], false).await;
        take(&app, &alice, &names[3], false).await;
        take(&app, &alice, &names[4], false).await;
        let held = app
            .state
            .store
            .account_username_state(alice.aci)
            .await
            .unwrap()
            .unwrap()
            .holds;
        assert_eq!(held.len(), 3, "{backend:?}");
        assert_eq!(reserve(&app, &bob, &[&names[1]]).await.status, 409);
        take(&app, &alice, &names[5], false).await;
        assert_eq!(
            reserve(&app, &bob, &[&names[1]]).await.status,
            200,
            "{backend:?} released"
        );
        for n in &names[2..5] {
            assert_eq!(
                reserve(&app, &bob, &[n]).await.status,
                409,
                "{backend:?} still held"
            );
        }
        // Alice may take a held name back.
        take(&app, &alice, &names[2], false).await;
        assert_eq!(
            lookup(&app, &names[2].hash_b64()).await.json()["uuid"],
            alice.aci.to_string()
        );
    }
}

async fn put_link(app: &TestApp, c: &SimClient, u: &SimUsername, keep: bool) -> String {
    let r = app
        .put_json(LINK, &auth(c), &u.link_body(app.rng.as_ref(), keep))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["usernameLinkHandle"].as_str().unwrap().to_owned()
}

async fn find(app: &TestApp, c: &SimClient, principal: &str) -> Response {
    app.get(
        &format!("/v1/accounts/principal/{principal}"),
        Some(&auth(c)),
    )
    .await
}

#[tokio::test]
pub async fn username_links_put_get_delete() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let alice = app.seed("alice").await;
        let a = auth(&alice);
        let rng = app.rng.as_ref();
        let u = SimUsername::pick("linked", rng);
        let r = app.put_json(LINK, &a, &u.link_body(rng, false)).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (409, "no_username".into()),
            "{backend:?}"
        );

        take(&app, &alice, &u, false).await;
        let h1 = put_link(&app, &alice, &u, false).await;
        assert_eq!(put_link(&app, &alice, &u, true).await, h1);
        let h2 = put_link(&app, &alice, &u, false).await;
        assert_ne!(h1, h2);
        assert_eq!(app.get(&format!("{LINK}/{h1}"), None).await.status, 404);
        let r = app.get(&format!("{LINK}/{h2}"), None).await;
        let blob = URL_SAFE_NO_PAD
            .decode(r.json()["usernameLinkEncryptedValue"].as_str().unwrap())
            .unwrap();
        assert_eq!(decrypt_username_link(&u.entropy, &blob).unwrap(), u.name);
        assert_eq!(
            whoami(&app, &alice).await["usernameLinkHandle"],
            h2.as_str()
        );

        // Sizes: 1..128 bytes.
        let before = snapshot(&app, &alice).await;
        for body in [
            json!({"usernameLinkEncryptedValue": "", "keepLinkHandle": true}),
            json!({"usernameLinkEncryptedValue": URL_SAFE_NO_PAD.encode([1; 129])}),
            json!({"keepLinkHandle": true}),
        ] {
            assert_eq!(
                app.put_json(LINK, &a, &body).await.status,
                422,
                "{backend:?} {body}"
            );
        }
        assert_eq!(snapshot(&app, &alice).await, before);
        assert_eq!(
            app.get(&format!("{LINK}/not-a-uuid"), None).await.status,
            422
        );

        assert_eq!(delete(&app, &alice, LINK).await.status, 204);
        assert_eq!(app.get(&format!("{LINK}/{h2}"), None).await.status, 404);
        assert_eq!(
            whoami(&app, &alice).await["usernameLinkHandle"],
            Value::Null
        );
        // The username itself stays.
        assert_eq!(lookup(&app, &u.hash_b64()).await.status, 200);
    }
}

#[tokio::test]
async fn principal_discovery_needs_opt_in_and_a_visible_principal() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let alice = app.seed("alice@example.org").await;
        let bob = app.seed("bob+x@example.org").await;
        // Carol did not opt in.
        app.seed("carol@example.org").await;
        // Dave opted in but his principal is opaque: never discoverable.
        let dave = SimClient::new(app.rng.as_ref());
        let mut new = dave.new_account(
            "opaque-dave",
            app.rng.as_ref(),
            flatline_core::time::Timestamp(0),
        );
        new.account.principal_opaque = true;
        new.account.settings.discoverable_by_principal = true;
        app.state.store.create_account(new).await.unwrap();

        let opt_in = json!({"registrationId": 1, "pniRegistrationId": 2, "fetchesMessages": true, "discoverableByPrincipal": true});
        assert_eq!(
            app.put_json("/v1/accounts/attributes", &auth(&bob), &opt_in)
                .await
                .status,
            204
        );

        let r = find(&app, &alice, "bob%2Bx%40example.org").await;
        assert_eq!(
            (r.status.as_u16(), r.json()),
            (200, json!({"uuid": bob.aci.to_string()})),
            "{backend:?}"
        );
        assert_eq!(find(&app, &alice, "bob+x@example.org").await.status, 200);
        // Exact match only.
        for p in [
            "BOB%2Bx%40example.org",
            "bob%2Bx%40example",
            "bob",
            "carol%40example.org",
            "opaque-dave",
            "%7F",
            "nobody",
        ] {
            let r = find(&app, &alice, p).await;
            assert_eq!(
                (r.status.as_u16(), r.code()),
                (404, "not_found".into()),
                "{backend:?} {p}"
            );
        }
        // Authenticated only.
        assert_eq!(
            app.get("/v1/accounts/principal/bob%2Bx%40example.org", None)
                .await
                .status,
            401
        );
    }
}

#[tokio::test]
async fn deleting_the_account_releases_its_usernames() {
    for backend in Backend::ALL {
        let app = TestApp::new(backend).await;
        let alice = app.seed("alice").await;
        let bob = app.seed("bob").await;
        let rng = app.rng.as_ref();
        let (old, current) = (
            SimUsername::pick("old", rng),
            SimUsername::pick("current", rng),
        );
        take(&app, &alice, &old, false).await;
        let handle = take(&app, &alice, &current, true).await["usernameLinkHandle"].clone();
        assert_eq!(delete(&app, &alice, "/v1/accounts/me").await.status, 204);
        assert_eq!(lookup(&app, &current.hash_b64()).await.status, 404);
        assert_eq!(
            app.get(&format!("{LINK}/{}", handle.as_str().unwrap()), None)
                .await
                .status,
            404
        );
        // No hold survives the account: both names are free at once.
        assert_eq!(
            reserve(&app, &bob, &[&old]).await.status,
            200,
            "{backend:?}"
        );
        assert_eq!(
            reserve(&app, &bob, &[&current]).await.status,
            200,
            "{backend:?}"
        );
    }
}

fn limited(name: &str, size: u32) -> Config {
    let mut config = Config::default();
    config.limits.0.insert(
        name.into(),
        LimiterConfig {
            bucket_size: size,
            permit_regeneration_seconds: 3600.0,
        },
    );
    config
}

#[tokio::test]
async fn rate_limits_in_signal_order() {
    for backend in Backend::ALL {
        // Reserve: the limiter is checked before hash sizes.
        let app = TestApp::with_config(backend, limited("usernameReserve", 1)).await;
        let alice = app.seed("alice").await;
        let u = SimUsername::pick("a", app.rng.as_ref());
        assert_eq!(reserve(&app, &alice, &[&u]).await.status, 200);
        let r = app
            .put_json(
                RESERVE,
                &auth(&alice),
                &json!({"usernameHashes": [URL_SAFE_NO_PAD.encode([1; 5])]}),
            )
            .await;
        assert_eq!(r.status, 429, "{backend:?}");
        assert!(r.headers.get("retry-after").is_some());

        // Confirm: the proof is checked before the limiter.
        let app = TestApp::with_config(backend, limited("usernameSet", 1)).await;
        let alice = app.seed("alice").await;
        let u = SimUsername::pick("a", app.rng.as_ref());
        let v = SimUsername::pick("b", app.rng.as_ref());
        take(&app, &alice, &u, false).await;
        assert_eq!(reserve(&app, &alice, &[&v]).await.status, 200);
        let mut bad = v.confirm_body(app.rng.as_ref(), false);
        bad["usernameHash"] = json!(u.hash_b64());
        assert_eq!(app.put_json(CONFIRM, &auth(&alice), &bad).await.status, 422);
        assert_eq!(
            confirm(&app, &alice, &v, false).await.status,
            429,
            "{backend:?}"
        );

        // Lookups per IP, link writes per ACI, link lookups per IP, principal lookups per ACI.
        let mut config = limited("usernameLookup", 2);
        for name in [
            "usernameLinkOperation",
            "usernameLinkLookupPerIp",
            "principalLookup",
        ] {
            config.limits.0.insert(
                name.into(),
                LimiterConfig {
                    bucket_size: 2,
                    permit_regeneration_seconds: 3600.0,
                },
            );
        }
        let app = TestApp::with_config(backend, config).await;
        let alice = app.seed("alice").await;
        let u = SimUsername::pick("a", app.rng.as_ref());
        take(&app, &alice, &u, false).await;
        let mut statuses = vec![];
        for _ in 0..3 {
            statuses.push(lookup(&app, &u.hash_b64()).await.status.as_u16());
        }
        assert_eq!(statuses, [200, 200, 429], "{backend:?} lookup");
        let mut statuses = vec![];
        for _ in 0..3 {
            let r = app
                .put_json(LINK, &auth(&alice), &u.link_body(app.rng.as_ref(), true))
                .await;
            statuses.push(r.status.as_u16());
        }
        assert_eq!(statuses, [200, 200, 429], "{backend:?} link put");
        assert_eq!(delete(&app, &alice, LINK).await.status, 429);
        let mut statuses = vec![];
        for _ in 0..3 {
            statuses.push(
                app.get(&format!("{LINK}/{}", uuid::Uuid::nil()), None)
                    .await
                    .status
                    .as_u16(),
            );
        }
        assert_eq!(statuses, [404, 404, 429], "{backend:?} link get");
        let mut statuses = vec![];
        for _ in 0..3 {
            statuses.push(
                app.get("/v1/accounts/principal/x", Some(&auth(&alice)))
                    .await
                    .status
                    .as_u16(),
            );
        }
        assert_eq!(statuses, [404, 404, 429], "{backend:?} principal");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_clients_race_for_one_username() {
    for backend in Backend::ALL {
        let app = Arc::new(TestApp::new(backend).await);
        let mut clients = Vec::new();
        for i in 0..50 {
            clients.push(Arc::new(app.seed(&format!("racer{i}")).await));
        }
        let u = Arc::new(SimUsername::pick("contested", app.rng.as_ref()));
        let tasks: Vec<_> = clients
            .iter()
            .map(|c| {
                let (app, c, u) = (app.clone(), c.clone(), u.clone());
                tokio::spawn(async move {
                    let r = reserve(&app, &c, &[&u]).await.status.as_u16();
                    let f = confirm(&app, &c, &u, true).await.status.as_u16();
                    (c.aci, r, f)
                })
            })
            .collect();
        let mut winners = vec![];
        for t in tasks {
            match t.await.unwrap() {
                (aci, 200, 200) => winners.push(aci),
                (aci, 409, 409) => {
                    assert!(
                        app.state
                            .store
                            .username_claims_of(aci)
                            .await
                            .unwrap()
                            .is_empty()
                    );
                }
                other => panic!("{backend:?}: unexpected {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "{backend:?}");
        assert_eq!(
            lookup(&app, &u.hash_b64()).await.json()["uuid"],
            winners[0].to_string()
        );
    }
}
