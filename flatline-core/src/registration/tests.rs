//! The registration decision, case by case: every backend applies exactly this plan.

use uuid::Uuid;

use super::*;
use crate::invites::InviteId;

fn aci(n: u128) -> Aci {
    Aci(Uuid::from_u128(n))
}

fn pni(n: u128) -> Pni {
    Pni(Uuid::from_u128(n))
}

fn principal(s: &str) -> Principal {
    Principal::parse(s).expect("test principal")
}

fn session(verified: bool, reserved_invite: bool) -> VerificationSession {
    VerificationSession {
        id: SessionId::parse("AAAAAAAAAAAAAAAAAAAAAA").expect("session id shape"),
        provider_id: "idp".into(),
        state: "s".into(),
        nonce: "n".into(),
        redirect_uri: "app://cb".into(),
        request_uri: "urn:r".into(),
        request_uri_lifetime: 60,
        invite_code: None,
        created_at: Timestamp::from_secs(0),
        expires_at: Timestamp::from_secs(1),
        verified: verified.then(|| VerifiedIdentity {
            subject: Subject {
                provider: "idp".into(),
                sub: "alice".into(),
            },
            subject_hash: [7; 32],
            principal: principal("alice@example.org"),
            principal_opaque: false,
            sid: None,
        }),
        reserved_invite: reserved_invite.then_some(InviteId(Uuid::from_u128(9))),
    }
}

const CANDIDATE_ACI: u128 = 100;
const CANDIDATE_PNI: u128 = 200;

struct Case {
    name: &'static str,
    session: Option<VerificationSession>,
    invite_usable: bool,
    existing: Option<(u128, u128, &'static str)>,
    holder: Option<u128>,
    tombstone: Option<u128>,
    want: RegistrationPlan,
}

#[test]
fn plan_registration_decides_in_order() {
    use RegistrationOutcome::*;
    use RegistrationPlan::*;
    let cases = [
        Case {
            name: "no live session",
            session: None,
            invite_usable: true,
            existing: None,
            holder: None,
            tombstone: None,
            want: Refuse(SessionInvalid),
        },
        Case {
            name: "session not verified",
            session: Some(session(false, false)),
            invite_usable: true,
            existing: None,
            holder: None,
            tombstone: None,
            want: Refuse(SessionInvalid),
        },
        Case {
            name: "reserved invite no longer usable",
            session: Some(session(true, true)),
            invite_usable: false,
            existing: None,
            holder: None,
            tombstone: None,
            want: Refuse(InviteInvalid),
        },
        Case {
            name: "the invite is checked before the principal",
            session: Some(session(true, true)),
            invite_usable: false,
            existing: None,
            holder: Some(5),
            tombstone: None,
            want: Refuse(InviteInvalid),
        },
        Case {
            name: "no reserved invite: its usability does not matter",
            session: Some(session(true, false)),
            invite_usable: false,
            existing: None,
            holder: None,
            tombstone: None,
            want: Create {
                aci: aci(CANDIDATE_ACI),
                pni: pni(CANDIDATE_PNI),
                from_tombstone: false,
            },
        },
        Case {
            name: "principal held by another subject's account",
            session: Some(session(true, false)),
            invite_usable: true,
            existing: None,
            holder: Some(5),
            tombstone: None,
            want: Refuse(PrincipalConflict),
        },
        Case {
            name: "principal held by another account than the subject's",
            session: Some(session(true, false)),
            invite_usable: true,
            existing: Some((1, 2, "alice@example.org")),
            holder: Some(5),
            tombstone: None,
            want: Refuse(PrincipalConflict),
        },
        Case {
            name: "re-registration with the same principal keeps the PNI",
            session: Some(session(true, true)),
            invite_usable: true,
            existing: Some((1, 2, "alice@example.org")),
            holder: Some(1),
            tombstone: None,
            want: Reregister {
                aci: aci(1),
                old_pni: pni(2),
                pni: pni(2),
            },
        },
        Case {
            name: "re-registration with a new principal rotates the PNI",
            session: Some(session(true, false)),
            invite_usable: true,
            existing: Some((1, 2, "old@example.org")),
            holder: None,
            tombstone: Some(3),
            want: Reregister {
                aci: aci(1),
                old_pni: pni(2),
                pni: pni(CANDIDATE_PNI),
            },
        },
        Case {
            name: "a live tombstone gives the subject its old ACI",
            session: Some(session(true, false)),
            invite_usable: true,
            existing: None,
            holder: None,
            tombstone: Some(3),
            want: Create {
                aci: aci(3),
                pni: pni(CANDIDATE_PNI),
                from_tombstone: true,
            },
        },
    ];
    for case in cases {
        let existing = case.existing.map(|(a, p, pr)| ExistingAccount {
            aci: aci(a),
            pni: pni(p),
            principal: principal(pr),
        });
        let facts = RegistrationFacts {
            session: case.session.as_ref(),
            invite_usable: case.invite_usable,
            existing: existing.as_ref(),
            principal_holder: case.holder.map(aci),
            tombstone: case.tombstone.map(aci),
        };
        let plan = plan_registration(&facts, aci(CANDIDATE_ACI), pni(CANDIDATE_PNI));
        assert_eq!(plan, case.want, "{}", case.name);
    }
}

#[test]
fn the_plan_names_its_outcome_and_rotation() {
    let keep = RegistrationPlan::Reregister {
        aci: aci(1),
        old_pni: pni(2),
        pni: pni(2),
    };
    let rotate = RegistrationPlan::Reregister {
        aci: aci(1),
        old_pni: pni(2),
        pni: pni(4),
    };
    assert!(!keep.rotates_pni());
    assert!(rotate.rotates_pni());
    assert_eq!(
        rotate.outcome(),
        RegistrationOutcome::Reregistered {
            aci: aci(1),
            pni: pni(4)
        }
    );
    let create = RegistrationPlan::Create {
        aci: aci(3),
        pni: pni(5),
        from_tombstone: true,
    };
    assert!(!create.rotates_pni());
    assert_eq!(
        create.outcome(),
        RegistrationOutcome::Created {
            aci: aci(3),
            pni: pni(5)
        }
    );
}
