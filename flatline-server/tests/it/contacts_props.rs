//! A property test of the contact grant state machine on the in-memory store: random interleavings of
//! redemptions, decisions, revocations, rotations, resumes, introductions and clock advances.
//!
//! Invariants checked after every step:
//! - prekey access (a real `KeyService::fetch`) is granted exactly to accounts holding an active grant;
//! - a redemption of a paused invite never creates a grant (so never an active one);
//! - the set of quarantined accounts never shrinks except by an owner decision (decide, allow, block).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use flatline_core::auth::AuthenticatedDevice;
use flatline_core::contacts::{
    ContactInviteId, ContactPolicy, Contacts, ContactsConfig, GrantState, IntroductionPolicy,
    NewContactInvite, PolicyMode,
};
use flatline_core::ids::{Aci, DeviceId, ServiceId};
use flatline_core::keys::{DeviceSelector, FetchError, KeyService, Requester};
use flatline_core::ratelimit::{BucketConfig, Limiter, Limits, RateLimiters};
use flatline_core::store::Store;
use flatline_core::time::Clock;
use flatline_testkit::fixtures::new_account;
use flatline_testkit::{MemoryStore, MockClock, SeededRng};
use proptest::prelude::*;

const PEOPLE: usize = 10;
const INVITES: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    Redeem {
        who: usize,
        invite: usize,
    },
    Decide {
        approve: Vec<usize>,
        deny: Vec<usize>,
        deny_all: Option<usize>,
    },
    Allow {
        who: usize,
    },
    Block {
        who: usize,
    },
    Rotate {
        invite: usize,
    },
    Resume {
        invite: usize,
    },
    Introduce {
        by: usize,
        introducee: usize,
    },
    Introductions(IntroductionPolicy),
    Advance(u64),
}

fn person() -> impl Strategy<Value = usize> {
    0..PEOPLE
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (person(), 0..INVITES).prop_map(|(who, invite)| Op::Redeem { who, invite }),
        2 => (
            prop::collection::vec(person(), 0..3),
            prop::collection::vec(person(), 0..3),
            prop::option::of(0..INVITES)
        )
            .prop_map(|(approve, deny, deny_all)| Op::Decide { approve, deny, deny_all }),
        1 => person().prop_map(|who| Op::Allow { who }),
        1 => person().prop_map(|who| Op::Block { who }),
        1 => (0..INVITES).prop_map(|invite| Op::Rotate { invite }),
        1 => (0..INVITES).prop_map(|invite| Op::Resume { invite }),
        2 => (person(), person()).prop_map(|(by, introducee)| Op::Introduce { by, introducee }),
        1 => prop_oneof![
            Just(IntroductionPolicy::Ask),
            Just(IntroductionPolicy::Auto),
            Just(IntroductionPolicy::Off)
        ]
        .prop_map(Op::Introductions),
        4 => prop_oneof![3 => Just(0u64), 3 => 1u64..120, 2 => 120u64..3_600, 1 => Just(86_400u64)].prop_map(Op::Advance),
    ]
}

struct World {
    store: Arc<dyn Store>,
    clock: Arc<MockClock>,
    contacts: Contacts,
    keys: KeyService,
    owner: AuthenticatedDevice,
    people: Vec<AuthenticatedDevice>,
    invites: Vec<(ContactInviteId, String)>,
}

async fn world() -> World {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = Arc::new(MockClock::default());
    let rng = Arc::new(SeededRng::new(3));
    let mut limits = Limits::default();
    // The limiters are not under test here.
    for l in [Limiter::PreKeys, Limiter::ContactRedeem] {
        limits.set(l, BucketConfig::new(1_000_000, Duration::from_millis(1)));
    }
    let limiters = RateLimiters::new(store.clone(), clock.clone(), limits);
    let contacts = Contacts::new(
        store.clone(),
        clock.clone(),
        rng.clone(),
        limiters.clone(),
        ContactsConfig {
            flood: flatline_core::contacts::FloodConfig {
                // Small thresholds so that random runs trip the breaker and the window often.
                burst: 2,
                owner_window_max: 4,
                ..Default::default()
            },
            ..ContactsConfig::default()
        },
    );
    let keys = KeyService::new(store.clone(), limiters);
    let mut devices = vec![];
    for n in 0..=PEOPLE {
        let new = new_account(rng.as_ref(), &format!("p{n}"), "pw", clock.now());
        let account = new.account.clone();
        store.create_account(new).await.unwrap();
        devices.push(AuthenticatedDevice {
            account,
            device_id: DeviceId::PRIMARY,
        });
    }
    let owner = devices.remove(0);
    store
        .set_contact_policy(
            owner.account.aci,
            ContactPolicy {
                mode: PolicyMode::InviteOnly,
                introductions: IntroductionPolicy::Ask,
            },
        )
        .await
        .unwrap();
    let mut invites = vec![];
    for max_uses in [50, 4] {
        let (invite, code) = contacts
            .create_invite(
                &owner,
                NewContactInvite {
                    max_uses: Some(max_uses),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        invites.push((invite.id, code.display()));
    }
    World {
        store,
        clock,
        contacts,
        keys,
        owner,
        people: devices,
        invites,
    }
}

impl World {
    fn aci(&self, who: usize) -> Aci {
        self.people[who].account.aci
    }

    async fn grant_state(&self, who: usize) -> Option<GrantState> {
        self.store
            .contact_grant(self.owner.account.aci, self.aci(who))
            .await
            .unwrap()
            .map(|g| g.state)
    }

    async fn quarantined(&self) -> BTreeSet<Aci> {
        self.store
            .contact_grants(self.owner.account.aci)
            .await
            .unwrap()
            .into_iter()
            .filter(|g| g.state == GrantState::Quarantined)
            .map(|g| g.grantee)
            .collect()
    }

    async fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let owner = self.owner.account.aci;
        match op {
            Op::Redeem { who, invite } => {
                let (id, code) = self.invites[*invite].clone();
                let paused = self
                    .store
                    .contact_invite(owner, id)
                    .await
                    .unwrap()
                    .is_some_and(|i| i.is_paused(self.clock.now()));
                let before = self.grant_state(*who).await;
                let _ = self.contacts.redeem(self.aci(*who), &code).await;
                let after = self.grant_state(*who).await;
                if paused {
                    prop_assert_eq!(before, after, "a paused invite changed a grant");
                }
                if before.is_some() {
                    prop_assert_eq!(before, after, "redemption changed an existing grant");
                }
            }
            Op::Decide {
                approve,
                deny,
                deny_all,
            } => {
                let approve: Vec<Aci> = approve.iter().map(|w| self.aci(*w)).collect();
                let deny: Vec<Aci> = deny.iter().map(|w| self.aci(*w)).collect();
                let _ = self
                    .contacts
                    .decide(
                        owner,
                        &flatline_core::contacts::Decisions {
                            approve,
                            deny,
                            deny_requests_from_invite: deny_all.map(|i| self.invites[i].0),
                            deny_all_via: vec![],
                        },
                    )
                    .await;
            }
            Op::Allow { who } => {
                self.contacts
                    .set_grant(owner, self.aci(*who), GrantState::Active)
                    .await
                    .unwrap();
            }
            Op::Block { who } => {
                self.contacts
                    .set_grant(owner, self.aci(*who), GrantState::Denied)
                    .await
                    .unwrap();
            }
            Op::Rotate { invite } => {
                let id = self.invites[*invite].0;
                let (_, code) = self.contacts.rotate_invite(owner, id).await.unwrap();
                self.invites[*invite].1 = code.display();
            }
            Op::Resume { invite } => {
                self.contacts
                    .resume_invite(owner, self.invites[*invite].0)
                    .await
                    .unwrap();
            }
            Op::Introduce { by, introducee } => {
                let before = self.grant_state(*introducee).await;
                let _ = self
                    .contacts
                    .introduce(self.aci(*by), self.aci(*introducee), owner)
                    .await;
                if before.is_some() {
                    prop_assert_eq!(before, self.grant_state(*introducee).await);
                }
            }
            Op::Introductions(p) => {
                self.contacts
                    .set_policy(
                        owner,
                        ContactPolicy {
                            mode: PolicyMode::InviteOnly,
                            introductions: *p,
                        },
                    )
                    .await
                    .unwrap();
            }
            Op::Advance(secs) => self.clock.advance(Duration::from_secs(*secs)),
        }
        Ok(())
    }

    /// Prekey access through the real fetch path matches "holds an active grant", for ACI and PNI targets.
    async fn check_access(&self) -> Result<(), TestCaseError> {
        for (n, person) in self.people.iter().enumerate() {
            let active = self.grant_state(n).await == Some(GrantState::Active);
            let requester = Requester::Device(Box::new(person.clone()));
            for target in [
                ServiceId::Aci(self.owner.account.aci),
                ServiceId::Pni(self.owner.account.pni),
            ] {
                let r = self
                    .keys
                    .fetch(&requester, target, DeviceSelector::All)
                    .await;
                match r {
                    Ok(_) => prop_assert!(active, "access without an active grant"),
                    Err(FetchError::ContactNotAllowed) => {
                        prop_assert!(!active, "active grant refused")
                    }
                    Err(e) => prop_assert!(false, "unexpected fetch error {e}"),
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn grant_state_machine(ops in prop::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut w = world().await;
            w.check_access().await?;
            for op in &ops {
                let before = w.quarantined().await;
                w.apply(op).await?;
                let after = w.quarantined().await;
                let decision = matches!(op, Op::Decide { .. } | Op::Allow { .. } | Op::Block { .. });
                if !decision {
                    prop_assert!(before.is_subset(&after), "quarantine shrank after {:?}", op);
                }
                w.check_access().await?;
            }
            Ok(())
        })?;
    }
}
