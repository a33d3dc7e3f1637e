//! The shortcodes service: validation, generation and the `shortcodeAttempt` limiter around the atomic store
//! methods.

use std::sync::Arc;
use std::time::Duration;

use super::{ContactShortcode, CreateShortcode, Shortcode, ShortcodeId, ShortcodeRedemption};
use crate::contacts::{FloodConfig, GrantState};
use crate::ids::Aci;
use crate::random::SecureRandom;
use crate::ratelimit::{LimitError, Limiter, RateLimited, RateLimiters};
use crate::store::{Store, StoreError};
use crate::time::Clock;

/// Limits on shortcodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortcodesConfig {
    /// Lifetime of a code created without `expiresInSeconds`. 600 s (API §15).
    pub default_lifetime: Duration,
    /// Longest lifetime a client may ask for. 86400 s (API §15).
    pub max_lifetime: Duration,
    /// Most live codes one account may hold at once. Default 10.
    pub max_live_per_account: u32,
    /// Ended codes (used, burned, revoked, expired) kept per account for its listing. Default 50.
    pub history_per_account: u32,
    /// The flood breaker and owner window of §6 (the `[contacts]` settings).
    pub flood: FloodConfig,
}

impl Default for ShortcodesConfig {
    fn default() -> Self {
        ShortcodesConfig {
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(86_400),
            max_live_per_account: 10,
            history_per_account: 50,
            flood: FloodConfig::default(),
        }
    }
}

/// Why a shortcode operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ShortcodeError {
    /// The shortcode cannot be used: unknown, expired, used, burned, revoked, malformed, or a redeemer the owner
    /// denied (404 `invite_invalid`; no hint which).
    #[error("shortcode is not valid")]
    Invalid,
    /// This attempt was the third failed guess and burned a code; answered exactly like
    /// [`ShortcodeError::Invalid`], distinct so that the server can log and count burns.
    #[error("shortcode is not valid")]
    Burned,
    /// No such shortcode of the caller's (404).
    #[error("no such contact shortcode")]
    NotFound,
    /// The caller's policy is not `invite_only` (409 `contacts_not_invite_only`).
    #[error("contact policy is not invite_only")]
    NotInviteOnly,
    /// Too many live shortcodes (403 `quota_exceeded`).
    #[error("too many live contact shortcodes")]
    QuotaExceeded,
    /// A field broke a rule (422).
    #[error("{0}")]
    Validation(String),
    /// Rate limited (429).
    #[error(transparent)]
    RateLimited(RateLimited),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LimitError> for ShortcodeError {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::Limited(r) => ShortcodeError::RateLimited(r),
            LimitError::Store(s) => ShortcodeError::Store(s),
        }
    }
}

/// A shortcode request as decoded from the wire.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewShortcodeRequest {
    /// `expiresInSeconds` (default [`ShortcodesConfig::default_lifetime`]).
    pub expires_in_seconds: Option<i64>,
}

/// Shortcode operations.
#[derive(Clone)]
pub struct Shortcodes {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn SecureRandom>,
    limiters: RateLimiters,
    config: Arc<ShortcodesConfig>,
}

impl Shortcodes {
    /// Operations over `store` with `config`.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn SecureRandom>,
        limiters: RateLimiters,
        config: ShortcodesConfig,
    ) -> Self {
        Shortcodes {
            store,
            clock,
            rng,
            limiters,
            config: Arc::new(config),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ShortcodesConfig {
        &self.config
    }

    /// Creates a shortcode for `caller`; the words are returned here once and never again.
    pub async fn create(
        &self,
        caller: Aci,
        request: NewShortcodeRequest,
    ) -> Result<(ContactShortcode, Shortcode), ShortcodeError> {
        let lifetime = match request.expires_in_seconds {
            None => self.config.default_lifetime,
            Some(s) => u64::try_from(s)
                .ok()
                .map(Duration::from_secs)
                .filter(|d| *d >= Duration::from_secs(1) && *d <= self.config.max_lifetime)
                .ok_or_else(|| {
                    ShortcodeError::Validation(format!(
                        "expiresInSeconds must be 1..={}",
                        self.config.max_lifetime.as_secs()
                    ))
                })?,
        };
        let now = self.clock.now();
        let words = Shortcode::random_words(self.rng.as_ref());
        let mut code = ContactShortcode::new(self.rng.as_ref(), caller, 0, words, now, lifetime);
        match self
            .store
            .create_contact_shortcode(
                &code,
                now,
                self.config.max_live_per_account,
                self.config.history_per_account,
            )
            .await?
        {
            CreateShortcode::Created(nameplate) => {
                code.nameplate = nameplate;
                let shortcode = Shortcode::new(nameplate, words).ok_or_else(|| {
                    StoreError::corrupt("the store assigned a nameplate out of range")
                })?;
                Ok((code, shortcode))
            }
            CreateShortcode::NotInviteOnly => Err(ShortcodeError::NotInviteOnly),
            CreateShortcode::QuotaExceeded | CreateShortcode::NoNameplate => {
                Err(ShortcodeError::QuotaExceeded)
            }
        }
    }

    /// The caller's shortcodes, oldest first.
    pub async fn list(&self, caller: Aci) -> Result<Vec<ContactShortcode>, ShortcodeError> {
        Ok(self.store.contact_shortcodes(caller).await?)
    }

    /// Revokes one of the caller's shortcodes.
    pub async fn revoke(&self, caller: Aci, id: ShortcodeId) -> Result<(), ShortcodeError> {
        if self.store.revoke_contact_shortcode(caller, id).await? {
            Ok(())
        } else {
            Err(ShortcodeError::NotFound)
        }
    }

    /// One redemption attempt of `input` by `caller` from the network `ip_key` (the client's IPv4 address or its
    /// IPv6 /64): returns the owner and the state of the caller's grant.
    ///
    /// Every attempt, whatever its input, takes a permit of both `shortcodeAttempt` buckets (per account and per
    /// network), then runs the same store transaction and the same HMAC comparison: malformed input is tried as
    /// a code on nameplate 0, which no code ever holds.
    pub async fn redeem(
        &self,
        caller: Aci,
        ip_key: &str,
        input: &str,
    ) -> Result<(Aci, GrantState), ShortcodeError> {
        self.limiters
            .check(Limiter::ShortcodeAttempt, &format!("aci:{caller}"))
            .await?;
        self.limiters
            .check(Limiter::ShortcodeAttempt, &format!("net:{ip_key}"))
            .await?;
        let guess = Shortcode::parse(input).unwrap_or(Shortcode {
            nameplate: 0,
            words: [0, 0],
        });
        let now = self.clock.now();
        match self
            .store
            .redeem_contact_shortcode(&guess, caller, now, &self.config.flood)
            .await?
        {
            ShortcodeRedemption::Granted { owner, state }
            | ShortcodeRedemption::Existing { owner, state } => Ok((owner, state)),
            ShortcodeRedemption::Invalid | ShortcodeRedemption::FailedGuess { burned: false } => {
                Err(ShortcodeError::Invalid)
            }
            ShortcodeRedemption::FailedGuess { burned: true } => Err(ShortcodeError::Burned),
            ShortcodeRedemption::OwnShortcode => Err(ShortcodeError::Validation(
                "cannot redeem your own contact shortcode".into(),
            )),
        }
    }
}
