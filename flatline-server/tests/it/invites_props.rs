//! A property test of the registration invite state machine on the in-memory store: random interleavings of
//! creation, reservation (a verified session), consumption (registration), release (session expiry by clock
//! advance), revocation, unrevocation and owner suspension.
//!
//! Checked after every step against a model:
//! - `uses + pending ≤ maxUses`, and the store's `pending` equals the live reserving sessions;
//! - a reservation succeeds exactly when the invite is unrevoked, unexpired, its owner unsuspended and a use is free;
//! - nothing is consumed from a revoked or expired invite or one whose owner is suspended;
//! - every created account consumed exactly one reservation (one redemption, one use).

use std::sync::Arc;
use std::time::Duration;

use flatline_core::ids::{Aci, Principal};
use flatline_core::invites::{InviteCode, InviteId, InviteOwner, NewInvite};
use flatline_core::registration::{
    RegistrationOutcome, SessionId, Subject, VerificationSession, VerifiedIdentity, VerifyOutcome,
};
use flatline_core::store::Store;
use flatline_core::time::{Clock, Timestamp};
use flatline_testkit::fixtures::new_account;
use flatline_testkit::{MemoryStore, MockClock, SeededRng};
use proptest::prelude::*;

pub const LIFETIME: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
enum Op {
    Create {
        owner: usize,
        max_uses: u32,
        expires_in: Option<u64>,
    },
    Reserve(usize),
    Consume(usize),
    Revoke(usize),
    Unrevoke(usize),
    Suspend(usize, bool),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0usize..3, 1u32..4, proptest::option::of(60u64..3000)).prop_map(|(owner, max_uses, expires_in)| Op::Create { owner, max_uses, expires_in }),
        5 => (0usize..8).prop_map(Op::Reserve),
        4 => (0usize..16).prop_map(Op::Consume),
        1 => (0usize..8).prop_map(Op::Revoke),
        1 => (0usize..8).prop_map(Op::Unrevoke),
        1 => (0usize..2, any::<bool>()).prop_map(|(o, s)| Op::Suspend(o, s)),
        2 => (1u64..900).prop_map(Op::Advance),
    ]
}

/// A verifiable session for `invite` (by code hash).
pub fn session(rng: &SeededRng, code: Option<&InviteCode>, now: Timestamp) -> VerificationSession {
    VerificationSession {
        id: SessionId::generate(rng),
        provider_id: "idp".into(),
        state: "state".into(),
        nonce: "nonce".into(),
        redirect_uri: "app://cb".into(),
        request_uri: "urn:x".into(),
        request_uri_lifetime: 60,
        invite_code: code.map(InviteCode::hash),
        created_at: now,
        expires_at: now.plus(LIFETIME),
        verified: None,
        reserved_invite: None,
    }
}

pub fn identity(sub: &str) -> VerifiedIdentity {
    let mut subject_hash = [0u8; 32];
    let n = sub.len().min(32);
    subject_hash[..n].copy_from_slice(&sub.as_bytes()[..n]);
    VerifiedIdentity {
        subject: Subject {
            provider: "idp".into(),
            sub: sub.into(),
        },
        subject_hash,
        principal: Principal::parse(&format!("p-{sub}")).unwrap(),
        principal_opaque: false,
        sid: None,
    }
}

struct ModelInvite {
    id: InviteId,
    code: InviteCode,
    owner: InviteOwner,
    max_uses: u32,
    expires_at: Option<Timestamp>,
    revoked: bool,
    uses: u32,
}

struct ModelSession {
    id: SessionId,
    invite: usize,
    expires_at: Timestamp,
    done: bool,
}

async fn run(ops: Vec<Op>) {
    let rng = SeededRng::new(9);
    let clock = MockClock::at(Timestamp::from_secs(1_800_000_000));
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut owners = vec![];
    for i in 0..2 {
        let new = new_account(&rng, &format!("owner{i}"), "pw", clock.now());
        owners.push(new.account.aci);
        store.create_account(new).await.unwrap();
    }
    let mut suspended = [false, false];
    let mut invites: Vec<ModelInvite> = vec![];
    let mut sessions: Vec<ModelSession> = vec![];
    let mut created: Vec<Aci> = vec![];
    let mut subjects = 0u32;
    for op in ops {
        let now = clock.now();
        let owner_suspended = |inv: &ModelInvite, suspended: &[bool; 2]| match inv.owner {
            InviteOwner::Account(a) => owners
                .iter()
                .position(|o| *o == a)
                .is_some_and(|i| suspended[i]),
            InviteOwner::Operator => false,
        };
        let pending = |i: usize, sessions: &[ModelSession], now: Timestamp| {
            sessions
                .iter()
                .filter(|s| s.invite == i && !s.done && s.expires_at > now)
                .count() as u32
        };
        match op {
            Op::Create {
                owner,
                max_uses,
                expires_in,
            } => {
                let code = InviteCode::generate(&rng);
                let owner = owners
                    .get(owner)
                    .map_or(InviteOwner::Operator, |a| InviteOwner::Account(*a));
                let new = NewInvite {
                    id: InviteId::random(&rng),
                    code_hash: code.hash(),
                    owner,
                    max_uses,
                    expires_at: expires_in.map(|s| now.plus(Duration::from_secs(s))),
                    note: None,
                    created_at: now,
                };
                store.create_invite(&new).await.unwrap();
                invites.push(ModelInvite {
                    id: new.id,
                    code,
                    owner,
                    max_uses,
                    expires_at: new.expires_at,
                    revoked: false,
                    uses: 0,
                });
            }
            Op::Reserve(i) => {
                let Some(inv) = invites.get(i) else { continue };
                let usable = !inv.revoked
                    && inv.expires_at.is_none_or(|e| e > now)
                    && !owner_suspended(inv, &suspended)
                    && inv.uses + pending(i, &sessions, now) < inv.max_uses;
                let s = session(&rng, Some(&inv.code), now);
                store.create_session(&s).await.unwrap();
                subjects += 1;
                let outcome = store
                    .verify_session(
                        &s.id,
                        &identity(&format!("sub{subjects}")),
                        true,
                        now.plus(LIFETIME),
                        now,
                    )
                    .await
                    .unwrap();
                if usable {
                    assert_eq!(outcome, VerifyOutcome::Verified);
                    sessions.push(ModelSession {
                        id: s.id,
                        invite: i,
                        expires_at: now.plus(LIFETIME),
                        done: false,
                    });
                } else {
                    assert_eq!(outcome, VerifyOutcome::InviteUnavailable);
                }
            }
            Op::Consume(k) => {
                let Some(s) = sessions.get(k) else { continue };
                let inv = &invites[s.invite];
                let live = !s.done && s.expires_at > now;
                let usable = !inv.revoked
                    && inv.expires_at.is_none_or(|e| e > now)
                    && !owner_suspended(inv, &suspended);
                let outcome = store
                    .register(flatline_testkit::fixtures::registration_commit(
                        &rng, &s.id, now,
                    ))
                    .await
                    .unwrap();
                match outcome {
                    RegistrationOutcome::Created { aci, .. } => {
                        assert!(live && usable, "consumed a dead session or unusable invite");
                        created.push(aci);
                        let i = s.invite;
                        sessions[k].done = true;
                        invites[i].uses += 1;
                    }
                    RegistrationOutcome::SessionInvalid => assert!(!live),
                    RegistrationOutcome::InviteInvalid => assert!(live && !usable),
                    other => panic!("unexpected {other:?}"),
                }
            }
            Op::Revoke(i) | Op::Unrevoke(i) => {
                let revoke = matches!(op, Op::Revoke(_));
                let Some(inv) = invites.get_mut(i) else {
                    continue;
                };
                assert!(
                    store
                        .set_revoked(inv.id, revoke.then_some(now))
                        .await
                        .unwrap()
                );
                inv.revoked = revoke;
            }
            Op::Suspend(o, on) => {
                store.set_suspended(owners[o], on, now).await.unwrap();
                suspended[o] = on;
            }
            Op::Advance(secs) => clock.advance(Duration::from_secs(secs)),
        }
        let now = clock.now();
        for (i, inv) in invites.iter().enumerate() {
            let stored = store.invite(inv.id, now).await.unwrap().unwrap();
            assert!(stored.uses + stored.pending <= stored.max_uses);
            assert_eq!(
                (stored.uses, stored.pending),
                (inv.uses, pending(i, &sessions, now))
            );
        }
    }
    // Every created account came in through exactly one consumed reservation.
    let total_uses: u32 = invites.iter().map(|i| i.uses).sum();
    assert_eq!(total_uses as usize, created.len());
    let mut redemptions = 0;
    for owner in owners
        .iter()
        .map(|a| InviteOwner::Account(*a))
        .chain([InviteOwner::Operator])
    {
        redemptions += store.redemptions_by(owner).await.unwrap().len();
    }
    assert_eq!(redemptions, created.len());
    for aci in &created {
        let r = store
            .redemption_of(*aci)
            .await
            .unwrap()
            .expect("redemption");
        assert!(invites.iter().any(|i| i.id == r.invite));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn invite_state_machine(ops in proptest::collection::vec(op(), 1..60)) {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(run(ops));
    }
}
