//! The store contract of registration: sessions, subject bindings, the atomic registration, pinned JWKS.

use async_trait::async_trait;

use super::{
    RegistrationCommit, RegistrationOutcome, SessionId, Subject, VerificationSession,
    VerifiedIdentity, VerifyOutcome,
};
use crate::ids::Aci;
use crate::store::StoreResult;
use crate::time::Timestamp;

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
