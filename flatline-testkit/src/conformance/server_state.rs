//! Conformance checks for [`ServerStateStore`](flatline_core::store::ServerStateStore).

use std::sync::Arc;

use flatline_core::sealed::ServerCertificateRecord;
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

fn certificate(id: u32, at: i64) -> ServerCertificateRecord {
    ServerCertificateRecord {
        id,
        certificate: vec![id as u8; 105],
        created_at: Timestamp(at),
        retired_at: None,
    }
}

/// The first certificate is stored only while none is current; a rotation retires the current one at the new
/// one's creation time; ids are unique; the list is current first, then most recently retired; pruning removes only
/// certificates retired before the cut-off.
pub async fn server_certificates_issue_rotate_prune(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let t = T0.as_millis();
    assert!(s.server_certificates().await.unwrap().is_empty());
    assert!(
        s.add_server_certificate(&certificate(10, t), false)
            .await
            .unwrap()
    );
    // A second first issue does nothing, nor does a reused id.
    assert!(
        !s.add_server_certificate(&certificate(11, t), false)
            .await
            .unwrap()
    );
    assert!(
        !s.add_server_certificate(&certificate(10, t + 1), true)
            .await
            .unwrap()
    );
    assert_eq!(
        s.server_certificates().await.unwrap(),
        vec![certificate(10, t)]
    );
    // Rotations.
    assert!(
        s.add_server_certificate(&certificate(11, t + 100), true)
            .await
            .unwrap()
    );
    assert!(
        s.add_server_certificate(&certificate(12, t + 200), true)
            .await
            .unwrap()
    );
    let all = s.server_certificates().await.unwrap();
    let ids: Vec<_> = all.iter().map(|r| (r.id, r.retired_at)).collect();
    assert_eq!(
        ids,
        vec![
            (12, None),
            (11, Some(Timestamp(t + 200))),
            (10, Some(Timestamp(t + 100))),
        ]
    );
    assert_eq!(all[0].certificate, vec![12u8; 105]);
    assert_eq!(all[0].created_at, Timestamp(t + 200));
    // Pruning: the cut-off is exclusive and the current certificate is never removed.
    assert_eq!(
        s.prune_server_certificates(Timestamp(t + 100))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.prune_server_certificates(Timestamp(t + 101))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.prune_server_certificates(Timestamp(i64::MAX))
            .await
            .unwrap(),
        1
    );
    let left: Vec<_> = s
        .server_certificates()
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, vec![12]);
}

/// Concurrent first issues (several processes starting at once): exactly one certificate becomes current.
pub async fn concurrent_first_server_certificates_have_one_winner(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..12u32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .add_server_certificate(&certificate(100 + i, T0.as_millis()), false)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1);
    let all = store.server_certificates().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].retired_at, None);
}

/// Concurrent rotations of one current certificate: at most one current certificate remains, and every stored
/// certificate but it is retired.
pub async fn concurrent_rotations_keep_one_current(store: Arc<dyn Store>) {
    assert!(
        store
            .add_server_certificate(&certificate(1, T0.as_millis()), false)
            .await
            .unwrap()
    );
    let tasks: Vec<_> = (0..8u32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .add_server_certificate(&certificate(200 + i, T0.as_millis() + 10), true)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert!(won >= 1);
    let all = store.server_certificates().await.unwrap();
    assert_eq!(all.iter().filter(|r| r.retired_at.is_none()).count(), 1);
    assert_eq!(all.len(), won + 1);
}

/// The core's issuing service on this backend: the first signer is stored and reused, a rotation changes the
/// signer, and sender certificates signed before and after both validate under the trust root.
pub async fn sealed_sender_signer_lifecycle(store: Arc<dyn Store>) {
    use flatline_core::crypto::PrivateKey;
    use flatline_core::ids::{Aci, DeviceId};
    use flatline_core::sealed::{SenderIdentity, service};
    use std::time::Duration;

    let rng = crate::clock::SeededRng::new(11);
    let root = PrivateKey::generate(&rng);
    let s = store.as_ref();
    let first = service::current_signer(s, &root, &rng, T0).await.unwrap();
    let again = service::current_signer(s, &root, &rng, T0).await.unwrap();
    assert_eq!(first.certificate, again.certificate);
    let who = SenderIdentity {
        aci: Aci::random(&rng),
        device: DeviceId::PRIMARY,
        identity_key: PrivateKey::generate(&rng).public_key(),
    };
    let day = Duration::from_secs(86_400);
    let old = service::sender_certificate(&first, &who, T0, day, &rng);
    let later = T0.plus(Duration::from_secs(3600));
    let rotation = service::rotate(s, &root, &rng, later, day).await.unwrap();
    assert_eq!(rotation.retired, Some(first.certificate.id()));
    assert_eq!(rotation.pruned, 0);
    let now = service::current_signer(s, &root, &rng, later)
        .await
        .unwrap();
    assert_eq!(now.certificate, rotation.signer.certificate);
    assert_ne!(now.certificate.id(), first.certificate.id());
    let new = service::sender_certificate(&now, &who, later, day, &rng);
    assert!(old.validate(&[root.public_key()], later));
    assert!(new.validate(&[root.public_key()], later));
    // The retired certificate is kept while what it signed can be valid, pruned after.
    assert_eq!(s.server_certificates().await.unwrap().len(), 2);
    let much_later = later.plus(day).plus(Duration::from_secs(1));
    let rotation = service::rotate(s, &root, &rng, much_later, day)
        .await
        .unwrap();
    assert_eq!(rotation.pruned, 1);
    assert_eq!(s.server_certificates().await.unwrap().len(), 2);
    // A replaced trust root: the current certificate is not its own, so a new one is issued under it.
    let new_root = PrivateKey::generate(&rng);
    let replaced = service::current_signer(s, &new_root, &rng, much_later)
        .await
        .unwrap();
    assert!(replaced.certificate.validate(&[new_root.public_key()]));
    assert!(!replaced.certificate.validate(&[root.public_key()]));
    let all = s.server_certificates().await.unwrap();
    assert_eq!(all[0].id, replaced.certificate.id());
    assert_eq!(all.iter().filter(|r| r.retired_at.is_none()).count(), 1);
}
