//! Verification sessions, registration commits and the store contract that ties them together.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::account::{AccountSettings, Device};
use crate::ids::{Aci, Pni, Principal};
use crate::invites::{CodeHash, InviteId};
use crate::random::{SecureRandom, random_array};
use crate::store::{InitialKeys, StoreResult};
use crate::time::Timestamp;

/// How long a deleted account's (provider, sub) keeps its ACI for re-registration.
pub const TOMBSTONE_RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// A verification session id: 128 random bits, URL-safe base64 without padding (22 characters).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    /// A fresh id.
    pub fn generate(rng: &dyn SecureRandom) -> Self {
        use base64::Engine as _;
        SessionId(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_array::<16>(rng)))
    }
    /// Accepts only the shape we generate, so junk never reaches the store.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 22
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| SessionId(s.to_owned()))
    }
    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Session ids grant the right to register; keep them out of logs.
        write!(f, "SessionId({}…)", &self.0[..4.min(self.0.len())])
    }
}

/// The (provider, sub) pair an account is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    /// Provider id from the configuration.
    pub provider: String,
    /// The IdP's `sub`.
    pub sub: String,
}

/// What a successful code exchange proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    /// Provider and subject.
    pub subject: Subject,
    /// Keyed hash of the subject: the tombstone key after deletion.
    pub subject_hash: [u8; 32],
    /// The principal derived from the ID token.
    pub principal: Principal,
    /// Whether the principal is opaque.
    pub principal_opaque: bool,
    /// The ID token's `sid`, kept to match sid-only logout tokens.
    pub sid: Option<String>,
}

/// A verification session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationSession {
    /// Id.
    pub id: SessionId,
    /// Provider id.
    pub provider_id: String,
    /// The client's `state`, compared on PATCH.
    pub state: String,
    /// Our nonce, compared with the ID token's.
    pub nonce: String,
    /// The redirect URI used in the PAR (sent again in the token request).
    pub redirect_uri: String,
    /// The PAR `request_uri`.
    pub request_uri: String,
    /// The PAR `expires_in`, seconds.
    pub request_uri_lifetime: u64,
    /// Hash of the invite code given at creation, if any.
    pub invite_code: Option<CodeHash>,
    /// Creation time.
    pub created_at: Timestamp,
    /// After this the session is gone (and any reserved invite use is free again).
    pub expires_at: Timestamp,
    /// Set once the code exchange succeeded.
    pub verified: Option<VerifiedIdentity>,
    /// The invite use this session holds, if it reserved one.
    pub reserved_invite: Option<InviteId>,
}

/// Result of marking a session verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// Verified (and the invite use reserved, when one was asked for).
    Verified,
    /// No live session with that id.
    NotFound,
    /// Verified before.
    AlreadyVerified,
    /// The invite could not be reserved (unknown, revoked, expired, exhausted, owner suspended).
    InviteUnavailable,
}

/// Everything registration writes, applied atomically by [`RegistrationStore::register`].
#[derive(Debug, Clone)]
pub struct RegistrationCommit {
    /// The verified session being consumed.
    pub session_id: SessionId,
    /// ACI for a brand-new subject without a tombstone.
    pub candidate_aci: Aci,
    /// PNI for a new account or a rotated principal.
    pub candidate_pni: Pni,
    /// ACI identity key (33 bytes).
    pub aci_identity_key: Vec<u8>,
    /// PNI identity key (33 bytes).
    pub pni_identity_key: Vec<u8>,
    /// The new primary device (replaces every device on re-registration).
    pub device: Device,
    /// Account-level settings.
    pub settings: AccountSettings,
    /// Signed keys of the new primary.
    pub keys: InitialKeys,
    /// Now.
    pub now: Timestamp,
}

/// Result of a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationOutcome {
    /// An account was created (possibly reusing a tombstoned ACI).
    Created {
        /// The ACI.
        aci: Aci,
        /// The PNI.
        pni: Pni,
    },
    /// The subject's existing account was re-registered.
    Reregistered {
        /// The ACI (kept).
        aci: Aci,
        /// The PNI (rotated when the principal changed).
        pni: Pni,
    },
    /// The session is gone, unverified or already used.
    SessionInvalid,
    /// The principal belongs to another subject's account.
    PrincipalConflict,
    /// The session's reserved invite was revoked, expired or its owner suspended since the reservation; nothing
    /// was written (the reservation is not consumed).
    InviteInvalid,
}

/// Sessions, subjects and the atomic registration.
#[async_trait]
pub trait RegistrationStore: Send + Sync {
    /// Stores a new, unverified session.
    async fn create_session(&self, session: &VerificationSession) -> StoreResult<()>;

    /// The session `id` if it exists and has not expired at `now`.
    async fn session(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> StoreResult<Option<VerificationSession>>;

    /// Marks a live, unverified session verified with `identity` and moves its expiry to `expires_at`. When
    /// `reserve_invite` is set, one use of the session's invite is reserved in the same transaction, and only if
    /// `uses + live reservations < max_uses`, it is unrevoked and unexpired and its owner is not suspended.
    async fn verify_session(
        &self,
        id: &SessionId,
        identity: &VerifiedIdentity,
        reserve_invite: bool,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<VerifyOutcome>;

    /// In one transaction: consumes the live verified session; consumes its reserved invite use (logging the
    /// redemption) unless that invite has been revoked, has expired or its owner is suspended meanwhile
    /// ([`RegistrationOutcome::InviteInvalid`], nothing written); then re-registers the subject's account (same ACI; devices replaced; one-time keys of both
    /// identities wiped; principal updated and PNI rotated when the principal changed) or creates one (reusing the
    /// ACI of a live tombstone of the same subject). Refuses a principal held by another subject's account.
    async fn register(&self, commit: RegistrationCommit) -> StoreResult<RegistrationOutcome>;

    /// The account bound to `subject`.
    async fn account_of_subject(&self, subject: &Subject) -> StoreResult<Option<Aci>>;

    /// The subject `aci` is bound to.
    async fn subject_of(&self, aci: Aci) -> StoreResult<Option<Subject>>;

    /// Accounts whose last verification at `provider` carried this `sid`.
    async fn accounts_with_sid(&self, provider: &str, sid: &str) -> StoreResult<Vec<Aci>>;

    /// Deletes sessions and tombstones expired at `now`; returns how many rows went.
    async fn purge_expired_registrations(&self, now: Timestamp) -> StoreResult<u64>;
}

/// Pinned JWKS per provider and the shared replay cache for logout-token `jti`s.
#[async_trait]
pub trait OidcStateStore: Send + Sync {
    /// The pinned JWKS (JSON) of `provider`.
    async fn pinned_jwks(&self, provider: &str) -> StoreResult<Option<String>>;

    /// Pins `jwks` unless one is pinned already; returns the pinned set (the first writer wins).
    async fn pin_jwks(&self, provider: &str, jwks: &str, now: Timestamp) -> StoreResult<String>;

    /// Replaces the pinned set (operator refresh).
    async fn replace_jwks(&self, provider: &str, jwks: &str, now: Timestamp) -> StoreResult<()>;

    /// Records a token id until `expires_at`; returns false when it was already recorded (a replay).
    async fn record_token_id(
        &self,
        scope: &str,
        token_id: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<bool>;
}
