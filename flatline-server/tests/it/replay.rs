//! Differential property test of the two store backends: random operation sequences over prekeys, usernames,
//! registration invites (sessions, reservations, registrations, expiry), contact grants and message queues are applied to a
//! `MemoryStore` and a `SqliteStore` side by side. After every step the outcomes must be identical, and so must
//! everything observable through the store traits (key counts and keys, username claims and state, invites with
//! their pending counts, sessions, subjects, contact grants and invites, queued messages and queue sizes).
//!
//! The memory store is the executable specification of the contracts in `flatline_core::store`; any divergence is
//! a bug in one of them (or an under-specified contract).

use std::sync::Arc;
use std::time::Duration;

use flatline_core::account::AccountSettings;
use flatline_core::contacts::{
    ContactInvite, ContactInviteId, ContactPolicy, FloodConfig, GrantState, IntroductionPolicy,
    PolicyMode,
};
use flatline_core::ids::{Aci, DeviceId, KeyId, Pni, Principal, ServiceId};
use flatline_core::invites::{CodeHash, InviteId, InviteOwner, NewInvite};
use flatline_core::keys::{EcPreKey, KeyUpload, SignedPreKey};
use flatline_core::messages::MessageGuid;
use flatline_core::messages::store::{MessageCursor, NewMessage};
use flatline_core::registration::{
    RegistrationCommit, SessionId, Subject, VerificationSession, VerifiedIdentity,
};
use flatline_core::store::{NewAccount, Store};
use flatline_core::time::Timestamp;
use flatline_testkit::fixtures::new_account;
use flatline_testkit::{MemoryStore, SeededRng};
use proptest::prelude::*;
use uuid::Uuid;

use crate::support::sqlite_store;

const PEOPLE: usize = 3;
const HASHES: usize = 4;
const SUBJECTS: usize = 3;
const T0: Timestamp = Timestamp(1_700_000_000_000);
const SESSION_LIFETIME: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
enum Op {
    StoreKeys {
        who: usize,
        pni: bool,
        ec: Option<Vec<u32>>,
        kem: Option<Vec<u32>>,
        signed: Option<u32>,
        last_resort: Option<u32>,
    },
    TakeKeys {
        who: usize,
        pni: bool,
    },
    Reserve {
        who: usize,
        hashes: Vec<usize>,
    },
    Confirm {
        who: usize,
        hash: usize,
        link: bool,
    },
    /// Confirms the hash the account last reserved (when it has one), so confirmations often succeed.
    ConfirmReserved {
        who: usize,
        link: bool,
    },
    ClearUsername {
        who: usize,
    },
    HoldForReclaim {
        who: usize,
    },
    CreateInvite {
        max_uses: u32,
        expires_in: Option<u64>,
    },
    RevokeInvite {
        invite: usize,
        revoked: bool,
    },
    StartSession {
        invite: Option<usize>,
    },
    VerifySession {
        session: usize,
        subject: usize,
        reserve: bool,
    },
    Register {
        session: usize,
    },
    Redeem {
        who: usize,
        invite: usize,
    },
    Decide {
        approve: Vec<usize>,
        deny: Vec<usize>,
        deny_all_from: Option<usize>,
    },
    SetGrant {
        who: usize,
        state: GrantState,
    },
    /// One all-or-nothing insert of `size`-byte envelopes for these (person, device) queues, bound 100 bytes.
    InsertMessages {
        targets: Vec<(usize, u8)>,
        size: usize,
    },
    /// Acknowledges the `i`-th most recently inserted message (on its queue, or on another device's).
    DeleteMessage {
        i: usize,
        other_device: bool,
    },
    ExpireMessages,
    DeleteQueue {
        who: usize,
        device: u8,
    },
    Advance(u64),
}

/// Queue bound of the message operations.
const MAX_QUEUE_BYTES: u64 = 100;
/// Message lifetime of the message operations.
const MESSAGE_TTL: Duration = Duration::from_secs(1_000);

fn who() -> impl Strategy<Value = usize> {
    0..PEOPLE
}

fn ids() -> impl Strategy<Value = Option<Vec<u32>>> {
    prop::option::of(
        prop::collection::btree_set(0u32..8, 1..4).prop_map(|s| s.into_iter().collect()),
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (who(), any::<bool>(), ids(), ids(), prop::option::of(0u32..4), prop::option::of(0u32..4))
            .prop_map(|(who, pni, ec, kem, signed, last_resort)| Op::StoreKeys { who, pni, ec, kem, signed, last_resort }),
        3 => (who(), any::<bool>()).prop_map(|(who, pni)| Op::TakeKeys { who, pni }),
        3 => (who(), prop::collection::vec(0..HASHES, 1..3)).prop_map(|(who, hashes)| Op::Reserve { who, hashes }),
        1 => (who(), 0..HASHES, any::<bool>()).prop_map(|(who, hash, link)| Op::Confirm { who, hash, link }),
        3 => (who(), any::<bool>()).prop_map(|(who, link)| Op::ConfirmReserved { who, link }),
        1 => who().prop_map(|who| Op::ClearUsername { who }),
        1 => who().prop_map(|who| Op::HoldForReclaim { who }),
        1 => (1u32..3, prop::option::of(60u64..1_200)).prop_map(|(max_uses, expires_in)| Op::CreateInvite { max_uses, expires_in }),
        1 => (0usize..4, any::<bool>()).prop_map(|(invite, revoked)| Op::RevokeInvite { invite, revoked }),
        2 => prop::option::of(0usize..4).prop_map(|invite| Op::StartSession { invite }),
        2 => (0usize..6, 0..SUBJECTS, any::<bool>()).prop_map(|(session, subject, reserve)| Op::VerifySession { session, subject, reserve }),
        2 => (0usize..6).prop_map(|session| Op::Register { session }),
        3 => (who(), 0usize..2).prop_map(|(who, invite)| Op::Redeem { who, invite }),
        1 => (prop::collection::vec(who(), 0..2), prop::collection::vec(who(), 0..2), prop::option::of(0usize..2))
            .prop_map(|(approve, deny, deny_all_from)| Op::Decide { approve, deny, deny_all_from }),
        1 => (who(), prop_oneof![Just(GrantState::Active), Just(GrantState::Denied), Just(GrantState::Quarantined)])
            .prop_map(|(who, state)| Op::SetGrant { who, state }),
        // Sizes that add up to the bound exactly now and then.
        3 => (prop::collection::vec((who(), 1u8..3), 1..4), prop_oneof![Just(10usize), Just(20), Just(30), Just(50)])
            .prop_map(|(targets, size)| Op::InsertMessages { targets, size }),
        2 => (0usize..6, any::<bool>()).prop_map(|(i, other_device)| Op::DeleteMessage { i, other_device }),
        1 => Just(Op::ExpireMessages),
        1 => (who(), 1u8..3).prop_map(|(who, device)| Op::DeleteQueue { who, device }),
        3 => prop_oneof![4 => 1u64..60, 2 => 60u64..400, 1 => 400u64..4_000, 1 => Just(90_000u64)].prop_map(Op::Advance),
    ]
}

/// Deterministic 33-byte EC key for an id (the store never checks curve points).
fn ec_bytes(id: u32, salt: u8) -> Vec<u8> {
    let mut k = vec![0x05; 33];
    k[1..5].copy_from_slice(&id.to_be_bytes());
    k[5] = salt;
    k
}

fn kem_bytes(id: u32, salt: u8) -> Vec<u8> {
    let mut k = vec![0x08; 1569];
    k[1..5].copy_from_slice(&id.to_be_bytes());
    k[5] = salt;
    k
}

fn key_id(id: u32) -> KeyId {
    KeyId::new(i64::from(id)).expect("small id")
}

fn signed(public_key: Vec<u8>, id: u32) -> SignedPreKey {
    SignedPreKey {
        key_id: key_id(id),
        public_key,
        signature: vec![id as u8; 64],
    }
}

fn username_hash(i: usize) -> Vec<u8> {
    vec![i as u8 + 1; 32]
}

/// A deterministic UUID for step `step` and purpose `tag`, so both stores see identical ids.
fn uuid(step: usize, tag: u8) -> Uuid {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(step as u64).to_be_bytes());
    b[8] = tag;
    uuid::Builder::from_random_bytes(b).into_uuid()
}

/// The `i`-th most recent element (modulo the length), so that small indexes usually hit something live.
fn pick<T>(items: &[T], i: usize) -> Option<&T> {
    (!items.is_empty()).then(|| &items[items.len() - 1 - i % items.len()])
}

fn session_id(step: usize) -> SessionId {
    SessionId::parse(&format!("{step:0>22}")).expect("22 url-safe characters")
}

struct Side {
    store: Arc<dyn Store>,
}

struct World {
    mem: Side,
    sql: Side,
    people: Vec<NewAccount>,
    owner: Aci,
    contact_invites: Vec<[u8; 32]>,
    template: NewAccount,
    now: Timestamp,
    invites: Vec<(InviteId, CodeHash)>,
    sessions: Vec<SessionId>,
    accounts_seen: Vec<Aci>,
    /// The hash index each person last reserved successfully.
    last_reserved: [Option<usize>; PEOPLE],
    /// Every message inserted so far: (person, device, guid).
    messages: Vec<(usize, u8, MessageGuid)>,
}

fn flood() -> FloodConfig {
    FloodConfig {
        burst: 2,
        owner_window_max: 3,
        ..Default::default()
    }
}

async fn world() -> World {
    let rng = SeededRng::new(11);
    let people: Vec<NewAccount> = (0..PEOPLE)
        .map(|i| new_account(&rng, &format!("person{i}"), "pw", T0))
        .collect();
    let owner = new_account(&rng, "owner", "pw", T0);
    let template = new_account(&rng, "template", "pw", T0);
    let mem: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let sql: Arc<dyn Store> = sqlite_store().await;
    let mut contact_invites = vec![];
    for store in [&mem, &sql] {
        for p in people.iter().chain([&owner]) {
            store.create_account(p.clone()).await.expect("create");
        }
        let policy = ContactPolicy {
            mode: PolicyMode::InviteOnly,
            introductions: IntroductionPolicy::Ask,
        };
        assert!(
            store
                .set_contact_policy(owner.account.aci, policy)
                .await
                .expect("policy")
        );
        contact_invites.clear();
        for i in 0..2u8 {
            let code_hash = [i + 1; 32];
            let invite = ContactInvite {
                id: ContactInviteId(uuid(usize::MAX - usize::from(i), 9)),
                owner: owner.account.aci,
                code_hash,
                label: None,
                max_uses: 3,
                uses: 0,
                created_at: T0,
                expires_at: T0.plus(Duration::from_secs(7 * 86_400)),
                paused_until: None,
                flood: None,
                bucket: None,
            };
            store
                .create_contact_invite(&invite, 10)
                .await
                .expect("contact invite");
            contact_invites.push(code_hash);
        }
    }
    World {
        mem: Side { store: mem },
        sql: Side { store: sql },
        owner: owner.account.aci,
        people,
        contact_invites,
        template,
        now: T0,
        invites: vec![],
        sessions: vec![],
        accounts_seen: vec![],
        last_reserved: [None; PEOPLE],
        messages: vec![],
    }
}

fn dev(d: u8) -> DeviceId {
    DeviceId::new(d).expect("device 1..=2")
}

/// The guid of the `k`-th entry of the insert at `step`.
fn message_guid(step: usize, k: usize) -> MessageGuid {
    MessageGuid(uuid(step, 10 + k as u8))
}

impl World {
    fn aci(&self, who: usize) -> Aci {
        self.people[who].account.aci
    }

    fn owner_of(&self, who: usize, pni: bool) -> ServiceId {
        let a = &self.people[who].account;
        if pni {
            ServiceId::Pni(a.pni)
        } else {
            ServiceId::Aci(a.aci)
        }
    }

    /// Applies `op` (step number `step`) to one store and renders the outcome for comparison.
    async fn apply(&self, store: &Arc<dyn Store>, step: usize, op: &Op) -> String {
        let now = self.now;
        let device = DeviceId::PRIMARY;
        match op {
            Op::StoreKeys {
                who,
                pni,
                ec,
                kem,
                signed: s,
                last_resort,
            } => {
                let salt = step as u8;
                let upload = KeyUpload {
                    ec: ec.as_ref().map(|ids| {
                        ids.iter()
                            .map(|&id| EcPreKey {
                                key_id: key_id(id),
                                public_key: ec_bytes(id, salt),
                            })
                            .collect()
                    }),
                    signed: s.map(|id| signed(ec_bytes(id, salt), id)),
                    kem: kem.as_ref().map(|ids| {
                        ids.iter()
                            .map(|&id| signed(kem_bytes(id, salt), id))
                            .collect()
                    }),
                    last_resort: last_resort.map(|id| signed(kem_bytes(id, salt), id)),
                };
                format!(
                    "{:?}",
                    store
                        .store_keys(self.owner_of(*who, *pni), device, &upload)
                        .await
                )
            }
            Op::TakeKeys { who, pni } => format!(
                "{:?}",
                store
                    .take_one_time_keys(self.owner_of(*who, *pni), device)
                    .await
            ),
            Op::Reserve { who, hashes } => {
                let hashes: Vec<Vec<u8>> = hashes.iter().map(|&h| username_hash(h)).collect();
                format!(
                    "{:?}",
                    store
                        .reserve_username_hash(self.aci(*who), &hashes, now)
                        .await
                )
            }
            Op::Confirm { who, hash, link } => {
                let blob = [7u8; 16];
                format!(
                    "{:?}",
                    store
                        .confirm_username_hash(
                            self.aci(*who),
                            &username_hash(*hash),
                            link.then_some(&blob[..]),
                            uuid(step, 1),
                            now,
                        )
                        .await
                )
            }
            Op::ConfirmReserved { who, link } => {
                let Some(hash) = self.last_reserved[*who] else {
                    return "nothing reserved".into();
                };
                let blob = [8u8; 16];
                format!(
                    "{:?}",
                    store
                        .confirm_username_hash(
                            self.aci(*who),
                            &username_hash(hash),
                            link.then_some(&blob[..]),
                            uuid(step, 1),
                            now,
                        )
                        .await
                )
            }
            Op::ClearUsername { who } => {
                format!("{:?}", store.clear_username_hash(self.aci(*who), now).await)
            }
            Op::HoldForReclaim { who } => format!(
                "{:?}",
                store.hold_username_for_reclaim(self.aci(*who), now).await
            ),
            Op::CreateInvite {
                max_uses,
                expires_in,
            } => {
                let invite = NewInvite {
                    id: InviteId(uuid(step, 2)),
                    code_hash: CodeHash([step as u8; 32]),
                    owner: InviteOwner::Operator,
                    max_uses: *max_uses,
                    expires_at: expires_in.map(|s| now.plus(Duration::from_secs(s))),
                    note: None,
                    created_at: now,
                };
                format!("{:?}", store.create_invite(&invite).await)
            }
            Op::RevokeInvite { invite, revoked } => {
                let Some((id, _)) = pick(&self.invites, *invite) else {
                    return "no invite".into();
                };
                format!("{:?}", store.set_revoked(*id, revoked.then_some(now)).await)
            }
            Op::StartSession { invite } => {
                let session = VerificationSession {
                    id: session_id(step),
                    provider_id: "idp".into(),
                    state: "state".into(),
                    nonce: "nonce".into(),
                    redirect_uri: "app://cb".into(),
                    request_uri: "urn:x".into(),
                    request_uri_lifetime: 60,
                    invite_code: invite.and_then(|i| pick(&self.invites, i)).map(|(_, h)| *h),
                    created_at: now,
                    expires_at: now.plus(SESSION_LIFETIME),
                    verified: None,
                    reserved_invite: None,
                };
                format!("{:?}", store.create_session(&session).await)
            }
            Op::VerifySession {
                session,
                subject,
                reserve,
            } => {
                let Some(id) = pick(&self.sessions, *session) else {
                    return "no session".into();
                };
                let identity = VerifiedIdentity {
                    subject: Subject {
                        provider: "idp".into(),
                        sub: format!("sub{subject}"),
                    },
                    subject_hash: [*subject as u8; 32],
                    principal: Principal::parse(&format!("subject{subject}@idp"))
                        .expect("principal"),
                    principal_opaque: false,
                    sid: Some(format!("sid{subject}")),
                };
                format!(
                    "{:?}",
                    store
                        .verify_session(id, &identity, *reserve, now.plus(SESSION_LIFETIME), now)
                        .await
                )
            }
            Op::Register { session } => {
                let Some(id) = pick(&self.sessions, *session) else {
                    return "no session".into();
                };
                let t = &self.template;
                let mut device = t.account.devices[0].clone();
                device.created_at = now;
                device.last_seen = now;
                let commit = RegistrationCommit {
                    session_id: id.clone(),
                    candidate_aci: Aci(uuid(step, 3)),
                    candidate_pni: Pni(uuid(step, 4)),
                    aci_identity_key: t.account.aci_identity_key.clone(),
                    pni_identity_key: t.account.pni_identity_key.clone(),
                    device,
                    settings: AccountSettings::default(),
                    keys: t.keys.clone(),
                    now,
                };
                format!("{:?}", store.register(commit).await)
            }
            Op::Redeem { who, invite } => format!(
                "{:?}",
                store
                    .redeem_contact_invite(
                        &self.contact_invites[*invite],
                        self.aci(*who),
                        now,
                        &flood()
                    )
                    .await
            ),
            Op::Decide {
                approve,
                deny,
                deny_all_from,
            } => {
                let approve: Vec<Aci> = approve.iter().map(|&w| self.aci(w)).collect();
                let deny: Vec<Aci> = deny.iter().map(|&w| self.aci(w)).collect();
                let from = deny_all_from.map(|i| ContactInviteId(uuid(usize::MAX - i, 9)));
                format!(
                    "{:?}",
                    store
                        .decide_contact_requests(
                            self.owner,
                            &flatline_core::contacts::Decisions {
                                approve,
                                deny,
                                deny_requests_from_invite: from,
                                deny_all_via: vec![],
                            }
                        )
                        .await
                )
            }
            Op::SetGrant { who, state } => format!(
                "{:?}",
                store
                    .set_contact_grant(self.owner, self.aci(*who), *state, now)
                    .await
            ),
            Op::InsertMessages { targets, size } => {
                let batch: Vec<NewMessage> = targets
                    .iter()
                    .enumerate()
                    .map(|(k, &(who, d))| NewMessage {
                        aci: self.aci(who),
                        device: dev(d),
                        guid: message_guid(step, k),
                        envelope: vec![step as u8; *size],
                        server_timestamp: now,
                        expires_at: now.plus(MESSAGE_TTL),
                        story: k % 2 == 1,
                        source: None,
                        gated: false,
                        shared: None,
                    })
                    .collect();
                format!("{:?}", store.insert_messages(&batch, MAX_QUEUE_BYTES).await)
            }
            Op::DeleteMessage { i, other_device } => match pick(&self.messages, *i) {
                Some(&(who, d, guid)) => {
                    let d = if *other_device { 3 - d } else { d };
                    format!(
                        "{:?}",
                        store.delete_message(self.aci(who), dev(d), guid).await
                    )
                }
                None => String::new(),
            },
            Op::ExpireMessages => format!("{:?}", store.expire_messages(now).await),
            Op::DeleteQueue { who, device } => format!(
                "{:?}",
                store.delete_queue(self.aci(*who), dev(*device)).await
            ),
            Op::Advance(_) => String::new(),
        }
    }

    /// Everything observable about the state touched by the operations, rendered for comparison.
    async fn observe(&self, store: &Arc<dyn Store>) -> Vec<String> {
        let now = self.now;
        let device = DeviceId::PRIMARY;
        let mut out = vec![];
        for who in 0..PEOPLE {
            for pni in [false, true] {
                let owner = self.owner_of(who, pni);
                out.push(format!(
                    "keys {who} {pni}: {:?} {:?} {:?} {:?}",
                    store.key_counts(owner, device).await,
                    store.signed_pre_key(owner, device).await,
                    store.last_resort_key(owner, device).await,
                    store.one_time_ec_keys(owner, device).await,
                ));
            }
            let aci = self.aci(who);
            out.push(format!(
                "username {who}: {:?} {:?}",
                store.account_username_state(aci).await,
                store
                    .account(aci)
                    .await
                    .map(|a| a.map(|a| (a.username_hash, a.username_link_handle))),
            ));
            out.push(format!(
                "grant {who}: {:?}",
                store.contact_grant(self.owner, aci).await
            ));
            for d in 1..=2 {
                out.push(format!(
                    "queue {who}.{d}: {:?} {:?}",
                    store.queue_size(aci, dev(d)).await,
                    store
                        .read_messages(aci, dev(d), MessageCursor::START, 100)
                        .await,
                ));
            }
        }
        for h in 0..HASHES {
            let hash = username_hash(h);
            out.push(format!(
                "hash {h}: {:?}",
                store.account_by_username_hash(&hash).await
            ));
        }
        for (id, code) in &self.invites {
            out.push(format!(
                "invite {id}: {:?} {:?}",
                store.invite(*id, now).await,
                store
                    .invite_by_code(code, now)
                    .await
                    .map(|i| i.map(|i| i.id)),
            ));
        }
        for id in &self.sessions {
            out.push(format!("session: {:?}", store.session(id, now).await));
        }
        for s in 0..SUBJECTS {
            let subject = Subject {
                provider: "idp".into(),
                sub: format!("sub{s}"),
            };
            let aci = store.account_of_subject(&subject).await;
            out.push(format!("subject {s}: {aci:?}"));
        }
        for aci in &self.accounts_seen {
            out.push(format!(
                "registered {aci}: {:?} {:?}",
                store
                    .account(*aci)
                    .await
                    .map(|a| a.map(|a| (a.pni, a.principal, a.devices.len()))),
                store.redemption_of(*aci).await,
            ));
        }
        out.push(format!(
            "grants: {:?}",
            store.contact_grants(self.owner).await
        ));
        out.push(format!(
            "contact invites: {:?}",
            store.contact_invites(self.owner).await
        ));
        out
    }

    /// Bookkeeping after a step (ids that later operations can refer to), identical for both stores.
    fn record(&mut self, step: usize, op: &Op, outcome: &str) {
        match op {
            Op::CreateInvite { .. } if outcome == "Ok(())" => self
                .invites
                .push((InviteId(uuid(step, 2)), CodeHash([step as u8; 32]))),
            Op::StartSession { .. } if outcome == "Ok(())" => self.sessions.push(session_id(step)),
            Op::Register { .. } => {
                let aci = Aci(uuid(step, 3));
                if outcome.contains(&aci.to_string()) && !self.accounts_seen.contains(&aci) {
                    self.accounts_seen.push(aci);
                }
            }
            Op::Reserve { who, hashes } if outcome.starts_with("Ok(Reserved(") => {
                self.last_reserved[*who] = hashes
                    .iter()
                    .copied()
                    .find(|&h| outcome.contains(&format!("{:?}", username_hash(h))));
            }
            Op::InsertMessages { targets, .. } if outcome == "Ok(Stored)" => {
                for (k, &(who, d)) in targets.iter().enumerate() {
                    self.messages.push((who, d, message_guid(step, k)));
                }
            }
            Op::Advance(secs) => self.now = self.now.plus(Duration::from_secs(*secs)),
            _ => {}
        }
    }
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut w = world().await;
    prop_assert_eq!(w.observe(&w.mem.store).await, w.observe(&w.sql.store).await);
    for (step, op) in ops.iter().enumerate() {
        let a = w.apply(&w.mem.store, step, op).await;
        let b = w.apply(&w.sql.store, step, op).await;
        prop_assert_eq!(&a, &b, "step {} {:?}: outcomes differ", step, op);
        w.record(step, op, &a);
        let (sa, sb) = (w.observe(&w.mem.store).await, w.observe(&w.sql.store).await);
        for (x, y) in sa.iter().zip(&sb) {
            prop_assert_eq!(x, y, "step {} {:?}: state differs", step, op);
        }
        prop_assert_eq!(sa.len(), sb.len());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn memory_and_sqlite_agree_on_every_step(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(run(ops))?;
    }
}
