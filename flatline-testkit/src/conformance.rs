//! The store conformance suite: one set of checks that every backend (in-memory, SQLite, PostgreSQL) must pass.
//!
//! Use [`conformance_suite!`](crate::conformance_suite) in a backend's test module with an async factory that
//! returns a fresh, empty store; it expands to one `#[tokio::test]` per check.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use flatline_core::account::{AccountAttributes, RawAccountAttributes};
use flatline_core::ids::{Aci, DeviceId, Pni, Principal, ServiceId};
use flatline_core::keys::{KeyCounts, KeyUpload};
use flatline_core::ratelimit::{Admission, BucketConfig};
use flatline_core::store::{Conflict, DeviceGeneration, Store, StoreError};
use flatline_core::time::Timestamp;

mod server_state;
pub use server_state::*;

use crate::clock::SeededRng;
use crate::fixtures::{fake_ec, fake_kem, fake_signed_ec, new_account};

mod registration;
mod usernames;
pub use registration::*;
pub use usernames::*;
mod contacts;
mod profiles;
pub use contacts::*;
pub use profiles::*;
mod invites;
pub use invites::*;
mod messages;
pub use messages::*;
mod shortcodes;
pub use shortcodes::*;
mod devices;
pub use devices::*;

/// Expands to one test per conformance check. `$make` is an expression evaluating to an async closure (or fn)
/// that returns `Arc<dyn Store>`, empty.
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::conformance_suite!(@each $make;
            create_and_lookup, accounts_of_loads_many_at_once, create_conflicts_write_nothing, update_attributes, touch_device,
            lock_credentials, delete_account_cascades, initial_keys_stored, upload_replaces_or_keeps,
            take_lowest_first_and_keep_last_resort, bundle_keys_take_like_the_separate_calls, concurrent_takes_hand_out_each_key_once,
            rate_limit_bucket, rate_limit_matches_the_reference, concurrent_rate_limit_admits_bucket_size, purge_full_buckets,
            session_lifecycle, register_creates_and_consumes,
            reregistration_keeps_aci, principal_change_rotates_pni,
            principal_conflict_writes_nothing, tombstone_reuses_aci,
            invite_reservations, invite_states_gate_reservation, stale_registrations_never_overuse_an_invite,
            concurrent_invite_reservations, oidc_state,
            invite_owner_limits, concurrent_invite_creations_respect_limits, deleted_owners_keep_no_active_invite,
            purge_expired_registrations,
            username_reservation, username_confirmation, username_holds, username_links, username_reclaim,
            username_released_on_account_deletion, username_race_one_owner, username_race_lapsed_reservations,
            contact_policy_roundtrip_and_open_purges, contact_invite_create_list_delete,
            contact_invite_rotate_and_resume, redeem_contact_invite_rules, flood_breaker_trips_and_quarantines,
            owner_window_quarantines_excess, decide_contact_requests,
            decide_denials_cascade_and_delete_queued_messages, message_insert_is_gated_by_the_contact_graph,
            denial_racing_sends_leaves_no_message, set_contact_grant_direct, introductions,
            concurrent_redemptions_single_use, delete_account_removes_contacts, deletion_racing_new_grants_leaves_none,
            shortcode_create_list_revoke, shortcode_history_is_bounded, redeem_shortcode_rules,
            shortcode_grants_follow_the_owner_window, concurrent_shortcode_redemptions_single_use,
            concurrent_wrong_guesses_burn_at_the_third, concurrent_shortcode_creations_get_distinct_nameplates,
            delete_account_removes_shortcodes,
            key_fingerprints_recorded_once, forgotten_fingerprint_can_be_recorded_anew, concurrent_fingerprint_records_have_one_winner,
            manifest_version_advances_on_change_only, concurrent_manifest_advances_get_distinct_versions,
            profile_versions_and_current, profile_for_missing_account_writes_nothing, delete_account_removes_profiles,
            message_queue_is_fifo_from_a_cursor, message_reads_are_at_least_once, message_delete_by_guid_is_idempotent,
            message_concurrent_writers_one_reader, message_expiry_by_ttl, message_queue_bound_refuses_whole_batch,
            message_multi_device_insert_is_atomic, message_queues_go_with_device_and_account, spam_reports_recorded_once,
            server_certificates_issue_rotate_prune, concurrent_first_server_certificates_have_one_winner,
            concurrent_rotations_keep_one_current, sealed_sender_signer_lifecycle,
            link_assigns_lowest_free_id_and_reuses_it_clean, link_refusals_write_nothing, used_token_markers_expire,
            device_linked_with_token, concurrent_links_for_the_last_slot_one_wins,
            concurrent_links_with_one_token_link_once, set_device_capabilities, key_writes_need_the_current_device, shared_parts_are_stored_once_and_read_whole);
    };
    (@each $make:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let store: ::std::sync::Arc<dyn ::flatline_core::store::Store> = ($make)().await;
                $crate::conformance::$check(store).await;
            }
        )*
    };
}

const T0: Timestamp = Timestamp(1_767_225_600_000);

fn rng() -> SeededRng {
    SeededRng::new(7)
}

/// `accounts_of` answers what `account` / `account_by_pni` answer, in the order asked, with devices, and `None`
/// for unknown ids (an account named twice comes twice).
pub async fn accounts_of_loads_many_at_once(store: Arc<dyn Store>) {
    let rng = rng();
    let mut made = vec![];
    for i in 0..3 {
        let new = new_account(&rng, &format!("many{i}@example.org"), "pw", T0);
        made.push(new.account.clone());
        store.create_account(new).await.unwrap();
    }
    let unknown = ServiceId::Aci(Aci::random(&rng));
    let ids = vec![
        ServiceId::Pni(made[2].pni),
        unknown,
        ServiceId::Aci(made[0].aci),
        ServiceId::Aci(made[1].aci),
        ServiceId::Pni(Pni::random(&rng)),
        ServiceId::Aci(made[0].aci),
    ];
    let found = store.accounts_of(&ids).await.unwrap();
    let want = vec![
        Some(made[2].clone()),
        None,
        Some(made[0].clone()),
        Some(made[1].clone()),
        None,
        Some(made[0].clone()),
    ];
    assert_eq!(found, want);
    assert!(store.accounts_of(&[]).await.unwrap().is_empty());
}

/// Creates an account and finds it by ACI, PNI and principal; unknown ids find nothing.
pub async fn create_and_lookup(store: Arc<dyn Store>) {
    let rng = rng();
    let new = new_account(&rng, "alice@example.org", "pw", T0);
    let want = new.account.clone();
    store.create_account(new).await.unwrap();
    assert_eq!(store.account(want.aci).await.unwrap().as_ref(), Some(&want));
    assert_eq!(
        store.account_by_pni(want.pni).await.unwrap().as_ref(),
        Some(&want)
    );
    assert_eq!(
        store
            .account_by_principal(&want.principal)
            .await
            .unwrap()
            .as_ref(),
        Some(&want)
    );
    assert!(store.account(Aci::random(&rng)).await.unwrap().is_none());
    assert!(
        store
            .account_by_pni(Pni::random(&rng))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .account_by_principal(&Principal::parse("nobody").unwrap())
            .await
            .unwrap()
            .is_none()
    );
}

/// A taken ACI, PNI or principal is a conflict and the refused account leaves no trace.
pub async fn create_conflicts_write_nothing(store: Arc<dyn Store>) {
    let rng = rng();
    let first = new_account(&rng, "alice", "pw", T0);
    store.create_account(first.clone()).await.unwrap();

    let mut same_aci = new_account(&rng, "bob", "pw", T0);
    same_aci.account.aci = first.account.aci;
    let mut same_pni = new_account(&rng, "carol", "pw", T0);
    same_pni.account.pni = first.account.pni;
    let mut same_principal = new_account(&rng, "dave", "pw", T0);
    same_principal.account.principal = first.account.principal.clone();

    for (attempt, want) in [
        (same_aci, Conflict::Aci),
        (same_pni, Conflict::Pni),
        (same_principal, Conflict::Principal),
    ] {
        let refused = attempt.account.clone();
        match store.create_account(attempt).await {
            Err(StoreError::Conflict(c)) => assert_eq!(c, want),
            other => panic!("expected {want} conflict, got {other:?}"),
        }
        if want != Conflict::Pni {
            assert!(
                store.account_by_pni(refused.pni).await.unwrap().is_none(),
                "{want}: pni written"
            );
        }
        if want != Conflict::Principal {
            assert!(
                store
                    .account_by_principal(&refused.principal)
                    .await
                    .unwrap()
                    .is_none(),
                "{want}: principal written"
            );
        }
        if want != Conflict::Aci {
            assert!(
                store.account(refused.aci).await.unwrap().is_none(),
                "{want}: account written"
            );
            let owner = ServiceId::Aci(refused.aci);
            assert!(
                store
                    .signed_pre_key(owner, DeviceId::PRIMARY)
                    .await
                    .unwrap()
                    .is_none(),
                "{want}: keys written"
            );
        }
    }
    assert_eq!(
        store.account(first.account.aci).await.unwrap(),
        Some(first.account)
    );
}

/// Attributes update the device and account parts; unknown accounts and devices are reported, not created.
pub async fn update_attributes(store: Arc<dyn Store>) {
    let rng = rng();
    let new = new_account(&rng, "alice", "pw", T0);
    let aci = new.account.aci;
    let primary = DeviceGeneration::of(&new.account, DeviceId::PRIMARY).unwrap();
    store.create_account(new).await.unwrap();
    let attrs = AccountAttributes::validate(RawAccountAttributes {
        fetches_messages: false,
        registration_id: 77,
        pni_registration_id: Some(88),
        name: Some(vec![1, 2, 3]),
        unidentified_access_key: Some(vec![9; 16]),
        unrestricted_unidentified_access: true,
        discoverable_by_principal: true,
        capabilities: vec![("storage".into(), true), ("spqr".into(), true)],
    })
    .unwrap();
    assert!(store.update_attributes(&primary, &attrs).await.unwrap());
    let a = store.account(aci).await.unwrap().unwrap();
    assert_eq!(a.settings, attrs.account);
    assert_eq!(a.devices[0].settings, attrs.device);
    assert_eq!(a.devices[0].capabilities, attrs.capabilities);
    assert!(a.storage_capable());
    // Another device, another account, or another generation of the same device: nothing written.
    let other = AccountAttributes::validate(RawAccountAttributes {
        registration_id: 5,
        ..RawAccountAttributes::default()
    })
    .unwrap();
    let stale = [
        DeviceGeneration {
            device: DeviceId::new(2).unwrap(),
            ..primary.clone()
        },
        DeviceGeneration {
            aci: Aci::random(&rng),
            ..primary.clone()
        },
        DeviceGeneration {
            credential_salt: "00".repeat(16),
            ..primary.clone()
        },
    ];
    for writer in &stale {
        assert!(
            !store.update_attributes(writer, &other).await.unwrap(),
            "{writer:?}"
        );
    }
    assert_eq!(store.account(aci).await.unwrap().unwrap(), a);
}

/// Keys are written on a device's behalf only while that generation of the device exists (security review F-10):
/// after the device is removed, or replaced by a re-registration or a new link under the same id, a writer that
/// authenticated before writes nothing.
pub async fn key_writes_need_the_current_device(store: Arc<dyn Store>) {
    let rng = rng();
    let new = new_account(&rng, "alice", "pw", T0);
    let (aci, pni) = (new.account.aci, new.account.pni);
    let primary = DeviceGeneration::of(&new.account, DeviceId::PRIMARY).unwrap();
    store.create_account(new).await.unwrap();
    let upload = KeyUpload {
        ec: Some(vec![fake_ec(&rng, 10)]),
        kem: Some(vec![fake_kem(&rng, 20)]),
        ..KeyUpload::default()
    };
    assert!(
        store
            .store_keys_as(&primary, ServiceId::Pni(pni), &upload)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .key_counts(ServiceId::Pni(pni), DeviceId::PRIMARY)
            .await
            .unwrap(),
        KeyCounts { ec: 1, kem: 1 }
    );
    let stale = DeviceGeneration {
        credential_salt: "00".repeat(16),
        ..primary.clone()
    };
    let other_upload = KeyUpload {
        ec: Some(vec![fake_ec(&rng, 11), fake_ec(&rng, 12)]),
        signed: Some(fake_signed_ec(&rng, 99)),
        ..KeyUpload::default()
    };
    assert!(
        !store
            .store_keys_as(&stale, ServiceId::Aci(aci), &other_upload)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .key_counts(ServiceId::Aci(aci), DeviceId::PRIMARY)
            .await
            .unwrap(),
        KeyCounts::default()
    );
    assert_ne!(
        store
            .signed_pre_key(ServiceId::Aci(aci), DeviceId::PRIMARY)
            .await
            .unwrap(),
        other_upload.signed
    );
    // A device that does not exist (never linked, or removed) cannot be written for either.
    let absent = DeviceGeneration {
        device: DeviceId::new(3).unwrap(),
        ..primary.clone()
    };
    assert!(
        !store
            .store_keys_as(&absent, ServiceId::Aci(aci), &upload)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .key_counts(ServiceId::Aci(aci), DeviceId::new(3).unwrap())
            .await
            .unwrap(),
        KeyCounts::default()
    );
}

/// Last-seen moves forward only.
pub async fn touch_device(store: Arc<dyn Store>) {
    let rng = rng();
    let new = new_account(&rng, "alice", "pw", T0);
    let aci = new.account.aci;
    store.create_account(new).await.unwrap();
    let later = T0.plus(Duration::from_secs(86_400));
    store
        .touch_device(aci, DeviceId::PRIMARY, later)
        .await
        .unwrap();
    store
        .touch_device(aci, DeviceId::PRIMARY, T0)
        .await
        .unwrap();
    let a = store.account(aci).await.unwrap().unwrap();
    assert_eq!(a.devices[0].last_seen, later);
    // Unknown targets are a no-op, not an error.
    store
        .touch_device(Aci::random(&rng), DeviceId::PRIMARY, later)
        .await
        .unwrap();
}

/// Locking makes every credential refuse its password.
pub async fn lock_credentials(store: Arc<dyn Store>) {
    let rng = rng();
    let new = new_account(&rng, "alice", "pw", T0);
    let aci = new.account.aci;
    store.create_account(new).await.unwrap();
    assert!(store.lock_credentials(aci).await.unwrap());
    let a = store.account(aci).await.unwrap().unwrap();
    assert!(
        a.devices
            .iter()
            .all(|d| d.credential.is_locked() && !d.credential.verify("pw"))
    );
    assert!(!store.lock_credentials(Aci::random(&rng)).await.unwrap());
}

/// Deleting removes the account, frees its PNI and principal, and removes every key of both identities.
pub async fn delete_account_cascades(store: Arc<dyn Store>) {
    let rng = rng();
    let new = new_account(&rng, "alice", "pw", T0);
    let a = new.account.clone();
    store.create_account(new).await.unwrap();
    let upload = KeyUpload {
        ec: Some(vec![fake_ec(&rng, 5)]),
        kem: Some(vec![fake_kem(&rng, 6)]),
        ..Default::default()
    };
    store
        .store_keys(ServiceId::Pni(a.pni), DeviceId::PRIMARY, &upload)
        .await
        .unwrap();
    assert!(store.delete_account(a.aci, T0).await.unwrap());
    assert!(store.account(a.aci).await.unwrap().is_none());
    assert!(store.account_by_pni(a.pni).await.unwrap().is_none());
    assert!(
        store
            .account_by_principal(&a.principal)
            .await
            .unwrap()
            .is_none()
    );
    for owner in [ServiceId::Aci(a.aci), ServiceId::Pni(a.pni)] {
        assert!(
            store
                .signed_pre_key(owner, DeviceId::PRIMARY)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .last_resort_key(owner, DeviceId::PRIMARY)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            store.key_counts(owner, DeviceId::PRIMARY).await.unwrap(),
            KeyCounts::default()
        );
    }
    assert!(!store.delete_account(a.aci, T0).await.unwrap());
    // The principal can be registered again.
    let mut again = new_account(&rng, "alice", "pw", T0);
    again.account.principal = a.principal;
    store.create_account(again).await.unwrap();
}

/// Account creation stores the four initial signed keys.
pub async fn initial_keys_stored(store: Arc<dyn Store>) {
    let rng = rng();
    let new = new_account(&rng, "alice", "pw", T0);
    let (a, k) = (new.account.clone(), new.keys.clone());
    store.create_account(new).await.unwrap();
    let d = DeviceId::PRIMARY;
    assert_eq!(
        store
            .signed_pre_key(ServiceId::Aci(a.aci), d)
            .await
            .unwrap(),
        Some(k.aci_signed)
    );
    assert_eq!(
        store
            .signed_pre_key(ServiceId::Pni(a.pni), d)
            .await
            .unwrap(),
        Some(k.pni_signed)
    );
    assert_eq!(
        store
            .last_resort_key(ServiceId::Aci(a.aci), d)
            .await
            .unwrap(),
        Some(k.aci_last_resort)
    );
    assert_eq!(
        store
            .last_resort_key(ServiceId::Pni(a.pni), d)
            .await
            .unwrap(),
        Some(k.pni_last_resort)
    );
}

/// A present list replaces, an absent list keeps; signed and last-resort keys overwrite; identities and devices
/// are separate partitions.
pub async fn upload_replaces_or_keeps(store: Arc<dyn Store>) {
    let rng = rng();
    let owner = ServiceId::Aci(Aci::random(&rng));
    let d1 = DeviceId::PRIMARY;
    let d2 = DeviceId::new(2).unwrap();
    let first = KeyUpload {
        ec: Some(vec![fake_ec(&rng, 10), fake_ec(&rng, 11)]),
        signed: Some(fake_signed_ec(&rng, 1)),
        kem: Some(vec![fake_kem(&rng, 20)]),
        last_resort: Some(fake_kem(&rng, 30)),
    };
    store.store_keys(owner, d1, &first).await.unwrap();
    assert_eq!(
        store.key_counts(owner, d1).await.unwrap(),
        KeyCounts { ec: 2, kem: 1 }
    );
    assert_eq!(
        store.one_time_ec_keys(owner, d1).await.unwrap(),
        first.ec.clone().unwrap()
    );

    // Keep everything: nothing present.
    store
        .store_keys(owner, d1, &KeyUpload::default())
        .await
        .unwrap();
    assert_eq!(
        store.key_counts(owner, d1).await.unwrap(),
        KeyCounts { ec: 2, kem: 1 }
    );
    assert_eq!(store.signed_pre_key(owner, d1).await.unwrap(), first.signed);

    // Replace EC only; Kyber kept; signed overwritten.
    let second = KeyUpload {
        ec: Some(vec![fake_ec(&rng, 12)]),
        signed: Some(fake_signed_ec(&rng, 2)),
        ..Default::default()
    };
    store.store_keys(owner, d1, &second).await.unwrap();
    assert_eq!(
        store.one_time_ec_keys(owner, d1).await.unwrap(),
        second.ec.clone().unwrap()
    );
    assert_eq!(
        store.key_counts(owner, d1).await.unwrap(),
        KeyCounts { ec: 1, kem: 1 }
    );
    assert_eq!(
        store.signed_pre_key(owner, d1).await.unwrap(),
        second.signed
    );
    assert_eq!(
        store.last_resort_key(owner, d1).await.unwrap(),
        first.last_resort
    );

    // Other device and other identity untouched.
    assert_eq!(
        store.key_counts(owner, d2).await.unwrap(),
        KeyCounts::default()
    );
    let pni_owner = ServiceId::Pni(Pni(owner.uuid()));
    assert_eq!(
        store.key_counts(pni_owner, d1).await.unwrap(),
        KeyCounts::default()
    );
    assert!(store.signed_pre_key(pni_owner, d1).await.unwrap().is_none());
}

/// Takes hand out the lowest id first, each key once; the last-resort key stays.
pub async fn take_lowest_first_and_keep_last_resort(store: Arc<dyn Store>) {
    let rng = rng();
    let owner = ServiceId::Aci(Aci::random(&rng));
    let d = DeviceId::PRIMARY;
    let upload = KeyUpload {
        ec: Some(vec![fake_ec(&rng, 9), fake_ec(&rng, 3), fake_ec(&rng, 200)]),
        kem: Some(vec![fake_kem(&rng, 50), fake_kem(&rng, 7)]),
        last_resort: Some(fake_kem(&rng, 1000)),
        ..Default::default()
    };
    store.store_keys(owner, d, &upload).await.unwrap();
    let mut ec_ids = vec![];
    let mut kem_ids = vec![];
    for _ in 0..4 {
        let taken = store.take_one_time_keys(owner, d).await.unwrap();
        ec_ids.push(taken.ec.map(|k| k.key_id.get()));
        kem_ids.push(taken.kem.map(|k| k.key_id.get()));
    }
    assert_eq!(ec_ids, vec![Some(3), Some(9), Some(200), None]);
    assert_eq!(kem_ids, vec![Some(7), Some(50), None, None]);
    assert_eq!(
        store.last_resort_key(owner, d).await.unwrap(),
        upload.last_resort
    );
    assert_eq!(
        store.key_counts(owner, d).await.unwrap(),
        KeyCounts::default()
    );
    // Taking from a device that never uploaded is not an error.
    let none = store
        .take_one_time_keys(owner, DeviceId::new(9).unwrap())
        .await
        .unwrap();
    assert!(none.ec.is_none() && none.kem.is_none());
}

/// `take_bundle_keys` takes what `take_one_time_keys` would, falls back to the last-resort key, and takes nothing
/// from a device without a signed prekey.
pub async fn bundle_keys_take_like_the_separate_calls(store: Arc<dyn Store>) {
    let rng = rng();
    let owner = ServiceId::Aci(Aci::random(&rng));
    let d = DeviceId::PRIMARY;
    let signed = fake_kem(&rng, 77);
    let upload = KeyUpload {
        signed: Some(signed.clone()),
        ec: Some(vec![fake_ec(&rng, 9), fake_ec(&rng, 3)]),
        kem: Some(vec![fake_kem(&rng, 50)]),
        last_resort: Some(fake_kem(&rng, 1000)),
    };
    store.store_keys(owner, d, &upload).await.unwrap();
    let mut seen = vec![];
    for _ in 0..3 {
        let b = store.take_bundle_keys(owner, d).await.unwrap().unwrap();
        assert_eq!(b.signed, signed);
        seen.push((
            b.one_time.map(|k| k.key_id.get()),
            b.kem.map(|k| k.key_id.get()),
        ));
    }
    assert_eq!(
        seen,
        vec![
            (Some(3), Some(50)),
            (Some(9), Some(1000)),
            (None, Some(1000))
        ]
    );
    assert_eq!(
        store.key_counts(owner, d).await.unwrap(),
        KeyCounts::default()
    );
    // A device with one-time keys but no signed prekey keeps them.
    let other = ServiceId::Aci(Aci::random(&rng));
    let unsigned = KeyUpload {
        ec: Some(vec![fake_ec(&rng, 1)]),
        kem: Some(vec![fake_kem(&rng, 2)]),
        ..Default::default()
    };
    store.store_keys(other, d, &unsigned).await.unwrap();
    assert_eq!(store.take_bundle_keys(other, d).await.unwrap(), None);
    assert_eq!(
        store.key_counts(other, d).await.unwrap(),
        KeyCounts { ec: 1, kem: 1 }
    );
    // Neither keys nor device: nothing, no error.
    assert_eq!(
        store
            .take_bundle_keys(owner, DeviceId::new(9).unwrap())
            .await
            .unwrap(),
        None
    );
}

/// 500 one-time keys, 1000 concurrent takes of both kinds: exactly 500 distinct keys of each kind come out.
pub async fn concurrent_takes_hand_out_each_key_once(store: Arc<dyn Store>) {
    let rng = rng();
    let owner = ServiceId::Aci(Aci::random(&rng));
    let d = DeviceId::PRIMARY;
    // Uploads are capped at 100 per list by the API; the store has no such cap, so one write sets up 500.
    let upload = KeyUpload {
        ec: Some((0..500).map(|i| fake_ec(&rng, i)).collect()),
        kem: Some((0..500).map(|i| fake_kem(&rng, i)).collect()),
        signed: Some(fake_kem(&rng, 9999)),
        ..Default::default()
    };
    store.store_keys(owner, d, &upload).await.unwrap();
    // Half the takers go through `take_bundle_keys` (with no last-resort key its Kyber key is a one-time one).
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    store.take_one_time_keys(owner, d).await
                } else {
                    let bundle = store.take_bundle_keys(owner, d).await?.expect("signed key");
                    Ok(flatline_core::keys::TakenKeys {
                        ec: bundle.one_time,
                        kem: bundle.kem,
                    })
                }
            })
        })
        .collect();
    let mut ec = vec![];
    let mut kem = vec![];
    for t in tasks {
        let taken = t.await.unwrap().unwrap();
        ec.extend(taken.ec.map(|k| k.key_id.get()));
        kem.extend(taken.kem.map(|k| k.key_id.get()));
    }
    for (kind, ids) in [("ec", ec), ("kem", kem)] {
        assert_eq!(ids.len(), 500, "{kind}: keys handed out");
        assert_eq!(
            ids.iter().collect::<HashSet<_>>().len(),
            500,
            "{kind}: a key was handed out twice"
        );
    }
    assert_eq!(
        store.key_counts(owner, d).await.unwrap(),
        KeyCounts::default()
    );
}

/// The shared bucket admits its size, refuses with the right wait, refills, and keys are independent.
pub async fn rate_limit_bucket(store: Arc<dyn Store>) {
    let cfg = BucketConfig::new(3, Duration::from_secs(10));
    for _ in 0..3 {
        assert_eq!(
            store.acquire("l::a", &cfg, 1, T0).await.unwrap(),
            Admission::Allowed
        );
    }
    assert_eq!(
        store
            .acquire("l::a", &cfg, 1, T0.plus(Duration::from_secs(4)))
            .await
            .unwrap(),
        Admission::Denied {
            retry_after: Duration::from_secs(6)
        }
    );
    assert_eq!(
        store.acquire("l::b", &cfg, 1, T0).await.unwrap(),
        Admission::Allowed
    );
    assert_eq!(
        store
            .acquire("l::a", &cfg, 1, T0.plus(Duration::from_secs(10)))
            .await
            .unwrap(),
        Admission::Allowed
    );
    assert_eq!(
        store
            .acquire("l::a", &cfg, 2, T0.plus(Duration::from_secs(10)))
            .await
            .unwrap(),
        Admission::Denied {
            retry_after: Duration::from_secs(20)
        }
    );
    // Peeking reads the stored state and takes nothing.
    assert_eq!(store.peek("l::never").await.unwrap(), None);
    let seen = store.peek("l::b").await.unwrap().expect("stored");
    assert_eq!(
        (seen.credit_ms, seen.updated_at),
        (20_000, T0),
        "two of three permits left"
    );
    assert_eq!(store.peek("l::b").await.unwrap(), Some(seen));
}

/// A long pseudo-random sequence of requests (amounts 0–4, time moving forward by up to a minute and sometimes
/// back, configurations from a millisecond to a year per permit and buckets up to `u32::MAX`) gets exactly the
/// verdicts of `ratelimit::apply` run on a local copy, and a purge removes exactly the buckets that are full again.
pub async fn rate_limit_matches_the_reference(store: Arc<dyn Store>) {
    use flatline_core::ratelimit::{BucketState, apply, full_at};
    let configs = [
        BucketConfig::new(3, Duration::from_secs(10)),
        BucketConfig::new(1, Duration::from_millis(1)),
        BucketConfig::new(7, Duration::from_millis(1_500)),
        BucketConfig::new(u32::MAX, Duration::from_secs(365 * 86_400)),
    ];
    let mut reference: std::collections::HashMap<String, BucketState> = Default::default();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |bound: u64| {
        // xorshift64*: deterministic and good enough to mix the operations.
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    };
    let mut now = T0.as_millis();
    for _ in 0..300 {
        let c = usize::try_from(next(4)).unwrap();
        let key = format!("ref::{c}::{}", next(2));
        let amount = u32::try_from(next(5)).unwrap();
        now = if next(10) == 0 {
            now - i64::try_from(next(5_000)).unwrap()
        } else {
            now + i64::try_from(next(60_000)).unwrap()
        };
        let at = Timestamp(now);
        let (state, expected) = apply(&configs[c], reference.get(&key).copied(), amount, at);
        reference.insert(key.clone(), state);
        assert_eq!(
            store.acquire(&key, &configs[c], amount, at).await.unwrap(),
            expected,
            "{key}: {amount} at {now}"
        );
    }
    let later = Timestamp(now + 120_000);
    let full = reference
        .iter()
        .filter(|(k, st)| {
            let c: usize = k.split("::").nth(1).unwrap().parse().unwrap();
            full_at(&configs[c], st) <= later
        })
        .count();
    assert_eq!(
        store.purge_full_buckets(later).await.unwrap(),
        u64::try_from(full).unwrap()
    );
}

/// 50 concurrent requests on a bucket of 10: exactly 10 admitted.
pub async fn concurrent_rate_limit_admits_bucket_size(store: Arc<dyn Store>) {
    let cfg = BucketConfig::new(10, Duration::from_secs(3600));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.acquire("race::k", &cfg, 1, T0).await })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        if t.await.unwrap().unwrap() == Admission::Allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 10);
}

/// Buckets that are full again are forgotten; others are kept.
pub async fn purge_full_buckets(store: Arc<dyn Store>) {
    let cfg = BucketConfig::new(2, Duration::from_secs(60));
    store.acquire("p::one", &cfg, 1, T0).await.unwrap();
    store.acquire("p::two", &cfg, 2, T0).await.unwrap();
    assert_eq!(
        store
            .purge_full_buckets(T0.plus(Duration::from_secs(61)))
            .await
            .unwrap(),
        1
    );
    // "two" still has one permit missing, so a 2-permit request at +61 s is refused.
    assert!(matches!(
        store
            .acquire("p::two", &cfg, 2, T0.plus(Duration::from_secs(61)))
            .await
            .unwrap(),
        Admission::Denied { .. }
    ));
    assert_eq!(
        store
            .purge_full_buckets(T0.plus(Duration::from_secs(1000)))
            .await
            .unwrap(),
        1
    );
}
