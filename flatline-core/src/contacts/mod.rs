//! Contact gating: who may fetch an `invite_only` account's prekeys, and how they get there.
//!
//! The model (policies, contact invites, grants with provenance), the pure rules every store applies inside its
//! atomic methods (the flood breaker's token bucket, the redemption and introduction plans), and the [`Contacts`]
//! service behind `/v1/contact_invites`, `/v1/contacts/*` and `/v1/introductions`.
//!
//! The graph is kept only for accounts whose policy is `invite_only`: switching back to `open` deletes the account's
//! outgoing grants and its contact invites (see `docs/CONTACTS.md`).

pub mod code;
mod service;
mod store;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use uuid::Uuid;

use crate::ids::{Aci, IdError};
use crate::ratelimit::{self, Admission, BucketConfig, BucketState};
use crate::time::Timestamp;

pub use code::ContactCode;
pub use service::{
    ContactError, Contacts, ContactsConfig, IntroductionReceipt, MAX_DECISIONS, MAX_ROUTES,
    NewContactInvite, RequestFilter, authenticated_fetch_allowed, is_invite_only,
};
pub use store::ContactStore;

/// Who may fetch an account's prekeys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum PolicyMode {
    /// Anyone (plain Signal behaviour). The default.
    #[default]
    Open,
    /// Only accounts holding an active grant from the owner (and unidentified senders with the real access key).
    InviteOnly,
}

impl PolicyMode {
    /// Wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Open => "open",
            PolicyMode::InviteOnly => "invite_only",
        }
    }
}

impl FromStr for PolicyMode {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "open" => Ok(PolicyMode::Open),
            "invite_only" => Ok(PolicyMode::InviteOnly),
            _ => Err(()),
        }
    }
}

/// What an introduction by a granted contact does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum IntroductionPolicy {
    /// The introducee gets a `pending` grant the owner decides on. The default: an introduction by a trusted
    /// contact is useful, but a compromised or careless contact must not be able to open the door alone.
    #[default]
    Ask,
    /// The introducee gets an `active` grant (subject to the per-owner window cap).
    Auto,
    /// Introductions are refused (403 `introductions_off`).
    Off,
}

impl IntroductionPolicy {
    /// Wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            IntroductionPolicy::Ask => "ask",
            IntroductionPolicy::Auto => "auto",
            IntroductionPolicy::Off => "off",
        }
    }
}

impl FromStr for IntroductionPolicy {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "ask" => Ok(IntroductionPolicy::Ask),
            "auto" => Ok(IntroductionPolicy::Auto),
            "off" => Ok(IntroductionPolicy::Off),
            _ => Err(()),
        }
    }
}

/// An account's contact policy. An account that never set one has the default (`open`, `ask`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct ContactPolicy {
    /// Who may fetch prekeys.
    pub mode: PolicyMode,
    /// What introductions do.
    pub introductions: IntroductionPolicy,
}

/// A contact invite's id (random, not secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContactInviteId(pub Uuid);

impl ContactInviteId {
    /// A fresh id from `rng`.
    pub fn random(rng: &dyn crate::random::SecureRandom) -> Self {
        ContactInviteId(
            uuid::Builder::from_random_bytes(crate::random::random_array(rng)).into_uuid(),
        )
    }
}

impl fmt::Display for ContactInviteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for ContactInviteId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        if s.len() != 36 {
            return Err(IdError::NotUuid);
        }
        Uuid::try_parse(s)
            .map(ContactInviteId)
            .map_err(|_| IdError::NotUuid)
    }
}

/// Flood-breaker and owner-window thresholds (configurable; see `[contacts]` in the server config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodConfig {
    /// Tokens in a contact invite's bucket (redemptions a burst may make). Default 5.
    pub burst: u32,
    /// Time for one token to come back. Default 10 min.
    pub refill: Duration,
    /// How long a tripped invite stays paused. Default 24 h.
    pub pause: Duration,
    /// The per-owner window. Default 1 h.
    pub owner_window: Duration,
    /// Most new grantees (through invites or introductions) an owner takes per window before the excess is
    /// quarantined. Default 20.
    pub owner_window_max: u32,
}

impl Default for FloodConfig {
    fn default() -> Self {
        FloodConfig {
            burst: 5,
            refill: Duration::from_secs(600),
            pause: Duration::from_secs(86_400),
            owner_window: Duration::from_secs(3_600),
            owner_window_max: 20,
        }
    }
}

impl FloodConfig {
    /// A contact invite's bucket as a rate-limiter bucket: `burst` tokens, one back every `refill`.
    fn bucket(&self) -> BucketConfig {
        BucketConfig::new(self.burst, self.refill)
    }
}

/// A contact invite's token bucket: the rate limiter's leaky bucket (one token = `refill`) and the moment its burst
/// began. Absent (`None` in [`ContactInvite::bucket`]) means full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodBucket {
    /// Tokens left, in milliseconds of refill, and when they were counted.
    pub level: BucketState,
    /// The last moment the bucket was full: set when a token is taken from a full bucket.
    pub burst_start: Timestamp,
}

/// The outcome of taking a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeToken {
    /// A token was taken; this is the new bucket.
    Taken(FloodBucket),
    /// The bucket was empty: the breaker trips. `since` is the burst start.
    Empty {
        /// The last moment the bucket was full.
        since: Timestamp,
    },
}

/// Takes one token from `bucket` at `now` (refilling first), with the rate limiter's arithmetic
/// ([`ratelimit::apply`]). Pure; every store uses it.
pub fn take_token(config: &FloodConfig, bucket: Option<FloodBucket>, now: Timestamp) -> TakeToken {
    let limits = config.bucket();
    let level = bucket.map(|b| b.level);
    // A bucket that has refilled completely (or was never used) starts a new burst now.
    let burst_start = match bucket {
        Some(b) if !ratelimit::is_full(&limits, level, now) => b.burst_start,
        _ => now,
    };
    match ratelimit::apply(&limits, level, 1, now) {
        (level, Admission::Allowed) => TakeToken::Taken(FloodBucket { level, burst_start }),
        (_, Admission::Denied { .. }) => TakeToken::Empty { since: burst_start },
    }
}

/// What a tripped breaker recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flood {
    /// When the breaker tripped.
    pub detected_at: Timestamp,
    /// The burst start: grants through the invite from this moment on were quarantined.
    pub since: Timestamp,
    /// How many grants through the invite are quarantined since `since`.
    pub quarantined: u32,
}

/// A contact invite as stored. The code itself is never stored, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactInvite {
    /// Id.
    pub id: ContactInviteId,
    /// The account whose contact the redeemer becomes.
    pub owner: Aci,
    /// SHA-256 of the canonical code.
    pub code_hash: [u8; 32],
    /// The owner's label (shown only to the owner).
    pub label: Option<String>,
    /// Redemptions allowed (1 by default).
    pub max_uses: u32,
    /// Redemptions that created a grant.
    pub uses: u32,
    /// Creation time.
    pub created_at: Timestamp,
    /// The code stops working at this time.
    pub expires_at: Timestamp,
    /// Paused by the flood breaker until this time.
    pub paused_until: Option<Timestamp>,
    /// The last trip of the breaker (cleared by resume).
    pub flood: Option<Flood>,
    /// The flood breaker's bucket (`None` = full).
    pub bucket: Option<FloodBucket>,
}

/// An invite's state at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactInviteState {
    /// Redeemable.
    Active,
    /// Paused by the flood breaker.
    Paused,
    /// Every use taken.
    Exhausted,
    /// Past its expiry.
    Expired,
}

impl ContactInviteState {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ContactInviteState::Active => "active",
            ContactInviteState::Paused => "paused",
            ContactInviteState::Exhausted => "exhausted",
            ContactInviteState::Expired => "expired",
        }
    }
}

impl ContactInvite {
    /// Whether the breaker holds the invite paused at `now`.
    pub fn is_paused(&self, now: Timestamp) -> bool {
        self.paused_until.is_some_and(|t| now < t)
    }

    /// The state at `now`; terminal states win over a pause.
    pub fn state(&self, now: Timestamp) -> ContactInviteState {
        if now >= self.expires_at {
            ContactInviteState::Expired
        } else if self.uses >= self.max_uses {
            ContactInviteState::Exhausted
        } else if self.is_paused(now) {
            ContactInviteState::Paused
        } else {
            ContactInviteState::Active
        }
    }

    /// The flood record as shown to the owner: present while the invite is paused, `None` otherwise.
    pub fn visible_flood(&self, now: Timestamp) -> Option<Flood> {
        self.flood.filter(|_| self.is_paused(now))
    }
}

/// A grant's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GrantState {
    /// The grantee may fetch the owner's prekeys.
    Active,
    /// Held by the flood breaker or the owner window until the owner decides; no access.
    Quarantined,
    /// Made by an introduction under `ask`; waits for the owner; no access.
    Pending,
    /// Denied or blocked by the owner; no access, and the grantee cannot redeem the owner's invites.
    Denied,
}

impl GrantState {
    /// Wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantState::Active => "active",
            GrantState::Quarantined => "quarantined",
            GrantState::Pending => "pending",
            GrantState::Denied => "denied",
        }
    }
}

impl FromStr for GrantState {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "active" => Ok(GrantState::Active),
            "quarantined" => Ok(GrantState::Quarantined),
            "pending" => Ok(GrantState::Pending),
            "denied" => Ok(GrantState::Denied),
            _ => Err(()),
        }
    }
}

/// How a grant came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Via {
    /// Redemption of this contact invite.
    Invite(ContactInviteId),
    /// Introduction by this account (provenance `introduced_by`).
    Introduction(Aci),
    /// The owner allowed or blocked the account directly.
    Direct,
    /// Redemption of this contact shortcode.
    Shortcode(crate::shortcodes::ShortcodeId),
}

impl Via {
    /// Wire and storage kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Via::Invite(_) => "invite",
            Via::Introduction(_) => "introduction",
            Via::Direct => "direct",
            Via::Shortcode(_) => "shortcode",
        }
    }
}

/// A grant owner → grantee: whether `grantee` may fetch `owner`'s prekeys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The account whose keys are gated.
    pub owner: Aci,
    /// The account allowed (or held, or denied).
    pub grantee: Aci,
    /// State.
    pub state: GrantState,
    /// Provenance.
    pub via: Via,
    /// When the grant was made (not changed by decisions).
    pub created_at: Timestamp,
}

/// The outcome of a redemption, as the store reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redemption {
    /// A new grant was created.
    Granted {
        /// The invite's owner.
        owner: Aci,
        /// The new grant's state (`active`, or `quarantined` by the owner window).
        state: GrantState,
    },
    /// The redeemer already had a (non-denied) grant from the owner; nothing changed, no use taken.
    Existing {
        /// The invite's owner.
        owner: Aci,
        /// The existing grant's state.
        state: GrantState,
    },
    /// Unknown, rotated, deleted, expired or exhausted code, or a redeemer the owner denied.
    Invalid,
    /// The owner tried to redeem their own invite.
    OwnInvite,
    /// The invite is paused.
    Paused,
    /// This redemption found the bucket empty and tripped the breaker (the invite is now paused).
    Tripped(Flood),
}

/// What a redemption will do, decided from the current state inside the store's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedeemPlan {
    /// Answer [`Redemption::Invalid`], change nothing.
    Invalid,
    /// Answer [`Redemption::OwnInvite`], change nothing.
    OwnInvite,
    /// Answer [`Redemption::Existing`], change nothing.
    Existing(GrantState),
    /// Answer [`Redemption::Paused`], change nothing.
    Paused,
    /// Trip: set `paused_until`, quarantine the invite's active grants created at or after `since`, record the
    /// flood, answer [`Redemption::Tripped`].
    Trip {
        /// Burst start.
        since: Timestamp,
        /// End of the pause.
        paused_until: Timestamp,
    },
    /// Create a grant in `state` via the invite, count a use, store `bucket`.
    Grant {
        /// The new grant's state.
        state: GrantState,
        /// The bucket after taking the token.
        bucket: FloodBucket,
    },
}

/// Decides a redemption. `existing` is the owner's grant to the redeemer, `owner_recent` the number of grants the
/// owner accepted through invites or introductions within the owner window before `now`.
pub fn plan_redemption(
    invite: &ContactInvite,
    redeemer: Aci,
    existing: Option<&Grant>,
    owner_recent: u32,
    now: Timestamp,
    config: &FloodConfig,
) -> RedeemPlan {
    if redeemer == invite.owner {
        return RedeemPlan::OwnInvite;
    }
    match existing.map(|g| g.state) {
        // Denied accounts learn nothing, not even that the code is real.
        Some(GrantState::Denied) => return RedeemPlan::Invalid,
        // Idempotent: a retried redemption (lost response) must not burn a use of a one-use invite.
        Some(state) => return RedeemPlan::Existing(state),
        None => {}
    }
    match invite.state(now) {
        ContactInviteState::Expired | ContactInviteState::Exhausted => RedeemPlan::Invalid,
        ContactInviteState::Paused => RedeemPlan::Paused,
        ContactInviteState::Active => match take_token(config, invite.bucket, now) {
            TakeToken::Empty { since } => RedeemPlan::Trip {
                since,
                paused_until: now.plus(config.pause),
            },
            TakeToken::Taken(bucket) => RedeemPlan::Grant {
                state: window_state(GrantState::Active, owner_recent, config),
                bucket,
            },
        },
    }
}

/// `wanted`, or `quarantined` when the owner already took `owner_window_max` new grantees in the window.
fn window_state(wanted: GrantState, owner_recent: u32, config: &FloodConfig) -> GrantState {
    if wanted == GrantState::Active && owner_recent >= config.owner_window_max {
        GrantState::Quarantined
    } else {
        wanted
    }
}

/// The start of the owner window ending at `now` (grants created strictly after it count).
pub fn owner_window_start(now: Timestamp, config: &FloodConfig) -> Timestamp {
    now.minus(config.owner_window)
}

/// The outcome of an introduction, as the store reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Introduction {
    /// Recorded: a new grant in this state, or `None` when a grant already existed (left unchanged).
    Recorded(Option<GrantState>),
    /// The recipient's policy is `open`: nothing to record, everyone may fetch its keys.
    RecipientOpen,
    /// The recipient refuses introductions.
    Off,
    /// The introducer holds no active grant from the recipient.
    NotGranted,
}

/// Decides an introduction. `introducer_grant` is the recipient's grant to the introducer, `existing` the
/// recipient's grant to the introducee.
pub fn plan_introduction(
    policy: ContactPolicy,
    introducer_grant: Option<&Grant>,
    existing: Option<&Grant>,
    owner_recent: u32,
    config: &FloodConfig,
) -> Introduction {
    if policy.mode == PolicyMode::Open {
        return Introduction::RecipientOpen;
    }
    // Checked before the introductions setting so that strangers learn nothing about it.
    if introducer_grant.map(|g| g.state) != Some(GrantState::Active) {
        return Introduction::NotGranted;
    }
    let wanted = match policy.introductions {
        IntroductionPolicy::Off => return Introduction::Off,
        IntroductionPolicy::Ask => GrantState::Pending,
        IntroductionPolicy::Auto => GrantState::Active,
    };
    if existing.is_some() {
        // Never overrides the owner's own decisions (a denial or a quarantine stays).
        return Introduction::Recorded(None);
    }
    Introduction::Recorded(Some(window_state(wanted, owner_recent, config)))
}

/// The contact gate of an identified send (API.md §10), as every message store applies it inside its insert: an
/// account that is not `invite_only` takes anyone; an `invite_only` one only its own account and holders of an
/// **active** grant (quarantined, pending and denied grants do not pass).
pub fn gate_allows(
    owner: Aci,
    source: Aci,
    owner_invite_only: bool,
    grant: Option<GrantState>,
) -> bool {
    !owner_invite_only || owner == source || grant == Some(GrantState::Active)
}

/// A route grants come through: everything an owner accepted through it can be denied in one decision
/// (`denyAllVia`, API §6/§15). `direct` grants have no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrantRoute {
    /// Redemptions of this contact invite.
    Invite(ContactInviteId),
    /// Redemptions of this contact shortcode.
    Shortcode(crate::shortcodes::ShortcodeId),
    /// Introductions by this account.
    Introducer(Aci),
}

impl GrantRoute {
    /// Reads a route in the shape of a grant's `via` (`{kind, inviteId, shortcodeId, introducer}`): `kind` is
    /// `invite`, `shortcode` or `introduction` with exactly its own id set. `direct` has no route.
    pub fn from_parts(
        kind: &str,
        invite: Option<Uuid>,
        shortcode: Option<Uuid>,
        introducer: Option<Aci>,
    ) -> Result<GrantRoute, &'static str> {
        match (kind, invite, shortcode, introducer) {
            ("invite", Some(i), None, None) => Ok(GrantRoute::Invite(ContactInviteId(i))),
            ("shortcode", None, Some(c), None) => {
                Ok(GrantRoute::Shortcode(crate::shortcodes::ShortcodeId(c)))
            }
            ("introduction", None, None, Some(a)) => Ok(GrantRoute::Introducer(a)),
            ("invite", ..) => Err("an invite route names exactly its inviteId"),
            ("shortcode", ..) => Err("a shortcode route names exactly its shortcodeId"),
            ("introduction", ..) => Err("an introduction route names exactly its introducer"),
            ("direct", ..) => Err("direct grants have no route; deny them by account"),
            _ => Err("a route's kind is invite, shortcode or introduction"),
        }
    }

    /// Whether a grant with provenance `via` came through this route.
    pub fn matches(&self, via: &Via) -> bool {
        match (self, via) {
            (GrantRoute::Invite(a), Via::Invite(b)) => a == b,
            (GrantRoute::Shortcode(a), Via::Shortcode(b)) => a == b,
            (GrantRoute::Introducer(a), Via::Introduction(b)) => a == b,
            _ => false,
        }
    }
}

/// An owner's decisions in one call (`POST /v1/contacts/requests/decide`), validated by the service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decisions {
    /// Grantees whose grant becomes active. Approval wins over every denial below.
    pub approve: Vec<Aci>,
    /// Grantees whose grant becomes denied.
    pub deny: Vec<Aci>,
    /// `denyAllFromInvite`: the **quarantined or pending** grants made through this invite become denied (active
    /// ones stay).
    pub deny_requests_from_invite: Option<ContactInviteId>,
    /// `denyAllVia`: **every** grant made through any of these routes becomes denied, whatever its state.
    pub deny_all_via: Vec<GrantRoute>,
}

/// What a decision call changes, planned by [`plan_decisions`] from the owner's grants inside the store's
/// transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionPlan {
    /// Grantees whose grant becomes active.
    pub activate: Vec<Aci>,
    /// Grantees whose grant becomes denied. Their queued messages to the owner (every device; identified
    /// messages, the only ones with a known sender) are deleted in the same transaction.
    pub deny: Vec<Aci>,
}

/// Plans `decisions` over the owner's current `grants` (every state). Accounts without a grant are skipped; an
/// account approved and also denied (by list or by route) is approved.
pub fn plan_decisions(grants: &[Grant], decisions: &Decisions) -> DecisionPlan {
    let mut plan = DecisionPlan::default();
    for g in grants {
        if decisions.approve.contains(&g.grantee) {
            plan.activate.push(g.grantee);
            continue;
        }
        let by_request_invite = decisions
            .deny_requests_from_invite
            .is_some_and(|id| g.via == Via::Invite(id))
            && matches!(g.state, GrantState::Quarantined | GrantState::Pending);
        let by_route = decisions.deny_all_via.iter().any(|r| r.matches(&g.via));
        if decisions.deny.contains(&g.grantee) || by_request_invite || by_route {
            plan.deny.push(g.grantee);
        }
    }
    plan
}

/// Refusals of creating a contact invite, as the store reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateInvite {
    /// Stored.
    Created,
    /// The owner's policy is not `invite_only` (the graph is kept only for those accounts).
    NotInviteOnly,
    /// The owner already has the maximum number of contact invites.
    QuotaExceeded,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_of_identified_sends() {
        let (o, s) = (
            Aci(Uuid::from_bytes([1; 16])),
            Aci(Uuid::from_bytes([2; 16])),
        );
        assert!(gate_allows(o, s, false, None));
        assert!(gate_allows(o, s, false, Some(GrantState::Denied)));
        assert!(gate_allows(o, o, true, None));
        assert!(gate_allows(o, s, true, Some(GrantState::Active)));
        for g in [
            None,
            Some(GrantState::Quarantined),
            Some(GrantState::Pending),
            Some(GrantState::Denied),
        ] {
            assert!(!gate_allows(o, s, true, g), "{g:?}");
        }
    }

    #[test]
    fn decisions_by_list_request_invite_and_route() {
        let aci = |n: u8| Aci(Uuid::from_bytes([n; 16]));
        let inv = ContactInviteId(Uuid::from_bytes([100; 16]));
        let other_inv = ContactInviteId(Uuid::from_bytes([101; 16]));
        let sc = crate::shortcodes::ShortcodeId(Uuid::from_bytes([102; 16]));
        let g = |n: u8, state, via| Grant {
            owner: aci(0),
            grantee: aci(n),
            state,
            via,
            created_at: Timestamp(0),
        };
        let grants = [
            g(1, GrantState::Active, Via::Invite(inv)),
            g(2, GrantState::Quarantined, Via::Invite(inv)),
            g(3, GrantState::Active, Via::Introduction(aci(9))),
            g(4, GrantState::Pending, Via::Introduction(aci(9))),
            g(5, GrantState::Active, Via::Introduction(aci(8))),
            g(6, GrantState::Active, Via::Shortcode(sc)),
            g(7, GrantState::Active, Via::Direct),
            g(8, GrantState::Quarantined, Via::Invite(other_inv)),
        ];
        // denyAllFromInvite: only the invite's requests.
        let d = Decisions {
            deny_requests_from_invite: Some(inv),
            ..Default::default()
        };
        assert_eq!(plan_decisions(&grants, &d).deny, vec![aci(2)]);
        // denyAllVia: every state, per route; approval wins; direct grants and other routes untouched.
        let d = Decisions {
            approve: vec![aci(4)],
            deny: vec![aci(7), aci(77)],
            deny_all_via: vec![
                GrantRoute::Introducer(aci(9)),
                GrantRoute::Shortcode(sc),
                GrantRoute::Invite(inv),
            ],
            ..Default::default()
        };
        let plan = plan_decisions(&grants, &d);
        assert_eq!(plan.activate, vec![aci(4)]);
        assert_eq!(plan.deny, vec![aci(1), aci(2), aci(3), aci(6), aci(7)]);
        assert!(!GrantRoute::Introducer(aci(9)).matches(&Via::Direct));
        let u = Uuid::from_bytes([5; 16]);
        assert_eq!(
            GrantRoute::from_parts("invite", Some(u), None, None),
            Ok(GrantRoute::Invite(ContactInviteId(u)))
        );
        assert_eq!(
            GrantRoute::from_parts("introduction", None, None, Some(aci(9))),
            Ok(GrantRoute::Introducer(aci(9)))
        );
        assert_eq!(
            GrantRoute::from_parts("shortcode", None, Some(u), None),
            Ok(GrantRoute::Shortcode(crate::shortcodes::ShortcodeId(u)))
        );
        for (kind, i, c, a) in [
            ("invite", None, None, None),
            ("invite", Some(u), Some(u), None),
            ("introduction", Some(u), None, Some(aci(9))),
            ("shortcode", None, None, Some(aci(9))),
            ("direct", None, None, None),
            ("everything", None, None, None),
        ] {
            assert!(GrantRoute::from_parts(kind, i, c, a).is_err(), "{kind}");
        }
        assert!(!GrantRoute::Invite(inv).matches(&Via::Invite(other_inv)));
    }

    const MIN: Duration = Duration::from_secs(60);

    fn at(mins: u64) -> Timestamp {
        Timestamp(0).plus(MIN * u32::try_from(mins).unwrap())
    }

    #[test]
    fn bucket_marks_burst_start_when_taken_from_full() {
        let c = FloodConfig::default();
        let TakeToken::Taken(b) = take_token(&c, None, at(0)) else {
            panic!()
        };
        assert_eq!(b.burst_start, at(0));
        // Partly refilled: the burst goes on.
        let TakeToken::Taken(b) = take_token(&c, Some(b), at(5)) else {
            panic!()
        };
        assert_eq!(b.burst_start, at(0));
        // Full again (two tokens missing, 20 minutes later): a new burst starts.
        let TakeToken::Taken(b) = take_token(&c, Some(b), at(25)) else {
            panic!()
        };
        assert_eq!(b.burst_start, at(25));
        let mut bucket = b;
        for _ in 0..4 {
            match take_token(&c, Some(bucket), at(26)) {
                TakeToken::Taken(b) => bucket = b,
                TakeToken::Empty { .. } => panic!("bucket of 5 emptied early"),
            }
        }
        assert_eq!(
            take_token(&c, Some(bucket), at(26)),
            TakeToken::Empty { since: at(25) }
        );
        // One token back after a refill period.
        assert!(matches!(
            take_token(&c, Some(bucket), at(36)),
            TakeToken::Taken(_)
        ));
    }

    fn invite(uses: u32, max_uses: u32) -> ContactInvite {
        ContactInvite {
            id: ContactInviteId(Uuid::nil()),
            owner: Aci(Uuid::from_u128(1)),
            code_hash: [0; 32],
            label: None,
            max_uses,
            uses,
            created_at: at(0),
            expires_at: at(60),
            paused_until: None,
            flood: None,
            bucket: None,
        }
    }

    #[test]
    fn redemption_plans() {
        let c = FloodConfig::default();
        let me = Aci(Uuid::from_u128(2));
        let inv = invite(0, 1);
        let grant = |state| Grant {
            owner: inv.owner,
            grantee: me,
            state,
            via: Via::Direct,
            created_at: at(0),
        };
        assert_eq!(
            plan_redemption(&inv, inv.owner, None, 0, at(1), &c),
            RedeemPlan::OwnInvite
        );
        assert!(matches!(
            plan_redemption(&inv, me, None, 0, at(1), &c),
            RedeemPlan::Grant {
                state: GrantState::Active,
                ..
            }
        ));
        assert!(matches!(
            plan_redemption(&inv, me, None, 20, at(1), &c),
            RedeemPlan::Grant {
                state: GrantState::Quarantined,
                ..
            }
        ));
        assert_eq!(
            plan_redemption(&inv, me, Some(&grant(GrantState::Denied)), 0, at(1), &c),
            RedeemPlan::Invalid
        );
        assert_eq!(
            plan_redemption(&inv, me, Some(&grant(GrantState::Pending)), 0, at(1), &c),
            RedeemPlan::Existing(GrantState::Pending)
        );
        assert_eq!(
            plan_redemption(&invite(1, 1), me, None, 0, at(1), &c),
            RedeemPlan::Invalid
        );
        assert_eq!(
            plan_redemption(&inv, me, None, 0, at(60), &c),
            RedeemPlan::Invalid
        );
        let mut paused = invite(0, 5);
        paused.paused_until = Some(at(30));
        assert_eq!(
            plan_redemption(&paused, me, None, 0, at(29), &c),
            RedeemPlan::Paused
        );
        assert!(matches!(
            plan_redemption(&paused, me, None, 0, at(30), &c),
            RedeemPlan::Grant { .. }
        ));
    }

    #[test]
    fn introduction_plans() {
        let c = FloodConfig::default();
        let owner = Aci(Uuid::from_u128(1));
        let g = |state| Grant {
            owner,
            grantee: Aci(Uuid::from_u128(2)),
            state,
            via: Via::Direct,
            created_at: at(0),
        };
        let active = g(GrantState::Active);
        let policy = |introductions| ContactPolicy {
            mode: PolicyMode::InviteOnly,
            introductions,
        };
        assert_eq!(
            plan_introduction(ContactPolicy::default(), None, None, 0, &c),
            Introduction::RecipientOpen
        );
        assert_eq!(
            plan_introduction(policy(IntroductionPolicy::Off), None, None, 0, &c),
            Introduction::NotGranted
        );
        assert_eq!(
            plan_introduction(
                policy(IntroductionPolicy::Ask),
                Some(&g(GrantState::Quarantined)),
                None,
                0,
                &c
            ),
            Introduction::NotGranted
        );
        assert_eq!(
            plan_introduction(policy(IntroductionPolicy::Off), Some(&active), None, 0, &c),
            Introduction::Off
        );
        assert_eq!(
            plan_introduction(policy(IntroductionPolicy::Ask), Some(&active), None, 0, &c),
            Introduction::Recorded(Some(GrantState::Pending))
        );
        assert_eq!(
            plan_introduction(policy(IntroductionPolicy::Auto), Some(&active), None, 0, &c),
            Introduction::Recorded(Some(GrantState::Active))
        );
        assert_eq!(
            plan_introduction(
                policy(IntroductionPolicy::Auto),
                Some(&active),
                None,
                20,
                &c
            ),
            Introduction::Recorded(Some(GrantState::Quarantined))
        );
        assert_eq!(
            plan_introduction(
                policy(IntroductionPolicy::Auto),
                Some(&active),
                Some(&g(GrantState::Denied)),
                0,
                &c
            ),
            Introduction::Recorded(None)
        );
    }
}
