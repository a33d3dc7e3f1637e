//! Conformance checks for the invite owner limits (`create_invite_within`).

use std::sync::Arc;
use std::time::Duration;

use flatline_core::ids::Aci;
use flatline_core::invites::{
    CreateOutcome, InviteCode, InviteFilter, InviteId, InviteOwner, NewInvite, OwnerLimits,
};
use flatline_core::store::Store;
use flatline_core::time::Timestamp;

use crate::clock::SeededRng;

const T0: Timestamp = Timestamp(1_767_225_600_000);

fn new_invite(
    rng: &SeededRng,
    owner: Aci,
    expires_at: Option<Timestamp>,
    now: Timestamp,
) -> NewInvite {
    NewInvite {
        id: InviteId::random(rng),
        code_hash: InviteCode::generate(rng).hash(),
        owner: InviteOwner::Account(owner),
        max_uses: 1,
        expires_at,
        note: None,
        created_at: now,
    }
}

async fn account(store: &Arc<dyn Store>, rng: &SeededRng, name: &str) -> Aci {
    let new = crate::fixtures::new_account(rng, name, "pw", T0);
    let aci = new.account.aci;
    store.create_account(new).await.unwrap();
    aci
}

async fn count(store: &Arc<dyn Store>, owner: Aci) -> usize {
    store
        .list_invites(
            &InviteFilter {
                owner: Some(InviteOwner::Account(owner)),
                state: None,
            },
            T0,
        )
        .await
        .unwrap()
        .len()
}

/// Creation stops at the quota (every invite counts) and at the open cap (only active ones count); refusals
/// store nothing; other owners are independent.
pub async fn invite_owner_limits(store: Arc<dyn Store>) {
    let rng = SeededRng::new(31);
    let (alice, bob) = (
        account(&store, &rng, "alice").await,
        account(&store, &rng, "bob").await,
    );
    let limits = OwnerLimits {
        max_created: 3,
        max_open: 2,
    };
    let short = Some(T0.plus(Duration::from_secs(60)));
    for expiry in [short, None] {
        let outcome = store
            .create_invite_within(&new_invite(&rng, alice, expiry, T0), limits)
            .await
            .unwrap();
        assert_eq!(outcome, CreateOutcome::Created);
    }
    let outcome = store
        .create_invite_within(&new_invite(&rng, alice, None, T0), limits)
        .await
        .unwrap();
    assert_eq!(outcome, CreateOutcome::TooManyOpen);
    assert_eq!(count(&store, alice).await, 2);
    // Once the short one expired a slot is open again; then the lifetime quota is what stops.
    let later = T0.plus(Duration::from_secs(61));
    assert_eq!(
        store
            .create_invite_within(&new_invite(&rng, alice, None, later), limits)
            .await
            .unwrap(),
        CreateOutcome::Created
    );
    let invite = new_invite(&rng, alice, None, later);
    assert_eq!(
        store
            .create_invite_within(
                &invite,
                OwnerLimits {
                    max_created: 3,
                    max_open: 10
                }
            )
            .await
            .unwrap(),
        CreateOutcome::QuotaSpent
    );
    assert!(store.invite(invite.id, later).await.unwrap().is_none());
    assert_eq!(
        store
            .create_invite_within(&new_invite(&rng, bob, None, later), limits)
            .await
            .unwrap(),
        CreateOutcome::Created
    );
}

/// 30 concurrent creations for one owner with an open cap of 4: exactly 4 are stored.
pub async fn concurrent_invite_creations_respect_limits(store: Arc<dyn Store>) {
    let rng = Arc::new(SeededRng::new(32));
    let owner = account(&store, &rng, "owner").await;
    let tasks: Vec<_> = (0..30)
        .map(|_| {
            let (store, invite) = (store.clone(), new_invite(&rng, owner, None, T0));
            tokio::spawn(async move {
                store
                    .create_invite_within(
                        &invite,
                        OwnerLimits {
                            max_created: 100,
                            max_open: 4,
                        },
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        if t.await.unwrap() == CreateOutcome::Created {
            created += 1;
        }
    }
    assert_eq!(created, 4);
    assert_eq!(count(&store, owner).await, 4);
}

/// No invite is created for an account that does not exist; accounts deleted while they create invites end up
/// with none active, whichever finishes first.
pub async fn deleted_owners_keep_no_active_invite(store: Arc<dyn Store>) {
    let rng = Arc::new(SeededRng::new(33));
    let limits = OwnerLimits {
        max_created: 100,
        max_open: 100,
    };
    let nobody = Aci::random(rng.as_ref());
    assert_eq!(
        store
            .create_invite_within(&new_invite(&rng, nobody, None, T0), limits)
            .await
            .unwrap(),
        CreateOutcome::OwnerGone
    );
    assert_eq!(count(&store, nobody).await, 0);
    let mut owners = vec![];
    let mut tasks = vec![];
    for n in 0..12 {
        let owner = account(&store, &rng, &format!("owner{n}")).await;
        owners.push(owner);
        for _ in 0..3 {
            let (store, invite) = (store.clone(), new_invite(&rng, owner, None, T0));
            tasks.push(tokio::spawn(async move {
                store
                    .create_invite_within(&invite, limits)
                    .await
                    .map(|_| ())
            }));
        }
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.delete_account(owner, T0).await.map(|_| ())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for owner in owners {
        let active = store
            .list_invites(
                &InviteFilter {
                    owner: Some(InviteOwner::Account(owner)),
                    state: Some(flatline_core::invites::InviteState::Active),
                },
                T0,
            )
            .await
            .unwrap();
        assert!(active.is_empty(), "a deleted account keeps active invites");
    }
}
