//! The contacts service: validation, code handling and rate limiting around the atomic store methods.

use std::sync::Arc;
use std::time::Duration;

use super::{
    ContactCode, ContactInvite, ContactInviteId, ContactPolicy, CreateInvite, Decisions,
    FloodConfig, Grant, GrantState, Introduction, PolicyMode, Redemption,
};
use crate::auth::AuthenticatedDevice;
use crate::ids::Aci;
use crate::random::SecureRandom;
use crate::ratelimit::{LimitError, Limiter, RateLimited, RateLimiters};
use crate::store::{ContactStore, Store, StoreError, StoreResult};
use crate::time::{Clock, Timestamp};

/// Most accounts one decision call may approve and deny together.
pub const MAX_DECISIONS: usize = 1000;

/// Most routes one decision call may deny everything through (`denyAllVia`).
pub const MAX_ROUTES: usize = 100;

/// Limits on contact invites, and the flood thresholds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactsConfig {
    /// Flood breaker and owner window.
    pub flood: FloodConfig,
    /// Lifetime of an invite created without `expiresInSeconds`. Default 7 days.
    pub default_expiry: Duration,
    /// Longest lifetime a client may ask for. Default 365 days.
    pub max_expiry: Duration,
    /// Largest `maxUses`. Default 1000.
    pub max_uses: u32,
    /// Most contact invites one account may hold. Default 100.
    pub max_invites_per_account: u32,
}

impl Default for ContactsConfig {
    fn default() -> Self {
        ContactsConfig {
            flood: FloodConfig::default(),
            default_expiry: Duration::from_secs(7 * 86_400),
            max_expiry: Duration::from_secs(365 * 86_400),
            max_uses: 1000,
            max_invites_per_account: 100,
        }
    }
}

/// Longest label, in characters.
pub const MAX_LABEL_CHARS: usize = 64;

/// Why a contacts operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ContactError {
    /// The code is not usable (404 `invite_invalid`; no hint why).
    #[error("invite code is not valid")]
    InviteInvalid,
    /// The invite is paused by the flood breaker (409 `invite_paused`).
    #[error("invite is paused")]
    InvitePaused,
    /// This redemption tripped the flood breaker; answered like [`ContactError::InvitePaused`] (409
    /// `invite_paused`), distinct so that the server can log and count trips.
    #[error("invite is paused")]
    FloodTripped,
    /// No such invite of the caller's (404).
    #[error("no such contact invite")]
    NotFound,
    /// No such account (404).
    #[error("no such account")]
    UnknownAccount,
    /// The caller's policy is not `invite_only`, so it has no contact graph (409 `contacts_not_invite_only`).
    #[error("contact policy is not invite_only")]
    NotInviteOnly,
    /// The recipient refuses introductions (403 `introductions_off`).
    #[error("recipient does not accept introductions")]
    IntroductionsOff,
    /// The caller holds no active grant from the account it acts towards (403 `contact_not_allowed`).
    #[error("not an allowed contact")]
    NotAllowed,
    /// Too many contact invites (403 `quota_exceeded`).
    #[error("too many contact invites")]
    QuotaExceeded,
    /// A field broke a rule (422).
    #[error("{0}")]
    Invalid(String),
    /// Rate limited (429).
    #[error(transparent)]
    RateLimited(RateLimited),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LimitError> for ContactError {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::Limited(r) => ContactError::RateLimited(r),
            LimitError::Store(s) => ContactError::Store(s),
        }
    }
}

fn invalid(msg: impl Into<String>) -> ContactError {
    ContactError::Invalid(msg.into())
}

/// A contact invite request as decoded from the wire.
#[derive(Debug, Clone, Default)]
pub struct NewContactInvite {
    /// `maxUses` (default 1).
    pub max_uses: Option<i64>,
    /// `expiresInSeconds` (default [`ContactsConfig::default_expiry`]).
    pub expires_in_seconds: Option<i64>,
    /// `label`.
    pub label: Option<String>,
}

/// Which requests to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFilter {
    /// Quarantined grants only.
    Quarantined,
    /// Pending grants only.
    Pending,
    /// Both.
    All,
}

/// The answer to an introduction. It deliberately does not say what became of it: an introducer must not learn
/// whether the recipient had already blocked the introducee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntroductionReceipt {
    /// The recipient.
    pub recipient: Aci,
    /// The introducee.
    pub introducee: Aci,
    /// When it was made.
    pub created_at: Timestamp,
}

/// Whether an authenticated `requester` may fetch `owner`'s prekeys: always for the owner itself and for `open`
/// owners; for `invite_only` owners only with an active grant.
pub async fn authenticated_fetch_allowed<S: ContactStore + ?Sized>(
    store: &S,
    owner: Aci,
    requester: Aci,
) -> StoreResult<bool> {
    if owner == requester || !is_invite_only(store, owner).await? {
        return Ok(true);
    }
    Ok(store
        .contact_grant(owner, requester)
        .await?
        .is_some_and(|g| g.state == GrantState::Active))
}

/// Whether the account's policy is `invite_only` (then unidentified fetches need its real access key).
pub async fn is_invite_only<S: ContactStore + ?Sized>(store: &S, aci: Aci) -> StoreResult<bool> {
    Ok(store
        .contact_policy(aci)
        .await?
        .is_some_and(|p| p.mode == PolicyMode::InviteOnly))
}

/// Contact policy, invite, grant and introduction operations.
#[derive(Clone)]
pub struct Contacts {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn SecureRandom>,
    limiters: RateLimiters,
    config: Arc<ContactsConfig>,
}

impl Contacts {
    /// Operations over `store` with `config`.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn SecureRandom>,
        limiters: RateLimiters,
        config: ContactsConfig,
    ) -> Self {
        Contacts {
            store,
            clock,
            rng,
            limiters,
            config: Arc::new(config),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ContactsConfig {
        &self.config
    }

    /// The caller's policy (the default when never set).
    pub async fn policy(&self, caller: Aci) -> Result<ContactPolicy, ContactError> {
        Ok(self.store.contact_policy(caller).await?.unwrap_or_default())
    }

    /// Sets the caller's policy (switching to `open` deletes its contact graph).
    pub async fn set_policy(&self, caller: Aci, policy: ContactPolicy) -> Result<(), ContactError> {
        if self.store.set_contact_policy(caller, policy).await? {
            Ok(())
        } else {
            Err(ContactError::UnknownAccount)
        }
    }

    /// Creates a contact invite; the code is returned here once and never again.
    pub async fn create_invite(
        &self,
        caller: &AuthenticatedDevice,
        request: NewContactInvite,
    ) -> Result<(ContactInvite, ContactCode), ContactError> {
        let max_uses = request.max_uses.unwrap_or(1);
        let max_uses = u32::try_from(max_uses)
            .ok()
            .filter(|m| (1..=self.config.max_uses).contains(m))
            .ok_or_else(|| invalid(format!("maxUses must be 1..={}", self.config.max_uses)))?;
        let lifetime = match request.expires_in_seconds {
            None => self.config.default_expiry,
            Some(s) => u64::try_from(s)
                .ok()
                .map(Duration::from_secs)
                .filter(|d| *d >= Duration::from_secs(1) && *d <= self.config.max_expiry)
                .ok_or_else(|| {
                    invalid(format!(
                        "expiresInSeconds must be 1..={}",
                        self.config.max_expiry.as_secs()
                    ))
                })?,
        };
        let label = request.label.filter(|l| !l.is_empty());
        if let Some(l) = &label
            && (l.chars().count() > MAX_LABEL_CHARS || l.chars().any(char::is_control))
        {
            return Err(invalid(format!(
                "label must be at most {MAX_LABEL_CHARS} characters without control characters"
            )));
        }
        let now = self.clock.now();
        let code = ContactCode::generate(self.rng.as_ref());
        let invite = ContactInvite {
            id: ContactInviteId::random(self.rng.as_ref()),
            owner: caller.account.aci,
            code_hash: code.hash(),
            label,
            max_uses,
            uses: 0,
            created_at: now,
            expires_at: now.plus(lifetime),
            paused_until: None,
            flood: None,
            bucket: None,
        };
        match self
            .store
            .create_contact_invite(&invite, self.config.max_invites_per_account)
            .await?
        {
            CreateInvite::Created => Ok((invite, code)),
            CreateInvite::NotInviteOnly => Err(ContactError::NotInviteOnly),
            CreateInvite::QuotaExceeded => Err(ContactError::QuotaExceeded),
        }
    }

    /// The caller's contact invites.
    pub async fn invites(&self, caller: Aci) -> Result<Vec<ContactInvite>, ContactError> {
        Ok(self.store.contact_invites(caller).await?)
    }

    /// Deletes one of the caller's invites.
    pub async fn delete_invite(
        &self,
        caller: Aci,
        id: ContactInviteId,
    ) -> Result<(), ContactError> {
        if self.store.delete_contact_invite(caller, id).await? {
            Ok(())
        } else {
            Err(ContactError::NotFound)
        }
    }

    /// Gives one of the caller's invites a new code; the old one stops working, grants stay.
    pub async fn rotate_invite(
        &self,
        caller: Aci,
        id: ContactInviteId,
    ) -> Result<(ContactInvite, ContactCode), ContactError> {
        let code = ContactCode::generate(self.rng.as_ref());
        match self
            .store
            .rotate_contact_invite(caller, id, code.hash())
            .await?
        {
            Some(invite) => Ok((invite, code)),
            None => Err(ContactError::NotFound),
        }
    }

    /// Ends a pause of one of the caller's invites.
    pub async fn resume_invite(
        &self,
        caller: Aci,
        id: ContactInviteId,
    ) -> Result<(), ContactError> {
        if self.store.resume_contact_invite(caller, id).await? {
            Ok(())
        } else {
            Err(ContactError::NotFound)
        }
    }

    /// Redeems a contact invite code: returns the owner and the state of the caller's grant.
    pub async fn redeem(&self, caller: Aci, code: &str) -> Result<(Aci, GrantState), ContactError> {
        self.limiters
            .check(Limiter::ContactRedeem, &caller.to_string())
            .await?;
        let Some(code) = ContactCode::parse(code) else {
            return Err(ContactError::InviteInvalid);
        };
        let now = self.clock.now();
        match self
            .store
            .redeem_contact_invite(&code.hash(), caller, now, &self.config.flood)
            .await?
        {
            Redemption::Granted { owner, state } | Redemption::Existing { owner, state } => {
                Ok((owner, state))
            }
            Redemption::Invalid => Err(ContactError::InviteInvalid),
            Redemption::OwnInvite => Err(invalid("cannot redeem your own contact invite")),
            Redemption::Paused => Err(ContactError::InvitePaused),
            Redemption::Tripped(_) => Err(ContactError::FloodTripped),
        }
    }

    /// The caller's grants in quarantine or pending.
    pub async fn requests(
        &self,
        caller: Aci,
        filter: RequestFilter,
    ) -> Result<Vec<Grant>, ContactError> {
        let wanted = |s: GrantState| match filter {
            RequestFilter::Quarantined => s == GrantState::Quarantined,
            RequestFilter::Pending => s == GrantState::Pending,
            RequestFilter::All => matches!(s, GrantState::Quarantined | GrantState::Pending),
        };
        Ok(self
            .store
            .contact_grants(caller)
            .await?
            .into_iter()
            .filter(|g| wanted(g.state))
            .collect())
    }

    /// Applies the caller's bulk decisions atomically (see [`super::plan_decisions`]); every denied grantee's
    /// queued messages to the caller go in the same transaction. Nothing changes on any error.
    pub async fn decide(&self, caller: Aci, decisions: &Decisions) -> Result<(), ContactError> {
        if decisions.approve.len() + decisions.deny.len() > MAX_DECISIONS {
            return Err(invalid(format!(
                "at most {MAX_DECISIONS} decisions at once"
            )));
        }
        if decisions.deny_all_via.len() > MAX_ROUTES {
            return Err(invalid(format!("at most {MAX_ROUTES} routes at once")));
        }
        if decisions.approve.iter().any(|a| decisions.deny.contains(a)) {
            return Err(invalid("an account cannot be both approved and denied"));
        }
        if self
            .store
            .decide_contact_requests(caller, decisions)
            .await?
        {
            Ok(())
        } else {
            Err(ContactError::NotInviteOnly)
        }
    }

    /// Introduces `introducee` to `recipient` on behalf of the caller.
    pub async fn introduce(
        &self,
        caller: Aci,
        introducee: Aci,
        recipient: Aci,
    ) -> Result<IntroductionReceipt, ContactError> {
        if introducee == recipient {
            return Err(invalid("introducee and recipient must differ"));
        }
        if caller == recipient {
            return Err(invalid(
                "cannot introduce someone to yourself; allow them directly",
            ));
        }
        if self.store.account(introducee).await?.is_none()
            || self.store.account(recipient).await?.is_none()
        {
            return Err(ContactError::UnknownAccount);
        }
        let now = self.clock.now();
        match self
            .store
            .introduce(recipient, caller, introducee, now, &self.config.flood)
            .await?
        {
            Introduction::Recorded(_) | Introduction::RecipientOpen => Ok(IntroductionReceipt {
                recipient,
                introducee,
                created_at: now,
            }),
            Introduction::Off => Err(ContactError::IntroductionsOff),
            Introduction::NotGranted => Err(ContactError::NotAllowed),
        }
    }

    /// Every grant the caller gave.
    pub async fn grants(&self, caller: Aci) -> Result<Vec<Grant>, ContactError> {
        Ok(self.store.contact_grants(caller).await?)
    }

    /// Allows (`Active`) or blocks (`Denied`) `grantee` directly.
    pub async fn set_grant(
        &self,
        caller: Aci,
        grantee: Aci,
        state: GrantState,
    ) -> Result<(), ContactError> {
        if !matches!(state, GrantState::Active | GrantState::Denied) {
            return Err(invalid("a direct grant is active or denied"));
        }
        if grantee == caller {
            return Err(invalid("you always have access to your own keys"));
        }
        if self.store.account(grantee).await?.is_none() {
            // Blocking an account that does not exist is already true.
            return if state == GrantState::Denied {
                Ok(())
            } else {
                Err(ContactError::UnknownAccount)
            };
        }
        if self
            .store
            .set_contact_grant(caller, grantee, state, self.clock.now())
            .await?
        {
            Ok(())
        } else {
            Err(ContactError::NotInviteOnly)
        }
    }
}
