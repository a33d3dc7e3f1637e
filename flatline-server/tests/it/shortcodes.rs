//! Contact shortcodes over HTTP (API §15) on every backend: create, list and revoke; redemption with other casing
//! and separators creating a `shortcode` grant once; expiry with the mock clock; the burn at the third failed
//! guess; byte-identical 404s for every unusable code; the `shortcodeAttempt` limiter per account and per /64.

use std::time::Duration;

use axum::http::Method;
use flatline_core::shortcodes::{Shortcode, word_list};
use flatline_server::config::{Config, LimiterConfig};
use flatline_testkit::{SimClient, UsernameForm};
use serde_json::{Value, json};

use crate::support::{Backend, Response, TestApp};

fn auth(c: &SimClient) -> String {
    c.basic_auth(UsernameForm::Aci)
}

async fn post(app: &TestApp, uri: &str, who: &SimClient, body: &Value) -> Response {
    app.send(
        Method::POST,
        uri,
        &[("authorization", &auth(who))],
        Some(&body.to_string()),
    )
    .await
}

async fn invite_only(app: &TestApp, who: &SimClient) {
    let r = app
        .put_json(
            "/v1/accounts/contact_policy",
            &auth(who),
            &json!({"policy": "invite_only"}),
        )
        .await;
    assert_eq!(r.status, 204);
}

async fn create(app: &TestApp, who: &SimClient, body: Value) -> Value {
    let r = post(app, "/v1/contact_shortcodes", who, &body).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

async fn redeem(app: &TestApp, who: &SimClient, shortcode: &str) -> Response {
    post(
        app,
        "/v1/contact_shortcodes/redeem",
        who,
        &json!({ "shortcode": shortcode }),
    )
    .await
}

async fn list(app: &TestApp, who: &SimClient) -> Vec<Value> {
    let r = app.get("/v1/contact_shortcodes", Some(&auth(who))).await;
    assert_eq!(r.status, 200);
    r.json()["contactShortcodes"].as_array().unwrap().clone()
}

async fn state_of(app: &TestApp, who: &SimClient, id: &Value) -> String {
    list(app, who)
        .await
        .into_iter()
        .find(|c| &c["id"] == id)
        .expect("listed")["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The same code with the words of `other` (a word pair that is certainly wrong).
fn wrong_words(code: &str, n: u16) -> String {
    let c = Shortcode::parse(code).unwrap();
    let [a, b] = c.words();
    Shortcode::new(c.nameplate(), [(a + 1 + n) % 2048, b])
        .unwrap()
        .render()
}

/// The code shouted across a room: upper case, spaces and underscores.
fn spoken(code: &str) -> String {
    format!(
        "  {} ",
        code.to_uppercase().replacen('-', " ", 1).replace('-', "_")
    )
}

/// A config whose `shortcodeAttempt` limiter never gets in the way.
fn roomy() -> Config {
    let mut config = Config::default();
    config.limits.0.insert(
        "shortcodeAttempt".into(),
        LimiterConfig {
            bucket_size: 1000,
            permit_regeneration_seconds: 1.0,
        },
    );
    config
}

#[tokio::test]
pub async fn create_list_redeem_once_and_revoke() {
    for backend in Backend::ALL {
        let app = TestApp::with_config(backend, roomy()).await;
        let bob = app.seed("bob").await;
        let alice = app.seed("alice").await;
        let carol = app.seed("carol").await;
        let r = post(&app, "/v1/contact_shortcodes", &bob, &json!({})).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (409, "contacts_not_invite_only".into()),
            "{backend:?}"
        );
        invite_only(&app, &bob).await;
        for bad in [0, -1, 86_401] {
            let r = post(
                &app,
                "/v1/contact_shortcodes",
                &bob,
                &json!({"expiresInSeconds": bad}),
            )
            .await;
            assert_eq!(r.status, 422, "{backend:?} {bad}");
        }
        let now = flatline_core::time::Clock::now(app.clock.as_ref()).as_secs();
        let first = create(&app, &bob, json!({})).await;
        assert_eq!(first["expiresAt"], json!(now + 600), "{backend:?}");
        let code = first["shortcode"].as_str().unwrap().to_owned();
        let parts: Vec<&str> = code.split('-').collect();
        assert_eq!(parts.len(), 3, "{code}");
        assert_eq!(parts[0], "1", "the smallest nameplate");
        assert!(parts[1..].iter().all(|w| word_list().contains(w)), "{code}");
        assert_eq!(Shortcode::parse(&code).unwrap().render(), code);

        // Five live shortcodes, distinct nameplates from the smallest.
        let mut codes = vec![first.clone()];
        for _ in 0..4 {
            codes.push(create(&app, &bob, json!({"expiresInSeconds": 86_400})).await);
        }
        let plates: Vec<String> = codes
            .iter()
            .map(|c| {
                c["shortcode"]
                    .as_str()
                    .unwrap()
                    .split('-')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(plates, ["1", "2", "3", "4", "5"], "{backend:?}");
        let listed = list(&app, &bob).await;
        assert_eq!(listed.len(), 5);
        // All made at the same instant: ordered by id then.
        for c in &codes {
            let l = listed.iter().find(|l| l["id"] == c["id"]).expect("listed");
            assert_eq!(
                l,
                &json!({"id": c["id"], "state": "live", "expiresAt": c["expiresAt"], "createdAt": now}),
                "{backend:?}: no code in listings"
            );
        }

        // Said with other casing and separators: works, once.
        let r = redeem(&app, &alice, &spoken(&code)).await;
        assert_eq!(
            r.status,
            200,
            "{backend:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(
            r.json(),
            json!({"owner": bob.aci.to_string(), "state": "active"})
        );
        let grants = app
            .get("/v1/contacts/grants", Some(&auth(&bob)))
            .await
            .json();
        assert_eq!(
            grants["grants"][0]["via"],
            json!({"kind": "shortcode", "inviteId": null, "shortcodeId": first["id"], "introducer": null}),
            "{backend:?}"
        );
        assert_eq!(
            app.get(&format!("/v2/keys/{}/*", bob.aci), Some(&auth(&alice)))
                .await
                .status,
            200,
            "{backend:?}: the grant opens the prekeys"
        );
        assert_eq!(state_of(&app, &bob, &first["id"]).await, "used");
        for who in [&carol, &alice] {
            let r = redeem(&app, who, &code).await;
            assert_eq!(
                (r.status.as_u16(), r.code()),
                (404, "invite_invalid".into()),
                "{backend:?}: second redeem"
            );
        }

        // Revoking: only one's own; a revoked code is dead.
        let second = &codes[1];
        let uri = format!("/v1/contact_shortcodes/{}", second["id"].as_str().unwrap());
        let r = app
            .send(
                Method::DELETE,
                &uri,
                &[("authorization", &auth(&alice))],
                None,
            )
            .await;
        assert_eq!(r.status, 404, "{backend:?}: another owner's");
        let r = app
            .send(
                Method::DELETE,
                &uri,
                &[("authorization", &auth(&bob))],
                None,
            )
            .await;
        assert_eq!(r.status, 204, "{backend:?}");
        assert_eq!(state_of(&app, &bob, &second["id"]).await, "revoked");
        let r = redeem(&app, &carol, second["shortcode"].as_str().unwrap()).await;
        assert_eq!(r.status, 404, "{backend:?}");
        for missing in [
            "/v1/contact_shortcodes/00000000-0000-4000-8000-000000000000",
            "/v1/contact_shortcodes/not-an-id",
        ] {
            let r = app
                .send(
                    Method::DELETE,
                    missing,
                    &[("authorization", &auth(&bob))],
                    None,
                )
                .await;
            assert_eq!(r.status, 404, "{backend:?} {missing}");
        }
        // The revoked and used codes keep their nameplates until they expire: the next one is 6.
        let next = create(&app, &bob, json!({})).await;
        assert!(
            next["shortcode"].as_str().unwrap().starts_with("6-"),
            "{next}"
        );
    }
}

#[tokio::test]
async fn expiry_follows_the_clock() {
    for backend in Backend::ALL {
        let app = TestApp::with_config(backend, roomy()).await;
        let bob = app.seed("bob").await;
        let alice = app.seed("alice").await;
        invite_only(&app, &bob).await;
        let c = create(&app, &bob, json!({"expiresInSeconds": 60})).await;
        app.clock.advance(Duration::from_secs(60));
        let r = redeem(&app, &alice, c["shortcode"].as_str().unwrap()).await;
        assert_eq!(r.status, 404, "{backend:?}");
        assert_eq!(state_of(&app, &bob, &c["id"]).await, "expired");
        // Its nameplate is free again.
        let again = create(&app, &bob, json!({})).await;
        assert!(
            again["shortcode"].as_str().unwrap().starts_with("1-"),
            "{again}"
        );
        app.clock.advance(Duration::from_secs(599));
        let r = redeem(&app, &alice, again["shortcode"].as_str().unwrap()).await;
        assert_eq!(r.status, 200, "{backend:?}: live until the 600th second");
    }
}

#[tokio::test]
pub async fn third_failed_guess_burns() {
    for backend in Backend::ALL {
        let app = TestApp::with_config(backend, roomy()).await;
        let bob = app.seed("bob").await;
        let mallory = app.seed("mallory").await;
        let alice = app.seed("alice").await;
        invite_only(&app, &bob).await;
        let c = create(&app, &bob, json!({})).await;
        let code = c["shortcode"].as_str().unwrap();
        for n in 0..2 {
            assert_eq!(
                redeem(&app, &mallory, &wrong_words(code, n)).await.status,
                404
            );
            assert_eq!(state_of(&app, &bob, &c["id"]).await, "live", "{backend:?}");
        }
        assert_eq!(
            redeem(&app, &mallory, &wrong_words(code, 2)).await.status,
            404
        );
        assert_eq!(
            state_of(&app, &bob, &c["id"]).await,
            "burned",
            "{backend:?}"
        );
        let r = redeem(&app, &alice, code).await;
        assert_eq!(r.status, 404, "{backend:?}: the right words after the burn");
        // Guesses on another nameplate do not touch it.
        let d = create(&app, &bob, json!({})).await;
        let other = Shortcode::parse(d["shortcode"].as_str().unwrap()).unwrap();
        for n in 0..3 {
            let elsewhere = Shortcode::new(other.nameplate() + 1, [n, n])
                .unwrap()
                .render();
            redeem(&app, &mallory, &elsewhere).await;
        }
        assert_eq!(state_of(&app, &bob, &d["id"]).await, "live", "{backend:?}");
        assert_eq!(
            redeem(&app, &alice, d["shortcode"].as_str().unwrap())
                .await
                .status,
            200
        );
    }
}

#[tokio::test]
pub async fn unusable_codes_get_identical_404s() {
    for backend in Backend::ALL {
        let app = TestApp::with_config(backend, roomy()).await;
        let bob = app.seed("bob").await;
        let alice = app.seed("alice").await;
        let mallory = app.seed("mallory").await;
        invite_only(&app, &bob).await;
        let used = create(&app, &bob, json!({})).await["shortcode"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(redeem(&app, &alice, &used).await.status, 200);
        let burned = create(&app, &bob, json!({})).await["shortcode"]
            .as_str()
            .unwrap()
            .to_owned();
        for n in 0..3 {
            redeem(&app, &mallory, &wrong_words(&burned, n)).await;
        }
        let revoked = create(&app, &bob, json!({})).await;
        let uri = format!("/v1/contact_shortcodes/{}", revoked["id"].as_str().unwrap());
        app.send(
            Method::DELETE,
            &uri,
            &[("authorization", &auth(&bob))],
            None,
        )
        .await;
        let live = create(&app, &bob, json!({"expiresInSeconds": 86_400})).await["shortcode"]
            .as_str()
            .unwrap()
            .to_owned();
        let expiring = create(&app, &bob, json!({"expiresInSeconds": 1})).await["shortcode"]
            .as_str()
            .unwrap()
            .to_owned();
        app.clock.advance(Duration::from_secs(1));
        // Bob blocks mallory: her right guess must look like any other failure.
        let r = app
            .send(
                Method::DELETE,
                &format!("/v1/contacts/grants/{}", mallory.aci),
                &[("authorization", &auth(&bob))],
                None,
            )
            .await;
        assert_eq!(r.status, 204);
        let cases = [
            ("used", &alice, used.clone()),
            ("burned", &alice, burned.clone()),
            (
                "revoked",
                &alice,
                revoked["shortcode"].as_str().unwrap().to_owned(),
            ),
            ("expired", &alice, expiring.clone()),
            ("never issued", &alice, "99-velvet-harbor".to_owned()),
            ("malformed", &alice, "hello there".to_owned()),
            ("denied redeemer", &mallory, live.clone()),
        ];
        let mut bodies = vec![];
        for (what, who, code) in cases {
            let r = redeem(&app, who, &code).await;
            assert_eq!(r.status, 404, "{backend:?} {what}");
            assert_eq!(
                r.headers.get("content-type"),
                Some(&"application/json".parse().unwrap())
            );
            bodies.push((what, r.body));
        }
        for (what, body) in &bodies {
            assert_eq!(body, &bodies[0].1, "{backend:?}: {what} differs from used");
        }
        assert_eq!(
            serde_json::from_slice::<Value>(&bodies[0].1).unwrap()["code"],
            "invite_invalid"
        );
        // The denied redeemer's right guess left the code live.
        assert_eq!(redeem(&app, &alice, &live).await.status, 200, "{backend:?}");
    }
}

/// One attempt by `who` from the client address `ip` (believed: the test's socket peer is a trusted proxy).
async fn attempt(app: &TestApp, who: &SimClient, ip: &str) -> Response {
    app.send(
        Method::POST,
        "/v1/contact_shortcodes/redeem",
        &[("authorization", &auth(who)), ("x-forwarded-for", ip)],
        Some(&json!({"shortcode": "77-velvet-harbor"}).to_string()),
    )
    .await
}

#[tokio::test]
async fn attempts_are_limited_per_account_and_per_64() {
    for backend in Backend::ALL {
        let mut config = Config::default();
        // The test client's socket peer is 192.0.2.1: trusting it makes X-Forwarded-For the client address.
        config.server.trusted_proxies = vec!["192.0.2.1/32".into()];
        let app = TestApp::with_config(backend, config).await;
        let bob = app.seed("bob").await;
        invite_only(&app, &bob).await;
        // Per account: ten, then 429 from any address.
        let mallory = app.seed("mallory").await;
        for n in 0..10 {
            let ip = ["198.51.100.1", "198.51.100.2"][n % 2];
            assert_eq!(
                attempt(&app, &mallory, ip).await.status,
                404,
                "{backend:?} {n}"
            );
        }
        let r = attempt(&app, &mallory, "198.51.100.3").await;
        assert_eq!(r.status, 429, "{backend:?}");
        assert_eq!(r.headers.get("retry-after").unwrap(), "60");
        // Per /64: ten from different accounts and addresses in one /64, then 429 for a fresh account there;
        // another /64 is unaffected.
        let mut sybils = vec![];
        for n in 0..11 {
            sybils.push(app.seed(&format!("sybil{n}")).await);
        }
        const SAME_64: [&str; 3] = [
            "2001:db8:0:1::1",
            "2001:db8:0:1:ffff::2",
            "2001:db8:0:1:1:2:3:4",
        ];
        for (n, who) in sybils.iter().take(10).enumerate() {
            assert_eq!(
                attempt(&app, who, SAME_64[n % 3]).await.status,
                404,
                "{backend:?} {n}"
            );
        }
        assert_eq!(
            attempt(&app, &sybils[10], "2001:db8:0:1::9").await.status,
            429,
            "{backend:?}"
        );
        assert_eq!(
            attempt(&app, &sybils[10], "2001:db8:0:2::9").await.status,
            404,
            "{backend:?}"
        );
        // One permit a minute comes back.
        app.clock.advance(Duration::from_secs(60));
        assert_eq!(
            attempt(&app, &mallory, "198.51.100.4").await.status,
            404,
            "{backend:?}"
        );
    }
}

/// A flood through shortcodes meets the owner window of §6 like one through a contact invite (each shortcode is
/// single-use, so the per-code breaker cannot trip; the owner's window is what holds a crowd): beyond
/// `owner_window_max` new grantees the grants are quarantined — no access, listed as requests with their shortcode
/// provenance — until the owner decides, and one decide call denies everything through a shortcode.
#[tokio::test]
async fn a_flood_through_shortcodes_is_quarantined_by_the_owner_window() {
    for backend in Backend::ALL {
        let mut config = flatline_server::config::Config::default();
        config.contacts.owner_window_max = 3;
        let app = TestApp::with_config(backend, config).await;
        let bob = app.seed("bob").await;
        invite_only(&app, &bob).await;
        let mut crowd = vec![];
        for n in 0..5 {
            let code = create(&app, &bob, json!({})).await;
            let who = app.seed(&format!("crowd{n}")).await;
            let r = redeem(&app, &who, code["shortcode"].as_str().unwrap()).await;
            assert_eq!(r.status, 200, "{backend:?}");
            crowd.push((who, code["id"].clone(), r.json()["state"].clone()));
        }
        let states: Vec<&str> = crowd.iter().map(|(_, _, s)| s.as_str().unwrap()).collect();
        assert_eq!(
            states,
            ["active", "active", "active", "quarantined", "quarantined"],
            "{backend:?}"
        );
        let fetch = |who: &SimClient| {
            let uri = format!("/v2/keys/{}/*", bob.aci);
            let auth = auth(who);
            let app = &app;
            async move { app.get(&uri, Some(&auth)).await.status.as_u16() }
        };
        assert_eq!(fetch(&crowd[0].0).await, 200);
        assert_eq!(fetch(&crowd[3].0).await, 403, "{backend:?}: quarantined");
        let r = app
            .get("/v1/contacts/requests?state=quarantined", Some(&auth(&bob)))
            .await;
        assert_eq!(r.status, 200);
        let requests = r.json()["requests"].as_array().unwrap().clone();
        assert_eq!(requests.len(), 2, "{backend:?}");
        for req in &requests {
            assert_eq!(req["via"]["kind"], "shortcode");
        }
        // Approve one; deny the other through its shortcode route.
        let deny_via = requests
            .iter()
            .find(|r| r["aci"] == crowd[4].0.aci.to_string())
            .unwrap()["via"]
            .clone();
        let r = post(
            &app,
            "/v1/contacts/requests/decide",
            &bob,
            &json!({"approve": [crowd[3].0.aci.to_string()], "deny": [], "denyAllVia": [deny_via]}),
        )
        .await;
        assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(fetch(&crowd[3].0).await, 200, "{backend:?}: approved");
        assert_eq!(fetch(&crowd[4].0).await, 403, "{backend:?}: denied");
    }
}
