//! Conformance checks for [`ProfileStore`](flatline_core::store::ProfileStore).

use std::sync::Arc;

use flatline_core::ids::Aci;
use flatline_core::profiles::VersionedProfile;
use flatline_core::store::Store;

use super::T0;
use crate::clock::SeededRng;
use crate::fixtures::new_account;

async fn account(store: &Arc<dyn Store>, rng: &SeededRng, name: &str) -> Aci {
    let new = new_account(rng, name, "pw", T0);
    let aci = new.account.aci;
    store.create_account(new).await.unwrap();
    aci
}

fn profile(version: char, name: u8) -> VersionedProfile {
    VersionedProfile {
        version: version.to_string().repeat(64),
        name: vec![name; 81],
        about_emoji: Some(vec![1; 60]),
        about: None,
        payment_address: Some(vec![2; 582]),
        phone_number_sharing: None,
        avatar: Some("profiles/AAAAAAAAAAAAAAAAAAAAAA".into()),
        commitment: vec![name; 97],
    }
}

/// Setting a profile stores it under its version and makes that version current; older versions stay readable;
/// a rewrite of a version replaces its content but keeps its first commitment.
pub async fn profile_versions_and_current(store: Arc<dyn Store>) {
    let rng = SeededRng::new(41);
    let alice = account(&store, &rng, "alice").await;
    let bob = account(&store, &rng, "bob").await;
    let s = store.as_ref();
    assert_eq!(s.current_profile_version(alice).await.unwrap(), None);
    assert_eq!(s.profile(alice, &"a".repeat(64)).await.unwrap(), None);

    let a = profile('a', 1);
    assert!(s.set_profile(alice, &a).await.unwrap());
    assert_eq!(s.profile(alice, &a.version).await.unwrap(), Some(a.clone()));
    assert_eq!(
        s.current_profile_version(alice).await.unwrap(),
        Some(a.version.clone())
    );
    assert_eq!(s.profile(bob, &a.version).await.unwrap(), None);
    assert_eq!(s.current_profile_version(bob).await.unwrap(), None);

    let b = profile('b', 2);
    assert!(s.set_profile(alice, &b).await.unwrap());
    assert_eq!(
        s.current_profile_version(alice).await.unwrap(),
        Some(b.version.clone())
    );
    assert_eq!(s.profile(alice, &a.version).await.unwrap(), Some(a.clone()));

    let mut a2 = profile('a', 3);
    a2.avatar = None;
    a2.about_emoji = None;
    assert!(s.set_profile(alice, &a2).await.unwrap());
    let stored = s.profile(alice, &a.version).await.unwrap().unwrap();
    assert_eq!(stored.name, vec![3; 81]);
    assert_eq!(stored.avatar, None);
    assert_eq!(stored.about_emoji, None);
    assert_eq!(stored.commitment, vec![1; 97], "first commitment kept");
    assert_eq!(
        s.current_profile_version(alice).await.unwrap(),
        Some(a.version.clone())
    );
}

/// A profile for an account that does not exist is not stored.
pub async fn profile_for_missing_account_writes_nothing(store: Arc<dyn Store>) {
    let rng = SeededRng::new(42);
    let ghost = Aci::random(&rng);
    let p = profile('c', 1);
    assert!(!store.set_profile(ghost, &p).await.unwrap());
    assert_eq!(store.profile(ghost, &p.version).await.unwrap(), None);
    assert_eq!(store.current_profile_version(ghost).await.unwrap(), None);
}

/// Deleting an account removes all its profile versions and its current version; others' stay.
pub async fn delete_account_removes_profiles(store: Arc<dyn Store>) {
    let rng = SeededRng::new(43);
    let alice = account(&store, &rng, "alice").await;
    let bob = account(&store, &rng, "bob").await;
    let (a, b) = (profile('a', 1), profile('b', 2));
    assert!(store.set_profile(alice, &a).await.unwrap());
    assert!(store.set_profile(alice, &b).await.unwrap());
    assert!(store.set_profile(bob, &a).await.unwrap());
    assert!(store.delete_account(alice, T0).await.unwrap());
    assert_eq!(store.profile(alice, &a.version).await.unwrap(), None);
    assert_eq!(store.profile(alice, &b.version).await.unwrap(), None);
    assert_eq!(store.current_profile_version(alice).await.unwrap(), None);
    assert_eq!(store.profile(bob, &a.version).await.unwrap(), Some(a));
}
