//! Leaky-bucket rate limiting. The arithmetic is here, pure and shared by every backend; the bucket state lives
//! behind [`RateLimitStore`] so that several server processes draw from the same buckets.

mod store;

pub use store::*;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::StoreError;
use crate::time::{Clock, Timestamp};

/// A bucket of `bucket_size` permits; one permit comes back every `permit_regeneration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketConfig {
    /// Permits available to a burst.
    pub bucket_size: u32,
    /// Time for one permit to regenerate.
    #[serde(with = "crate::ratelimit::duration_secs")]
    pub permit_regeneration: Duration,
}

impl BucketConfig {
    /// A bucket of `size` permits, one back every `every`.
    pub const fn new(bucket_size: u32, permit_regeneration: Duration) -> Self {
        BucketConfig {
            bucket_size,
            permit_regeneration,
        }
    }

    /// Milliseconds of regeneration one permit costs (at least 1).
    pub fn permit_ms(&self) -> i64 {
        i64::try_from(self.permit_regeneration.as_millis())
            .unwrap_or(i64::MAX)
            .max(1)
    }

    /// Milliseconds of regeneration a full bucket holds.
    pub fn capacity_ms(&self) -> i64 {
        self.permit_ms().saturating_mul(i64::from(self.bucket_size))
    }

    /// Milliseconds of regeneration `amount` permits cost.
    pub fn cost_ms(&self, amount: u32) -> i64 {
        self.permit_ms().saturating_mul(i64::from(amount))
    }
}

/// Serde helper: durations as (possibly fractional) seconds in config files.
pub mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes seconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    /// Reads non-negative, finite seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// The persisted state of one bucket.
///
/// Permits are counted in milliseconds of regeneration (one permit = `permit_regeneration`), so refill and
/// `Retry-After` are exact integer arithmetic and every backend computes identical results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketState {
    /// Credit left at `updated_at`, in milliseconds of regeneration.
    pub credit_ms: i64,
    /// When `credit_ms` was computed.
    pub updated_at: Timestamp,
}

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Permits taken.
    Allowed,
    /// Not enough permits; nothing was taken. Retry after this long.
    Denied {
        /// Time until enough permits have regenerated.
        retry_after: Duration,
    },
}

/// Applies a request for `amount` permits at `now` to a bucket (absent = full) and returns the new state and verdict.
///
/// A denied request leaves the permits untouched (only the refill is recorded), as Signal's limiter does.
pub fn apply(
    config: &BucketConfig,
    state: Option<BucketState>,
    amount: u32,
    now: Timestamp,
) -> (BucketState, Admission) {
    let credit = credit_at(config, state, now);
    let cost = config.cost_ms(amount);
    if credit >= cost {
        (
            BucketState {
                credit_ms: credit - cost,
                updated_at: now,
            },
            Admission::Allowed,
        )
    } else {
        let retry_after = Duration::from_millis(u64::try_from(cost - credit).unwrap_or(0));
        (
            BucketState {
                credit_ms: credit,
                updated_at: now,
            },
            Admission::Denied { retry_after },
        )
    }
}

/// Whether a bucket in `state` (absent = full) has every permit back at `now`.
pub fn is_full(config: &BucketConfig, state: Option<BucketState>, now: Timestamp) -> bool {
    credit_at(config, state, now) >= config.capacity_ms()
}

/// The credit of a bucket in `state` (absent = full) refilled up to `now`, in milliseconds of regeneration.
fn credit_at(config: &BucketConfig, state: Option<BucketState>, now: Timestamp) -> i64 {
    let capacity = config.capacity_ms();
    match state {
        None => capacity,
        Some(s) => {
            let elapsed = now
                .as_millis()
                .saturating_sub(s.updated_at.as_millis())
                .max(0);
            s.credit_ms.saturating_add(elapsed).min(capacity)
        }
    }
}

/// How full a bucket is, observed without taking anything (see [`RateLimiters::level`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Every permit is there.
    Full,
    /// At least one permit is there, but not all.
    Partial,
    /// Not one permit; one comes back after this long.
    Empty(RateLimited),
}

/// The [`Level`] of a bucket in `state` at `now`.
pub fn level(config: &BucketConfig, state: Option<BucketState>, now: Timestamp) -> Level {
    let credit = credit_at(config, state, now);
    if credit >= config.capacity_ms() {
        Level::Full
    } else if credit >= config.permit_ms() {
        Level::Partial
    } else {
        Level::Empty(RateLimited {
            retry_after: Duration::from_millis(
                u64::try_from(config.permit_ms() - credit).unwrap_or(0),
            ),
        })
    }
}

/// The time after which a bucket in `state` is full again and can be forgotten.
pub fn full_at(config: &BucketConfig, state: &BucketState) -> Timestamp {
    let missing = config.capacity_ms().saturating_sub(state.credit_ms).max(0);
    Timestamp(state.updated_at.as_millis().saturating_add(missing))
}

/// A request was rate limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited; retry after {retry_after:?}")]
pub struct RateLimited {
    /// Time until the request would be admitted.
    pub retry_after: Duration,
}

impl RateLimited {
    /// `Retry-After` in whole seconds, rounded up (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        let ms = u64::try_from(self.retry_after.as_millis()).unwrap_or(u64::MAX);
        ms.div_ceil(1000).max(1)
    }
}

/// Failure of a limiter check: over the limit, or the store failed.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// Over the limit.
    #[error(transparent)]
    Limited(#[from] RateLimited),
    /// The bucket store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Every limiter the server knows, with its name (used in config and bucket keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Limiter {
    /// `POST /v1/registration`, per principal.
    Registration,
    /// `POST /v1/verification/session`, per IP.
    VerificationAuthorization,
    /// `PATCH /v1/verification/session/{id}`, per session.
    VerificationTokenExchange,
    /// Authenticated prekey fetches.
    PreKeys,
    /// Username reservation, per ACI.
    UsernameReserve,
    /// Username confirmation, per ACI.
    UsernameSet,
    /// Username hash lookup, per IP.
    UsernameLookup,
    /// Username link writes, per ACI.
    UsernameLinkOperation,
    /// Username link lookups, per IP.
    UsernameLinkLookupPerIp,
    /// Principal discovery, per ACI.
    PrincipalLookup,
    /// Invite validity checks, per IP.
    InviteValidity,
    /// Registration attempts that present an invite code, per IP (bounds code guessing).
    InviteAttempt,
    /// Contact invite redemption, per ACI.
    ContactRedeem,
    /// `POST /v1/registration`, per client network (bounds unauthenticated signature-checking work).
    RegistrationPerIp,
    /// `POST /v1/invites`, per ACI (each attempt walks the invite tree).
    InviteCreate,
    /// Failed authentication, per (account, client network); charged only on failure.
    AuthFailure,
    /// Failed authentication, per account from every network. When empty, each network keeps only a single try
    /// per [`Limiter::AuthFailure`] regeneration, and networks without failures (the owner's) are unaffected.
    AuthFailureAccount,
    /// Authenticated profile reads, per requesting ACI (M§4).
    Profile,
    /// Attachment upload forms, per ACI (M§6).
    AttachmentCreate,
    /// Declared attachment sizes (`uploadLength`, only when given), per ACI (M§6). Permits are KiB: Signal
    /// regenerates one byte per microsecond, finer than the millisecond arithmetic, so one KiB per ms instead.
    AttachmentCreateBytes,
    /// Identified sends to another account, per `sender__destination` (M§2.6).
    Messages,
    /// Bytes of message content received per destination account (M§2.6).
    InboundMessageBytes,
    /// Story sends, per destination account (M§2.6).
    Stories,
    /// Contact shortcode redemption attempts, per ACI and per IP (IPv6 per /64).
    ShortcodeAttempt,
    /// `GET /v1/devices/provisioning/code`, per ACI.
    AllocateDevice,
    /// `PUT /v1/devices/link`, per ACI of the token.
    VerifyDevice,
    /// `GET /v1/devices/wait_for_linked_device/{id}`, per ACI.
    WaitForLinkedDevice,
    /// Calls to an identity provider's PAR and token endpoints, per provider: a ceiling over all clients, so that
    /// unauthenticated traffic cannot drive the IdP's own limits against our client (security review F-06).
    IdpRequests,
}

impl Limiter {
    /// Every limiter, for config documentation and validation.
    pub const ALL: [Limiter; 28] = [
        Limiter::Registration,
        Limiter::VerificationAuthorization,
        Limiter::VerificationTokenExchange,
        Limiter::PreKeys,
        Limiter::UsernameReserve,
        Limiter::UsernameSet,
        Limiter::UsernameLookup,
        Limiter::UsernameLinkOperation,
        Limiter::UsernameLinkLookupPerIp,
        Limiter::PrincipalLookup,
        Limiter::InviteValidity,
        Limiter::InviteAttempt,
        Limiter::ContactRedeem,
        Limiter::RegistrationPerIp,
        Limiter::InviteCreate,
        Limiter::AuthFailure,
        Limiter::AuthFailureAccount,
        Limiter::Profile,
        Limiter::AttachmentCreate,
        Limiter::AttachmentCreateBytes,
        Limiter::Messages,
        Limiter::InboundMessageBytes,
        Limiter::Stories,
        Limiter::ShortcodeAttempt,
        Limiter::AllocateDevice,
        Limiter::VerifyDevice,
        Limiter::WaitForLinkedDevice,
        Limiter::IdpRequests,
    ];

    /// The config and bucket-key name (Signal's names where Signal has the limiter).
    pub fn name(self) -> &'static str {
        match self {
            Limiter::Registration => "registration",
            Limiter::VerificationAuthorization => "verificationAuthorization",
            Limiter::VerificationTokenExchange => "verificationTokenExchange",
            Limiter::PreKeys => "prekeys",
            Limiter::UsernameReserve => "usernameReserve",
            Limiter::UsernameSet => "usernameSet",
            Limiter::UsernameLookup => "usernameLookup",
            Limiter::UsernameLinkOperation => "usernameLinkOperation",
            Limiter::UsernameLinkLookupPerIp => "usernameLinkLookupPerIp",
            Limiter::PrincipalLookup => "principalLookup",
            Limiter::InviteValidity => "inviteValidity",
            Limiter::InviteAttempt => "inviteAttempt",
            Limiter::ContactRedeem => "contactRedeem",
            Limiter::RegistrationPerIp => "registrationPerIp",
            Limiter::InviteCreate => "inviteCreate",
            Limiter::AuthFailure => "authFailure",
            Limiter::AuthFailureAccount => "authFailureAccount",
            Limiter::Profile => "profile",
            Limiter::AttachmentCreate => "attachmentCreate",
            Limiter::AttachmentCreateBytes => "attachmentCreateBytes",
            Limiter::Messages => "messages",
            Limiter::InboundMessageBytes => "inboundMessageBytes",
            Limiter::Stories => "stories",
            Limiter::ShortcodeAttempt => "shortcodeAttempt",
            Limiter::AllocateDevice => "allocateDevice",
            Limiter::VerifyDevice => "verifyDevice",
            Limiter::WaitForLinkedDevice => "waitForLinkedDevice",
            Limiter::IdpRequests => "idpRequests",
        }
    }

    /// Signal-Server's default where it has one; ours otherwise.
    pub fn default_config(self) -> BucketConfig {
        const MIN: u64 = 60;
        let b = |size, secs| BucketConfig::new(size, Duration::from_secs(secs));
        match self {
            Limiter::Registration => b(6, 30),
            Limiter::VerificationAuthorization => b(100, 15),
            Limiter::VerificationTokenExchange => b(5, 30),
            Limiter::PreKeys => b(6, 10 * MIN),
            Limiter::UsernameReserve | Limiter::UsernameSet | Limiter::UsernameLookup => {
                b(100, 15 * MIN)
            }
            Limiter::UsernameLinkOperation => b(10, MIN),
            Limiter::UsernameLinkLookupPerIp => b(100, 15),
            Limiter::PrincipalLookup => b(100, 15 * MIN),
            // Synapse's registration-token validity default: burst 5, 0.1/s.
            Limiter::InviteValidity => b(5, 10),
            Limiter::InviteAttempt => b(10, 5 * MIN),
            Limiter::ContactRedeem => b(20, 3 * MIN),
            Limiter::RegistrationPerIp => b(50, 12),
            Limiter::InviteCreate => b(10, MIN),
            Limiter::AuthFailure => b(10, 6 * MIN),
            Limiter::AuthFailureAccount => b(100, 36),
            Limiter::Profile => b(4320, 20),
            Limiter::AttachmentCreate => BucketConfig::new(50, Duration::from_millis(1200)),
            // Signal's 1 GiB burst; one KiB back per ms (≈ Signal's one byte per µs).
            Limiter::AttachmentCreateBytes => {
                BucketConfig::new(1024 * 1024, Duration::from_millis(1))
            }
            Limiter::Messages => b(60, 1),
            // Signal regenerates one byte every 0.5 ms; bucket arithmetic is in whole milliseconds, so one per ms.
            Limiter::InboundMessageBytes => {
                BucketConfig::new(128 * 1024 * 1024, Duration::from_millis(1))
            }
            Limiter::Stories => b(5000, 8),
            // API §15; docs/SECURITY.md derives the guessing bound from it.
            Limiter::ShortcodeAttempt => b(10, MIN),
            Limiter::AllocateDevice | Limiter::VerifyDevice => b(6, 2 * MIN),
            Limiter::WaitForLinkedDevice => b(10, 30),
            // Ours: a burst of 600 calls, 10 per second sustained (five registrations a second, each a PAR and a
            // token call), far above an ordinary instance's sign-up rate; raise it for mass onboarding.
            Limiter::IdpRequests => BucketConfig::new(600, Duration::from_millis(100)),
        }
    }

    /// Parses a config name, ignoring case (environment variable names are upper case).
    pub fn from_name(name: &str) -> Option<Limiter> {
        Limiter::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(name))
    }
}

/// Configured limits for every [`Limiter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits(std::collections::BTreeMap<Limiter, BucketConfig>);

impl Default for Limits {
    fn default() -> Self {
        Limits(
            Limiter::ALL
                .into_iter()
                .map(|l| (l, l.default_config()))
                .collect(),
        )
    }
}

impl Limits {
    /// Overrides one limiter.
    pub fn set(&mut self, limiter: Limiter, config: BucketConfig) {
        self.0.insert(limiter, config);
    }
    /// The configuration of `limiter`.
    pub fn get(&self, limiter: Limiter) -> BucketConfig {
        self.0
            .get(&limiter)
            .copied()
            .unwrap_or_else(|| limiter.default_config())
    }
}

/// Checks named limiters against shared bucket state.
#[derive(Clone)]
pub struct RateLimiters {
    store: Arc<dyn RateLimitStore>,
    clock: Arc<dyn Clock>,
    limits: Arc<Limits>,
}

impl RateLimiters {
    /// Limiters over `store` with `limits`.
    pub fn new(store: Arc<dyn RateLimitStore>, clock: Arc<dyn Clock>, limits: Limits) -> Self {
        RateLimiters {
            store,
            clock,
            limits: Arc::new(limits),
        }
    }

    /// Takes one permit from `limiter`'s bucket for `key`.
    pub async fn check(&self, limiter: Limiter, key: &str) -> Result<(), LimitError> {
        self.check_n(limiter, key, 1).await
    }

    /// Takes `amount` permits at once (all or none) from `limiter`'s bucket for `key`.
    pub async fn check_n(
        &self,
        limiter: Limiter,
        key: &str,
        amount: u32,
    ) -> Result<(), LimitError> {
        let config = self.limits.get(limiter);
        match self
            .store
            .acquire(&bucket_key(limiter, key), &config, amount, self.clock.now())
            .await?
        {
            Admission::Allowed => Ok(()),
            Admission::Denied { retry_after } => Err(RateLimited { retry_after }.into()),
        }
    }

    /// How full `limiter`'s bucket for `key` is, taking nothing (one read, no write).
    pub async fn level(&self, limiter: Limiter, key: &str) -> Result<Level, StoreError> {
        let config = self.limits.get(limiter);
        let state = self.store.peek(&bucket_key(limiter, key)).await?;
        Ok(level(&config, state, self.clock.now()))
    }
}

/// The [`Limiter::AttachmentCreateBytes`] permits a declared upload of `bytes` takes: KiB, rounded up.
pub fn attachment_kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// Longest limiter key stored as is; longer (or non-printable) keys are stored as their SHA-256.
const MAX_PLAIN_KEY: usize = 128;

/// The stored bucket name of `limiter` for `key`. Keys can be attacker-chosen, so a long or non-printable key is
/// replaced by its SHA-256 (bounded rows, valid UTF-8 text, no NUL for PostgreSQL).
pub fn bucket_key(limiter: Limiter, key: &str) -> String {
    use sha2::Digest as _;
    if key.len() <= MAX_PLAIN_KEY && key.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        format!("{}::{key}", limiter.name())
    } else {
        format!(
            "{}::#{}",
            limiter.name(),
            hex::encode(sha2::Sha256::digest(key.as_bytes()))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A bucket of size N admits exactly N immediate requests; the next one is told to wait one
        /// regeneration period; after that period exactly one more is admitted.
        #[test]
        fn bucket_admits_size_then_refills(size in 1u32..200, regen_ms in 1u64..100_000, start in 0i64..1_000_000_000) {
            let cfg = BucketConfig::new(size, Duration::from_millis(regen_ms));
            let now = Timestamp(start);
            let mut state = None;
            for _ in 0..size {
                let (s, a) = apply(&cfg, state, 1, now);
                prop_assert_eq!(a, Admission::Allowed);
                state = Some(s);
            }
            let (s, a) = apply(&cfg, state, 1, now);
            prop_assert_eq!(a, Admission::Denied { retry_after: Duration::from_millis(regen_ms) });
            state = Some(s);
            let later = now.plus(Duration::from_millis(regen_ms));
            let (s, a) = apply(&cfg, state, 1, later);
            prop_assert_eq!(a, Admission::Allowed);
            let (_, a) = apply(&cfg, Some(s), 1, later);
            prop_assert!(a != Admission::Allowed);
        }

        /// Retry-After is exactly the time the deficit takes to regenerate, whatever the partial refill.
        #[test]
        fn retry_after_is_deficit_over_rate(size in 1u32..20, regen_ms in 1_000u64..60_000, waited in 0u64..1_000) {
            let cfg = BucketConfig::new(size, Duration::from_millis(regen_ms));
            let empty = BucketState { credit_ms: 0, updated_at: Timestamp(0) };
            let (_, a) = apply(&cfg, Some(empty), 1, Timestamp(waited as i64));
            prop_assert_eq!(a, Admission::Denied { retry_after: Duration::from_millis(regen_ms - waited) });
        }
    }

    #[test]
    fn level_reports_full_partial_and_empty_without_taking() {
        let cfg = BucketConfig::new(2, Duration::from_secs(10));
        assert_eq!(level(&cfg, None, Timestamp(0)), Level::Full);
        let (s, _) = apply(&cfg, None, 1, Timestamp(0));
        assert_eq!(level(&cfg, Some(s), Timestamp(0)), Level::Partial);
        assert_eq!(level(&cfg, Some(s), Timestamp(10_000)), Level::Full);
        let (s, _) = apply(&cfg, Some(s), 1, Timestamp(0));
        assert_eq!(
            level(&cfg, Some(s), Timestamp(4_000)),
            Level::Empty(RateLimited {
                retry_after: Duration::from_secs(6)
            })
        );
    }

    #[test]
    fn hostile_keys_are_hashed() {
        assert_eq!(
            bucket_key(Limiter::Registration, "a@b"),
            "registration::a@b"
        );
        for hostile in [
            "a\0b".to_owned(),
            "x".repeat(3000),
            "line\nbreak".to_owned(),
        ] {
            let k = bucket_key(Limiter::Registration, &hostile);
            assert_eq!(k.len(), "registration::#".len() + 64, "{k}");
            assert!(k.bytes().all(|b| b.is_ascii_graphic()));
        }
    }

    #[test]
    fn refill_caps_at_bucket_size() {
        let cfg = BucketConfig::new(3, Duration::from_secs(1));
        let (s, _) = apply(&cfg, None, 3, Timestamp(0));
        let (s, a) = apply(&cfg, Some(s), 1, Timestamp(1_000_000));
        assert_eq!(a, Admission::Allowed);
        assert_eq!(s.credit_ms, 2_000);
        assert_eq!(full_at(&cfg, &s), Timestamp(1_001_000));
    }

    #[test]
    fn attachment_bytes_are_charged_in_whole_kib() {
        assert_eq!(
            (
                attachment_kib(1),
                attachment_kib(1024),
                attachment_kib(1025),
                attachment_kib(u64::MAX)
            ),
            (1, 1, 2, u32::MAX)
        );
    }

    #[test]
    fn retry_after_rounds_up_to_seconds() {
        let secs = |ms| {
            RateLimited {
                retry_after: Duration::from_millis(ms),
            }
            .retry_after_secs()
        };
        assert_eq!(
            (secs(1), secs(999), secs(1000), secs(1001), secs(0)),
            (1, 1, 1, 2, 1)
        );
    }
}
