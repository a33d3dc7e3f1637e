//! Username conformance checks: reservation, confirmation, holds, links, reclaim, deletion, and one owner per hash
//! under concurrency.

use std::sync::Arc;
use std::time::Duration;

use flatline_core::ids::Aci;
use flatline_core::store::Store;
use flatline_core::time::Timestamp;
use flatline_core::usernames::{
    ClaimKind, ConfirmOutcome, HOLD_TTL, LinkOutcome, MAX_HOLDS, RECLAIM_TTL, RESERVATION_TTL,
    ReserveOutcome, UsernameClaim,
};
use uuid::Uuid;

use super::{T0, rng};
use crate::fixtures::new_account;

const MS: Duration = Duration::from_millis(1);

fn h(n: u8) -> Vec<u8> {
    vec![n; 32]
}

fn handle(n: u128) -> Uuid {
    Uuid::from_u128(0x5157_0000_0000_4000_8000_0000_0000_0000 | n)
}

async fn accounts(store: &Arc<dyn Store>, n: usize) -> Vec<Aci> {
    let rng = rng();
    let mut out = Vec::new();
    for i in 0..n {
        let new = new_account(&rng, &format!("user{i}@example.org"), "pw", T0);
        out.push(new.account.aci);
        store.create_account(new).await.unwrap();
    }
    out
}

async fn reserve(
    store: &Arc<dyn Store>,
    aci: Aci,
    hashes: &[Vec<u8>],
    now: Timestamp,
) -> ReserveOutcome {
    store.reserve_username_hash(aci, hashes, now).await.unwrap()
}

async fn confirm(
    store: &Arc<dyn Store>,
    aci: Aci,
    hash: &[u8],
    blob: Option<&[u8]>,
    new_handle: Uuid,
    now: Timestamp,
) -> ConfirmOutcome {
    store
        .confirm_username_hash(aci, hash, blob, new_handle, now)
        .await
        .unwrap()
}

/// Reserve + confirm `hash` at `now` (must succeed).
async fn take(store: &Arc<dyn Store>, aci: Aci, hash: &[u8], now: Timestamp) {
    assert_eq!(
        reserve(store, aci, &[hash.to_vec()], now).await,
        ReserveOutcome::Reserved(hash.to_vec())
    );
    assert!(matches!(
        confirm(store, aci, hash, None, handle(0), now).await,
        ConfirmOutcome::Confirmed { .. }
    ));
}

async fn claim(store: &Arc<dyn Store>, hash: &[u8]) -> Option<UsernameClaim> {
    store.username_claim(hash).await.unwrap()
}

/// Reservation: the first free hash, a 5-minute TTL, own confirmed hash unchanged, own reservation extended, other
/// accounts' live reservations unavailable and their expired ones taken over.
pub async fn username_reservation(store: Arc<dyn Store>) {
    let ids = accounts(&store, 2).await;
    let (a, b) = (ids[0], ids[1]);
    assert_eq!(
        reserve(&store, Aci(Uuid::nil()), &[h(1)], T0).await,
        ReserveOutcome::NoAccount
    );

    assert_eq!(
        reserve(&store, a, &[h(1), h(2)], T0).await,
        ReserveOutcome::Reserved(h(1))
    );
    assert_eq!(
        claim(&store, &h(1)).await,
        Some(UsernameClaim {
            hash: h(1),
            owner: a,
            kind: ClaimKind::Reserved,
            expires_at: Some(T0.plus(RESERVATION_TTL)),
        })
    );
    assert_eq!(
        store
            .account_username_state(a)
            .await
            .unwrap()
            .unwrap()
            .reserved,
        Some(h(1))
    );
    // Another account skips the live reservation; alone it is unavailable.
    assert_eq!(
        reserve(&store, b, &[h(1), h(2)], T0).await,
        ReserveOutcome::Reserved(h(2))
    );
    assert_eq!(
        reserve(&store, b, &[h(1)], T0.plus(RESERVATION_TTL)).await,
        ReserveOutcome::Unavailable
    );
    // b's reservation of h(2) is still there: a refused request changes nothing.
    assert_eq!(claim(&store, &h(2)).await.unwrap().owner, b);

    // Re-reserving one's own reservation extends it.
    let later = T0.plus(Duration::from_secs(60));
    assert_eq!(
        reserve(&store, a, &[h(1)], later).await,
        ReserveOutcome::Reserved(h(1))
    );
    assert_eq!(
        claim(&store, &h(1)).await.unwrap().expires_at,
        Some(later.plus(RESERVATION_TTL))
    );

    // Expired (strictly after the expiry instant), another account takes it over.
    let expiry = later.plus(RESERVATION_TTL);
    assert_eq!(
        reserve(&store, b, &[h(1)], expiry).await,
        ReserveOutcome::Unavailable
    );
    assert_eq!(
        reserve(&store, b, &[h(1)], expiry.plus(MS)).await,
        ReserveOutcome::Reserved(h(1))
    );
    assert_eq!(claim(&store, &h(1)).await.unwrap().owner, b);
    // b's earlier reservation of h(2) was released when it reserved h(1).
    assert_eq!(claim(&store, &h(2)).await, None);

    // Own confirmed hash anywhere in the list: unchanged.
    let t = expiry.plus(Duration::from_secs(1));
    take(&store, a, &h(3), t).await;
    let before = store.account(a).await.unwrap();
    assert_eq!(
        reserve(&store, a, &[h(4), h(3)], t).await,
        ReserveOutcome::AlreadyConfirmed(h(3))
    );
    assert_eq!(store.account(a).await.unwrap(), before);
    assert_eq!(claim(&store, &h(4)).await, None);
    // A confirmed username never expires and is never available to others.
    assert_eq!(
        reserve(
            &store,
            b,
            &[h(3)],
            t.plus(Duration::from_secs(400 * 24 * 3600))
        )
        .await,
        ReserveOutcome::Unavailable
    );
}

/// Confirmation: 409 without a matching reservation, link handle rules, retries, lapsed reservations, 410 when
/// someone else took the hash, and lookup of confirmed hashes only.
pub async fn username_confirmation(store: Arc<dyn Store>) {
    let ids = accounts(&store, 2).await;
    let (a, b) = (ids[0], ids[1]);
    assert_eq!(
        confirm(&store, a, &h(1), None, handle(1), T0).await,
        ConfirmOutcome::NoReservation
    );
    assert_eq!(
        confirm(&store, Aci(Uuid::nil()), &h(1), None, handle(1), T0).await,
        ConfirmOutcome::NoAccount
    );
    reserve(&store, a, &[h(1)], T0).await;
    assert_eq!(
        confirm(&store, a, &h(2), None, handle(1), T0).await,
        ConfirmOutcome::NoReservation
    );
    // A reservation is not a username: lookup finds nothing.
    assert_eq!(store.account_by_username_hash(&h(1)).await.unwrap(), None);

    assert_eq!(
        confirm(&store, a, &h(1), Some(b"blob-1"), handle(1), T0).await,
        ConfirmOutcome::Confirmed {
            hash: h(1),
            link_handle: Some(handle(1))
        }
    );
    let account = store.account(a).await.unwrap().unwrap();
    assert_eq!(account.username_hash, Some(h(1)));
    assert_eq!(account.username_link_handle, Some(handle(1)));
    assert_eq!(
        store.account_by_username_hash(&h(1)).await.unwrap(),
        Some(a)
    );
    assert_eq!(
        store.username_link(handle(1)).await.unwrap(),
        Some(b"blob-1".to_vec())
    );
    let state = store.account_username_state(a).await.unwrap().unwrap();
    assert_eq!(state.reserved, None);
    assert_eq!(
        claim(&store, &h(1)).await.unwrap().kind,
        ClaimKind::Confirmed
    );
    assert_eq!(claim(&store, &h(1)).await.unwrap().expires_at, None);

    // A retry answers the current state and changes nothing.
    assert_eq!(
        confirm(&store, a, &h(1), Some(b"other"), handle(9), T0).await,
        ConfirmOutcome::AlreadyConfirmed {
            hash: h(1),
            link_handle: Some(handle(1))
        }
    );
    assert_eq!(
        store.username_link(handle(1)).await.unwrap(),
        Some(b"blob-1".to_vec())
    );

    // Confirming without an encrypted username clears the link.
    reserve(&store, a, &[h(2)], T0).await;
    assert_eq!(
        confirm(&store, a, &h(2), None, handle(2), T0).await,
        ConfirmOutcome::Confirmed {
            hash: h(2),
            link_handle: None
        }
    );
    assert_eq!(store.username_link(handle(1)).await.unwrap(), None);
    assert_eq!(
        store
            .account(a)
            .await
            .unwrap()
            .unwrap()
            .username_link_handle,
        None
    );

    // A lapsed reservation nobody took can still be confirmed.
    reserve(&store, b, &[h(5)], T0).await;
    let late = T0.plus(RESERVATION_TTL).plus(Duration::from_secs(3600));
    assert!(matches!(
        confirm(&store, b, &h(5), None, handle(5), late).await,
        ConfirmOutcome::Confirmed { .. }
    ));

    // A lapsed reservation someone else took: 410, and the stale reservation is dropped (then 409).
    reserve(&store, a, &[h(6)], T0).await;
    let after = T0.plus(RESERVATION_TTL).plus(MS);
    assert_eq!(
        reserve(&store, b, &[h(6)], after).await,
        ReserveOutcome::Reserved(h(6))
    );
    assert_eq!(
        confirm(&store, a, &h(6), None, handle(6), after).await,
        ConfirmOutcome::Taken
    );
    assert_eq!(
        store
            .account_username_state(a)
            .await
            .unwrap()
            .unwrap()
            .reserved,
        None
    );
    assert_eq!(
        confirm(&store, a, &h(6), None, handle(6), after).await,
        ConfirmOutcome::NoReservation
    );
    assert_eq!(
        store.account(a).await.unwrap().unwrap().username_hash,
        Some(h(2))
    );
    assert_eq!(claim(&store, &h(6)).await.unwrap().owner, b);
}

/// Holds: a given-up username is held 7 days for its former owner (who may take it back), at most 3 holds (the
/// oldest released), and deletion clears the username and the link.
pub async fn username_holds(store: Arc<dyn Store>) {
    let ids = accounts(&store, 2).await;
    let (a, b) = (ids[0], ids[1]);
    take(&store, a, &h(1), T0).await;
    // Changing the username holds the old one.
    let t1 = T0.plus(Duration::from_secs(10));
    take(&store, a, &h(2), t1).await;
    assert_eq!(
        claim(&store, &h(1)).await,
        Some(UsernameClaim {
            hash: h(1),
            owner: a,
            kind: ClaimKind::Held,
            expires_at: Some(t1.plus(HOLD_TTL)),
        })
    );
    assert_eq!(store.account_by_username_hash(&h(1)).await.unwrap(), None);
    assert_eq!(
        reserve(&store, b, &[h(1)], t1.plus(HOLD_TTL)).await,
        ReserveOutcome::Unavailable
    );
    // The holder may take it back: the hold's longer expiry is kept while it is reserved.
    assert_eq!(
        reserve(&store, a, &[h(1)], t1).await,
        ReserveOutcome::Reserved(h(1))
    );
    assert_eq!(
        claim(&store, &h(1)).await.unwrap().expires_at,
        Some(t1.plus(HOLD_TTL))
    );
    // Reserving something else turns it back into a plain hold.
    assert_eq!(
        reserve(&store, a, &[h(9)], t1).await,
        ReserveOutcome::Reserved(h(9))
    );
    assert_eq!(claim(&store, &h(1)).await.unwrap().kind, ClaimKind::Held);
    // After 7 days the hold lapses and anyone may reserve it.
    assert_eq!(
        reserve(&store, b, &[h(1)], t1.plus(HOLD_TTL).plus(MS)).await,
        ReserveOutcome::Reserved(h(1))
    );

    // The cap: a fourth hold releases the oldest, which is then immediately available.
    let ids = accounts_more(&store, 1).await;
    let c = ids[0];
    let mut t = T0;
    for n in 20..=24u8 {
        t = t.plus(Duration::from_secs(1));
        take(&store, c, &h(n), t).await;
    }
    // Held: 21, 22, 23 (20 was released when 23 became the fourth hold); 24 is the username.
    let holds = store
        .account_username_state(c)
        .await
        .unwrap()
        .unwrap()
        .holds;
    assert_eq!(holds.len(), MAX_HOLDS);
    assert_eq!(
        holds.iter().map(|x| x.hash.clone()).collect::<Vec<_>>(),
        vec![h(21), h(22), h(23)]
    );
    assert_eq!(claim(&store, &h(20)).await, None);
    assert_eq!(
        reserve(&store, b, &[h(20)], t).await,
        ReserveOutcome::Reserved(h(20))
    );
    assert_eq!(
        reserve(&store, b, &[h(21), h(22), h(23), h(24)], t).await,
        ReserveOutcome::Unavailable
    );

    // Deleting the username holds it too (releasing the oldest hold) and clears the link.
    let rs = store
        .set_username_link(c, b"blob", false, handle(7))
        .await
        .unwrap();
    assert_eq!(rs, LinkOutcome::Set(handle(7)));
    assert!(store.clear_username_hash(c, t).await.unwrap());
    let account = store.account(c).await.unwrap().unwrap();
    assert_eq!(
        (account.username_hash, account.username_link_handle),
        (None, None)
    );
    assert_eq!(store.username_link(handle(7)).await.unwrap(), None);
    assert_eq!(claim(&store, &h(24)).await.unwrap().kind, ClaimKind::Held);
    assert_eq!(claim(&store, &h(21)).await, None);
    assert_eq!(store.account_by_username_hash(&h(24)).await.unwrap(), None);
    // Nothing to delete: false, unchanged.
    assert!(!store.clear_username_hash(c, t).await.unwrap());
}

async fn accounts_more(store: &Arc<dyn Store>, n: usize) -> Vec<Aci> {
    let rng = crate::clock::SeededRng::new(99);
    let mut out = Vec::new();
    for i in 0..n {
        let new = new_account(&rng, &format!("more{i}@example.org"), "pw", T0);
        out.push(new.account.aci);
        store.create_account(new).await.unwrap();
    }
    out
}

/// Links: 409 without a username, new or kept handles, lookup by handle, removal.
pub async fn username_links(store: Arc<dyn Store>) {
    let ids = accounts(&store, 1).await;
    let a = ids[0];
    assert_eq!(
        store
            .set_username_link(a, b"x", true, handle(1))
            .await
            .unwrap(),
        LinkOutcome::NoUsername
    );
    assert_eq!(
        store
            .set_username_link(Aci(Uuid::nil()), b"x", true, handle(1))
            .await
            .unwrap(),
        LinkOutcome::NoAccount
    );
    take(&store, a, &h(1), T0).await;
    // keepLinkHandle without an existing handle still gets a new one.
    assert_eq!(
        store
            .set_username_link(a, b"one", true, handle(1))
            .await
            .unwrap(),
        LinkOutcome::Set(handle(1))
    );
    assert_eq!(
        store
            .set_username_link(a, b"two", true, handle(2))
            .await
            .unwrap(),
        LinkOutcome::Set(handle(1))
    );
    assert_eq!(
        store.username_link(handle(1)).await.unwrap(),
        Some(b"two".to_vec())
    );
    assert_eq!(
        store
            .set_username_link(a, b"three", false, handle(3))
            .await
            .unwrap(),
        LinkOutcome::Set(handle(3))
    );
    assert_eq!(store.username_link(handle(1)).await.unwrap(), None);
    assert_eq!(
        store.username_link(handle(3)).await.unwrap(),
        Some(b"three".to_vec())
    );
    assert_eq!(
        store
            .account(a)
            .await
            .unwrap()
            .unwrap()
            .username_link_handle,
        Some(handle(3))
    );
    assert!(store.clear_username_link(a).await.unwrap());
    assert_eq!(store.username_link(handle(3)).await.unwrap(), None);
    assert_eq!(
        store
            .account(a)
            .await
            .unwrap()
            .unwrap()
            .username_link_handle,
        None
    );
    // The username itself stays.
    assert_eq!(
        store.account_by_username_hash(&h(1)).await.unwrap(),
        Some(a)
    );
    assert!(!store.clear_username_link(Aci(Uuid::nil())).await.unwrap());
}

/// Reclaim after re-registration: the username is reserved for 3 days as reclaimable, the link handle is kept
/// and reused on confirmation; after 3 days anyone may take it.
pub async fn username_reclaim(store: Arc<dyn Store>) {
    let ids = accounts(&store, 2).await;
    let (a, b) = (ids[0], ids[1]);
    assert!(!store.hold_username_for_reclaim(a, T0).await.unwrap());
    reserve(&store, a, &[h(1)], T0).await;
    confirm(&store, a, &h(1), Some(b"blob"), handle(1), T0).await;
    assert!(store.hold_username_for_reclaim(a, T0).await.unwrap());
    let account = store.account(a).await.unwrap().unwrap();
    assert_eq!(account.username_hash, None);
    assert_eq!(account.username_link_handle, Some(handle(1)));
    assert_eq!(store.username_link(handle(1)).await.unwrap(), None);
    assert_eq!(store.account_by_username_hash(&h(1)).await.unwrap(), None);
    assert_eq!(
        claim(&store, &h(1)).await,
        Some(UsernameClaim {
            hash: h(1),
            owner: a,
            kind: ClaimKind::Reclaimable,
            expires_at: Some(T0.plus(RECLAIM_TTL)),
        })
    );
    assert_eq!(
        reserve(&store, b, &[h(1)], T0.plus(RECLAIM_TTL)).await,
        ReserveOutcome::Unavailable
    );
    // Confirming the reclaimable hash keeps the old handle.
    let t = T0.plus(Duration::from_secs(3600));
    assert_eq!(
        confirm(&store, a, &h(1), Some(b"again"), handle(2), t).await,
        ConfirmOutcome::Confirmed {
            hash: h(1),
            link_handle: Some(handle(1))
        }
    );
    assert_eq!(
        store.username_link(handle(1)).await.unwrap(),
        Some(b"again".to_vec())
    );
    assert_eq!(
        claim(&store, &h(1)).await.unwrap().kind,
        ClaimKind::Confirmed
    );

    // Unclaimed for 3 days: someone else may take it.
    assert!(store.hold_username_for_reclaim(a, t).await.unwrap());
    let lapsed = t.plus(RECLAIM_TTL).plus(MS);
    assert_eq!(
        reserve(&store, b, &[h(1)], lapsed).await,
        ReserveOutcome::Reserved(h(1))
    );
    assert_eq!(
        confirm(&store, a, &h(1), Some(b"x"), handle(3), lapsed).await,
        ConfirmOutcome::Taken
    );
}

/// Deleting an account releases every claim (username, reservation, holds, reclaim) at once.
pub async fn username_released_on_account_deletion(store: Arc<dyn Store>) {
    let ids = accounts(&store, 2).await;
    let (a, b) = (ids[0], ids[1]);
    take(&store, a, &h(1), T0).await;
    take(&store, a, &h(2), T0).await;
    store
        .set_username_link(a, b"blob", false, handle(1))
        .await
        .unwrap();
    reserve(&store, a, &[h(3)], T0).await;
    assert_eq!(store.username_claims_of(a).await.unwrap().len(), 3);
    assert!(store.delete_account(a, T0).await.unwrap());
    assert!(store.username_claims_of(a).await.unwrap().is_empty());
    assert_eq!(store.account_username_state(a).await.unwrap(), None);
    assert_eq!(store.account_by_username_hash(&h(2)).await.unwrap(), None);
    assert_eq!(store.username_link(handle(1)).await.unwrap(), None);
    for n in 1..=3 {
        assert_eq!(
            reserve(&store, b, &[h(n)], T0).await,
            ReserveOutcome::Reserved(h(n))
        );
    }
}

/// 50 accounts reserve and confirm the same hash at once: exactly one owns it; the others were told it is
/// unavailable (or, confirming, that they hold no reservation) and left nothing behind.
pub async fn username_race_one_owner(store: Arc<dyn Store>) {
    let ids = accounts(&store, 50).await;
    let tasks: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, &aci)| {
            let store = store.clone();
            tokio::spawn(async move {
                let r = store.reserve_username_hash(aci, &[h(7)], T0).await.unwrap();
                let c = store
                    .confirm_username_hash(aci, &h(7), Some(b"blob"), handle(i as u128), T0)
                    .await
                    .unwrap();
                (aci, r, c)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let (aci, r, c) = t.await.unwrap();
        match (r, c) {
            (ReserveOutcome::Reserved(_), ConfirmOutcome::Confirmed { .. }) => winners.push(aci),
            (ReserveOutcome::Unavailable, ConfirmOutcome::NoReservation) => {
                assert!(store.username_claims_of(aci).await.unwrap().is_empty());
                let state = store.account_username_state(aci).await.unwrap().unwrap();
                assert_eq!(state.reserved, None);
                assert_eq!(
                    store.account(aci).await.unwrap().unwrap().username_hash,
                    None
                );
            }
            other => panic!("unexpected outcomes {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1);
    assert_eq!(
        store.account_by_username_hash(&h(7)).await.unwrap(),
        Some(winners[0])
    );
    assert_eq!(store.username_claims_of(winners[0]).await.unwrap().len(), 1);
}

/// 50 accounts each took over the previous one's lapsed reservation of one hash, then all confirm at once after
/// every reservation lapsed: exactly one wins, the others are told it was taken (410) and keep no reservation.
pub async fn username_race_lapsed_reservations(store: Arc<dyn Store>) {
    let ids = accounts(&store, 50).await;
    let step = RESERVATION_TTL + Duration::from_secs(1);
    let mut t = T0;
    for &aci in &ids {
        assert_eq!(
            reserve(&store, aci, &[h(8)], t).await,
            ReserveOutcome::Reserved(h(8))
        );
        t = t.plus(step);
    }
    let tasks: Vec<_> = ids
        .iter()
        .map(|&aci| {
            let store = store.clone();
            tokio::spawn(async move {
                (
                    aci,
                    store
                        .confirm_username_hash(aci, &h(8), None, handle(1), t)
                        .await
                        .unwrap(),
                )
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (aci, ConfirmOutcome::Confirmed { .. }) => winners.push(aci),
            (aci, ConfirmOutcome::Taken) => {
                assert!(store.username_claims_of(aci).await.unwrap().is_empty());
                assert_eq!(
                    store
                        .account_username_state(aci)
                        .await
                        .unwrap()
                        .unwrap()
                        .reserved,
                    None
                );
            }
            (_, other) => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1);
    let owner = claim(&store, &h(8)).await.unwrap();
    assert_eq!(
        (owner.owner, owner.kind),
        (winners[0], ClaimKind::Confirmed)
    );
}
