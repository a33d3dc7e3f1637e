use super::*;

struct Fixed(u8);
impl SecureRandom for Fixed {
    fn fill(&self, dest: &mut [u8]) {
        dest.fill(self.0);
    }
}

#[test]
fn generated_codes_round_trip_and_normalize() {
    let code = InviteCode::generate(&Fixed(0xA5));
    let shown = code.display();
    assert_eq!(shown.len(), 19);
    assert_eq!(InviteCode::parse(&shown), Ok(code.clone()));
    assert_eq!(
        InviteCode::parse(&shown.to_lowercase().replace('-', " ")),
        Ok(code.clone())
    );
    assert_eq!(format!("{code:?}"), "InviteCode(<redacted>)");
}

#[test]
fn confusables_and_bad_input() {
    let a = InviteCode::parse("0000-1111-2222-3333").unwrap();
    assert_eq!(InviteCode::parse("oOoO-iIlL-2222-3333"), Ok(a.clone()));
    assert_eq!(
        a.hash(),
        InviteCode::parse("00001111 22223333").unwrap().hash()
    );
    for bad in [
        "",
        "0000-1111-2222-333",
        "0000-1111-2222-33333",
        "0000-1111-2222-333U",
        "0000-1111-2222-333é",
    ] {
        assert_eq!(InviteCode::parse(bad), Err(BadCode), "{bad}");
    }
}

#[test]
fn state_precedence() {
    let now = Timestamp(1_000);
    let base = Invite {
        id: InviteId(Uuid::nil()),
        code_hash: CodeHash([0; 32]),
        owner: InviteOwner::Operator,
        max_uses: 2,
        uses: 0,
        pending: 0,
        created_at: Timestamp(0),
        expires_at: Some(Timestamp(2_000)),
        last_used_at: None,
        revoked_at: None,
        note: None,
    };
    assert_eq!(base.state(now, false), InviteState::Active);
    assert_eq!(
        Invite {
            uses: 1,
            pending: 1,
            ..base.clone()
        }
        .state(now, false),
        InviteState::Exhausted
    );
    assert_eq!(base.state(Timestamp(2_000), false), InviteState::Expired);
    assert_eq!(base.state(now, true), InviteState::OwnerSuspended);
    assert_eq!(
        Invite {
            revoked_at: Some(now),
            ..base.clone()
        }
        .state(now, true),
        InviteState::Revoked
    );
}

#[test]
fn a_reserved_use_is_consumable_while_the_invite_holds() {
    let now = Timestamp(1_000);
    // The last use is reserved: the invite is exhausted for new reservations, yet the reservation may be consumed.
    let reserved = Invite {
        id: InviteId(Uuid::nil()),
        code_hash: CodeHash([0; 32]),
        owner: InviteOwner::Operator,
        max_uses: 2,
        uses: 1,
        pending: 1,
        created_at: Timestamp(0),
        expires_at: Some(Timestamp(2_000)),
        last_used_at: None,
        revoked_at: None,
        note: None,
    };
    assert_eq!(reserved.state(now, false), InviteState::Exhausted);
    let cases = [
        ("the reservation holds", reserved.clone(), now, false, true),
        ("owner suspended", reserved.clone(), now, true, false),
        (
            "expired at its expiry",
            reserved.clone(),
            Timestamp(2_000),
            false,
            false,
        ),
        (
            "revoked",
            Invite {
                revoked_at: Some(now),
                ..reserved.clone()
            },
            now,
            false,
            false,
        ),
        (
            "every use consumed meanwhile",
            Invite {
                uses: 2,
                ..reserved.clone()
            },
            now,
            false,
            false,
        ),
    ];
    for (name, invite, at, suspended, want) in cases {
        assert_eq!(
            invite.reserved_use_consumable(at, suspended),
            want,
            "{name}"
        );
    }
}
