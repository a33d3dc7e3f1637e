//! Conformance checks for [`DeviceStore`](flatline_core::devices::DeviceStore): id assignment and reuse, single-use
//! tokens, the device limit under a race, and removal taking the device's queue and keys with it.

use std::collections::BTreeSet;
use std::sync::Arc;

use flatline_core::account::{Device, DeviceSettings};
use flatline_core::credentials::SaltedTokenHash;
use flatline_core::devices::{DeviceLinkOutcome, NewLinkedDevice};
use flatline_core::ids::{Aci, DeviceId, ServiceId};
use flatline_core::keys::{KeyCounts, KeyUpload};
use flatline_core::messages::MessageGuid;
use flatline_core::messages::store::{InsertOutcome, MessageCursor, NewMessage};
use flatline_core::store::{InitialKeys, Store};
use flatline_core::time::Timestamp;
use uuid::Uuid;

use super::{T0, rng};
use crate::fixtures::{fake_ec, fake_kem, fake_signed_ec, new_account};

fn dev(n: u8) -> DeviceId {
    DeviceId::new(n).unwrap()
}

fn link(aci: Aci, token: u8, created_at: Timestamp, max: u8) -> NewLinkedDevice {
    let rng = rng();
    NewLinkedDevice {
        aci,
        token_hash: [token; 32],
        token_expires_at: created_at.plus(std::time::Duration::from_secs(600)),
        device: Device {
            id: DeviceId::PRIMARY,
            credential: SaltedTokenHash::generate("linked-device-password", &rng),
            settings: DeviceSettings {
                registration_id: 100 + u16::from(token),
                pni_registration_id: 200 + u16::from(token),
                name: Some(vec![token; 8]),
                fetches_messages: true,
            },
            created_at,
            last_seen: created_at,
            capabilities: BTreeSet::from(["deleteSync".to_owned()]),
        },
        keys: InitialKeys {
            aci_signed: fake_signed_ec(&rng, 11),
            pni_signed: fake_signed_ec(&rng, 12),
            aci_last_resort: fake_kem(&rng, 13),
            pni_last_resort: fake_kem(&rng, 14),
        },
        max_devices: max,
        now: created_at,
    }
}

async fn queue_len(s: &dyn Store, aci: Aci, device: DeviceId) -> usize {
    s.read_messages(aci, device, MessageCursor::START, 1000)
        .await
        .unwrap()
        .len()
}

async fn enqueue(s: &dyn Store, aci: Aci, device: DeviceId) {
    let m = NewMessage {
        aci,
        device,
        guid: MessageGuid(Uuid::new_v4()),
        envelope: b"old".to_vec(),
        server_timestamp: T0,
        expires_at: Timestamp(T0.0 + 86_400_000),
        story: false,
        source: None,
        gated: false,
        shared: None,
    };
    assert_eq!(
        s.insert_messages(&[m], u64::MAX).await.unwrap(),
        InsertOutcome::Stored
    );
}

/// Links get the lowest free id ≥ 2 with their keys stored; a removed id is reused, and the new device starts with
/// no queue and none of the old device's keys.
pub async fn link_assigns_lowest_free_id_and_reuses_it_clean(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let rng = rng();
    let alice = new_account(&rng, "alice", "pw", T0);
    let (aci, pni) = (alice.account.aci, alice.account.pni);
    s.create_account(alice).await.unwrap();

    let first = link(aci, 1, T0, 6);
    let keys = first.keys.clone();
    assert_eq!(
        s.link_device(first).await.unwrap(),
        DeviceLinkOutcome::Linked(dev(2))
    );
    assert_eq!(
        s.link_device(link(aci, 2, T0, 6)).await.unwrap(),
        DeviceLinkOutcome::Linked(dev(3))
    );
    let account = s.account(aci).await.unwrap().unwrap();
    assert_eq!(
        account
            .devices
            .iter()
            .map(|d| d.id.get())
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let two = account.device(dev(2)).unwrap();
    assert_eq!(two.settings.registration_id, 101);
    assert_eq!(two.settings.pni_registration_id, 201);
    assert_eq!(two.settings.name, Some(vec![1; 8]));
    assert!(two.capabilities.contains("deleteSync"));
    assert_eq!(
        s.signed_pre_key(ServiceId::Aci(aci), dev(2)).await.unwrap(),
        Some(keys.aci_signed)
    );
    assert_eq!(
        s.last_resort_key(ServiceId::Pni(pni), dev(2))
            .await
            .unwrap(),
        Some(keys.pni_last_resort)
    );

    // Device 2 leaves things behind; removing it takes them all.
    let upload = KeyUpload {
        ec: Some(vec![fake_ec(&rng, 50)]),
        kem: Some(vec![fake_kem(&rng, 51)]),
        ..KeyUpload::default()
    };
    s.store_keys(ServiceId::Aci(aci), dev(2), &upload)
        .await
        .unwrap();
    s.store_keys(ServiceId::Pni(pni), dev(2), &upload)
        .await
        .unwrap();
    enqueue(s, aci, dev(2)).await;
    enqueue(s, aci, dev(3)).await;
    assert!(s.remove_device(aci, dev(2)).await.unwrap());
    assert!(!s.remove_device(aci, dev(2)).await.unwrap());
    for owner in [ServiceId::Aci(aci), ServiceId::Pni(pni)] {
        assert_eq!(
            s.key_counts(owner, dev(2)).await.unwrap(),
            KeyCounts::default()
        );
        assert_eq!(s.signed_pre_key(owner, dev(2)).await.unwrap(), None);
        assert_eq!(s.last_resort_key(owner, dev(2)).await.unwrap(), None);
    }
    assert_eq!(queue_len(s, aci, dev(2)).await, 0);
    // Device 3 is untouched.
    assert_eq!(queue_len(s, aci, dev(3)).await, 1);
    assert!(
        s.signed_pre_key(ServiceId::Aci(aci), dev(3))
            .await
            .unwrap()
            .is_some()
    );

    // Leftovers a removal could not see (a message stored for device 2 after it went, a racing key upload) are
    // purged when the id is reused.
    enqueue(s, aci, dev(2)).await;
    s.store_keys(ServiceId::Aci(aci), dev(2), &upload)
        .await
        .unwrap();
    assert_eq!(
        s.link_device(link(aci, 3, T0, 6)).await.unwrap(),
        DeviceLinkOutcome::Linked(dev(2))
    );
    assert_eq!(queue_len(s, aci, dev(2)).await, 0);
    assert_eq!(
        s.key_counts(ServiceId::Aci(aci), dev(2)).await.unwrap(),
        KeyCounts::default()
    );
    assert_eq!(
        s.account(aci)
            .await
            .unwrap()
            .unwrap()
            .device(dev(2))
            .unwrap()
            .settings
            .registration_id,
        103
    );
}

/// A used token, a full account and a missing account are refused with nothing written.
pub async fn link_refusals_write_nothing(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let rng = rng();
    let alice = new_account(&rng, "alice", "pw", T0);
    let aci = alice.account.aci;
    s.create_account(alice).await.unwrap();
    let before = |n| async move { s.account(aci).await.unwrap().unwrap().devices.len() == n };

    assert_eq!(
        s.link_device(link(aci, 1, T0, 3)).await.unwrap(),
        DeviceLinkOutcome::Linked(dev(2))
    );
    assert_eq!(
        s.link_device(link(aci, 1, T0, 3)).await.unwrap(),
        DeviceLinkOutcome::TokenUsed
    );
    assert!(before(2).await);
    assert_eq!(
        s.link_device(link(aci, 2, T0, 3)).await.unwrap(),
        DeviceLinkOutcome::Linked(dev(3))
    );
    assert_eq!(
        s.link_device(link(aci, 3, T0, 3)).await.unwrap(),
        DeviceLinkOutcome::TooManyDevices
    );
    assert!(before(3).await);
    // The refused link did not consume its token: with room again it links.
    assert!(s.remove_device(aci, dev(3)).await.unwrap());
    assert_eq!(
        s.link_device(link(aci, 3, T0, 3)).await.unwrap(),
        DeviceLinkOutcome::Linked(dev(3))
    );
    assert_eq!(
        s.link_device(link(Aci::random(&rng), 9, T0, 3))
            .await
            .unwrap(),
        DeviceLinkOutcome::NoAccount
    );
    assert_eq!(
        s.signed_pre_key(ServiceId::Aci(aci), dev(4)).await.unwrap(),
        None
    );
}

/// Token markers expire with their token: after expiry the same hash links again (the core refuses the expired
/// token itself; the store only forgets).
pub async fn used_token_markers_expire(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let rng = rng();
    let alice = new_account(&rng, "alice", "pw", T0);
    let aci = alice.account.aci;
    s.create_account(alice).await.unwrap();
    assert_eq!(
        s.link_device(link(aci, 1, T0, 6)).await.unwrap(),
        DeviceLinkOutcome::Linked(dev(2))
    );
    let later = T0.plus(std::time::Duration::from_secs(601));
    assert_eq!(
        s.link_device(link(aci, 1, later, 6)).await.unwrap(),
        DeviceLinkOutcome::Linked(dev(3))
    );
}

/// The device a token linked is found by its account and token only, and not after it was removed (nor when its id
/// was given to another device).
pub async fn device_linked_with_token(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let rng = rng();
    let alice = new_account(&rng, "alice", "pw", T0);
    let bob = new_account(&rng, "bob", "pw", T0);
    let (aci, bob_aci) = (alice.account.aci, bob.account.aci);
    s.create_account(alice).await.unwrap();
    s.create_account(bob).await.unwrap();
    assert_eq!(s.device_linked_with(aci, &[1; 32]).await.unwrap(), None);
    assert_eq!(
        s.link_device(link(aci, 1, T0, 6)).await.unwrap(),
        DeviceLinkOutcome::Linked(dev(2))
    );
    let found = s.device_linked_with(aci, &[1; 32]).await.unwrap().unwrap();
    assert_eq!(found.id, dev(2));
    assert_eq!(found.settings.registration_id, 101);
    assert_eq!(s.device_linked_with(bob_aci, &[1; 32]).await.unwrap(), None);
    assert_eq!(s.device_linked_with(aci, &[2; 32]).await.unwrap(), None);
    assert!(s.remove_device(aci, dev(2)).await.unwrap());
    assert_eq!(s.device_linked_with(aci, &[1; 32]).await.unwrap(), None);
    let later = T0.plus(std::time::Duration::from_secs(1));
    assert_eq!(
        s.link_device(link(aci, 2, later, 6)).await.unwrap(),
        DeviceLinkOutcome::Linked(dev(2))
    );
    assert_eq!(s.device_linked_with(aci, &[1; 32]).await.unwrap(), None);
    assert!(s.device_linked_with(aci, &[2; 32]).await.unwrap().is_some());
    // Account deletion takes the markers.
    assert!(s.delete_account(aci, T0).await.unwrap());
    assert_eq!(s.device_linked_with(aci, &[2; 32]).await.unwrap(), None);
}

/// Eight links race for the last free slot (limit 3, two devices): exactly one wins; the account ends with three.
pub async fn concurrent_links_for_the_last_slot_one_wins(store: Arc<dyn Store>) {
    let rng = rng();
    let alice = new_account(&rng, "alice", "pw", T0);
    let aci = alice.account.aci;
    store.create_account(alice).await.unwrap();
    assert_eq!(
        store.link_device(link(aci, 1, T0, 3)).await.unwrap(),
        DeviceLinkOutcome::Linked(dev(2))
    );
    let tasks: Vec<_> = (10..18)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move { store.link_device(link(aci, t, T0, 3)).await.unwrap() })
        })
        .collect();
    let mut linked = 0;
    for t in tasks {
        match t.await.unwrap() {
            DeviceLinkOutcome::Linked(id) => {
                assert_eq!(id, dev(3));
                linked += 1;
            }
            DeviceLinkOutcome::TooManyDevices => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(linked, 1);
    assert_eq!(store.account(aci).await.unwrap().unwrap().devices.len(), 3);
}

/// Two links with the same token at once: one device.
pub async fn concurrent_links_with_one_token_link_once(store: Arc<dyn Store>) {
    let rng = rng();
    let alice = new_account(&rng, "alice", "pw", T0);
    let aci = alice.account.aci;
    store.create_account(alice).await.unwrap();
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.link_device(link(aci, 7, T0, 6)).await.unwrap() })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, DeviceLinkOutcome::Linked(_)))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert!(outcomes.iter().all(|o| matches!(
        o,
        DeviceLinkOutcome::Linked(_) | DeviceLinkOutcome::TokenUsed
    )));
    assert_eq!(store.account(aci).await.unwrap().unwrap().devices.len(), 2);
}

/// Capabilities of one device are replaced; others and unknown devices are untouched.
pub async fn set_device_capabilities(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let rng = rng();
    let alice = new_account(&rng, "alice", "pw", T0);
    let aci = alice.account.aci;
    s.create_account(alice).await.unwrap();
    s.link_device(link(aci, 1, T0, 6)).await.unwrap();
    let caps = BTreeSet::from(["storage".to_owned(), "attachmentBackfill".to_owned()]);
    assert!(s.set_capabilities(aci, dev(1), &caps).await.unwrap());
    assert!(!s.set_capabilities(aci, dev(5), &caps).await.unwrap());
    let account = s.account(aci).await.unwrap().unwrap();
    assert_eq!(account.device(dev(1)).unwrap().capabilities, caps);
    assert_eq!(
        account.device(dev(2)).unwrap().capabilities,
        BTreeSet::from(["deleteSync".to_owned()])
    );
}
