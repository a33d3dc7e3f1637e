use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const T0: Timestamp = Timestamp(1_767_225_600_000);

fn aci() -> Aci {
    "9d0652a3-dcc3-4d11-975f-74d61598733f".parse().unwrap()
}

fn ids(v: &[u8]) -> Vec<DeviceId> {
    v.iter().map(|i| DeviceId::new(*i).unwrap()).collect()
}

#[test]
fn token_has_signal_server_shape_and_verifies() {
    let issued = issue_link_token(SECRET, aci(), T0).unwrap();
    let (claims, sig) = issued.token.split_once(':').unwrap();
    assert_eq!(claims, format!("{}.{}", aci(), T0.as_millis()));
    // base64url with padding of a 32-byte HMAC: 44 characters ending in '='.
    assert_eq!(sig.len(), 44);
    assert!(sig.ends_with('='));
    assert_eq!(
        issued.identifier,
        URL_SAFE_NO_PAD.encode(Sha256::digest(issued.token.as_bytes()))
    );
    assert_eq!(issued.identifier.len(), 43);
    let v = verify_link_token(SECRET, &issued.token, T0.plus(LINK_TOKEN_LIFETIME)).unwrap();
    assert_eq!(v.aci, aci());
    assert_eq!(v.hash, token_hash(&issued.token));
    assert_eq!(parse_token_identifier(&issued.identifier), Some(v.hash));
}

#[test]
fn token_expires_after_ten_minutes() {
    let issued = issue_link_token(SECRET, aci(), T0).unwrap();
    let late = T0.plus(LINK_TOKEN_LIFETIME).plus(Duration::from_millis(1));
    assert_eq!(
        verify_link_token(SECRET, &issued.token, late),
        Err(LinkTokenError::Expired)
    );
}

#[test]
fn tampered_tokens_are_invalid() {
    let issued = issue_link_token(SECRET, aci(), T0).unwrap();
    let other_aci = "11111111-2222-4333-8444-555555555555";
    let (claims, sig) = issued.token.split_once(':').unwrap();
    let cases = [
        String::new(),
        claims.to_owned(),
        format!("{claims}:"),
        format!("{claims}:{}", &sig[1..]),
        format!("{}:{sig}", claims.replace(&aci().to_string(), other_aci)),
        format!(
            "{}:{sig}",
            claims.replace(&T0.as_millis().to_string(), "1767225600001")
        ),
        format!("{claims}:{}", sig.replace('A', "B")),
        format!("{claims}:!!!!"),
    ];
    for (i, case) in cases.iter().enumerate() {
        if *case == issued.token {
            continue;
        }
        assert_eq!(
            verify_link_token(SECRET, case, T0),
            Err(LinkTokenError::Invalid),
            "case {i}: {case:?}"
        );
    }
    assert_eq!(
        verify_link_token(b"another secret", &issued.token, T0),
        Err(LinkTokenError::Invalid)
    );
}

#[test]
fn token_identifiers_outside_the_path_rule_are_refused() {
    assert_eq!(parse_token_identifier(""), None);
    assert_eq!(parse_token_identifier(&"A".repeat(31)), None);
    assert_eq!(parse_token_identifier(&"A".repeat(65)), None);
    // Right length, but not 32 bytes.
    assert_eq!(parse_token_identifier(&"A".repeat(40)), None);
    assert_eq!(parse_token_identifier(&"*".repeat(43)), None);
}

#[test]
fn next_device_id_reuses_the_lowest_free_id() {
    let cases: &[(&[u8], u8, Option<u8>)] = &[
        (&[1], 6, Some(2)),
        (&[1, 2], 6, Some(3)),
        (&[1, 3], 6, Some(2)),
        (&[1, 2, 4, 5], 6, Some(3)),
        (&[1, 2, 3, 4, 5], 6, Some(6)),
        (&[1, 2, 3, 4, 5, 6], 6, None),
        (&[1, 3, 5, 7, 9, 11], 6, None),
        (&[1], 1, None),
        (&[1, 7], 3, Some(2)),
    ];
    for (used, max, want) in cases {
        let got = next_device_id(ids(used), *max).ok().map(DeviceId::get);
        assert_eq!(got, *want, "used {used:?} max {max}");
    }
}

#[test]
fn removal_rules_in_signal_order() {
    let d = |i| DeviceId::new(i).unwrap();
    let cases = [
        (1, 2, Ok(())),
        (2, 2, Ok(())),
        (2, 3, Err(RemovalRefused::NotAllowed)),
        // A linked device naming the primary: 401 comes first.
        (2, 1, Err(RemovalRefused::NotAllowed)),
        (1, 1, Err(RemovalRefused::Primary)),
    ];
    for (actor, target, want) in cases {
        assert_eq!(
            check_removal(d(actor), d(target)),
            want,
            "{actor} removes {target}"
        );
    }
}
