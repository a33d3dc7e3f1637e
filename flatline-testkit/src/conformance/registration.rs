//! Conformance checks for sessions, registration, invites and OIDC state.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use flatline_core::ids::{Aci, DeviceId, Principal, ServiceId};
use flatline_core::invites::{
    CodeHash, InviteCode, InviteFilter, InviteId, InviteOwner, InviteState, NewInvite,
};
use flatline_core::keys::{KeyCounts, KeyUpload};
use flatline_core::random::SecureRandom;
use flatline_core::registration::{
    RegistrationOutcome, SessionId, Subject, TOMBSTONE_RETENTION, VerificationSession,
    VerifiedIdentity, VerifyOutcome,
};
use flatline_core::store::Store;
use flatline_core::time::Timestamp;

use crate::clock::SeededRng;
use crate::fixtures::{fake_ec, fake_kem, new_account, registration_commit};

const T0: Timestamp = Timestamp(1_767_225_600_000);
const LIFETIME: Duration = Duration::from_secs(600);

fn session(
    rng: &dyn SecureRandom,
    invite: Option<CodeHash>,
    now: Timestamp,
) -> VerificationSession {
    VerificationSession {
        id: SessionId::generate(rng),
        provider_id: "idp".into(),
        state: "state".into(),
        nonce: "nonce".into(),
        redirect_uri: "app://cb".into(),
        request_uri: "urn:x".into(),
        request_uri_lifetime: 60,
        invite_code: invite,
        created_at: now,
        expires_at: now.plus(LIFETIME),
        verified: None,
        reserved_invite: None,
    }
}

fn identity(sub: &str, principal: &str) -> VerifiedIdentity {
    let mut subject_hash = [0u8; 32];
    subject_hash[..sub.len().min(32)].copy_from_slice(&sub.as_bytes()[..sub.len().min(32)]);
    VerifiedIdentity {
        subject: Subject {
            provider: "idp".into(),
            sub: sub.into(),
        },
        subject_hash,
        principal: Principal::parse(principal).unwrap(),
        principal_opaque: false,
        sid: Some(format!("sid-{sub}")),
    }
}

/// Creates, verifies and registers a session for (idp, sub) with `principal`.
async fn register(
    store: &Arc<dyn Store>,
    rng: &SeededRng,
    sub: &str,
    principal: &str,
    now: Timestamp,
) -> RegistrationOutcome {
    let s = session(rng, None, now);
    store.create_session(&s).await.unwrap();
    assert_eq!(
        store
            .verify_session(
                &s.id,
                &identity(sub, principal),
                false,
                now.plus(LIFETIME),
                now
            )
            .await
            .unwrap(),
        VerifyOutcome::Verified
    );
    store
        .register(registration_commit(rng, &s.id, now))
        .await
        .unwrap()
}

fn aci_of(o: &RegistrationOutcome) -> Aci {
    match o {
        RegistrationOutcome::Created { aci, .. }
        | RegistrationOutcome::Reregistered { aci, .. } => *aci,
        other => panic!("expected success, got {other:?}"),
    }
}

async fn new_invite(
    store: &Arc<dyn Store>,
    rng: &SeededRng,
    owner: InviteOwner,
    max_uses: u32,
    expires_at: Option<Timestamp>,
) -> (InviteId, CodeHash) {
    let code = InviteCode::generate(rng);
    let id = InviteId::random(rng);
    store
        .create_invite(&NewInvite {
            id,
            code_hash: code.hash(),
            owner,
            max_uses,
            expires_at,
            note: Some("n".into()),
            created_at: T0,
        })
        .await
        .unwrap();
    (id, code.hash())
}

/// Sessions live until they expire; verification happens once.
pub async fn session_lifecycle(store: Arc<dyn Store>) {
    let rng = SeededRng::new(1);
    let s = session(&rng, None, T0);
    store.create_session(&s).await.unwrap();
    assert_eq!(store.session(&s.id, T0).await.unwrap(), Some(s.clone()));
    assert!(
        store.session(&s.id, s.expires_at).await.unwrap().is_none(),
        "expired sessions read as absent"
    );
    let unknown = SessionId::generate(&rng);
    let id = identity("alice", "alice@x");
    assert_eq!(
        store
            .verify_session(&unknown, &id, false, T0, T0)
            .await
            .unwrap(),
        VerifyOutcome::NotFound
    );
    assert_eq!(
        store
            .verify_session(&s.id, &id, false, s.expires_at, s.expires_at)
            .await
            .unwrap(),
        VerifyOutcome::NotFound
    );
    let later = T0.plus(Duration::from_secs(3000));
    assert_eq!(
        store
            .verify_session(&s.id, &id, false, later, T0)
            .await
            .unwrap(),
        VerifyOutcome::Verified
    );
    let stored = store.session(&s.id, T0).await.unwrap().unwrap();
    assert_eq!(
        (stored.verified, stored.expires_at),
        (Some(id.clone()), later)
    );
    assert_eq!(
        store
            .verify_session(&s.id, &id, false, later, T0)
            .await
            .unwrap(),
        VerifyOutcome::AlreadyVerified
    );
}

/// Registration creates the account, binds the subject, stores keys and consumes the session exactly once.
pub async fn register_creates_and_consumes(store: Arc<dyn Store>) {
    let rng = SeededRng::new(2);
    let s = session(&rng, None, T0);
    store.create_session(&s).await.unwrap();
    // Unverified sessions cannot register.
    assert_eq!(
        store
            .register(registration_commit(&rng, &s.id, T0))
            .await
            .unwrap(),
        RegistrationOutcome::SessionInvalid
    );
    store
        .verify_session(
            &s.id,
            &identity("alice", "alice@x"),
            false,
            T0.plus(LIFETIME),
            T0,
        )
        .await
        .unwrap();
    let c = registration_commit(&rng, &s.id, T0);
    let outcome = store.register(c.clone()).await.unwrap();
    assert_eq!(
        outcome,
        RegistrationOutcome::Created {
            aci: c.candidate_aci,
            pni: c.candidate_pni
        }
    );
    let a = store.account(c.candidate_aci).await.unwrap().unwrap();
    assert_eq!(
        (a.principal.as_str(), a.pni, a.devices.len()),
        ("alice@x", c.candidate_pni, 1)
    );
    assert_eq!(a.devices[0], c.device);
    assert!(
        store.session(&s.id, T0).await.unwrap().is_none(),
        "session consumed"
    );
    let subject = Subject {
        provider: "idp".into(),
        sub: "alice".into(),
    };
    assert_eq!(
        store.account_of_subject(&subject).await.unwrap(),
        Some(a.aci)
    );
    assert_eq!(store.subject_of(a.aci).await.unwrap(), Some(subject));
    assert_eq!(
        store.accounts_with_sid("idp", "sid-alice").await.unwrap(),
        vec![a.aci]
    );
    assert!(
        store
            .accounts_with_sid("other", "sid-alice")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .signed_pre_key(ServiceId::Pni(a.pni), DeviceId::PRIMARY)
            .await
            .unwrap(),
        Some(c.keys.pni_signed.clone())
    );
    assert_eq!(
        store
            .register(registration_commit(&rng, &s.id, T0))
            .await
            .unwrap(),
        RegistrationOutcome::SessionInvalid,
        "single use"
    );
}

/// The same subject again: same ACI and PNI, devices replaced, one-time keys of both identities wiped.
pub async fn reregistration_keeps_aci(store: Arc<dyn Store>) {
    let rng = SeededRng::new(3);
    let first = aci_of(&register(&store, &rng, "alice", "alice@x", T0).await);
    let a = store.account(first).await.unwrap().unwrap();
    let upload = KeyUpload {
        ec: Some(vec![fake_ec(&rng, 1)]),
        kem: Some(vec![fake_kem(&rng, 2)]),
        ..Default::default()
    };
    for owner in [ServiceId::Aci(a.aci), ServiceId::Pni(a.pni)] {
        store
            .store_keys(owner, DeviceId::PRIMARY, &upload)
            .await
            .unwrap();
    }
    let later = T0.plus(Duration::from_secs(100));
    let again = register(&store, &rng, "alice", "alice@x", later).await;
    assert_eq!(
        again,
        RegistrationOutcome::Reregistered {
            aci: a.aci,
            pni: a.pni
        }
    );
    let b = store.account(a.aci).await.unwrap().unwrap();
    assert_ne!(
        b.devices[0].credential, a.devices[0].credential,
        "new primary device"
    );
    assert_eq!(b.created_at, a.created_at, "creation time kept");
    for owner in [ServiceId::Aci(a.aci), ServiceId::Pni(a.pni)] {
        assert_eq!(
            store.key_counts(owner, DeviceId::PRIMARY).await.unwrap(),
            KeyCounts::default()
        );
        assert!(
            store
                .signed_pre_key(owner, DeviceId::PRIMARY)
                .await
                .unwrap()
                .is_some()
        );
    }
}

/// A changed principal claim updates the principal and rotates the PNI; the old PNI's keys go.
pub async fn principal_change_rotates_pni(store: Arc<dyn Store>) {
    let rng = SeededRng::new(4);
    let aci = aci_of(&register(&store, &rng, "alice", "alice@old", T0).await);
    let before = store.account(aci).await.unwrap().unwrap();
    let outcome = register(&store, &rng, "alice", "alice@new", T0).await;
    let RegistrationOutcome::Reregistered { aci: same, pni } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(same, aci);
    assert_ne!(pni, before.pni, "PNI rotated");
    let after = store.account(aci).await.unwrap().unwrap();
    assert_eq!((after.principal.as_str(), after.pni), ("alice@new", pni));
    assert!(
        store
            .account_by_principal(&before.principal)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.account_by_pni(before.pni).await.unwrap().is_none());
    assert!(
        store
            .signed_pre_key(ServiceId::Pni(before.pni), DeviceId::PRIMARY)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .signed_pre_key(ServiceId::Pni(pni), DeviceId::PRIMARY)
            .await
            .unwrap()
            .is_some()
    );
}

/// A principal held by another subject's account is refused and nothing is written.
pub async fn principal_conflict_writes_nothing(store: Arc<dyn Store>) {
    let rng = SeededRng::new(5);
    let alice = aci_of(&register(&store, &rng, "alice", "shared@x", T0).await);
    let s = session(&rng, None, T0);
    store.create_session(&s).await.unwrap();
    store
        .verify_session(
            &s.id,
            &identity("mallory", "shared@x"),
            false,
            T0.plus(LIFETIME),
            T0,
        )
        .await
        .unwrap();
    let c = registration_commit(&rng, &s.id, T0);
    assert_eq!(
        store.register(c.clone()).await.unwrap(),
        RegistrationOutcome::PrincipalConflict
    );
    assert!(store.account(c.candidate_aci).await.unwrap().is_none());
    assert!(
        store
            .account_of_subject(&Subject {
                provider: "idp".into(),
                sub: "mallory".into()
            })
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .account_by_principal(&Principal::parse("shared@x").unwrap())
            .await
            .unwrap()
            .map(|a| a.aci),
        Some(alice)
    );
}

/// Deletion leaves a tombstone: the same subject gets its ACI back within the retention, a new one after.
pub async fn tombstone_reuses_aci(store: Arc<dyn Store>) {
    let rng = SeededRng::new(6);
    let aci = aci_of(&register(&store, &rng, "alice", "alice@x", T0).await);
    assert!(store.delete_account(aci, T0).await.unwrap());
    assert!(store.subject_of(aci).await.unwrap().is_none());
    let back = register(
        &store,
        &rng,
        "alice",
        "alice@x",
        T0.plus(Duration::from_secs(86_400)),
    )
    .await;
    assert!(
        matches!(back, RegistrationOutcome::Created { aci: a, .. } if a == aci),
        "{back:?}"
    );
    let late = T0.plus(Duration::from_secs(86_400));
    assert!(store.delete_account(aci, late).await.unwrap());
    let after = register(
        &store,
        &rng,
        "alice",
        "alice@x",
        late.plus(TOMBSTONE_RETENTION),
    )
    .await;
    assert_ne!(aci_of(&after), aci, "tombstone expired");
}

/// Reservations count against max uses while their session lives; registration turns one into a use.
pub async fn invite_reservations(store: Arc<dyn Store>) {
    let rng = SeededRng::new(7);
    let (invite, code) = new_invite(&store, &rng, InviteOwner::Operator, 2, None).await;
    let mut sessions = vec![];
    for (i, want) in [
        VerifyOutcome::Verified,
        VerifyOutcome::Verified,
        VerifyOutcome::InviteUnavailable,
    ]
    .into_iter()
    .enumerate()
    {
        let s = session(&rng, Some(code), T0);
        store.create_session(&s).await.unwrap();
        let got = store
            .verify_session(
                &s.id,
                &identity(&format!("u{i}"), &format!("u{i}@x")),
                true,
                T0.plus(LIFETIME),
                T0,
            )
            .await
            .unwrap();
        assert_eq!(got, want, "session {i}");
        sessions.push(s);
    }
    let i = store.invite(invite, T0).await.unwrap().unwrap();
    assert_eq!(
        (i.uses, i.pending, i.state(T0, false)),
        (0, 2, InviteState::Exhausted)
    );
    let c = registration_commit(&rng, &sessions[0].id, T0);
    let aci = aci_of(&store.register(c).await.unwrap());
    let i = store.invite(invite, T0).await.unwrap().unwrap();
    assert_eq!((i.uses, i.pending, i.last_used_at), (1, 1, Some(T0)));
    let r = store.redemption_of(aci).await.unwrap().unwrap();
    assert_eq!(
        (r.invite, r.inviter, r.at),
        (invite, InviteOwner::Operator, T0)
    );
    assert_eq!(
        store.redemptions_by(InviteOwner::Operator).await.unwrap(),
        vec![r]
    );
    // The second session is abandoned: once it expires its use is free again.
    let expired = T0.plus(LIFETIME);
    let i = store.invite(invite, expired).await.unwrap().unwrap();
    assert_eq!(
        (i.uses, i.pending, i.state(expired, false)),
        (1, 0, InviteState::Active)
    );
    let s = session(&rng, Some(code), expired);
    store.create_session(&s).await.unwrap();
    assert_eq!(
        store
            .verify_session(
                &s.id,
                &identity("u9", "u9@x"),
                true,
                expired.plus(LIFETIME),
                expired
            )
            .await
            .unwrap(),
        VerifyOutcome::Verified
    );
    // Without a code on the session nothing can be reserved.
    let bare = session(&rng, None, T0);
    store.create_session(&bare).await.unwrap();
    assert_eq!(
        store
            .verify_session(
                &bare.id,
                &identity("u8", "u8@x"),
                true,
                T0.plus(LIFETIME),
                T0
            )
            .await
            .unwrap(),
        VerifyOutcome::InviteUnavailable
    );
    assert!(
        store
            .session(&bare.id, T0)
            .await
            .unwrap()
            .unwrap()
            .verified
            .is_none(),
        "refused verification writes nothing"
    );
}

/// Revoked, expired and suspended-owner invites cannot be reserved; revocation is reversible; deleting the owner
/// revokes its invites.
pub async fn invite_states_gate_reservation(store: Arc<dyn Store>) {
    let rng = SeededRng::new(8);
    let owner = new_account(&rng, "owner", "pw", T0);
    let owner_aci = owner.account.aci;
    store.create_account(owner).await.unwrap();
    let (revoked, revoked_code) =
        new_invite(&store, &rng, InviteOwner::Account(owner_aci), 5, None).await;
    let (_, expiring_code) = new_invite(
        &store,
        &rng,
        InviteOwner::Operator,
        5,
        Some(T0.plus(Duration::from_secs(10))),
    )
    .await;
    let (owned, owned_code) =
        new_invite(&store, &rng, InviteOwner::Account(owner_aci), 5, None).await;
    assert!(store.set_revoked(revoked, Some(T0)).await.unwrap());
    assert!(
        !store
            .set_revoked(InviteId::random(&rng), Some(T0))
            .await
            .unwrap()
    );
    let try_reserve = |code: CodeHash, now: Timestamp, sub: &'static str| {
        let store = store.clone();
        let s = session(&rng, Some(code), now);
        async move {
            store.create_session(&s).await.unwrap();
            store
                .verify_session(
                    &s.id,
                    &identity(sub, &format!("{sub}@x")),
                    true,
                    now.plus(LIFETIME),
                    now,
                )
                .await
                .unwrap()
        }
    };
    assert_eq!(
        try_reserve(revoked_code, T0, "a").await,
        VerifyOutcome::InviteUnavailable
    );
    assert!(store.set_revoked(revoked, None).await.unwrap());
    assert_eq!(
        try_reserve(revoked_code, T0, "b").await,
        VerifyOutcome::Verified
    );
    assert_eq!(
        try_reserve(expiring_code, T0.plus(Duration::from_secs(10)), "c").await,
        VerifyOutcome::InviteUnavailable
    );
    store.set_suspended(owner_aci, true, T0).await.unwrap();
    assert!(store.is_suspended(owner_aci).await.unwrap());
    assert_eq!(
        try_reserve(owned_code, T0, "d").await,
        VerifyOutcome::InviteUnavailable
    );
    let filter = InviteFilter {
        owner: Some(InviteOwner::Account(owner_aci)),
        state: Some(InviteState::OwnerSuspended),
    };
    assert_eq!(store.list_invites(&filter, T0).await.unwrap().len(), 2);
    store.set_suspended(owner_aci, false, T0).await.unwrap();
    assert_eq!(
        try_reserve(owned_code, T0, "e").await,
        VerifyOutcome::Verified
    );
    assert_eq!(
        store
            .list_invites(&InviteFilter::default(), T0)
            .await
            .unwrap()
            .len(),
        3
    );
    assert!(store.delete_account(owner_aci, T0).await.unwrap());
    let owned_now = store.invite(owned, T0).await.unwrap().unwrap();
    assert_eq!(owned_now.revoked_at, Some(T0), "owner deletion revokes");
    assert_eq!(store.revoke_all_of(owner_aci, T0).await.unwrap(), 0);
}

/// 50 subjects race for an invite with 5 uses: exactly 5 reservations succeed, and only they can register.
pub async fn concurrent_invite_reservations(store: Arc<dyn Store>) {
    let rng = Arc::new(SeededRng::new(9));
    let (invite, code) = new_invite(&store, &rng, InviteOwner::Operator, 5, None).await;
    let mut sessions = vec![];
    for _ in 0..50 {
        let s = session(rng.as_ref(), Some(code), T0);
        store.create_session(&s).await.unwrap();
        sessions.push(s.id);
    }
    let tasks: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let (store, rng) = (store.clone(), rng.clone());
            tokio::spawn(async move {
                let sub = format!("racer{i}");
                let outcome = store
                    .verify_session(
                        &id,
                        &identity(&sub, &format!("{sub}@x")),
                        true,
                        T0.plus(LIFETIME),
                        T0,
                    )
                    .await
                    .unwrap();
                if outcome != VerifyOutcome::Verified {
                    return None;
                }
                Some(aci_of(
                    &store
                        .register(registration_commit(rng.as_ref(), &id, T0))
                        .await
                        .unwrap(),
                ))
            })
        })
        .collect();
    let mut registered = HashSet::new();
    for t in tasks {
        registered.extend(t.await.unwrap());
    }
    assert_eq!(registered.len(), 5);
    let i = store.invite(invite, T0).await.unwrap().unwrap();
    assert_eq!((i.uses, i.pending), (5, 0));
    assert_eq!(
        store
            .redemptions_by(InviteOwner::Operator)
            .await
            .unwrap()
            .len(),
        5
    );
}

/// The first pinned JWKS wins until replaced; token ids are remembered until they expire.
pub async fn oidc_state(store: Arc<dyn Store>) {
    assert!(store.pinned_jwks("idp").await.unwrap().is_none());
    assert_eq!(
        store.pin_jwks("idp", "{\"keys\":[1]}", T0).await.unwrap(),
        "{\"keys\":[1]}"
    );
    assert_eq!(
        store.pin_jwks("idp", "{\"keys\":[2]}", T0).await.unwrap(),
        "{\"keys\":[1]}"
    );
    store
        .replace_jwks("idp", "{\"keys\":[3]}", T0)
        .await
        .unwrap();
    assert_eq!(
        store.pinned_jwks("idp").await.unwrap().as_deref(),
        Some("{\"keys\":[3]}")
    );
    assert!(store.pinned_jwks("other").await.unwrap().is_none());

    let until = T0.plus(Duration::from_secs(120));
    assert!(
        store
            .record_token_id("logout:idp", "j1", until, T0)
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_token_id("logout:idp", "j1", until, T0)
            .await
            .unwrap()
    );
    assert!(
        store
            .record_token_id("logout:other", "j1", until, T0)
            .await
            .unwrap()
    );
    assert!(
        store
            .record_token_id(
                "logout:idp",
                "j1",
                until.plus(Duration::from_secs(60)),
                until
            )
            .await
            .unwrap(),
        "expired entries are forgotten"
    );
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .record_token_id("logout:idp", "race", until, T0)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut firsts = 0;
    for t in tasks {
        firsts += usize::from(t.await.unwrap());
    }
    assert_eq!(firsts, 1, "exactly one process sees a jti first");
}

/// Expired sessions, tombstones and token ids are purged; live ones stay.
pub async fn purge_expired_registrations(store: Arc<dyn Store>) {
    let rng = SeededRng::new(10);
    let old = session(&rng, None, T0);
    let fresh = session(&rng, None, T0.plus(LIFETIME));
    store.create_session(&old).await.unwrap();
    store.create_session(&fresh).await.unwrap();
    store
        .record_token_id("s", "old", T0.plus(Duration::from_secs(1)), T0)
        .await
        .unwrap();
    let removed = store
        .purge_expired_registrations(T0.plus(LIFETIME))
        .await
        .unwrap();
    assert_eq!(removed, 2);
    assert!(
        store
            .session(&fresh.id, T0.plus(LIFETIME))
            .await
            .unwrap()
            .is_some()
    );
}

/// F-09: an invite is never used more than `max_uses` times, even when a registration commits with a `now` taken
/// before its reservation expired while another session reserved the freed use in between.
pub async fn stale_registrations_never_overuse_an_invite(store: Arc<dyn Store>) {
    let rng = SeededRng::new(21);
    let (invite, code) = new_invite(&store, &rng, InviteOwner::Operator, 1, None).await;
    let a = session(&rng, Some(code), T0);
    store.create_session(&a).await.unwrap();
    let expiry = T0.plus(LIFETIME);
    assert_eq!(
        store
            .verify_session(&a.id, &identity("stale-a", "a@x"), true, expiry, T0)
            .await
            .unwrap(),
        VerifyOutcome::Verified
    );
    let later = expiry.plus(Duration::from_millis(1));
    let b = session(&rng, Some(code), later);
    store.create_session(&b).await.unwrap();
    assert_eq!(
        store
            .verify_session(
                &b.id,
                &identity("stale-b", "b@x"),
                true,
                later.plus(LIFETIME),
                later
            )
            .await
            .unwrap(),
        VerifyOutcome::Verified,
        "A's reservation has expired, so B may reserve"
    );
    // A commits with a `now` read before its reservation expired.
    let stale = Timestamp(expiry.as_millis() - 1);
    let first = store
        .register(registration_commit(&rng, &a.id, stale))
        .await
        .unwrap();
    let second = store
        .register(registration_commit(
            &rng,
            &b.id,
            later.plus(Duration::from_millis(1)),
        ))
        .await
        .unwrap();
    let i = store.invite(invite, later).await.unwrap().unwrap();
    assert!(
        i.uses <= 1,
        "uses {} of max 1 ({first:?}, {second:?})",
        i.uses
    );
    let successes = [&first, &second]
        .iter()
        .filter(|o| {
            matches!(
                o,
                RegistrationOutcome::Created { .. } | RegistrationOutcome::Reregistered { .. }
            )
        })
        .count();
    assert_eq!(successes, 1, "{first:?}, {second:?}");
}
