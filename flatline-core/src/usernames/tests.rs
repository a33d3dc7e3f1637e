use super::*;

fn hold(b: u8, at: i64) -> UsernameHold {
    UsernameHold {
        hash: vec![b],
        expires_at: Timestamp(at),
    }
}

#[test]
fn holds_are_capped_oldest_first_and_pruned() {
    let now = Timestamp(1_000);
    let ttl = i64::try_from(HOLD_TTL.as_millis()).unwrap();
    // Three live holds: adding a fourth releases the oldest.
    let (holds, released) = add_hold(
        &[hold(1, 2_000), hold(2, 3_000), hold(3, 4_000)],
        &[4],
        None,
        now,
    );
    assert_eq!(released, Some(vec![1]));
    assert_eq!(
        holds,
        vec![hold(2, 3_000), hold(3, 4_000), hold(4, 1_000 + ttl)]
    );
    // A lapsed hold is pruned instead; a repeated hash moves to the end; the current username is never held.
    let (holds, released) = add_hold(
        &[hold(1, 999), hold(2, 3_000), hold(3, 4_000)],
        &[2],
        Some(&[3]),
        now,
    );
    assert_eq!(released, None);
    assert_eq!(holds, vec![hold(2, 1_000 + ttl)]);
}

#[test]
fn claim_kinds_round_trip_and_expiry_is_strict() {
    for k in [
        ClaimKind::Confirmed,
        ClaimKind::Reserved,
        ClaimKind::Held,
        ClaimKind::Reclaimable,
    ] {
        assert_eq!(ClaimKind::parse(k.as_str()), Some(k));
    }
    assert_eq!(ClaimKind::parse("other"), None);
    let claim = UsernameClaim {
        hash: vec![0; 32],
        owner: Aci(Uuid::nil()),
        kind: ClaimKind::Reserved,
        expires_at: Some(Timestamp(10)),
    };
    assert!(!claim.expired(Timestamp(10)));
    assert!(claim.expired(Timestamp(11)));
}
