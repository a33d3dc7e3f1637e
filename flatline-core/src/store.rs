//! The storage contract: the error every store method returns, and [`Store`], every aggregate's trait at once.
//! Each aggregate's trait lives in its own module (`account/store.rs`, `keys/store.rs`, …) and is re-exported here.
//!
//! Contracts every backend honours (the conformance suite in `flatline-testkit` checks them):
//! - lookups return `Ok(None)` for "not found"; errors are for failures;
//! - every method is atomic: a rule that must hold under concurrency (a one-time key handed out once, an invite's
//!   last use, a username's single owner) is enforced inside one method, never by read-modify-write in a caller;
//! - time is passed in; no backend reads the clock.

use std::fmt;

// Every aggregate's trait (and the types of the first aggregates' contracts), nameable from here as well.
pub use crate::account::{AccountStore, AuthAccount, DeviceGeneration, NewAccount};
pub use crate::contacts::ContactStore;
pub use crate::devices::DeviceStore;
pub use crate::invites::InviteStore;
pub use crate::keys::{InitialKeys, KeyStore};
pub use crate::messages::store::MessageStore;
pub use crate::profiles::store::ProfileStore;
pub use crate::ratelimit::RateLimitStore;
pub use crate::registration::{OidcStateStore, RegistrationStore};
pub use crate::server_state::{FingerprintRecord, ServerStateStore};
pub use crate::shortcodes::ShortcodeStore;
pub use crate::usernames::UsernameStore;

/// A storage failure. Rule violations are not errors: they come back as typed outcomes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule would be broken (which one is named).
    #[error("conflict: {0}")]
    Conflict(Conflict),
    /// The backend failed (I/O, pool exhausted, corrupt row …).
    #[error("storage backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Wraps any backend error.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Backend(Box::new(e))
    }
    /// A backend error from a message (corrupt data and the like).
    pub fn corrupt(msg: impl Into<String>) -> Self {
        StoreError::Backend(msg.into().into())
    }
}

/// Which uniqueness rule a write would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// The ACI is taken.
    Aci,
    /// The PNI is taken.
    Pni,
    /// The principal belongs to another account.
    Principal,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Conflict::Aci => "aci",
            Conflict::Pni => "pni",
            Conflict::Principal => "principal",
        })
    }
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// Every aggregate's store: what a server instance is built on.
pub trait Store:
    AccountStore
    + KeyStore
    + RateLimitStore
    + RegistrationStore
    + OidcStateStore
    + InviteStore
    + UsernameStore
    + ContactStore
    + ShortcodeStore
    + ServerStateStore
    + ProfileStore
    + MessageStore
    + DeviceStore
{
}

impl<T> Store for T where
    T: AccountStore
        + KeyStore
        + RateLimitStore
        + RegistrationStore
        + OidcStateStore
        + InviteStore
        + UsernameStore
        + ContactStore
        + ShortcodeStore
        + ServerStateStore
        + ProfileStore
        + MessageStore
        + DeviceStore
{
}
