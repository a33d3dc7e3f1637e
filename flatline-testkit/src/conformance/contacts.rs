//! Conformance checks of [`ContactStore`](flatline_core::store::ContactStore).

use std::sync::Arc;
use std::time::Duration;

use flatline_core::contacts::{
    ContactInvite, ContactInviteId, ContactPolicy, CreateInvite, Decisions, FloodConfig, Grant,
    GrantRoute, GrantState, Introduction, IntroductionPolicy, PolicyMode, Redemption, Via,
};
use flatline_core::ids::{Aci, DeviceId};
use flatline_core::messages::MessageGuid;
use flatline_core::messages::store::{InsertOutcome, MessageCursor, NewMessage};
use flatline_core::shortcodes::{
    ContactShortcode, CreateShortcode, Shortcode, ShortcodeRedemption,
};
use flatline_core::store::Store;
use flatline_core::time::Timestamp;

use super::{T0, rng};
use crate::clock::SeededRng;
use crate::fixtures::new_account;

const MIN: Duration = Duration::from_secs(60);

fn at(minutes: u64) -> Timestamp {
    T0.plus(MIN * u32::try_from(minutes).unwrap())
}

async fn account(store: &Arc<dyn Store>, rng: &SeededRng, name: &str) -> Aci {
    let new = new_account(rng, name, "pw", T0);
    let aci = new.account.aci;
    store.create_account(new).await.unwrap();
    aci
}

async fn invite_only(store: &Arc<dyn Store>, aci: Aci, introductions: IntroductionPolicy) {
    assert!(
        store
            .set_contact_policy(
                aci,
                ContactPolicy {
                    mode: PolicyMode::InviteOnly,
                    introductions,
                },
            )
            .await
            .unwrap()
    );
}

fn hash(n: u8) -> [u8; 32] {
    [n; 32]
}

fn invite(rng: &SeededRng, owner: Aci, code: u8, max_uses: u32, now: Timestamp) -> ContactInvite {
    ContactInvite {
        id: ContactInviteId::random(rng),
        owner,
        code_hash: hash(code),
        label: Some("conference".into()),
        max_uses,
        uses: 0,
        created_at: now,
        expires_at: now.plus(Duration::from_secs(7 * 86_400)),
        paused_until: None,
        flood: None,
        bucket: None,
    }
}

async fn create(store: &Arc<dyn Store>, i: &ContactInvite) {
    assert_eq!(
        store.create_contact_invite(i, 100).await.unwrap(),
        CreateInvite::Created
    );
}

async fn redeem(store: &Arc<dyn Store>, code: u8, who: Aci, now: Timestamp) -> Redemption {
    store
        .redeem_contact_invite(&hash(code), who, now, &FloodConfig::default())
        .await
        .unwrap()
}

async fn state_of(store: &Arc<dyn Store>, owner: Aci, grantee: Aci) -> Option<GrantState> {
    store
        .contact_grant(owner, grantee)
        .await
        .unwrap()
        .map(|g| g.state)
}

/// Policies default to none; set and read back; unknown accounts are refused; switching to open deletes the
/// account's invites and the grants it gave, but not grants others gave it.
pub async fn contact_policy_roundtrip_and_open_purges(store: Arc<dyn Store>) {
    let rng = rng();
    let bob = account(&store, &rng, "bob").await;
    let alice = account(&store, &rng, "alice").await;
    assert_eq!(store.contact_policy(bob).await.unwrap(), None);
    invite_only(&store, bob, IntroductionPolicy::Auto).await;
    assert_eq!(
        store.contact_policy(bob).await.unwrap(),
        Some(ContactPolicy {
            mode: PolicyMode::InviteOnly,
            introductions: IntroductionPolicy::Auto
        })
    );
    assert!(
        !store
            .set_contact_policy(Aci::random(&rng), ContactPolicy::default())
            .await
            .unwrap()
    );
    invite_only(&store, alice, IntroductionPolicy::Ask).await;
    let i = invite(&rng, bob, 1, 5, T0);
    create(&store, &i).await;
    assert!(matches!(
        redeem(&store, 1, alice, T0).await,
        Redemption::Granted { .. }
    ));
    assert!(
        store
            .set_contact_grant(alice, bob, GrantState::Active, T0)
            .await
            .unwrap()
    );
    assert!(
        store
            .set_contact_policy(bob, ContactPolicy::default())
            .await
            .unwrap()
    );
    assert_eq!(
        store.contact_policy(bob).await.unwrap(),
        Some(ContactPolicy::default())
    );
    assert!(store.contact_invites(bob).await.unwrap().is_empty());
    assert!(store.contact_grants(bob).await.unwrap().is_empty());
    assert_eq!(redeem(&store, 1, alice, T0).await, Redemption::Invalid);
    // Alice's grant to Bob is Alice's graph: kept.
    assert_eq!(state_of(&store, alice, bob).await, Some(GrantState::Active));
}

/// Invites are created only for invite_only owners and within the quota; lookups are scoped to the owner;
/// deletion kills the code.
pub async fn contact_invite_create_list_delete(store: Arc<dyn Store>) {
    let rng = rng();
    let bob = account(&store, &rng, "bob").await;
    let eve = account(&store, &rng, "eve").await;
    let first = invite(&rng, bob, 1, 1, at(0));
    assert_eq!(
        store.create_contact_invite(&first, 100).await.unwrap(),
        CreateInvite::NotInviteOnly
    );
    assert!(store.contact_invites(bob).await.unwrap().is_empty());
    invite_only(&store, bob, IntroductionPolicy::Ask).await;
    create(&store, &first).await;
    let second = invite(&rng, bob, 2, 3, at(1));
    assert_eq!(
        store.create_contact_invite(&second, 2).await.unwrap(),
        CreateInvite::Created
    );
    let third = invite(&rng, bob, 3, 3, at(2));
    assert_eq!(
        store.create_contact_invite(&third, 2).await.unwrap(),
        CreateInvite::QuotaExceeded
    );
    assert_eq!(
        store.contact_invites(bob).await.unwrap(),
        vec![first.clone(), second.clone()]
    );
    assert_eq!(
        store.contact_invite(bob, second.id).await.unwrap(),
        Some(second.clone())
    );
    assert_eq!(store.contact_invite(eve, second.id).await.unwrap(), None);
    assert!(!store.delete_contact_invite(eve, second.id).await.unwrap());
    assert!(store.delete_contact_invite(bob, second.id).await.unwrap());
    assert!(!store.delete_contact_invite(bob, second.id).await.unwrap());
    assert_eq!(store.contact_invites(bob).await.unwrap(), vec![first]);
    assert_eq!(redeem(&store, 2, eve, at(3)).await, Redemption::Invalid);
}

/// Rotation replaces the code and keeps uses and grants; resume ends a pause, clears the flood and refills.
pub async fn contact_invite_rotate_and_resume(store: Arc<dyn Store>) {
    let rng = rng();
    let bob = account(&store, &rng, "bob").await;
    invite_only(&store, bob, IntroductionPolicy::Ask).await;
    let i = invite(&rng, bob, 1, 50, at(0));
    create(&store, &i).await;
    let mut redeemers = vec![];
    for n in 0..5 {
        let a = account(&store, &rng, &format!("r{n}")).await;
        assert!(matches!(
            redeem(&store, 1, a, at(0)).await,
            Redemption::Granted { .. }
        ));
        redeemers.push(a);
    }
    let eve = account(&store, &rng, "eve").await;
    assert!(matches!(
        redeem(&store, 1, eve, at(0)).await,
        Redemption::Tripped(_)
    ));
    let eve2 = account(&store, &rng, "eve2").await;
    let eve3 = account(&store, &rng, "eve3").await;
    let eve4 = account(&store, &rng, "eve4").await;
    let other = Aci::random(&rng);
    assert_eq!(
        store
            .rotate_contact_invite(other, i.id, hash(9))
            .await
            .unwrap(),
        None
    );
    let rotated = store
        .rotate_contact_invite(bob, i.id, hash(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rotated.code_hash, hash(2));
    assert_eq!(rotated.uses, 5);
    assert!(rotated.is_paused(at(1)));
    assert_eq!(redeem(&store, 1, eve2, at(1)).await, Redemption::Invalid);
    assert_eq!(redeem(&store, 2, eve2, at(1)).await, Redemption::Paused);
    assert_eq!(store.contact_grants(bob).await.unwrap().len(), 5);

    assert!(!store.resume_contact_invite(other, i.id).await.unwrap());
    assert!(store.resume_contact_invite(bob, i.id).await.unwrap());
    let resumed = store.contact_invite(bob, i.id).await.unwrap().unwrap();
    assert_eq!(
        (resumed.paused_until, resumed.flood, resumed.bucket),
        (None, None, None)
    );
    // Quarantine stays: only an owner decision lifts it.
    for r in &redeemers {
        assert_eq!(
            state_of(&store, bob, *r).await,
            Some(GrantState::Quarantined)
        );
    }
    assert!(matches!(
        redeem(&store, 2, eve3, at(2)).await,
        Redemption::Granted {
            state: GrantState::Active,
            ..
        }
    ));
    assert!(matches!(
        redeem(&store, 2, eve4, at(2)).await,
        Redemption::Granted { .. }
    ));
}

/// Redemption creates an active grant through the invite; a repeat is idempotent; own, exhausted, expired and
/// denied redemptions create nothing.
pub async fn redeem_contact_invite_rules(store: Arc<dyn Store>) {
    let rng = rng();
    let bob = account(&store, &rng, "bob").await;
    let alice = account(&store, &rng, "alice").await;
    let carol = account(&store, &rng, "carol").await;
    let dave = account(&store, &rng, "dave").await;
    invite_only(&store, bob, IntroductionPolicy::Ask).await;
    let one = invite(&rng, bob, 1, 1, at(0));
    create(&store, &one).await;
    assert_eq!(redeem(&store, 1, bob, at(1)).await, Redemption::OwnInvite);
    assert_eq!(redeem(&store, 7, alice, at(1)).await, Redemption::Invalid);
    assert_eq!(
        redeem(&store, 1, alice, at(1)).await,
        Redemption::Granted {
            owner: bob,
            state: GrantState::Active
        }
    );
    assert_eq!(
        store.contact_grant(bob, alice).await.unwrap(),
        Some(Grant {
            owner: bob,
            grantee: alice,
            state: GrantState::Active,
            via: Via::Invite(one.id),
            created_at: at(1),
        })
    );
    assert_eq!(
        redeem(&store, 1, alice, at(2)).await,
        Redemption::Existing {
            owner: bob,
            state: GrantState::Active
        }
    );
    assert_eq!(redeem(&store, 1, carol, at(2)).await, Redemption::Invalid);
    assert_eq!(
        store
            .contact_invite(bob, one.id)
            .await
            .unwrap()
            .unwrap()
            .uses,
        1
    );

    let expiring = invite(&rng, bob, 2, 5, at(0));
    create(&store, &expiring).await;
    let late = expiring.expires_at;
    assert_eq!(redeem(&store, 2, carol, late).await, Redemption::Invalid);

    assert!(
        store
            .set_contact_grant(bob, dave, GrantState::Denied, at(3))
            .await
            .unwrap()
    );
    assert_eq!(redeem(&store, 2, dave, at(4)).await, Redemption::Invalid);
    assert_eq!(state_of(&store, bob, dave).await, Some(GrantState::Denied));
    assert_eq!(state_of(&store, bob, carol).await, None);
}

/// The flood breaker: a burst after the bucket was full quarantines exactly the grants since the burst start,
/// pauses the invite and records the flood; the pause ends by itself after `pause`.
pub async fn flood_breaker_trips_and_quarantines(store: Arc<dyn Store>) {
    let rng = rng();
    let bob = account(&store, &rng, "bob").await;
    invite_only(&store, bob, IntroductionPolicy::Ask).await;
    let i = invite(&rng, bob, 1, 100, at(0));
    create(&store, &i).await;
    let mut friends = vec![];
    for (n, minute) in [0u64, 25, 50].into_iter().enumerate() {
        let f = account(&store, &rng, &format!("friend{n}")).await;
        assert!(matches!(
            redeem(&store, 1, f, at(minute)).await,
            Redemption::Granted {
                state: GrantState::Active,
                ..
            }
        ));
        friends.push(f);
    }
    // Full again by minute 60; the flood starts at 65.
    let mut flood = vec![];
    for n in 0..5 {
        let a = account(&store, &rng, &format!("flood{n}")).await;
        assert!(matches!(
            redeem(&store, 1, a, at(65)).await,
            Redemption::Granted {
                state: GrantState::Active,
                ..
            }
        ));
        flood.push(a);
    }
    let tripper = account(&store, &rng, "tripper").await;
    let tripped = redeem(&store, 1, tripper, at(65)).await;
    let Redemption::Tripped(f) = tripped else {
        panic!("expected a trip, got {tripped:?}")
    };
    assert_eq!((f.detected_at, f.since, f.quarantined), (at(65), at(65), 5));
    assert_eq!(state_of(&store, bob, tripper).await, None);
    for a in &flood {
        assert_eq!(
            state_of(&store, bob, *a).await,
            Some(GrantState::Quarantined)
        );
    }
    for a in &friends {
        assert_eq!(state_of(&store, bob, *a).await, Some(GrantState::Active));
    }
    let stored = store.contact_invite(bob, i.id).await.unwrap().unwrap();
    assert_eq!(stored.uses, 8);
    assert_eq!(stored.flood, Some(f));
    assert_eq!(stored.paused_until, Some(at(65 + 24 * 60)));
    assert_eq!(redeem(&store, 1, tripper, at(66)).await, Redemption::Paused);
    // A grantee retrying learns its own state, even while paused.
    assert_eq!(
        redeem(&store, 1, flood[0], at(66)).await,
        Redemption::Existing {
            owner: bob,
            state: GrantState::Quarantined
        }
    );
    // After the pause the invite works again and the quarantine stays.
    assert!(matches!(
        redeem(&store, 1, tripper, at(65 + 24 * 60)).await,
        Redemption::Granted {
            state: GrantState::Active,
            ..
        }
    ));
    assert_eq!(
        state_of(&store, bob, flood[0]).await,
        Some(GrantState::Quarantined)
    );
}

/// More than `owner_window_max` new grantees per window: the excess is quarantined, whatever the invite.
pub async fn owner_window_quarantines_excess(store: Arc<dyn Store>) {
    let rng = rng();
    let bob = account(&store, &rng, "bob").await;
    invite_only(&store, bob, IntroductionPolicy::Ask).await;
    let config = FloodConfig {
        burst: 100,
        owner_window_max: 3,
        ..FloodConfig::default()
    };
    for code in 1..=4 {
        create(&store, &invite(&rng, bob, code, 1, at(0))).await;
    }
    let mut states = vec![];
    for code in 1..=4u8 {
        let a = account(&store, &rng, &format!("a{code}")).await;
        match store
            .redeem_contact_invite(&hash(code), a, at(u64::from(code)), &config)
            .await
            .unwrap()
        {
            Redemption::Granted { state, .. } => states.push(state),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        states,
        [
            GrantState::Active,
            GrantState::Active,
            GrantState::Active,
            GrantState::Quarantined
        ]
    );
    // Direct grants are the owner's own choice and do not count.
    let d = account(&store, &rng, "direct").await;
    assert!(
        store
            .set_contact_grant(bob, d, GrantState::Active, at(5))
            .await
            .unwrap()
    );
    create(&store, &invite(&rng, bob, 5, 1, at(5))).await;
    let late = account(&store, &rng, "late").await;
    match store
        .redeem_contact_invite(&hash(5), late, at(62), &config)
        .await
        .unwrap()
    {
        Redemption::Granted { state, .. } => assert_eq!(state, GrantState::Active),
        other => panic!("{other:?}"),
    }
}

/// Bulk decisions: approve, deny, deny-all-from-invite (quarantined and pending only; approvals win).
pub async fn decide_contact_requests(store: Arc<dyn Store>) {
    let rng = rng();
    let bob = account(&store, &rng, "bob").await;
    let friend = account(&store, &rng, "friend").await;
    assert!(
        !store
            .decide_contact_requests(bob, &deny_only(&[friend]))
            .await
            .unwrap()
    );
    invite_only(&store, bob, IntroductionPolicy::Ask).await;
    let i = invite(&rng, bob, 1, 100, at(0));
    create(&store, &i).await;
    assert!(matches!(
        redeem(&store, 1, friend, at(0)).await,
        Redemption::Granted { .. }
    ));
    let mut flood = vec![];
    for n in 0..6 {
        let a = account(&store, &rng, &format!("f{n}")).await;
        flood.push(a);
        redeem(&store, 1, a, at(30)).await;
    }
    // flood[0..5] quarantined, flood[5] tripped (no grant).
    let (keep, deny_one, rest) = (flood[0], flood[1], &flood[2..5]);
    let stranger = Aci::random(&rng);
    assert!(
        store
            .decide_contact_requests(
                bob,
                &Decisions {
                    approve: vec![keep],
                    deny: vec![deny_one, stranger],
                    deny_requests_from_invite: Some(i.id),
                    deny_all_via: vec![],
                }
            )
            .await
            .unwrap()
    );
    assert_eq!(state_of(&store, bob, keep).await, Some(GrantState::Active));
    assert_eq!(
        state_of(&store, bob, deny_one).await,
        Some(GrantState::Denied)
    );
    for a in rest {
        assert_eq!(state_of(&store, bob, *a).await, Some(GrantState::Denied));
    }
    assert_eq!(
        state_of(&store, bob, friend).await,
        Some(GrantState::Active)
    );
    assert_eq!(state_of(&store, bob, stranger).await, None);
    assert_eq!(state_of(&store, bob, flood[5]).await, None);
    // Denied accounts cannot come back through the owner's invites, even after a resume.
    assert!(store.resume_contact_invite(bob, i.id).await.unwrap());
    assert_eq!(
        redeem(&store, 1, rest[0], at(31)).await,
        Redemption::Invalid
    );
    // Approving a denied account lets it back in.
    assert!(
        store
            .decide_contact_requests(
                bob,
                &Decisions {
                    approve: vec![rest[0]],
                    ..Decisions::default()
                }
            )
            .await
            .unwrap()
    );
    assert_eq!(
        state_of(&store, bob, rest[0]).await,
        Some(GrantState::Active)
    );
}

fn deny_only(deny: &[Aci]) -> Decisions {
    Decisions {
        deny: deny.to_vec(),
        ..Decisions::default()
    }
}

/// A queued message for `owner`'s device `d`, from `source` (`None`: sealed), whose envelope is `tag`.
fn queued(owner: Aci, d: u8, source: Option<Aci>, tag: &[u8]) -> NewMessage {
    NewMessage {
        aci: owner,
        device: DeviceId::new(d).unwrap(),
        guid: MessageGuid(uuid::Uuid::new_v4()),
        envelope: tag.to_vec(),
        server_timestamp: T0,
        expires_at: T0.plus(Duration::from_secs(86_400)),
        story: false,
        source,
        gated: false,
        shared: None,
    }
}

/// The envelopes queued for `owner`'s device `d`, in order.
async fn envelopes(store: &Arc<dyn Store>, owner: Aci, d: u8) -> Vec<Vec<u8>> {
    let device = DeviceId::new(d).unwrap();
    store
        .read_messages(owner, device, MessageCursor::START, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.envelope)
        .collect()
}

/// Denying everything through one route (invite, shortcode, introducer) in one call, whatever the grants' states:
/// approvals win, other routes and direct grants stay, and every denied grantee's queued messages to the owner go
/// from every device queue in the same call (byte totals kept), while its messages to others, sealed messages and
/// other senders' messages stay. Plain denials and blocks delete too; an owner that is not invite_only changes
/// nothing.
pub async fn decide_denials_cascade_and_delete_queued_messages(store: Arc<dyn Store>) {
    let rng = rng();
    let bob = account(&store, &rng, "bob").await;
    let carol = account(&store, &rng, "carol").await;
    let x = account(&store, &rng, "introducer").await;
    let [p1, p2, p3, via_invite, via_code, direct] = [
        account(&store, &rng, "p1").await,
        account(&store, &rng, "p2").await,
        account(&store, &rng, "p3").await,
        account(&store, &rng, "via-invite").await,
        account(&store, &rng, "via-code").await,
        account(&store, &rng, "direct").await,
    ];
    let from = |a: Aci| Some(a);
    let everyone_msgs = |owner| {
        vec![
            queued(owner, 1, from(p1), b"p1-a"),
            queued(owner, 2, from(p1), b"p1-b"),
            queued(owner, 1, from(p2), b"p2"),
            queued(owner, 1, None, b"sealed"),
            queued(owner, 2, from(direct), b"direct"),
            queued(owner, 1, from(via_invite), b"invite"),
            queued(owner, 2, from(via_code), b"code"),
        ]
    };
    assert_eq!(
        store
            .insert_messages(&everyone_msgs(bob), u64::MAX)
            .await
            .unwrap(),
        InsertOutcome::Stored
    );
    let before = (
        envelopes(&store, bob, 1).await,
        envelopes(&store, bob, 2).await,
    );
    // Not invite_only yet: refused, nothing deleted.
    let all = Decisions {
        deny_all_via: vec![GrantRoute::Introducer(x)],
        deny: vec![direct],
        ..Decisions::default()
    };
    assert!(!store.decide_contact_requests(bob, &all).await.unwrap());
    assert_eq!(
        (
            envelopes(&store, bob, 1).await,
            envelopes(&store, bob, 2).await
        ),
        before
    );

    invite_only(&store, bob, IntroductionPolicy::Auto).await;
    assert!(
        store
            .set_contact_grant(bob, x, GrantState::Active, at(0))
            .await
            .unwrap()
    );
    assert!(
        store
            .set_contact_grant(bob, direct, GrantState::Active, at(0))
            .await
            .unwrap()
    );
    // p1 introduced under `auto` (active), p2 and p3 under `ask` (pending): a route covers every state.
    assert_eq!(
        store
            .introduce(bob, x, p1, at(1), &FloodConfig::default())
            .await
            .unwrap(),
        Introduction::Recorded(Some(GrantState::Active))
    );
    invite_only(&store, bob, IntroductionPolicy::Ask).await;
    for p in [p2, p3] {
        assert_eq!(
            store
                .introduce(bob, x, p, at(1), &FloodConfig::default())
                .await
                .unwrap(),
            Introduction::Recorded(Some(GrantState::Pending))
        );
    }
    let i = invite(&rng, bob, 9, 10, at(0));
    create(&store, &i).await;
    assert!(matches!(
        redeem(&store, 9, via_invite, at(2)).await,
        Redemption::Granted { .. }
    ));
    let mut code = ContactShortcode::new(&rng, bob, 0, [10, 11], at(0), Duration::from_secs(600));
    match store
        .create_contact_shortcode(&code, at(0), 10, 50)
        .await
        .unwrap()
    {
        CreateShortcode::Created(nameplate) => code.nameplate = nameplate,
        other => panic!("create: {other:?}"),
    }
    assert!(matches!(
        store
            .redeem_contact_shortcode(
                &Shortcode::new(code.nameplate, [10, 11]).unwrap(),
                via_code,
                at(3),
                &FloodConfig::default()
            )
            .await
            .unwrap(),
        ShortcodeRedemption::Granted { .. }
    ));
    // Carol (open) got a message from p1 too: it is not Bob's to delete.
    store
        .insert_messages(&[queued(carol, 1, from(p1), b"to-carol")], u64::MAX)
        .await
        .unwrap();
    let size_before = store
        .queue_size(bob, DeviceId::new(1).unwrap())
        .await
        .unwrap();

    // Everything through the introducer, with p3 approved: p1 and p2 denied (active before), their messages gone
    // from both devices; p3, x, the other routes and the sealed message stay.
    let through_x = Decisions {
        approve: vec![p3],
        deny_all_via: vec![GrantRoute::Introducer(x)],
        ..Decisions::default()
    };
    assert!(
        store
            .decide_contact_requests(bob, &through_x)
            .await
            .unwrap()
    );
    for p in [p1, p2] {
        assert_eq!(state_of(&store, bob, p).await, Some(GrantState::Denied));
    }
    for a in [p3, x, via_invite, via_code, direct] {
        assert_eq!(state_of(&store, bob, a).await, Some(GrantState::Active));
    }
    assert_eq!(
        envelopes(&store, bob, 1).await,
        vec![b"sealed".to_vec(), b"invite".to_vec()]
    );
    assert_eq!(
        envelopes(&store, bob, 2).await,
        vec![b"direct".to_vec(), b"code".to_vec()]
    );
    let size_after = store
        .queue_size(bob, DeviceId::new(1).unwrap())
        .await
        .unwrap();
    assert_eq!(size_after.messages, 2);
    assert_eq!(
        size_after.bytes,
        size_before.bytes - (b"p1-a".len() + b"p2".len()) as u64
    );
    assert_eq!(
        envelopes(&store, carol, 1).await,
        vec![b"to-carol".to_vec()]
    );

    // One call, three kinds: the invite route, the shortcode route and a plain denial.
    let rest = Decisions {
        deny: vec![direct],
        deny_all_via: vec![GrantRoute::Invite(i.id), GrantRoute::Shortcode(code.id)],
        ..Decisions::default()
    };
    assert!(store.decide_contact_requests(bob, &rest).await.unwrap());
    for a in [via_invite, via_code, direct] {
        assert_eq!(state_of(&store, bob, a).await, Some(GrantState::Denied));
    }
    assert_eq!(envelopes(&store, bob, 1).await, vec![b"sealed".to_vec()]);
    assert!(envelopes(&store, bob, 2).await.is_empty());

    // A block (direct denial) deletes too.
    store
        .insert_messages(&[queued(bob, 2, from(p3), b"p3")], u64::MAX)
        .await
        .unwrap();
    assert!(
        store
            .set_contact_grant(bob, p3, GrantState::Denied, at(5))
            .await
            .unwrap()
    );
    assert!(envelopes(&store, bob, 2).await.is_empty());
    assert_eq!(envelopes(&store, bob, 1).await, vec![b"sealed".to_vec()]);
    assert_eq!(
        store
            .queue_size(bob, DeviceId::new(2).unwrap())
            .await
            .unwrap()
            .bytes,
        0
    );
}

fn gated(mut m: NewMessage) -> NewMessage {
    m.gated = true;
    m
}

/// The contact gate inside the insert: a gated entry for an `invite_only` account is stored only when its source
/// holds an active grant (or is the account itself); a refusal stores nothing of the batch, for any account;
/// ungated entries (receipts, sealed sends) and `open` accounts are not gated.
pub async fn message_insert_is_gated_by_the_contact_graph(store: Arc<dyn Store>) {
    let rng = rng();
    let bob = account(&store, &rng, "bob").await;
    let alice = account(&store, &rng, "alice").await;
    let carol = account(&store, &rng, "carol").await;
    let insert = |batch: Vec<NewMessage>| {
        let store = store.clone();
        async move { store.insert_messages(&batch, u64::MAX).await.unwrap() }
    };
    assert_eq!(
        insert(vec![gated(queued(bob, 1, Some(alice), b"open"))]).await,
        InsertOutcome::Stored
    );
    invite_only(&store, bob, IntroductionPolicy::Ask).await;
    let refused = InsertOutcome::NotAllowed { aci: bob };
    assert_eq!(
        insert(vec![
            queued(carol, 1, Some(alice), b"to carol"),
            gated(queued(bob, 1, Some(alice), b"stranger")),
        ])
        .await,
        refused
    );
    assert!(envelopes(&store, carol, 1).await.is_empty());
    assert_eq!(
        insert(vec![queued(bob, 1, Some(alice), b"ungated")]).await,
        InsertOutcome::Stored
    );
    assert_eq!(
        insert(vec![gated(queued(bob, 1, Some(bob), b"self"))]).await,
        InsertOutcome::Stored
    );
    for (state, outcome) in [
        (GrantState::Denied, refused),
        (GrantState::Active, InsertOutcome::Stored),
    ] {
        assert!(
            store
                .set_contact_grant(bob, alice, state, at(1))
                .await
                .unwrap()
        );
        assert_eq!(
            insert(vec![gated(queued(bob, 1, Some(alice), b"granted"))]).await,
            outcome,
            "{state:?}"
        );
    }
    assert_eq!(
        envelopes(&store, bob, 1).await,
        vec![b"self".to_vec(), b"granted".to_vec()],
        "the block deleted alice's earlier messages"
    );
}

/// Sends racing a denial: whatever the interleaving, once the denial is committed no message of the denied account
/// stays in the owner's queues (it is deleted by the denial or refused by the insert's own gate).
pub async fn denial_racing_sends_leaves_no_message(store: Arc<dyn Store>) {
    let rng = rng();
    let bob = account(&store, &rng, "bob").await;
    let alice = account(&store, &rng, "alice").await;
    invite_only(&store, bob, IntroductionPolicy::Ask).await;
    assert!(
        store
            .set_contact_grant(bob, alice, GrantState::Active, at(0))
            .await
            .unwrap()
    );
    let mut senders = vec![];
    for t in 0..4u8 {
        let store = store.clone();
        // Each sender sends until the gate refuses it, so the sends span the denial.
        senders.push(tokio::spawn(async move {
            for n in 0..100_000u32 {
                let tag = [&[t][..], &n.to_be_bytes()[..]].concat();
                let batch = [
                    gated(queued(bob, 1, Some(alice), &tag)),
                    gated(queued(bob, 2, Some(alice), &tag)),
                ];
                match store.insert_messages(&batch, u64::MAX).await.unwrap() {
                    InsertOutcome::Stored => tokio::task::yield_now().await,
                    other => return Some((n, other)),
                }
            }
            None
        }));
    }
    tokio::task::yield_now().await;
    let deny = Decisions {
        deny: vec![alice],
        ..Decisions::default()
    };
    assert!(store.decide_contact_requests(bob, &deny).await.unwrap());
    for s in senders {
        let (_, outcome) = s
            .await
            .unwrap()
            .expect("a send after the denial was stored");
        assert_eq!(outcome, InsertOutcome::NotAllowed { aci: bob });
    }
    for d in [1, 2] {
        assert!(
            envelopes(&store, bob, d).await.is_empty(),
            "device {d} kept messages of the denied account"
        );
        assert_eq!(
            store
                .queue_size(bob, DeviceId::new(d).unwrap())
                .await
                .unwrap()
                .bytes,
            0
        );
    }
}

/// Direct grants: new ones are `direct`; existing ones keep provenance and creation time.
pub async fn set_contact_grant_direct(store: Arc<dyn Store>) {
    let rng = rng();
    let bob = account(&store, &rng, "bob").await;
    let alice = account(&store, &rng, "alice").await;
    let carol = account(&store, &rng, "carol").await;
    assert!(
        !store
            .set_contact_grant(bob, alice, GrantState::Active, at(0))
            .await
            .unwrap()
    );
    assert!(store.contact_grants(bob).await.unwrap().is_empty());
    invite_only(&store, bob, IntroductionPolicy::Ask).await;
    let i = invite(&rng, bob, 1, 5, at(0));
    create(&store, &i).await;
    redeem(&store, 1, carol, at(1)).await;
    assert!(
        store
            .set_contact_grant(bob, alice, GrantState::Active, at(2))
            .await
            .unwrap()
    );
    assert!(
        store
            .set_contact_grant(bob, carol, GrantState::Denied, at(3))
            .await
            .unwrap()
    );
    assert_eq!(
        store.contact_grants(bob).await.unwrap(),
        vec![
            Grant {
                owner: bob,
                grantee: carol,
                state: GrantState::Denied,
                via: Via::Invite(i.id),
                created_at: at(1)
            },
            Grant {
                owner: bob,
                grantee: alice,
                state: GrantState::Active,
                via: Via::Direct,
                created_at: at(2)
            },
        ]
    );
}

/// Introductions follow the recipient's policy and never override an existing grant.
pub async fn introductions(store: Arc<dyn Store>) {
    let rng = rng();
    let config = FloodConfig::default();
    let bob = account(&store, &rng, "bob").await;
    let alice = account(&store, &rng, "alice").await;
    let carol = account(&store, &rng, "carol").await;
    let dave = account(&store, &rng, "dave").await;
    let intro = |who, to| {
        let store = store.clone();
        async move { store.introduce(bob, who, to, at(1), &config).await.unwrap() }
    };
    assert_eq!(intro(alice, carol).await, Introduction::RecipientOpen);
    assert!(store.contact_grants(bob).await.unwrap().is_empty());
    invite_only(&store, bob, IntroductionPolicy::Ask).await;
    assert_eq!(intro(alice, carol).await, Introduction::NotGranted);
    assert!(
        store
            .set_contact_grant(bob, alice, GrantState::Active, at(0))
            .await
            .unwrap()
    );
    assert_eq!(
        intro(alice, carol).await,
        Introduction::Recorded(Some(GrantState::Pending))
    );
    assert_eq!(
        store.contact_grant(bob, carol).await.unwrap(),
        Some(Grant {
            owner: bob,
            grantee: carol,
            state: GrantState::Pending,
            via: Via::Introduction(alice),
            created_at: at(1)
        })
    );
    assert_eq!(intro(alice, carol).await, Introduction::Recorded(None));
    // A pending grantee cannot introduce others.
    assert_eq!(intro(carol, dave).await, Introduction::NotGranted);
    invite_only(&store, bob, IntroductionPolicy::Auto).await;
    assert_eq!(
        intro(alice, dave).await,
        Introduction::Recorded(Some(GrantState::Active))
    );
    assert_eq!(
        state_of(&store, bob, carol).await,
        Some(GrantState::Pending)
    );
    invite_only(&store, bob, IntroductionPolicy::Off).await;
    let erin = account(&store, &rng, "erin").await;
    assert_eq!(intro(alice, erin).await, Introduction::Off);
    assert_eq!(state_of(&store, bob, erin).await, None);
}

/// Racing redemptions of a one-use contact invite create exactly one grant.
pub async fn concurrent_redemptions_single_use(store: Arc<dyn Store>) {
    let rng = rng();
    let bob = account(&store, &rng, "bob").await;
    invite_only(&store, bob, IntroductionPolicy::Ask).await;
    let i = invite(&rng, bob, 1, 1, at(0));
    create(&store, &i).await;
    let mut racers = vec![];
    for n in 0..16 {
        racers.push(account(&store, &rng, &format!("racer{n}")).await);
    }
    let tasks: Vec<_> = racers
        .iter()
        .map(|a| {
            let store = store.clone();
            let a = *a;
            tokio::spawn(async move {
                store
                    .redeem_contact_invite(&hash(1), a, at(1), &FloodConfig::default())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Redemption::Granted { .. } => granted += 1,
            Redemption::Invalid => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(granted, 1);
    assert_eq!(store.contact_grants(bob).await.unwrap().len(), 1);
    assert_eq!(
        store.contact_invite(bob, i.id).await.unwrap().unwrap().uses,
        1
    );
}

/// Accounts deleted while they redeem an invite or are introduced leave no grant behind, whichever finishes first.
pub async fn deletion_racing_new_grants_leaves_none(store: Arc<dyn Store>) {
    let rng = rng();
    let bob = account(&store, &rng, "bob").await;
    let alice = account(&store, &rng, "alice").await;
    invite_only(&store, bob, IntroductionPolicy::Auto).await;
    create(&store, &invite(&rng, bob, 1, 100, at(0))).await;
    assert!(matches!(
        redeem(&store, 1, alice, at(1)).await,
        Redemption::Granted { .. }
    ));
    let mut tasks = vec![];
    for n in 0..24u32 {
        let racer = account(&store, &rng, &format!("racer{n}")).await;
        let (s1, s2) = (store.clone(), store.clone());
        // Hours apart, so neither the flood breaker nor the owner window decides the outcome.
        let when = at(2 + u64::from(n) * 600);
        tasks.push(tokio::spawn(async move {
            if n % 2 == 0 {
                s1.redeem_contact_invite(&hash(1), racer, when, &FloodConfig::default())
                    .await
                    .map(|_| ())
            } else {
                s1.introduce(bob, alice, racer, when, &FloodConfig::default())
                    .await
                    .map(|_| ())
            }
        }));
        tasks.push(tokio::spawn(async move {
            s2.delete_account(racer, when).await.map(|_| ())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let grantees: Vec<Aci> = store
        .contact_grants(bob)
        .await
        .unwrap()
        .iter()
        .map(|g| g.grantee)
        .collect();
    assert_eq!(grantees, vec![alice], "grants of deleted accounts remain");
}

/// Deleting an account removes its policy, its invites and every grant it gave or holds.
pub async fn delete_account_removes_contacts(store: Arc<dyn Store>) {
    let rng = rng();
    let bob = account(&store, &rng, "bob").await;
    let alice = account(&store, &rng, "alice").await;
    invite_only(&store, bob, IntroductionPolicy::Ask).await;
    invite_only(&store, alice, IntroductionPolicy::Ask).await;
    create(&store, &invite(&rng, bob, 1, 5, at(0))).await;
    create(&store, &invite(&rng, alice, 2, 5, at(0))).await;
    redeem(&store, 1, alice, at(1)).await;
    redeem(&store, 2, bob, at(1)).await;
    assert!(store.delete_account(bob, T0).await.unwrap());
    assert_eq!(store.contact_policy(bob).await.unwrap(), None);
    assert!(store.contact_invites(bob).await.unwrap().is_empty());
    assert!(store.contact_grants(bob).await.unwrap().is_empty());
    assert!(store.contact_grants(alice).await.unwrap().is_empty());
    assert_eq!(redeem(&store, 1, alice, at(2)).await, Redemption::Invalid);
    assert_eq!(store.contact_invites(alice).await.unwrap().len(), 1);
}
