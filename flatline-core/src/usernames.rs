//! Usernames exactly as Signal has them: reservation, confirmation against a zero-knowledge proof, holds, lookup
//! by hash, username links; and principal discovery.
//!
//! The server never sees a username, only its 32-byte Ristretto hash. "One owner per hash" is a storage rule: every
//! backend enforces it inside one atomic [`UsernameStore`] method, so concurrent requests from several processes
//! cannot both own a hash.
//!
//! The model (Signal's `Accounts_Usernames` table): every hash has at most one *claim*, owned by one ACI, which is
//! either the owner's confirmed username (no expiry), its current reservation (5 minutes), a hold on a username it
//! gave up (7 days, at most 3 per account), or a username kept for reclaim after re-registration (3 days). A claim
//! whose expiry has passed is free for anyone. An account also points at its current reservation; confirming
//! anything else is "no reservation" (409), and confirming a reservation someone else took over after it expired is
//! "taken" (410).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::auth::AuthenticatedDevice;
use crate::crypto::{USERNAME_HASH_LEN, USERNAME_PROOF_LEN, verify_username_proof};
use crate::ids::{Aci, Principal};
use crate::random::{SecureRandom, random_array};
use crate::ratelimit::{LimitError, Limiter, RateLimited, RateLimiters};
use crate::store::{Store, StoreError, StoreResult};
use crate::time::{Clock, Timestamp};

/// How long a reservation lasts (`AccountsManager.USERNAME_HASH_RESERVATION_TTL_MINUTES`).
pub const RESERVATION_TTL: Duration = Duration::from_secs(5 * 60);
/// How long a given-up username stays held for its former owner.
pub const HOLD_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// At most this many holds per account; adding one more releases the oldest.
pub const MAX_HOLDS: usize = 3;
/// How long a re-registered account's old username stays reserved for it.
pub const RECLAIM_TTL: Duration = Duration::from_secs(3 * 24 * 3600);
/// Most hashes in one reservation request.
pub const MAX_RESERVE_HASHES: usize = 20;
/// Largest encrypted username (link blob), in bytes (`EncryptedUsername.MAX_SIZE`).
pub const MAX_ENCRYPTED_USERNAME_LEN: usize = 128;

/// What a claim on a hash currently is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    /// The owner's confirmed username; never expires.
    Confirmed,
    /// A reservation awaiting confirmation.
    Reserved,
    /// A username the owner gave up, held for it.
    Held,
    /// A re-registered account's old username, awaiting reclaim (confirming it keeps the link handle).
    Reclaimable,
}

impl ClaimKind {
    /// Stable name (used as the SQL column value).
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimKind::Confirmed => "confirmed",
            ClaimKind::Reserved => "reserved",
            ClaimKind::Held => "held",
            ClaimKind::Reclaimable => "reclaimable",
        }
    }

    /// Parses [`ClaimKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [
            ClaimKind::Confirmed,
            ClaimKind::Reserved,
            ClaimKind::Held,
            ClaimKind::Reclaimable,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// The claim on one hash (diagnostics and tests; the rules live in the store methods).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsernameClaim {
    /// The 32-byte hash.
    pub hash: Vec<u8>,
    /// Who claims it.
    pub owner: Aci,
    /// What the claim is.
    pub kind: ClaimKind,
    /// When it lapses (`None` for confirmed usernames). A claim is expired when `expires_at < now`.
    pub expires_at: Option<Timestamp>,
}

impl UsernameClaim {
    /// Whether the claim has lapsed at `now` (Signal's `ttl < now`).
    pub fn expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|e| e < now)
    }
}

/// A hold on a given-up username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsernameHold {
    /// The held hash.
    pub hash: Vec<u8>,
    /// When the hold lapses.
    pub expires_at: Timestamp,
}

/// The username-related state of one account beyond what [`crate::account::Account`] carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountUsernameState {
    /// The hash the account last reserved (cleared by confirmation).
    pub reserved: Option<Vec<u8>>,
    /// Its holds, oldest first.
    pub holds: Vec<UsernameHold>,
    /// The encrypted username behind its link handle.
    pub link_blob: Option<Vec<u8>>,
}

/// Result of [`UsernameStore::reserve_username_hash`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// This hash is now reserved for the account (new, extended, or taken over from an expired claim).
    Reserved(Vec<u8>),
    /// One of the hashes is already the account's confirmed username; nothing changed.
    AlreadyConfirmed(Vec<u8>),
    /// Every hash is claimed by another account (confirmed, reserved, held or awaiting reclaim).
    Unavailable,
    /// No such account.
    NoAccount,
}

/// Result of [`UsernameStore::confirm_username_hash`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmOutcome {
    /// The hash is now the account's username, with this link handle (`None`: no link).
    Confirmed {
        /// The confirmed hash.
        hash: Vec<u8>,
        /// The link handle after confirmation.
        link_handle: Option<Uuid>,
    },
    /// The hash already was the account's username (a retry); nothing changed.
    AlreadyConfirmed {
        /// The confirmed hash.
        hash: Vec<u8>,
        /// The unchanged link handle.
        link_handle: Option<Uuid>,
    },
    /// The account's current reservation is not this hash (409).
    NoReservation,
    /// The reservation lapsed and another account claimed the hash (410). The stale reservation is dropped.
    Taken,
    /// No such account.
    NoAccount,
}

/// Result of [`UsernameStore::set_username_link`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkOutcome {
    /// The link now has this handle.
    Set(Uuid),
    /// The account has no confirmed username (409).
    NoUsername,
    /// No such account.
    NoAccount,
}

/// Username storage. Every method is atomic; "one owner per hash" holds under any concurrency.
#[async_trait]
pub trait UsernameStore: Send + Sync {
    /// Reserves the first available of `hashes` for `aci` until `now + RESERVATION_TTL`.
    ///
    /// If any of `hashes` is the account's confirmed username, answers [`ReserveOutcome::AlreadyConfirmed`] and
    /// changes nothing. Otherwise a hash is available when it is unclaimed, its claim expired, or the claim is the
    /// account's own unconfirmed one (reservation, hold, reclaim); an own claim keeps the later of its expiry and
    /// the new one. The account's previous reservation of another hash is released (a hold underneath reverts to
    /// a hold). Holds and reclaims of other accounts are not available.
    async fn reserve_username_hash(
        &self,
        aci: Aci,
        hashes: &[Vec<u8>],
        now: Timestamp,
    ) -> StoreResult<ReserveOutcome>;

    /// Confirms `hash` as the account's username.
    ///
    /// Already its username → [`ConfirmOutcome::AlreadyConfirmed`], unchanged. The account's reservation is not
    /// `hash` → [`ConfirmOutcome::NoReservation`]. Another account holds an unexpired claim on it →
    /// [`ConfirmOutcome::Taken`] (the stale reservation is dropped). Otherwise the claim becomes confirmed, the old
    /// username (if any) becomes a hold (`now + HOLD_TTL`; beyond [`MAX_HOLDS`] the oldest is released), and the
    /// link is set: without `encrypted_username` it is cleared; with it, the handle is `new_link_handle`, except
    /// that confirming a reclaimable hash keeps the account's existing handle.
    async fn confirm_username_hash(
        &self,
        aci: Aci,
        hash: &[u8],
        encrypted_username: Option<&[u8]>,
        new_link_handle: Uuid,
        now: Timestamp,
    ) -> StoreResult<ConfirmOutcome>;

    /// Clears the account's username and link; the old hash becomes a hold as in confirmation. Returns false (and
    /// changes nothing) when the account has no username or does not exist.
    async fn clear_username_hash(&self, aci: Aci, now: Timestamp) -> StoreResult<bool>;

    /// The owner of the *confirmed* username `hash` (reservations and holds are not found).
    async fn account_by_username_hash(&self, hash: &[u8]) -> StoreResult<Option<Aci>>;

    /// Sets the encrypted username behind the account's link. The handle is kept when `keep_handle` and one
    /// exists, else it becomes `new_handle`. Needs a confirmed username.
    async fn set_username_link(
        &self,
        aci: Aci,
        encrypted_username: &[u8],
        keep_handle: bool,
        new_handle: Uuid,
    ) -> StoreResult<LinkOutcome>;

    /// Removes the account's link (handle and blob). Returns false when the account does not exist.
    async fn clear_username_link(&self, aci: Aci) -> StoreResult<bool>;

    /// The encrypted username behind a link handle, if the handle exists and has one.
    async fn username_link(&self, handle: Uuid) -> StoreResult<Option<Vec<u8>>>;

    /// Re-registration hook: turns the account's confirmed username into a reclaimable reservation until
    /// `now + RECLAIM_TTL` (the account's reservation pointer is set to it), clears the username and the link blob
    /// and keeps the link handle, so that confirming the same hash restores the old link handle. Returns false
    /// (nothing changed) when the account has no username or does not exist.
    async fn hold_username_for_reclaim(&self, aci: Aci, now: Timestamp) -> StoreResult<bool>;

    /// The claim on `hash`, expired or not (diagnostics and tests).
    async fn username_claim(&self, hash: &[u8]) -> StoreResult<Option<UsernameClaim>>;

    /// Every claim owned by `aci`, expired or not, in hash order (diagnostics and tests).
    async fn username_claims_of(&self, aci: Aci) -> StoreResult<Vec<UsernameClaim>>;

    /// The account's reservation pointer, holds and link blob; `None` when the account does not exist.
    async fn account_username_state(&self, aci: Aci) -> StoreResult<Option<AccountUsernameState>>;
}

/// The hold bookkeeping shared by every backend (Signal's `addToHolds`): drops lapsed holds, a hold on the same
/// hash (it moves to the end) and a hold on the new current username; appends the new hold; returns the new list
/// and, when over [`MAX_HOLDS`], the oldest hold to release.
pub fn add_hold(
    holds: &[UsernameHold],
    new_hold: &[u8],
    current_username: Option<&[u8]>,
    now: Timestamp,
) -> (Vec<UsernameHold>, Option<Vec<u8>>) {
    let mut kept: Vec<UsernameHold> = holds
        .iter()
        .filter(|h| {
            h.expires_at >= now && h.hash != new_hold && Some(h.hash.as_slice()) != current_username
        })
        .cloned()
        .collect();
    kept.push(UsernameHold {
        hash: new_hold.to_vec(),
        expires_at: now.plus(HOLD_TTL),
    });
    if kept.len() > MAX_HOLDS {
        let released = kept.remove(0);
        (kept, Some(released.hash))
    } else {
        (kept, None)
    }
}

/// Everything one username operation reads and writes for one account, so that every backend runs the *same*
/// rules: a backend loads the view inside its transaction (the account's username fields, its holds, and the
/// claims it needs: every claim the account owns plus those on the hashes the request names), calls one operation, and writes back the account fields, the holds and [`UsernameView::claim_writes`]
/// before committing.
#[derive(Debug, Clone)]
pub struct UsernameView {
    /// The account.
    pub aci: Aci,
    /// Its confirmed username.
    pub username_hash: Option<Vec<u8>>,
    /// Its link handle.
    pub link_handle: Option<Uuid>,
    /// Reservation pointer, holds and link blob.
    pub state: AccountUsernameState,
    claims: BTreeMap<Vec<u8>, UsernameClaim>,
    dirty: BTreeSet<Vec<u8>>,
}

impl UsernameView {
    /// A view over loaded data. `claims` must hold every claim owned by `aci` and every claim on the hashes the
    /// operation names (absent = unclaimed).
    pub fn new(
        aci: Aci,
        username_hash: Option<Vec<u8>>,
        link_handle: Option<Uuid>,
        state: AccountUsernameState,
        claims: impl IntoIterator<Item = UsernameClaim>,
    ) -> Self {
        UsernameView {
            aci,
            username_hash,
            link_handle,
            state,
            claims: claims.into_iter().map(|c| (c.hash.clone(), c)).collect(),
            dirty: BTreeSet::new(),
        }
    }

    /// Claims to write back: `Some` = insert or replace, `None` = delete.
    pub fn claim_writes(&self) -> Vec<(Vec<u8>, Option<UsernameClaim>)> {
        self.dirty
            .iter()
            .map(|h| (h.clone(), self.claims.get(h).cloned()))
            .collect()
    }

    fn put(&mut self, hash: &[u8], kind: ClaimKind, expires_at: Option<Timestamp>) {
        self.claims.insert(
            hash.to_vec(),
            UsernameClaim {
                hash: hash.to_vec(),
                owner: self.aci,
                kind,
                expires_at,
            },
        );
        self.dirty.insert(hash.to_vec());
    }

    fn remove(&mut self, hash: &[u8]) {
        if self.claims.remove(hash).is_some() {
            self.dirty.insert(hash.to_vec());
        }
    }

    fn owned(&self, hash: &[u8], kind: ClaimKind) -> bool {
        self.claims
            .get(hash)
            .is_some_and(|c| c.owner == self.aci && c.kind == kind)
    }

    /// Whether the account may take `hash`: unclaimed, lapsed, or its own unconfirmed claim.
    fn available(&self, hash: &[u8], now: Timestamp) -> bool {
        match self.claims.get(hash) {
            None => true,
            Some(c) => c.expired(now) || (c.owner == self.aci && c.kind != ClaimKind::Confirmed),
        }
    }

    /// Turns `old` (the username just given up) into a hold, capping the holds and cleaning up lapsed or released
    /// hold claims of this account.
    fn hold(&mut self, old: &[u8], now: Timestamp) {
        let (holds, released) =
            add_hold(&self.state.holds, old, self.username_hash.as_deref(), now);
        let mut gone: Vec<Vec<u8>> = self
            .state
            .holds
            .iter()
            .map(|h| h.hash.clone())
            .filter(|h| !holds.iter().any(|k| &k.hash == h))
            .collect();
        gone.extend(released);
        for h in gone {
            // Only a pure hold is released: a hold the account re-reserved is its reservation now.
            if self.owned(&h, ClaimKind::Held) {
                self.remove(&h);
            }
        }
        self.put(old, ClaimKind::Held, Some(now.plus(HOLD_TTL)));
        self.state.holds = holds;
    }

    /// See [`UsernameStore::reserve_username_hash`].
    pub fn reserve(&mut self, hashes: &[Vec<u8>], now: Timestamp) -> ReserveOutcome {
        if let Some(current) = &self.username_hash
            && hashes.contains(current)
        {
            return ReserveOutcome::AlreadyConfirmed(current.clone());
        }
        let Some(hash) = hashes.iter().find(|h| self.available(h, now)).cloned() else {
            return ReserveOutcome::Unavailable;
        };
        let mut expires_at = now.plus(RESERVATION_TTL);
        if let Some(c) = self.claims.get(&hash)
            && c.owner == self.aci
            && let Some(e) = c.expires_at
        {
            // Never shorten the account's own hold or reclaim by reserving it.
            expires_at = expires_at.max(e);
        }
        if let Some(previous) = self.state.reserved.clone()
            && previous != hash
            && self.owned(&previous, ClaimKind::Reserved)
        {
            match self.state.holds.iter().find(|h| h.hash == previous) {
                Some(hold) if hold.expires_at >= now => {
                    let until = hold.expires_at;
                    self.put(&previous, ClaimKind::Held, Some(until));
                }
                _ => self.remove(&previous),
            }
        }
        self.put(&hash, ClaimKind::Reserved, Some(expires_at));
        self.state.reserved = Some(hash.clone());
        ReserveOutcome::Reserved(hash)
    }

    /// See [`UsernameStore::confirm_username_hash`].
    pub fn confirm(
        &mut self,
        hash: &[u8],
        encrypted_username: Option<&[u8]>,
        new_link_handle: Uuid,
        now: Timestamp,
    ) -> ConfirmOutcome {
        if self.username_hash.as_deref() == Some(hash) {
            return ConfirmOutcome::AlreadyConfirmed {
                hash: hash.to_vec(),
                link_handle: self.link_handle,
            };
        }
        if self.state.reserved.as_deref() != Some(hash) {
            return ConfirmOutcome::NoReservation;
        }
        if !self.available(hash, now) {
            self.state.reserved = None;
            return ConfirmOutcome::Taken;
        }
        let reclaim = self.owned(hash, ClaimKind::Reclaimable);
        let (link_handle, blob) = match encrypted_username {
            None => (None, None),
            Some(b) => (
                match self.link_handle {
                    Some(old) if reclaim => Some(old),
                    _ => Some(new_link_handle),
                },
                Some(b.to_vec()),
            ),
        };
        self.put(hash, ClaimKind::Confirmed, None);
        let old = self.username_hash.replace(hash.to_vec());
        if let Some(old) = old {
            self.hold(&old, now);
        }
        // A hold on the new username is moot now.
        self.state.holds.retain(|h| h.hash != hash);
        self.state.reserved = None;
        self.link_handle = link_handle;
        self.state.link_blob = blob;
        ConfirmOutcome::Confirmed {
            hash: hash.to_vec(),
            link_handle,
        }
    }

    /// See [`UsernameStore::clear_username_hash`].
    pub fn clear(&mut self, now: Timestamp) -> bool {
        let Some(old) = self.username_hash.take() else {
            return false;
        };
        self.hold(&old, now);
        self.link_handle = None;
        self.state.link_blob = None;
        true
    }

    /// See [`UsernameStore::set_username_link`].
    pub fn set_link(&mut self, blob: &[u8], keep_handle: bool, new_handle: Uuid) -> LinkOutcome {
        if self.username_hash.is_none() {
            return LinkOutcome::NoUsername;
        }
        let handle = match self.link_handle {
            Some(h) if keep_handle => h,
            _ => new_handle,
        };
        self.link_handle = Some(handle);
        self.state.link_blob = Some(blob.to_vec());
        LinkOutcome::Set(handle)
    }

    /// See [`UsernameStore::clear_username_link`].
    pub fn clear_link(&mut self) {
        self.link_handle = None;
        self.state.link_blob = None;
    }

    /// See [`UsernameStore::hold_username_for_reclaim`].
    pub fn hold_for_reclaim(&mut self, now: Timestamp) -> bool {
        let Some(hash) = self.username_hash.take() else {
            return false;
        };
        self.put(&hash, ClaimKind::Reclaimable, Some(now.plus(RECLAIM_TTL)));
        self.state.reserved = Some(hash);
        self.state.link_blob = None;
        true
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(b: u8, at: i64) -> UsernameHold {
        UsernameHold {
            hash: vec![b],
            expires_at: Timestamp(at),
        }
    }

    #[test]
    fn holds_are_capped_oldest_first_and_pruned() {
        let now = Timestamp(1_000);
        let ttl = i64::try_from(HOLD_TTL.as_millis()).unwrap();
        // Three live holds: adding a fourth releases the oldest.
        let (holds, released) = add_hold(
            &[hold(1, 2_000), hold(2, 3_000), hold(3, 4_000)],
            &[4],
            None,
            now,
        );
        assert_eq!(released, Some(vec![1]));
        assert_eq!(
            holds,
            vec![hold(2, 3_000), hold(3, 4_000), hold(4, 1_000 + ttl)]
        );
        // A lapsed hold is pruned instead; a repeated hash moves to the end; the current username is never held.
        let (holds, released) = add_hold(
            &[hold(1, 999), hold(2, 3_000), hold(3, 4_000)],
            &[2],
            Some(&[3]),
            now,
        );
        assert_eq!(released, None);
        assert_eq!(holds, vec![hold(2, 1_000 + ttl)]);
    }

    #[test]
    fn claim_kinds_round_trip_and_expiry_is_strict() {
        for k in [
            ClaimKind::Confirmed,
            ClaimKind::Reserved,
            ClaimKind::Held,
            ClaimKind::Reclaimable,
        ] {
            assert_eq!(ClaimKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(ClaimKind::parse("other"), None);
        let claim = UsernameClaim {
            hash: vec![0; 32],
            owner: Aci(Uuid::nil()),
            kind: ClaimKind::Reserved,
            expires_at: Some(Timestamp(10)),
        };
        assert!(!claim.expired(Timestamp(10)));
        assert!(claim.expired(Timestamp(11)));
    }
}
