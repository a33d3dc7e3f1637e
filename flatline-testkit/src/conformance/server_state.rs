//! Conformance checks for [`ServerStateStore`](flatline_core::store::ServerStateStore).

use std::sync::Arc;

use flatline_core::store::{FingerprintRecord, Store};
use flatline_core::time::Timestamp;

use super::T0;

fn hash(n: u8) -> [u8; 32] {
    [n; 32]
}

/// The first fingerprint under a name is kept; later ones get it back and change nothing; names are independent.
pub async fn key_fingerprints_recorded_once(store: Arc<dyn Store>) {
    let s = store.as_ref();
    assert_eq!(s.key_fingerprint("signing").await.unwrap(), None);
    assert_eq!(
        s.record_key_fingerprint("signing", "fp-a", T0)
            .await
            .unwrap(),
        FingerprintRecord::Recorded
    );
    assert_eq!(
        s.record_key_fingerprint("signing", "fp-b", T0)
            .await
            .unwrap(),
        FingerprintRecord::Existing("fp-a".into())
    );
    assert_eq!(
        s.record_key_fingerprint("signing", "fp-a", T0)
            .await
            .unwrap(),
        FingerprintRecord::Existing("fp-a".into())
    );
    assert_eq!(
        s.record_key_fingerprint("sealed", "fp-b", T0)
            .await
            .unwrap(),
        FingerprintRecord::Recorded
    );
    assert_eq!(
        s.record_key_fingerprint("sealed", "fp-c", T0)
            .await
            .unwrap(),
        FingerprintRecord::Existing("fp-b".into())
    );
    assert_eq!(
        s.key_fingerprint("signing").await.unwrap().as_deref(),
        Some("fp-a")
    );
    assert_eq!(
        s.key_fingerprint("sealed").await.unwrap().as_deref(),
        Some("fp-b")
    );
    assert_eq!(s.key_fingerprint("other").await.unwrap(), None);
}

/// Forgetting a fingerprint removes only that name; the next record under it wins again (a deliberate rotation).
pub async fn forgotten_fingerprint_can_be_recorded_anew(store: Arc<dyn Store>) {
    let s = store.as_ref();
    assert!(!s.forget_key_fingerprint("signing").await.unwrap());
    for (name, fp) in [("signing", "fp-a"), ("oidc-client-secret:x", "fp-x")] {
        s.record_key_fingerprint(name, fp, T0).await.unwrap();
    }
    assert_eq!(
        s.key_fingerprints().await.unwrap(),
        vec![
            ("oidc-client-secret:x".to_owned(), "fp-x".to_owned()),
            ("signing".to_owned(), "fp-a".to_owned()),
        ]
    );
    assert!(s.forget_key_fingerprint("signing").await.unwrap());
    assert!(!s.forget_key_fingerprint("signing").await.unwrap());
    assert_eq!(s.key_fingerprint("signing").await.unwrap(), None);
    assert_eq!(
        s.key_fingerprint("oidc-client-secret:x")
            .await
            .unwrap()
            .as_deref(),
        Some("fp-x")
    );
    assert_eq!(
        s.record_key_fingerprint("signing", "fp-b", T0)
            .await
            .unwrap(),
        FingerprintRecord::Recorded
    );
}

/// Of many concurrent first records exactly one wins and every other caller sees the winner's fingerprint.
pub async fn concurrent_fingerprint_records_have_one_winner(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let fp = format!("fp-{i}");
                let r = store
                    .record_key_fingerprint("signing", &fp, T0)
                    .await
                    .unwrap();
                (fp, r)
            })
        })
        .collect();
    let mut winners = vec![];
    let mut seen = vec![];
    for t in tasks {
        match t.await.unwrap() {
            (fp, FingerprintRecord::Recorded) => winners.push(fp),
            (_, FingerprintRecord::Existing(stored)) => seen.push(stored),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(seen.len(), 15);
    assert!(
        seen.iter().all(|s| *s == winners[0]),
        "{seen:?} vs {winners:?}"
    );
}

/// Version 1 first; unchanged content keeps the version; any change, including going back to older content,
/// bumps it by one.
pub async fn manifest_version_advances_on_change_only(store: Arc<dyn Store>) {
    let s = store.as_ref();
    assert_eq!(s.manifest_state().await.unwrap(), None);
    let later = Timestamp(T0.as_millis() + 1000);
    assert_eq!(s.advance_manifest(&hash(1), T0).await.unwrap(), 1);
    assert_eq!(s.advance_manifest(&hash(1), later).await.unwrap(), 1);
    assert_eq!(s.manifest_state().await.unwrap(), Some((1, hash(1))));
    assert_eq!(s.advance_manifest(&hash(2), later).await.unwrap(), 2);
    assert_eq!(s.advance_manifest(&hash(2), later).await.unwrap(), 2);
    // Rolling the configuration back is still a change: the old version is never reused.
    assert_eq!(s.advance_manifest(&hash(1), later).await.unwrap(), 3);
    assert_eq!(s.advance_manifest(&hash(1), later).await.unwrap(), 3);
    assert_eq!(s.manifest_state().await.unwrap(), Some((3, hash(1))));
}

/// N concurrent advances with distinct hashes get N distinct versions, 1..=N, and the counter ends at N.
pub async fn concurrent_manifest_advances_get_distinct_versions(store: Arc<dyn Store>) {
    const N: u8 = 24;
    let tasks: Vec<_> = (1..=N)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.advance_manifest(&hash(i), T0).await.unwrap() })
        })
        .collect();
    let mut versions = vec![];
    for t in tasks {
        versions.push(t.await.unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=u64::from(N)).collect::<Vec<_>>());
    let (version, _) = store.manifest_state().await.unwrap().unwrap();
    assert_eq!(version, u64::from(N));
}
