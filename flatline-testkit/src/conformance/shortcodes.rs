//! Conformance checks of [`ShortcodeStore`](flatline_core::shortcodes::ShortcodeStore).

use std::sync::Arc;
use std::time::Duration;

use flatline_core::contacts::{
    ContactPolicy, FloodConfig, GrantState, IntroductionPolicy, PolicyMode, Via,
};
use flatline_core::ids::Aci;
use flatline_core::shortcodes::{
    ContactShortcode, CreateShortcode, FAILED_GUESS_LIMIT, Shortcode, ShortcodeRedemption,
    ShortcodeState, ShortcodeStatus,
};
use flatline_core::store::Store;
use flatline_core::time::Timestamp;

use super::{T0, rng};
use crate::clock::SeededRng;
use crate::fixtures::new_account;

const MIN: Duration = Duration::from_secs(60);
const LIFETIME: Duration = Duration::from_secs(600);

fn at(minutes: u32) -> Timestamp {
    T0.plus(MIN * minutes)
}

async fn account(store: &Arc<dyn Store>, rng: &SeededRng, name: &str) -> Aci {
    let new = new_account(rng, name, "pw", T0);
    let aci = new.account.aci;
    store.create_account(new).await.unwrap();
    aci
}

async fn invite_only(store: &Arc<dyn Store>, aci: Aci) {
    assert!(
        store
            .set_contact_policy(
                aci,
                ContactPolicy {
                    mode: PolicyMode::InviteOnly,
                    introductions: IntroductionPolicy::Ask,
                },
            )
            .await
            .unwrap()
    );
}

/// Words `[n, n + 1]`: distinct per `n`, so tests can tell codes apart.
fn words(n: u16) -> [u16; 2] {
    [n, n + 1]
}

/// Creates a code with `words(n)` for `owner` at `now`; returns it with its nameplate.
async fn create(
    store: &Arc<dyn Store>,
    rng: &SeededRng,
    owner: Aci,
    n: u16,
    now: Timestamp,
) -> ContactShortcode {
    let mut code = ContactShortcode::new(rng, owner, 0, words(n), now, LIFETIME);
    match store
        .create_contact_shortcode(&code, now, 10, 50)
        .await
        .unwrap()
    {
        CreateShortcode::Created(nameplate) => code.nameplate = nameplate,
        other => panic!("create: {other:?}"),
    }
    code
}

fn guess(code: &ContactShortcode, n: u16) -> Shortcode {
    Shortcode::new(code.nameplate, words(n)).unwrap()
}

async fn attempt(
    store: &Arc<dyn Store>,
    guess: Shortcode,
    who: Aci,
    now: Timestamp,
) -> ShortcodeRedemption {
    store
        .redeem_contact_shortcode(&guess, who, now, &FloodConfig::default())
        .await
        .unwrap()
}

async fn stored(store: &Arc<dyn Store>, code: &ContactShortcode) -> ContactShortcode {
    store
        .contact_shortcodes(code.owner)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.id == code.id)
        .expect("code listed")
}

/// Codes are created only for existing invite_only owners and within the live quota, on the smallest nameplate not
/// held by an unexpired code (whatever its status); listing is per owner, oldest first, never with the words;
/// revoking is per owner; the verifier round-trips.
pub async fn shortcode_create_list_revoke(store: Arc<dyn Store>) {
    let rng = rng();
    let bob = account(&store, &rng, "bob").await;
    let alice = account(&store, &rng, "alice").await;
    let probe = ContactShortcode::new(&rng, bob, 0, words(1), at(0), LIFETIME);
    assert_eq!(
        store
            .create_contact_shortcode(&probe, at(0), 10, 50)
            .await
            .unwrap(),
        CreateShortcode::NotInviteOnly
    );
    let ghost = ContactShortcode::new(&rng, Aci::random(&rng), 0, words(1), at(0), LIFETIME);
    assert_eq!(
        store
            .create_contact_shortcode(&ghost, at(0), 10, 50)
            .await
            .unwrap(),
        CreateShortcode::NotInviteOnly
    );
    invite_only(&store, bob).await;
    invite_only(&store, alice).await;
    let mut codes = vec![];
    for n in 0..4u16 {
        let when = at(0).plus(Duration::from_secs(u64::from(n)));
        codes.push(create(&store, &rng, bob, n * 2, when).await);
    }
    codes.push(create(&store, &rng, alice, 100, at(0)).await);
    let plates: Vec<u32> = codes.iter().map(|c| c.nameplate).collect();
    assert_eq!(plates, vec![1, 2, 3, 4, 5], "smallest free, distinct");
    let listed = store.contact_shortcodes(bob).await.unwrap();
    assert_eq!(
        listed,
        codes[..4].to_vec(),
        "bob's, oldest first, verifier intact"
    );
    assert!(
        listed
            .iter()
            .all(|c| c.state(at(1)) == ShortcodeState::Live)
    );

    // Quota: live codes only.
    let over = ContactShortcode::new(&rng, bob, 0, words(50), at(0), LIFETIME);
    assert_eq!(
        store
            .create_contact_shortcode(&over, at(0), 4, 50)
            .await
            .unwrap(),
        CreateShortcode::QuotaExceeded
    );

    // Revoking: only the owner; the nameplate stays held until the code's expiry.
    assert!(
        !store
            .revoke_contact_shortcode(alice, codes[1].id)
            .await
            .unwrap()
    );
    assert!(
        store
            .revoke_contact_shortcode(bob, codes[1].id)
            .await
            .unwrap()
    );
    assert!(
        store
            .revoke_contact_shortcode(bob, codes[1].id)
            .await
            .unwrap()
    );
    assert_eq!(
        stored(&store, &codes[1]).await.status,
        ShortcodeStatus::Revoked
    );
    assert_eq!(
        stored(&store, &codes[1]).await.state(at(20)),
        ShortcodeState::Revoked
    );
    assert_eq!(
        attempt(&store, guess(&codes[1], 2), alice, at(1)).await,
        ShortcodeRedemption::Invalid
    );
    // The quota of 4 has room again.
    assert_eq!(
        store
            .create_contact_shortcode(&over, at(1), 4, 50)
            .await
            .unwrap(),
        CreateShortcode::Created(6)
    );
    // After expiry, nameplates are free again, smallest first.
    let later = create(&store, &rng, alice, 200, at(12)).await;
    assert_eq!(later.nameplate, 1);
    assert_eq!(
        stored(&store, &codes[0]).await.state(at(12)),
        ShortcodeState::Expired
    );
    assert!(
        !store
            .revoke_contact_shortcode(bob, flatline_core::shortcodes::ShortcodeId::random(&rng))
            .await
            .unwrap()
    );
}

/// History: creating a code forgets the owner's ended codes beyond the newest `history`, never live ones.
pub async fn shortcode_history_is_bounded(store: Arc<dyn Store>) {
    let rng = rng();
    let bob = account(&store, &rng, "bob").await;
    invite_only(&store, bob).await;
    for n in 0..5u32 {
        let code = ContactShortcode::new(&rng, bob, 0, words(1), at(n * 11), LIFETIME);
        assert!(matches!(
            store
                .create_contact_shortcode(&code, at(n * 11), 10, 2)
                .await
                .unwrap(),
            CreateShortcode::Created(1)
        ));
    }
    // At the fifth creation four had ended; the newest two of them are kept, with the live one.
    let listed = store.contact_shortcodes(bob).await.unwrap();
    let created: Vec<Timestamp> = listed.iter().map(|c| c.created_at).collect();
    assert_eq!(created, vec![at(22), at(33), at(44)]);
}

/// A right guess grants (via the shortcode) and uses the code; a second one finds nothing; wrong guesses count
/// and the third burns; ended and expired codes count nothing; the owner, denied and already-granted accounts are
/// answered as for contact invites.
pub async fn redeem_shortcode_rules(store: Arc<dyn Store>) {
    let rng = rng();
    let bob = account(&store, &rng, "bob").await;
    let alice = account(&store, &rng, "alice").await;
    let carol = account(&store, &rng, "carol").await;
    let mallory = account(&store, &rng, "mallory").await;
    invite_only(&store, bob).await;

    let code = create(&store, &rng, bob, 10, at(0)).await;
    assert_eq!(
        attempt(&store, guess(&code, 10), bob, at(1)).await,
        ShortcodeRedemption::OwnShortcode
    );
    assert_eq!(
        attempt(&store, guess(&code, 10), alice, at(1)).await,
        ShortcodeRedemption::Granted {
            owner: bob,
            state: GrantState::Active
        }
    );
    let grant = store.contact_grant(bob, alice).await.unwrap().unwrap();
    assert_eq!(
        (grant.state, grant.via, grant.created_at),
        (GrantState::Active, Via::Shortcode(code.id), at(1))
    );
    assert_eq!(
        stored(&store, &code).await.state(at(1)),
        ShortcodeState::Used
    );
    for who in [alice, carol] {
        assert_eq!(
            attempt(&store, guess(&code, 10), who, at(2)).await,
            ShortcodeRedemption::Invalid,
            "one use"
        );
    }
    // Never issued: nothing on the nameplate.
    let nowhere = Shortcode::new(77, words(10)).unwrap();
    assert_eq!(
        attempt(&store, nowhere, carol, at(2)).await,
        ShortcodeRedemption::Invalid
    );

    // Guess counting and the burn.
    let code = create(&store, &rng, bob, 20, at(3)).await;
    for n in 1..FAILED_GUESS_LIMIT {
        assert_eq!(
            attempt(&store, guess(&code, 900 + n as u16), mallory, at(4)).await,
            ShortcodeRedemption::FailedGuess { burned: false }
        );
        assert_eq!(stored(&store, &code).await.failed_guesses, n);
    }
    assert_eq!(
        attempt(&store, guess(&code, 30), mallory, at(4)).await,
        ShortcodeRedemption::FailedGuess { burned: true }
    );
    let burned = stored(&store, &code).await;
    assert_eq!(
        (burned.failed_guesses, burned.state(at(4))),
        (FAILED_GUESS_LIMIT, ShortcodeState::Burned)
    );
    // The right words no longer work, and further guesses count nothing.
    assert_eq!(
        attempt(&store, guess(&code, 20), carol, at(4)).await,
        ShortcodeRedemption::Invalid
    );
    assert_eq!(
        attempt(&store, guess(&code, 31), mallory, at(4)).await,
        ShortcodeRedemption::Invalid
    );
    assert_eq!(
        stored(&store, &code).await.failed_guesses,
        FAILED_GUESS_LIMIT
    );
    assert_eq!(store.contact_grant(bob, carol).await.unwrap(), None);

    // Expired: invalid, counts nothing.
    let code = create(&store, &rng, bob, 40, at(5)).await;
    assert_eq!(
        attempt(&store, guess(&code, 41), mallory, at(15)).await,
        ShortcodeRedemption::Invalid
    );
    assert_eq!(
        attempt(&store, guess(&code, 40), carol, at(15)).await,
        ShortcodeRedemption::Invalid
    );
    assert_eq!(stored(&store, &code).await.failed_guesses, 0);
    assert_eq!(
        stored(&store, &code).await.state(at(15)),
        ShortcodeState::Expired
    );

    // A denied account learns nothing and leaves the code live; an existing grant uses the code.
    assert!(
        store
            .set_contact_grant(bob, mallory, GrantState::Denied, at(16))
            .await
            .unwrap()
    );
    let code = create(&store, &rng, bob, 50, at(16)).await;
    assert_eq!(
        attempt(&store, guess(&code, 50), mallory, at(17)).await,
        ShortcodeRedemption::Invalid
    );
    assert_eq!(
        stored(&store, &code).await.state(at(17)),
        ShortcodeState::Live
    );
    assert_eq!(
        attempt(&store, guess(&code, 50), alice, at(17)).await,
        ShortcodeRedemption::Existing {
            owner: bob,
            state: GrantState::Active
        }
    );
    assert_eq!(
        stored(&store, &code).await.state(at(17)),
        ShortcodeState::Used
    );
    assert_eq!(
        store.contact_grant(bob, alice).await.unwrap().unwrap().via,
        Via::Shortcode(store.contact_shortcodes(bob).await.unwrap()[0].id),
        "the existing grant keeps its provenance"
    );
}

/// The owner window of §6 applies to shortcode grants, and shortcode grants count in it.
pub async fn shortcode_grants_follow_the_owner_window(store: Arc<dyn Store>) {
    let rng = rng();
    let bob = account(&store, &rng, "bob").await;
    invite_only(&store, bob).await;
    let config = FloodConfig {
        owner_window_max: 2,
        ..FloodConfig::default()
    };
    let mut states = vec![];
    for n in 0..3u16 {
        let who = account(&store, &rng, &format!("friend{n}")).await;
        let code = create(&store, &rng, bob, n * 2, at(u32::from(n))).await;
        match store
            .redeem_contact_shortcode(&guess(&code, n * 2), who, at(u32::from(n)), &config)
            .await
            .unwrap()
        {
            ShortcodeRedemption::Granted { state, .. } => states.push(state),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        states,
        vec![
            GrantState::Active,
            GrantState::Active,
            GrantState::Quarantined
        ]
    );
}

/// Two (and more) redeemers of one code at once: exactly one grant, the code used once.
pub async fn concurrent_shortcode_redemptions_single_use(store: Arc<dyn Store>) {
    let rng = rng();
    let bob = account(&store, &rng, "bob").await;
    invite_only(&store, bob).await;
    let code = create(&store, &rng, bob, 7, at(0)).await;
    let mut racers = vec![];
    for n in 0..12 {
        racers.push(account(&store, &rng, &format!("racer{n}")).await);
    }
    let right = guess(&code, 7);
    let tasks: Vec<_> = racers
        .iter()
        .map(|a| {
            let (store, a) = (store.clone(), *a);
            tokio::spawn(async move { attempt(&store, right, a, at(1)).await })
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        match t.await.unwrap() {
            ShortcodeRedemption::Granted { .. } => granted += 1,
            ShortcodeRedemption::Invalid => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(granted, 1);
    assert_eq!(store.contact_grants(bob).await.unwrap().len(), 1);
    assert_eq!(stored(&store, &code).await.status, ShortcodeStatus::Used);
}

/// Concurrent wrong guesses on one code are each counted once, and exactly the third burns it: of many, three
/// are failed guesses (one of them burning), the rest find nothing.
pub async fn concurrent_wrong_guesses_burn_at_the_third(store: Arc<dyn Store>) {
    let rng = rng();
    let bob = account(&store, &rng, "bob").await;
    invite_only(&store, bob).await;
    let code = create(&store, &rng, bob, 7, at(0)).await;
    let mallory = account(&store, &rng, "mallory").await;
    let tasks: Vec<_> = (0..12u16)
        .map(|n| {
            let (store, wrong) = (store.clone(), guess(&code, 100 + n * 2));
            tokio::spawn(async move { attempt(&store, wrong, mallory, at(1)).await })
        })
        .collect();
    let (mut failed, mut burned, mut invalid) = (0, 0, 0);
    for t in tasks {
        match t.await.unwrap() {
            ShortcodeRedemption::FailedGuess { burned: false } => failed += 1,
            ShortcodeRedemption::FailedGuess { burned: true } => burned += 1,
            ShortcodeRedemption::Invalid => invalid += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((failed, burned, invalid), (2, 1, 9));
    let after = stored(&store, &code).await;
    assert_eq!(
        (after.failed_guesses, after.status),
        (FAILED_GUESS_LIMIT, ShortcodeStatus::Burned)
    );
}

/// Concurrent creations get distinct nameplates, the smallest ones.
pub async fn concurrent_shortcode_creations_get_distinct_nameplates(store: Arc<dyn Store>) {
    let rng = rng();
    let mut owners = vec![];
    for n in 0..8 {
        let a = account(&store, &rng, &format!("owner{n}")).await;
        invite_only(&store, a).await;
        owners.push(a);
    }
    let tasks: Vec<_> = owners
        .iter()
        .map(|o| {
            let store = store.clone();
            let code = ContactShortcode::new(&rng, *o, 0, words(1), at(0), LIFETIME);
            tokio::spawn(async move {
                match store
                    .create_contact_shortcode(&code, at(0), 10, 50)
                    .await
                    .unwrap()
                {
                    CreateShortcode::Created(n) => n,
                    other => panic!("{other:?}"),
                }
            })
        })
        .collect();
    let mut plates = vec![];
    for t in tasks {
        plates.push(t.await.unwrap());
    }
    plates.sort_unstable();
    assert_eq!(plates, (1..=8).collect::<Vec<u32>>());
}

/// Deleting an account, or switching it to `open`, removes its shortcodes; their nameplates are free again.
pub async fn delete_account_removes_shortcodes(store: Arc<dyn Store>) {
    let rng = rng();
    let bob = account(&store, &rng, "bob").await;
    let alice = account(&store, &rng, "alice").await;
    invite_only(&store, bob).await;
    invite_only(&store, alice).await;
    let code = create(&store, &rng, bob, 1, at(0)).await;
    create(&store, &rng, alice, 3, at(0)).await;
    assert!(store.delete_account(bob, at(1)).await.unwrap());
    assert!(store.contact_shortcodes(bob).await.unwrap().is_empty());
    assert_eq!(
        attempt(&store, guess(&code, 1), alice, at(1)).await,
        ShortcodeRedemption::Invalid
    );
    assert_eq!(create(&store, &rng, alice, 5, at(1)).await.nameplate, 1);
    assert!(
        store
            .set_contact_policy(alice, ContactPolicy::default())
            .await
            .unwrap()
    );
    assert!(store.contact_shortcodes(alice).await.unwrap().is_empty());
}
