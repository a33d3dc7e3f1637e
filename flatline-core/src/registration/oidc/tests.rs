//! The claim checks of ID tokens and logout tokens, table-driven: each row mutates a valid token and names the
//! claim the check must refuse (or `None` when the mutation must still pass).

use serde_json::{Value, json};

use super::*;

const NOW: i64 = 1_800_000_000;
const CLIENT: &str = "flatline-client";
const ISSUER: &str = "https://idp.example";

fn provider() -> Provider {
    Provider {
        id: "main".into(),
        name: "Main".into(),
        issuer: ISSUER.into(),
        client_id: CLIENT.into(),
        trusted_audiences: vec!["trusted-api".into()],
        scopes: vec!["openid".into()],
        principal_claim: None,
        redirect_uris: vec![],
        allowed_algs: vec!["RS256".into()],
        invite_required: false,
        logout_effect: LogoutEffect::Lock,
    }
}

fn now() -> Timestamp {
    Timestamp::from_secs(NOW)
}

fn id_token() -> Value {
    json!({
        "iss": ISSUER, "aud": CLIENT, "sub": "user-1", "sid": "session-1",
        "iat": NOW - 10, "exp": NOW + 300, "nonce": "n-0123456789",
    })
}

fn logout_token() -> Value {
    json!({
        "iss": ISSUER, "aud": CLIENT, "sub": "user-1", "sid": "session-1", "jti": "jti-1",
        "iat": NOW - 10, "exp": NOW + 120, "events": { BACKCHANNEL_LOGOUT_EVENT: {} },
    })
}

/// Applies `edit` to a copy of `base`: `Some(v)` sets the claim, `None` removes it.
fn with(base: Value, edits: &[(&str, Option<Value>)]) -> Value {
    let mut token = base;
    let Some(claims) = token.as_object_mut() else {
        unreachable!("test tokens are objects")
    };
    for (name, value) in edits {
        match value {
            Some(v) => claims.insert((*name).to_owned(), v.clone()),
            None => claims.remove(*name),
        };
    }
    token
}

fn refused_claim<T: std::fmt::Debug>(result: Result<T, TokenError>) -> Option<&'static str> {
    match result {
        Ok(_) => None,
        Err(TokenError::Claim(name)) => Some(name),
        Err(other) => panic!("expected a claim error, got {other:?}"),
    }
}

type Case = (
    &'static str,
    Vec<(&'static str, Option<Value>)>,
    Option<&'static str>,
);

/// Claim rules shared by both token kinds (`check_common`).
fn common_cases() -> Vec<Case> {
    let leeway = LEEWAY.as_secs() as i64;
    vec![
        ("valid as issued", vec![], None),
        (
            "wrong issuer",
            vec![("iss", Some(json!("https://evil.example")))],
            Some("iss"),
        ),
        (
            "issuer differs by a trailing slash",
            vec![("iss", Some(json!("https://idp.example/")))],
            Some("iss"),
        ),
        ("issuer missing", vec![("iss", None)], Some("iss")),
        (
            "issuer not a string",
            vec![("iss", Some(json!(1)))],
            Some("iss"),
        ),
        ("audience missing", vec![("aud", None)], Some("aud")),
        (
            "audience is another client",
            vec![("aud", Some(json!("other")))],
            Some("aud"),
        ),
        (
            "audience array with us",
            vec![("aud", Some(json!([CLIENT]))), ("azp", Some(json!(CLIENT)))],
            None,
        ),
        (
            "audience array with an untrusted extra",
            vec![
                ("aud", Some(json!([CLIENT, "other"]))),
                ("azp", Some(json!(CLIENT))),
            ],
            Some("aud"),
        ),
        (
            "audience array with a trusted extra",
            vec![
                ("aud", Some(json!([CLIENT, "trusted-api"]))),
                ("azp", Some(json!(CLIENT))),
            ],
            None,
        ),
        (
            "several audiences without azp",
            vec![("aud", Some(json!([CLIENT, "trusted-api"])))],
            Some("azp"),
        ),
        (
            "audience array holding a number",
            vec![("aud", Some(json!([CLIENT, 7])))],
            Some("aud"),
        ),
        (
            "azp is another client",
            vec![("azp", Some(json!("other")))],
            Some("azp"),
        ),
        (
            "azp not a string",
            vec![("azp", Some(json!(true)))],
            Some("azp"),
        ),
        (
            "expired beyond the leeway",
            vec![("exp", Some(json!(NOW - leeway)))],
            Some("exp"),
        ),
        (
            "expired within the leeway",
            vec![("exp", Some(json!(NOW - leeway + 1)))],
            None,
        ),
        ("exp missing", vec![("exp", None)], Some("exp")),
        (
            "exp not a number",
            vec![("exp", Some(json!("soon")))],
            Some("exp"),
        ),
        (
            "exp as a float",
            vec![("exp", Some(json!((NOW + 300) as f64 + 0.5)))],
            None,
        ),
        ("iat missing", vec![("iat", None)], Some("iat")),
        (
            "issued in the future beyond the leeway",
            vec![("iat", Some(json!(NOW + leeway + 1)))],
            Some("iat"),
        ),
        (
            "issued in the future within the leeway",
            vec![("iat", Some(json!(NOW + leeway)))],
            None,
        ),
        (
            "not yet valid",
            vec![("nbf", Some(json!(NOW + leeway + 1)))],
            Some("nbf"),
        ),
        (
            "nbf within the leeway",
            vec![("nbf", Some(json!(NOW + leeway)))],
            None,
        ),
        (
            "nbf null counts as absent",
            vec![("nbf", Some(Value::Null))],
            None,
        ),
    ]
}

#[test]
fn id_token_common_claims() {
    let provider = provider();
    for (name, edits, expected) in common_cases() {
        let expect = IdTokenExpectations {
            provider: &provider,
            nonce: "n-0123456789",
            now: now(),
        };
        let got = refused_claim(check_id_token(&with(id_token(), &edits), &expect));
        assert_eq!(got, expected, "id token: {name}");
    }
}

#[test]
fn logout_token_common_claims() {
    let provider = provider();
    for (name, edits, expected) in common_cases() {
        let got = refused_claim(check_logout_token(
            &with(logout_token(), &edits),
            &provider,
            now(),
        ));
        assert_eq!(got, expected, "logout token: {name}");
    }
}

#[test]
fn id_token_specific_claims() {
    let long = "x".repeat(256);
    let cases: Vec<Case> = vec![
        ("nonce missing", vec![("nonce", None)], Some("nonce")),
        (
            "nonce differs",
            vec![("nonce", Some(json!("n-0123456788")))],
            Some("nonce"),
        ),
        (
            "nonce is a prefix",
            vec![("nonce", Some(json!("n-012345678")))],
            Some("nonce"),
        ),
        (
            "nonce is longer",
            vec![("nonce", Some(json!("n-01234567890")))],
            Some("nonce"),
        ),
        (
            "nonce not a string",
            vec![("nonce", Some(json!(12)))],
            Some("nonce"),
        ),
        ("sub missing", vec![("sub", None)], Some("sub")),
        ("sub empty", vec![("sub", Some(json!("")))], Some("sub")),
        (
            "sub of 255 bytes",
            vec![("sub", Some(json!("s".repeat(255))))],
            None,
        ),
        (
            "sub of 256 bytes",
            vec![("sub", Some(json!(long.clone())))],
            Some("sub"),
        ),
        ("sid missing is fine", vec![("sid", None)], None),
    ];
    let provider = provider();
    for (name, edits, expected) in cases {
        let expect = IdTokenExpectations {
            provider: &provider,
            nonce: "n-0123456789",
            now: now(),
        };
        let got = refused_claim(check_id_token(&with(id_token(), &edits), &expect));
        assert_eq!(got, expected, "id token: {name}");
    }
}

#[test]
fn id_token_facts() {
    let provider = provider();
    let expect = IdTokenExpectations {
        provider: &provider,
        nonce: "n-0123456789",
        now: now(),
    };
    let facts = check_id_token(&id_token(), &expect).expect("valid token");
    assert_eq!(
        facts,
        IdTokenFacts {
            sub: "user-1".into(),
            sid: Some("session-1".into())
        }
    );
    // An over-long or empty sid is dropped, not refused: it only narrows back-channel logout.
    for sid in [json!(""), json!("s".repeat(256)), json!(5)] {
        let facts =
            check_id_token(&with(id_token(), &[("sid", Some(sid))]), &expect).expect("valid token");
        assert_eq!(facts.sid, None);
    }
}

#[test]
fn logout_token_specific_claims() {
    let cases: Vec<Case> = vec![
        (
            "nonce present",
            vec![("nonce", Some(json!("n")))],
            Some("nonce"),
        ),
        ("events missing", vec![("events", None)], Some("events")),
        (
            "events without the logout member",
            vec![("events", Some(json!({"other": {}})))],
            Some("events"),
        ),
        (
            "logout event not an object",
            vec![("events", Some(json!({BACKCHANNEL_LOGOUT_EVENT: "yes"})))],
            Some("events"),
        ),
        (
            "events not an object",
            vec![("events", Some(json!([BACKCHANNEL_LOGOUT_EVENT])))],
            Some("events"),
        ),
        ("jti missing", vec![("jti", None)], Some("jti")),
        ("jti empty", vec![("jti", Some(json!("")))], Some("jti")),
        (
            "jti too long",
            vec![("jti", Some(json!("j".repeat(256))))],
            Some("jti"),
        ),
        (
            "neither sub nor sid",
            vec![("sub", None), ("sid", None)],
            Some("sub"),
        ),
        ("only sid", vec![("sub", None)], None),
        ("only sub", vec![("sid", None)], None),
        (
            "empty sub and no sid",
            vec![("sub", Some(json!(""))), ("sid", None)],
            Some("sub"),
        ),
    ];
    let provider = provider();
    for (name, edits, expected) in cases {
        let got = refused_claim(check_logout_token(
            &with(logout_token(), &edits),
            &provider,
            now(),
        ));
        assert_eq!(got, expected, "logout token: {name}");
    }
}

#[test]
fn logout_jti_is_remembered_past_acceptance() {
    let provider = provider();
    let facts = check_logout_token(&logout_token(), &provider, now()).expect("valid token");
    assert_eq!(facts.jti, "jti-1");
    // Remembered until exp + leeway: the last moment the same token could pass the exp check.
    assert_eq!(
        facts.remember_until,
        Timestamp::from_secs(NOW + 120).plus(LEEWAY)
    );
    // An exp already past (but within the leeway) is remembered from now, not from the past exp.
    let leeway = LEEWAY.as_secs() as i64;
    let late = with(logout_token(), &[("exp", Some(json!(NOW - leeway + 1)))]);
    let facts = check_logout_token(&late, &provider, now()).expect("within leeway");
    assert_eq!(facts.remember_until, now().plus(LEEWAY));
}

#[test]
fn opaque_principal_is_keyed_by_provider_and_subject() {
    let provider = provider();
    let subject = |provider: &str, sub: &str| Subject {
        provider: provider.into(),
        sub: sub.into(),
    };
    let (p1, opaque) = derive_principal(
        &provider,
        &subject("main", "user-1"),
        &json!({}),
        b"secret-1",
    )
    .expect("opaque");
    assert!(opaque);
    assert_eq!(p1.as_str().len(), 64);
    let again = derive_principal(
        &provider,
        &subject("main", "user-1"),
        &json!({}),
        b"secret-1",
    )
    .expect("opaque")
    .0;
    assert_eq!(p1, again, "deterministic");
    for (name, other) in [
        (
            "another secret",
            derive_principal(
                &provider,
                &subject("main", "user-1"),
                &json!({}),
                b"secret-2",
            ),
        ),
        (
            "another subject",
            derive_principal(
                &provider,
                &subject("main", "user-2"),
                &json!({}),
                b"secret-1",
            ),
        ),
        (
            "another provider",
            derive_principal(
                &provider,
                &subject("second", "user-1"),
                &json!({}),
                b"secret-1",
            ),
        ),
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        (
            "shifted boundary",
            derive_principal(
                &provider,
                &subject("mai", "nuser-1"),
                &json!({}),
                b"secret-1",
            ),
        ),
    ] {
        assert_ne!(other.expect("opaque").0, p1, "{name}");
    }
}

#[test]
fn claimed_principal_rules() {
    let subject = Subject {
        provider: "main".into(),
        sub: "user-1".into(),
    };
    let by = |claim: &str| Provider {
        principal_claim: Some(claim.into()),
        ..provider()
    };
    let cases: Vec<(
        &str,
        Provider,
        Value,
        Result<&str, PrincipalDerivationError>,
    )> = vec![
        (
            "preferred_username",
            by("preferred_username"),
            json!({"preferred_username": "alice"}),
            Ok("alice"),
        ),
        (
            "claim missing",
            by("preferred_username"),
            json!({}),
            Err(PrincipalDerivationError::Missing),
        ),
        (
            "claim not a string",
            by("preferred_username"),
            json!({"preferred_username": 3}),
            Err(PrincipalDerivationError::Missing),
        ),
        (
            "verified email",
            by("email"),
            json!({"email": "a@example.org", "email_verified": true}),
            Ok("a@example.org"),
        ),
        (
            "unverified email",
            by("email"),
            json!({"email": "a@example.org", "email_verified": false}),
            Err(PrincipalDerivationError::EmailUnverified),
        ),
        (
            "email_verified as a string",
            by("email"),
            json!({"email": "a@example.org", "email_verified": "true"}),
            Err(PrincipalDerivationError::EmailUnverified),
        ),
        (
            "email without email_verified",
            by("email"),
            json!({"email": "a@example.org"}),
            Err(PrincipalDerivationError::EmailUnverified),
        ),
    ];
    for (name, provider, claims, expected) in cases {
        let got = derive_principal(&provider, &subject, &claims, b"secret");
        match (got, expected) {
            (Ok((principal, opaque)), Ok(want)) => {
                assert_eq!(principal.as_str(), want, "{name}");
                assert!(!opaque, "{name}: a claimed principal is not opaque");
            }
            (Err(got), Err(want)) => assert_eq!(got, want, "{name}"),
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
    // A claim that fails principal validation is refused as invalid, whatever the claim.
    let invalid = derive_principal(
        &by("preferred_username"),
        &subject,
        &json!({"preferred_username": ""}),
        b"s",
    );
    assert!(
        matches!(invalid, Err(PrincipalDerivationError::Invalid(_))),
        "{invalid:?}"
    );
}

/// F-17: extreme time claims (they saturate to `i64::MIN`/`MAX`) are refused or accepted without overflowing.
#[test]
fn extreme_time_claims_do_not_overflow() {
    let p = provider();
    for (exp, iat, nbf) in [
        (json!(1e300), json!(NOW), json!(null)),
        (json!(i64::MAX), json!(-1e300), json!(null)),
        (json!(NOW + 300), json!(i64::MIN), json!(i64::MIN)),
        (json!(-1e300), json!(NOW), json!(null)),
        (json!(NOW + 300), json!(NOW), json!(-1e300)),
    ] {
        let claims = json!({"iss": ISSUER, "aud": CLIENT, "sub": "s", "nonce": "n",
            "exp": exp, "iat": iat, "nbf": nbf});
        let _ = check_id_token(
            &claims,
            &IdTokenExpectations {
                provider: &p,
                nonce: "n",
                now: now(),
            },
        );
        let _ = check_logout_token(&claims, &p, now());
    }
    let expired = json!({"iss": ISSUER, "aud": CLIENT, "sub": "s", "nonce": "n",
        "exp": -1e300, "iat": NOW});
    let expect = IdTokenExpectations {
        provider: &p,
        nonce: "n",
        now: now(),
    };
    assert!(check_id_token(&expired, &expect).is_err());
}
