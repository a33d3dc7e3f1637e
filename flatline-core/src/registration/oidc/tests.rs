use serde_json::json;

use super::*;

fn provider() -> Provider {
    Provider {
        id: "p".into(),
        name: "P".into(),
        issuer: "https://idp.example".into(),
        client_id: "flatline".into(),
        trusted_audiences: vec![],
        scopes: vec!["openid".into()],
        principal_claim: None,
        redirect_uris: vec![],
        allowed_algs: vec!["EdDSA".into()],
        invite_required: false,
        logout_effect: LogoutEffect::Lock,
    }
}

/// F-17: extreme time claims (they saturate to `i64::MIN`/`MAX`) are refused or accepted without overflowing.
#[test]
fn extreme_time_claims_do_not_overflow() {
    let p = provider();
    let now = Timestamp::from_secs(1_800_000_000);
    for (exp, iat, nbf) in [
        (json!(1e300), json!(1_800_000_000), json!(null)),
        (json!(i64::MAX), json!(-1e300), json!(null)),
        (json!(2_000_000_000), json!(i64::MIN), json!(i64::MIN)),
        (json!(-1e300), json!(1_800_000_000), json!(null)),
        (json!(2_000_000_000), json!(1_800_000_000), json!(-1e300)),
    ] {
        let claims = json!({"iss": p.issuer, "aud": "flatline", "sub": "s", "nonce": "n",
            "exp": exp, "iat": iat, "nbf": nbf});
        let _ = check_id_token(
            &claims,
            &IdTokenExpectations {
                provider: &p,
                nonce: "n",
                now,
            },
        );
        let _ = check_logout_token(&claims, &p, now);
    }
    let expired = json!({"iss": p.issuer, "aud": "flatline", "sub": "s", "nonce": "n",
        "exp": -1e300, "iat": 1_800_000_000});
    assert!(
        check_id_token(
            &expired,
            &IdTokenExpectations {
                provider: &p,
                nonce: "n",
                now
            }
        )
        .is_err()
    );
}
