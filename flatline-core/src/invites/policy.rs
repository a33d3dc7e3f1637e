//! Who may issue registration invites, and when: a pure function from facts about the would-be inviter to an
//! allow/refuse decision. The [`super::service::Invites`] service gathers the facts; the store re-checks the
//! counting limits atomically when it writes the invite.

use std::time::Duration;

use crate::time::Timestamp;

const DAY: Duration = Duration::from_secs(86_400);

/// The invite policy (config `[invites]`, see docs/INVITES.md). Defaults in [`InvitePolicy::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitePolicy {
    /// Whether accounts may issue invites at all. Default true.
    pub users_may_invite: bool,
    /// Account age from which an account may invite. Default 7 days.
    pub min_account_age: Duration,
    /// One more invite is earned per this much account age past `min_account_age`. Default 7 days.
    pub quota_interval: Duration,
    /// Cap on invites earned in total. Default 10.
    pub quota_max: u32,
    /// Most open (active) invites one account may hold. Default 5.
    pub max_open_invites: u32,
    /// Largest `maxUses` of an account's invite. Default 10.
    pub max_uses_per_user_invite: u32,
    /// Lifetime of an invite created without `expiresInSeconds`. Default 7 days.
    pub default_expiry: Duration,
    /// Longest lifetime an account may ask for. Default 30 days.
    pub max_expiry: Duration,
    /// Accounts one invite tree may hold before its members may no longer invite. Default 1000.
    pub tree_size_limit: u64,
    /// Redemptions up the chain that make a fast chain. Default 3.
    pub chain_hops: u32,
    /// The window a chain must fit in to count as fast; zero disables the rule. Default 5 minutes.
    pub chain_window: Duration,
}

impl Default for InvitePolicy {
    fn default() -> Self {
        InvitePolicy {
            users_may_invite: true,
            min_account_age: 7 * DAY,
            quota_interval: 7 * DAY,
            quota_max: 10,
            max_open_invites: 5,
            max_uses_per_user_invite: 10,
            default_expiry: 7 * DAY,
            max_expiry: 30 * DAY,
            tree_size_limit: 1000,
            chain_hops: 3,
            chain_window: Duration::from_secs(300),
        }
    }
}

/// What is known about an account that asks to create an invite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviterFacts {
    /// When the account was created.
    pub account_created_at: Timestamp,
    /// Whether the operator suspended it.
    pub suspended: bool,
    /// Invites it created so far (every state counts: a created invite spends quota).
    pub invites_created: u32,
    /// The expiry of each of its open (active) invites.
    pub open_invites: Vec<Option<Timestamp>>,
    /// Members of its invite tree (the root account and everyone transitively admitted from it), counted up to
    /// at least the policy's limit.
    pub tree_size: u64,
    /// Admission times going up the invite chain: its own redemption first, then its inviter's, and so on (at
    /// most `chain_hops` entries; shorter when the chain ends at an operator invite or an uninvited account).
    pub chain: Vec<Timestamp>,
}

/// Why an account may not create an invite now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Invites by accounts are off, or the account is suspended. 403 `invites_disabled`.
    Disabled,
    /// The account's invite tree is full. 403 `tree_limit`.
    TreeLimit,
    /// The account is at the end of a fast invite chain. 403 `chain_limit`.
    ChainLimit {
        /// When the chain stops counting as fast.
        available_at: Timestamp,
    },
    /// Too young, quota spent, or too many open invites. 403 `quota_exceeded`.
    Quota {
        /// When the next invite can be created, if that time is known (`None`: the lifetime cap is reached, or
        /// open invites that never expire block it).
        available_at: Option<Timestamp>,
    },
}

impl InvitePolicy {
    /// Invites earned at `now` by an account created at `created_at`:
    /// `0` before `min_account_age`, then `min(quota_max, 1 + ⌊(age − min_account_age) / quota_interval⌋)`.
    pub fn earned(&self, created_at: Timestamp, now: Timestamp) -> u32 {
        let age = now.since(created_at);
        let Some(past) = age.checked_sub(self.min_account_age) else {
            return 0;
        };
        let interval = self.quota_interval.as_millis().max(1);
        let steps = u32::try_from(past.as_millis() / interval).unwrap_or(u32::MAX);
        steps.saturating_add(1).min(self.quota_max)
    }

    /// When an account created at `created_at` will have earned `n` invites (`None` if `n` exceeds the cap).
    pub fn earned_at(&self, created_at: Timestamp, n: u32) -> Option<Timestamp> {
        if n == 0 {
            return Some(created_at);
        }
        if n > self.quota_max {
            return None;
        }
        let extra = self.quota_interval.checked_mul(n - 1)?;
        Some(created_at.plus(self.min_account_age).plus(extra))
    }

    /// The decision. Checks, in order: disabled (policy or suspension), tree limit, fast chain, account age and
    /// earned quota, open invites — permanent reasons before temporary ones.
    pub fn decide(&self, facts: &InviterFacts, now: Timestamp) -> Result<(), Refusal> {
        if !self.users_may_invite || facts.suspended {
            return Err(Refusal::Disabled);
        }
        if facts.tree_size >= self.tree_size_limit {
            return Err(Refusal::TreeLimit);
        }
        if let Some(available_at) = self.fast_chain_until(&facts.chain, now) {
            return Err(Refusal::ChainLimit { available_at });
        }
        if facts.invites_created >= self.earned(facts.account_created_at, now) {
            return Err(Refusal::Quota {
                available_at: self.earned_at(
                    facts.account_created_at,
                    facts.invites_created.saturating_add(1),
                ),
            });
        }
        if facts.open_invites.len() >= self.max_open_invites as usize {
            // The earliest expiry frees a slot (revocation or exhaustion may free one sooner).
            return Err(Refusal::Quota {
                available_at: facts.open_invites.iter().flatten().min().copied(),
            });
        }
        Ok(())
    }

    /// If `chain` (admission times, nearest first) makes a fast chain at `now`: the moment it stops being one.
    pub fn fast_chain_until(&self, chain: &[Timestamp], now: Timestamp) -> Option<Timestamp> {
        if self.chain_hops == 0 || self.chain_window.is_zero() {
            return None;
        }
        let oldest = *chain.get(self.chain_hops as usize - 1)?;
        let until = oldest.plus(self.chain_window);
        (now < until).then_some(until)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const T0: Timestamp = Timestamp(1_700_000_000_000);

    fn facts(created_at: Timestamp) -> InviterFacts {
        InviterFacts {
            account_created_at: created_at,
            suspended: false,
            invites_created: 0,
            open_invites: vec![],
            tree_size: 1,
            chain: vec![],
        }
    }

    #[test]
    fn defaults_match_the_documentation() {
        let p = InvitePolicy::default();
        assert_eq!(p.min_account_age, 7 * DAY);
        assert_eq!((p.quota_max, p.max_open_invites), (10, 5));
        assert_eq!((p.tree_size_limit, p.chain_hops), (1000, 3));
        assert_eq!(p.chain_window, Duration::from_secs(300));
    }

    #[test]
    fn quota_grows_with_age_and_reports_when() {
        let p = InvitePolicy::default();
        let mut f = facts(T0);
        assert_eq!(
            p.decide(&f, T0.plus(6 * DAY)),
            Err(Refusal::Quota {
                available_at: Some(T0.plus(7 * DAY))
            })
        );
        assert_eq!(p.decide(&f, T0.plus(7 * DAY)), Ok(()));
        f.invites_created = 1;
        assert_eq!(
            p.decide(&f, T0.plus(13 * DAY)),
            Err(Refusal::Quota {
                available_at: Some(T0.plus(14 * DAY))
            })
        );
        assert_eq!(p.decide(&f, T0.plus(14 * DAY)), Ok(()));
        assert_eq!(p.earned(T0, T0.plus(10_000 * DAY)), 10);
        f.invites_created = 10;
        assert_eq!(
            p.decide(&f, T0.plus(10_000 * DAY)),
            Err(Refusal::Quota { available_at: None })
        );
    }

    #[test]
    fn open_invites_cap_reports_the_earliest_expiry() {
        let p = InvitePolicy::default();
        let now = T0.plus(1000 * DAY);
        let mut f = facts(T0);
        f.open_invites = (1..=5).map(|d| Some(now.plus(d * DAY))).collect();
        assert_eq!(
            p.decide(&f, now),
            Err(Refusal::Quota {
                available_at: Some(now.plus(DAY))
            })
        );
        f.open_invites.pop();
        assert_eq!(p.decide(&f, now), Ok(()));
    }

    #[test]
    fn disabled_tree_and_chain() {
        let p = InvitePolicy::default();
        let now = T0.plus(100 * DAY);
        let f = facts(T0);
        assert_eq!(
            p.decide(
                &InviterFacts {
                    suspended: true,
                    ..f.clone()
                },
                now
            ),
            Err(Refusal::Disabled)
        );
        assert_eq!(
            InvitePolicy {
                users_may_invite: false,
                ..p.clone()
            }
            .decide(&f, now),
            Err(Refusal::Disabled)
        );
        assert_eq!(
            p.decide(
                &InviterFacts {
                    tree_size: 1000,
                    ..f.clone()
                },
                now
            ),
            Err(Refusal::TreeLimit)
        );
        assert_eq!(
            p.decide(
                &InviterFacts {
                    tree_size: 999,
                    ..f.clone()
                },
                now
            ),
            Ok(())
        );
        let secs = |s| Duration::from_secs(s);
        let chain = vec![
            now.minus(secs(10)),
            now.minus(secs(60)),
            now.minus(secs(200)),
        ];
        let fast = InviterFacts {
            chain: chain.clone(),
            ..f.clone()
        };
        assert_eq!(
            p.decide(&fast, now),
            Err(Refusal::ChainLimit {
                available_at: now.plus(secs(100))
            })
        );
        assert_eq!(p.decide(&fast, now.plus(secs(100))), Ok(()));
        // Two hops are not a chain of three.
        let short = InviterFacts {
            chain: chain[..2].to_vec(),
            ..f.clone()
        };
        assert_eq!(p.decide(&short, now), Ok(()));
        assert_eq!(
            InvitePolicy {
                chain_window: Duration::ZERO,
                ..p.clone()
            }
            .decide(&fast, now),
            Ok(())
        );
    }

    fn policy() -> impl Strategy<Value = InvitePolicy> {
        (
            0u32..20,
            1u32..20,
            0u32..12,
            0u32..8,
            1u64..50,
            0u32..5,
            0u64..1000,
        )
            .prop_map(
                |(min_age, interval, quota_max, max_open, tree, hops, window)| InvitePolicy {
                    min_account_age: min_age * DAY,
                    quota_interval: interval * DAY,
                    quota_max,
                    max_open_invites: max_open,
                    tree_size_limit: tree,
                    chain_hops: hops,
                    chain_window: Duration::from_secs(window),
                    ..InvitePolicy::default()
                },
            )
    }

    proptest! {
        /// An allowed account is within every limit; a refusal with `availableAt` names a future moment, and at
        /// that moment (nothing else changing) the same reason no longer holds.
        #[test]
        fn decisions_respect_every_limit(
            p in policy(),
            age_ms in 0i64..(400 * 86_400_000),
            created in 0u32..15,
            open in proptest::collection::vec(proptest::option::of(1i64..(40 * 86_400_000)), 0..8),
            tree in 1u64..60,
            chain in proptest::collection::vec(0i64..2_000_000, 0..5),
        ) {
            let now = T0.plus(Duration::from_millis(age_ms as u64));
            let mut chain: Vec<Timestamp> = chain.into_iter().map(|d| now.minus(Duration::from_millis(d as u64))).collect();
            chain.sort_by(|a, b| b.cmp(a));
            let f = InviterFacts {
                account_created_at: T0,
                suspended: false,
                invites_created: created.min(p.quota_max.saturating_add(2)),
                open_invites: open.into_iter().map(|o| o.map(|d| now.plus(Duration::from_millis(d as u64)))).collect(),
                tree_size: tree,
                chain,
            };
            let earned = p.earned(T0, now);
            prop_assert!(earned <= p.quota_max);
            prop_assert!(p.earned(T0, now.plus(DAY)) >= earned, "earned never shrinks");
            match p.decide(&f, now) {
                Ok(()) => {
                    prop_assert!(f.invites_created < earned);
                    prop_assert!(f.open_invites.len() < p.max_open_invites as usize);
                    prop_assert!(f.tree_size < p.tree_size_limit);
                    prop_assert!(p.fast_chain_until(&f.chain, now).is_none());
                }
                Err(Refusal::Disabled) => prop_assert!(false, "not disabled"),
                Err(Refusal::TreeLimit) => prop_assert!(f.tree_size >= p.tree_size_limit),
                Err(Refusal::ChainLimit { available_at }) => {
                    prop_assert!(available_at > now);
                    prop_assert!(p.fast_chain_until(&f.chain, available_at).is_none());
                }
                Err(Refusal::Quota { available_at }) => {
                    let spent = f.invites_created >= earned;
                    let full = f.open_invites.len() >= p.max_open_invites as usize;
                    prop_assert!(spent || full);
                    if let Some(at) = available_at {
                        prop_assert!(at > now);
                        if spent {
                            prop_assert!(p.earned(T0, at) > f.invites_created);
                        } else {
                            prop_assert!(f.open_invites.iter().flatten().any(|e| *e == at));
                        }
                    } else if spent {
                        prop_assert!(f.invites_created >= p.quota_max);
                    }
                }
            }
        }
    }
}
