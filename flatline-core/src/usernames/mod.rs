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
//!
//! Layout: the model and the pure rule engine ([`UsernameView`]) here, the store trait in `store.rs`, the
//! [`Usernames`] service in `service.rs`.

mod service;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use uuid::Uuid;

use crate::ids::Aci;
use crate::time::Timestamp;

pub use service::{ConfirmedUsername, Usernames, UsernamesError};
pub use store::{ConfirmOutcome, LinkOutcome, ReserveOutcome, UsernameStore};

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

#[cfg(test)]
mod tests;
