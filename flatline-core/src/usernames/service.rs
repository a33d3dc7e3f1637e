//! The [`Usernames`] service: validation, rate limits, and the store's atomic methods.

use std::sync::Arc;

use uuid::Uuid;

use crate::auth::AuthenticatedDevice;
use crate::crypto::{USERNAME_HASH_LEN, USERNAME_PROOF_LEN, verify_username_proof};
use crate::ids::{Aci, Principal};
use crate::random::{SecureRandom, random_array};
use crate::ratelimit::{LimitError, Limiter, RateLimited, RateLimiters};
use crate::store::{Store, StoreError};
use crate::time::Clock;

use super::{
    ConfirmOutcome, LinkOutcome, MAX_ENCRYPTED_USERNAME_LEN, MAX_RESERVE_HASHES, ReserveOutcome,
};

/// Why a username operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum UsernamesError {
    /// Sizes, counts or encodings are wrong (422).
    #[error("{0}")]
    Invalid(&'static str),
    /// The zero-knowledge proof does not prove the hash (422).
    #[error("failed to verify proof")]
    BadProof,
    /// None of the hashes could be reserved (409).
    #[error("username hash not available")]
    Unavailable,
    /// No matching reservation (409).
    #[error("no matching username reservation")]
    NoReservation,
    /// The reservation lapsed and someone else took the hash (410).
    #[error("username hash taken")]
    Taken,
    /// A link needs a confirmed username (409).
    #[error("no username set")]
    NoUsername,
    /// Nothing found (404).
    #[error("not found")]
    NotFound,
    /// The caller's account disappeared during the request (401).
    #[error("account no longer exists")]
    Gone,
    /// Rate limited (429).
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LimitError> for UsernamesError {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::Limited(r) => UsernamesError::RateLimited(r),
            LimitError::Store(s) => UsernamesError::Store(s),
        }
    }
}

/// A confirmed username as the confirm endpoint reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmedUsername {
    /// The hash.
    pub hash: Vec<u8>,
    /// The link handle, if a link is set.
    pub link_handle: Option<Uuid>,
}

/// Username operations: validation, rate limits and the order Signal applies them in.
#[derive(Clone)]
pub struct Usernames {
    store: Arc<dyn Store>,
    limiters: RateLimiters,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn SecureRandom>,
}

fn random_uuid(rng: &dyn SecureRandom) -> Uuid {
    uuid::Builder::from_random_bytes(random_array(rng)).into_uuid()
}

fn check_hash(hash: &[u8]) -> Result<(), UsernamesError> {
    if hash.len() == USERNAME_HASH_LEN {
        Ok(())
    } else {
        Err(UsernamesError::Invalid("username hash must be 32 bytes"))
    }
}

fn check_encrypted(blob: &[u8]) -> Result<(), UsernamesError> {
    if (1..=MAX_ENCRYPTED_USERNAME_LEN).contains(&blob.len()) {
        Ok(())
    } else {
        Err(UsernamesError::Invalid(
            "encrypted username must be 1..128 bytes",
        ))
    }
}

impl Usernames {
    /// Operations over `store`.
    pub fn new(
        store: Arc<dyn Store>,
        limiters: RateLimiters,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn SecureRandom>,
    ) -> Self {
        Usernames {
            store,
            limiters,
            clock,
            rng,
        }
    }

    /// Reserves the first available hash. Order as in Signal: list size (bean validation), then the
    /// `usernameReserve` limiter, then each hash's length.
    pub async fn reserve(
        &self,
        caller: &AuthenticatedDevice,
        hashes: &[Vec<u8>],
    ) -> Result<Vec<u8>, UsernamesError> {
        if hashes.is_empty() || hashes.len() > MAX_RESERVE_HASHES {
            return Err(UsernamesError::Invalid(
                "usernameHashes must hold 1..20 hashes",
            ));
        }
        let aci = caller.account.aci;
        self.limiters
            .check(Limiter::UsernameReserve, &aci.to_string())
            .await?;
        for h in hashes {
            check_hash(h)?;
        }
        match self
            .store
            .reserve_username_hash(aci, hashes, self.clock.now())
            .await?
        {
            ReserveOutcome::Reserved(h) | ReserveOutcome::AlreadyConfirmed(h) => Ok(h),
            ReserveOutcome::Unavailable => Err(UsernamesError::Unavailable),
            ReserveOutcome::NoAccount => Err(UsernamesError::Gone),
        }
    }

    /// Confirms a reserved hash. Sizes and the proof are checked (422) before the `usernameSet` limiter.
    pub async fn confirm(
        &self,
        caller: &AuthenticatedDevice,
        hash: &[u8],
        proof: &[u8],
        encrypted_username: Option<&[u8]>,
    ) -> Result<ConfirmedUsername, UsernamesError> {
        check_hash(hash)?;
        if let Some(blob) = encrypted_username {
            check_encrypted(blob)?;
        }
        if proof.len() != USERNAME_PROOF_LEN {
            return Err(UsernamesError::BadProof);
        }
        verify_username_proof(proof, hash).map_err(|_| UsernamesError::BadProof)?;
        let aci = caller.account.aci;
        self.limiters
            .check(Limiter::UsernameSet, &aci.to_string())
            .await?;
        let handle = random_uuid(self.rng.as_ref());
        match self
            .store
            .confirm_username_hash(aci, hash, encrypted_username, handle, self.clock.now())
            .await?
        {
            ConfirmOutcome::Confirmed { hash, link_handle }
            | ConfirmOutcome::AlreadyConfirmed { hash, link_handle } => {
                Ok(ConfirmedUsername { hash, link_handle })
            }
            ConfirmOutcome::NoReservation => Err(UsernamesError::NoReservation),
            ConfirmOutcome::Taken => Err(UsernamesError::Taken),
            ConfirmOutcome::NoAccount => Err(UsernamesError::Gone),
        }
    }

    /// Deletes the caller's username (a no-op without one).
    pub async fn delete(&self, caller: &AuthenticatedDevice) -> Result<(), UsernamesError> {
        self.store
            .clear_username_hash(caller.account.aci, self.clock.now())
            .await?;
        Ok(())
    }

    /// Finds the owner of a confirmed username hash; limited per client IP (`usernameLookup`) before the hash is
    /// checked, as in Signal. `hash` is `None` when it did not decode (422 after the limiter).
    pub async fn lookup(
        &self,
        client_ip: &str,
        hash: Option<&[u8]>,
    ) -> Result<Aci, UsernamesError> {
        self.limiters
            .check(Limiter::UsernameLookup, client_ip)
            .await?;
        let hash = hash.ok_or(UsernamesError::Invalid("bad username hash encoding"))?;
        check_hash(hash)?;
        self.store
            .account_by_username_hash(hash)
            .await?
            .ok_or(UsernamesError::NotFound)
    }

    /// Sets the link blob. Size (422) before the `usernameLinkOperation` limiter, then 409 without a username.
    pub async fn set_link(
        &self,
        caller: &AuthenticatedDevice,
        encrypted_username: &[u8],
        keep_handle: bool,
    ) -> Result<Uuid, UsernamesError> {
        check_encrypted(encrypted_username)?;
        let aci = caller.account.aci;
        self.limiters
            .check(Limiter::UsernameLinkOperation, &aci.to_string())
            .await?;
        let handle = random_uuid(self.rng.as_ref());
        match self
            .store
            .set_username_link(aci, encrypted_username, keep_handle, handle)
            .await?
        {
            LinkOutcome::Set(h) => Ok(h),
            LinkOutcome::NoUsername => Err(UsernamesError::NoUsername),
            LinkOutcome::NoAccount => Err(UsernamesError::Gone),
        }
    }

    /// Removes the link (limited by `usernameLinkOperation`).
    pub async fn delete_link(&self, caller: &AuthenticatedDevice) -> Result<(), UsernamesError> {
        let aci = caller.account.aci;
        self.limiters
            .check(Limiter::UsernameLinkOperation, &aci.to_string())
            .await?;
        self.store.clear_username_link(aci).await?;
        Ok(())
    }

    /// The encrypted username behind a handle; limited per client IP before the handle is checked. `handle` is
    /// `None` when it did not parse (422 after the limiter).
    pub async fn link(
        &self,
        client_ip: &str,
        handle: Option<Uuid>,
    ) -> Result<Vec<u8>, UsernamesError> {
        self.limiters
            .check(Limiter::UsernameLinkLookupPerIp, client_ip)
            .await?;
        let handle = handle.ok_or(UsernamesError::Invalid("bad link handle"))?;
        self.store
            .username_link(handle)
            .await?
            .ok_or(UsernamesError::NotFound)
    }

    /// Principal discovery: the ACI holding exactly `principal`, only when that account opted in and its principal
    /// is not opaque. Anything else — including text that is not a valid principal — is [`UsernamesError::NotFound`],
    /// so the answer reveals nothing about accounts that did not opt in.
    pub async fn discover_principal(
        &self,
        caller: &AuthenticatedDevice,
        principal: &str,
    ) -> Result<Aci, UsernamesError> {
        self.limiters
            .check(Limiter::PrincipalLookup, &caller.account.aci.to_string())
            .await?;
        let Ok(principal) = Principal::parse(principal) else {
            return Err(UsernamesError::NotFound);
        };
        match self.store.account_by_principal(&principal).await? {
            Some(a) if a.settings.discoverable_by_principal && !a.principal_opaque => Ok(a.aci),
            _ => Err(UsernamesError::NotFound),
        }
    }
}
