//! Storage traits, one per aggregate.
//!
//! Contracts every backend honours (the conformance suite in `flatline-testkit` checks them):
//! - lookups return `Ok(None)` for "not found"; errors are for failures;
//! - every method is atomic: a rule that must hold under concurrency (a one-time key handed out once, an invite's
//!   last use, a username's single owner) is enforced inside one method, never by read-modify-write in a caller;
//! - time is passed in; no backend reads the clock.

use std::fmt;

use async_trait::async_trait;

use crate::account::{Account, AccountAttributes};
pub use crate::contacts::ContactStore;
use crate::ids::{Aci, DeviceId, Pni, Principal, ServiceId};
use crate::invites::InviteStore;
use crate::keys::{BundleKeys, EcPreKey, KeyCounts, KeyUpload, SignedPreKey, TakenKeys};
pub use crate::messages::store::MessageStore;
pub use crate::profiles::store::ProfileStore;
use crate::ratelimit::{Admission, BucketConfig};
use crate::registration::{OidcStateStore, RegistrationStore};
use crate::sealed::ServerCertificateRecord;
pub use crate::shortcodes::ShortcodeStore;
use crate::time::Timestamp;
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

/// Signed keys written together with a new account or device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialKeys {
    /// ACI signed EC prekey.
    pub aci_signed: SignedPreKey,
    /// PNI signed EC prekey.
    pub pni_signed: SignedPreKey,
    /// ACI last-resort Kyber key.
    pub aci_last_resort: SignedPreKey,
    /// PNI last-resort Kyber key.
    pub pni_last_resort: SignedPreKey,
}

/// Everything a new account consists of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    /// The account (with exactly one device, the primary).
    pub account: Account,
    /// Its initial signed keys, stored in the same transaction.
    pub keys: InitialKeys,
}

/// Accounts and their devices.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates an account, its primary device and initial signed keys in one transaction.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the ACI, PNI or principal is already in use; nothing is written then.
    async fn create_account(&self, new: NewAccount) -> StoreResult<()>;

    /// The account with this ACI.
    async fn account(&self, aci: Aci) -> StoreResult<Option<Account>>;

    /// The account with this ACI, for accepting a device's credentials. A backend may answer from a cache: it
    /// always reflects what was committed through this store value, and what another process committed once that
    /// process's change has been notified (a bound the backend documents). `None` is never cached. Only an
    /// acceptance may rest on a cached answer: a caller confirms a refusal with [`AccountStore::account`].
    async fn account_for_auth(&self, aci: Aci) -> StoreResult<Option<AuthAccount>> {
        Ok(self.account(aci).await?.map(|account| AuthAccount {
            account,
            cached: false,
        }))
    }

    /// The accounts of `ids` (ACIs, or current PNIs), in their order, `None` where there is none. The default
    /// loads them one by one; a backend where every load is a round trip loads them at once.
    async fn accounts_of(&self, ids: &[ServiceId]) -> StoreResult<Vec<Option<Account>>> {
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            found.push(match *id {
                ServiceId::Aci(aci) => self.account(aci).await?,
                ServiceId::Pni(pni) => self.account_by_pni(pni).await?,
            });
        }
        Ok(found)
    }

    /// The account whose current PNI is `pni`.
    async fn account_by_pni(&self, pni: Pni) -> StoreResult<Option<Account>>;

    /// The account holding `principal`.
    async fn account_by_principal(&self, principal: &Principal) -> StoreResult<Option<Account>>;

    /// Applies attributes: the device-level part to the device, the account-level part to the account.
    /// Returns false (writing nothing) when that generation of the device does not exist.
    async fn update_attributes(
        &self,
        writer: &DeviceGeneration,
        attributes: &AccountAttributes,
    ) -> StoreResult<bool>;

    /// Records a device's last use (callers round it to a day so this writes at most daily).
    async fn touch_device(
        &self,
        aci: Aci,
        device: DeviceId,
        last_seen: Timestamp,
    ) -> StoreResult<()>;

    /// Replaces every device credential of the account with its locked form; returns false when absent.
    async fn lock_credentials(&self, aci: Aci) -> StoreResult<bool>;

    /// Deletes the account, its devices and every key under its ACI and PNI; revokes the invites it owns; releases
    /// every username claim, hold and link; removes its contact policy, contact invites, contact shortcodes
    /// and every contact grant it gave or holds; removes its message queues and the spam reports it filed; removes
    /// its versioned profiles; and
    /// turns its (provider, sub) binding into a tombstone kept for
    /// [`TOMBSTONE_RETENTION`](crate::registration::TOMBSTONE_RETENTION) from `now` (so the same subject
    /// re-registering in that time gets the same ACI). Returns false when absent.
    async fn delete_account(&self, aci: Aci, now: Timestamp) -> StoreResult<bool>;
}

/// A device as a request authenticated it. Writes made on its behalf apply only while that same device exists: the
/// credential salt is drawn afresh for every device (registration, re-registration, each link), so a request
/// authenticated just before its device was removed, relinked under the same id or replaced by a re-registration
/// writes nothing (security review F-10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceGeneration {
    /// The account.
    pub aci: Aci,
    /// The device id.
    pub device: DeviceId,
    /// The device's credential salt when it authenticated.
    pub credential_salt: String,
}

impl DeviceGeneration {
    /// The generation of `device` of `account`, if it has that device.
    pub fn of(account: &crate::account::Account, device: DeviceId) -> Option<Self> {
        account.device(device).map(|d| DeviceGeneration {
            aci: account.aci,
            device,
            credential_salt: d.credential.salt.clone(),
        })
    }
}

/// An account as [`AccountStore::account_for_auth`] found it.
#[derive(Debug, Clone)]
pub struct AuthAccount {
    /// The account.
    pub account: Account,
    /// Whether it came from a cache rather than from the store just now.
    pub cached: bool,
}

/// Prekeys, partitioned by identity (an ACI or a PNI) and device.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Applies an upload in one transaction: a present (non-empty) one-time list replaces the stored list, an absent
    /// one keeps it; a present signed or last-resort key overwrites the stored one.
    async fn store_keys(
        &self,
        owner: ServiceId,
        device: DeviceId,
        upload: &KeyUpload,
    ) -> StoreResult<()>;

    /// [`KeyStore::store_keys`] for `owner` (the writer's ACI or PNI) and the writer's device, applied only while
    /// that generation of the device exists (checked in the same transaction); false, writing nothing, otherwise.
    async fn store_keys_as(
        &self,
        writer: &DeviceGeneration,
        owner: ServiceId,
        upload: &KeyUpload,
    ) -> StoreResult<bool>;

    /// Atomically removes and returns the lowest-id one-time EC key and the lowest-id one-time Kyber key, if any.
    /// Concurrent callers never receive the same key.
    async fn take_one_time_keys(
        &self,
        owner: ServiceId,
        device: DeviceId,
    ) -> StoreResult<TakenKeys>;

    /// The signed EC prekey of `device`, if stored.
    async fn signed_pre_key(
        &self,
        owner: ServiceId,
        device: DeviceId,
    ) -> StoreResult<Option<SignedPreKey>>;

    /// The last-resort Kyber key of `device`, if stored. Never consumed.
    async fn last_resort_key(
        &self,
        owner: ServiceId,
        device: DeviceId,
    ) -> StoreResult<Option<SignedPreKey>>;

    /// One device's part of a prekey bundle, taken at once: `None` when the device has no signed prekey (then
    /// nothing is taken); otherwise the signed prekey, the one-time keys [`KeyStore::take_one_time_keys`] takes,
    /// and the last-resort Kyber key in place of a one-time one when none was left. The default composes those
    /// calls; a backend where each call is a round trip does it in one.
    async fn take_bundle_keys(
        &self,
        owner: ServiceId,
        device: DeviceId,
    ) -> StoreResult<Option<BundleKeys>> {
        let Some(signed) = self.signed_pre_key(owner, device).await? else {
            return Ok(None);
        };
        let taken = self.take_one_time_keys(owner, device).await?;
        let kem = match taken.kem {
            Some(kem) => Some(kem),
            None => self.last_resort_key(owner, device).await?,
        };
        Ok(Some(BundleKeys {
            signed,
            one_time: taken.ec,
            kem,
        }))
    }

    /// How many one-time keys remain.
    async fn key_counts(&self, owner: ServiceId, device: DeviceId) -> StoreResult<KeyCounts>;

    /// All one-time EC keys of `device`, lowest id first (for tests and diagnostics).
    async fn one_time_ec_keys(
        &self,
        owner: ServiceId,
        device: DeviceId,
    ) -> StoreResult<Vec<EcPreKey>>;
}

/// Shared leaky-bucket state.
#[async_trait]
pub trait RateLimitStore: Send + Sync {
    /// Atomically refills the bucket `key` per `config` and takes `amount` permits if available
    /// exactly as [`crate::ratelimit::apply`] does (a backend may do the arithmetic in its own language; the
    /// conformance suite checks it against `apply` over long random sequences).
    async fn acquire(
        &self,
        key: &str,
        config: &BucketConfig,
        amount: u32,
        now: Timestamp,
    ) -> StoreResult<Admission>;

    /// The stored state of bucket `key`, if any (absent = full). A read only: nothing is refilled or taken.
    async fn peek(&self, key: &str) -> StoreResult<Option<crate::ratelimit::BucketState>>;

    /// Forgets buckets that are full again at `now` (housekeeping); returns how many were removed.
    async fn purge_full_buckets(&self, now: Timestamp) -> StoreResult<u64>;
}

/// What [`ServerStateStore::record_key_fingerprint`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FingerprintRecord {
    /// Nothing was recorded under the name; the given fingerprint now is.
    Recorded,
    /// A fingerprint was already recorded (it may or may not equal the given one); nothing was written.
    Existing(String),
}

/// Instance-wide state every server process must agree on: the fingerprints of the keys it was started with, and
/// the manifest version counter (API.md §7, §8).
#[async_trait]
pub trait ServerStateStore: Send + Sync {
    /// Records `fingerprint` under `name` if nothing is recorded there yet, else returns the recorded one.
    /// Atomic: of concurrent first callers exactly one gets [`FingerprintRecord::Recorded`]; the others see its
    /// fingerprint. A recorded fingerprint is never replaced by this method.
    async fn record_key_fingerprint(
        &self,
        name: &str,
        fingerprint: &str,
        now: Timestamp,
    ) -> StoreResult<FingerprintRecord>;

    /// The fingerprint recorded under `name`, if any (read-only).
    async fn key_fingerprint(&self, name: &str) -> StoreResult<Option<String>>;

    /// Every recorded `(name, fingerprint)`, sorted by name (read-only).
    async fn key_fingerprints(&self) -> StoreResult<Vec<(String, String)>>;

    /// Removes the fingerprint recorded under `name` (an operator rotating a key or secret on purpose); returns
    /// whether one was recorded. The next start records the new one.
    async fn forget_key_fingerprint(&self, name: &str) -> StoreResult<bool>;

    /// The manifest version for content with hash `content_hash`, bumping the counter iff the hash differs from the
    /// last recorded one; records the hash. The first call ever returns 1. Atomic: concurrent calls with distinct
    /// hashes get distinct, increasing versions; the counter never decreases and a version is never handed out
    /// for two contents (going back to older content bumps it again).
    async fn advance_manifest(&self, content_hash: &[u8; 32], now: Timestamp) -> StoreResult<u64>;

    /// The current manifest version and content hash, if any manifest was recorded (read-only).
    async fn manifest_state(&self) -> StoreResult<Option<(u64, [u8; 32])>>;

    /// Every stored sealed-sender server certificate: the current one (if any) first, then the retired ones,
    /// most recently retired first (read-only).
    async fn server_certificates(&self) -> StoreResult<Vec<ServerCertificateRecord>>;

    /// Stores `record` (whose `retired_at` is ignored: it becomes the current certificate). With `replace_current`
    /// false it is stored only while no certificate is current (the first issue: of concurrent first callers
    /// exactly one succeeds); with true the current one, if any, is retired at `record.created_at` in the same
    /// transaction (a rotation: of concurrent rotations at most one succeeds per current certificate). Returns
    /// whether it was stored; nothing is written when the id is taken or the condition does not hold.
    async fn add_server_certificate(
        &self,
        record: &ServerCertificateRecord,
        replace_current: bool,
    ) -> StoreResult<bool>;

    /// Deletes the certificates retired before `retired_before` (never the current one); returns how many.
    async fn prune_server_certificates(&self, retired_before: Timestamp) -> StoreResult<u64>;
}

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
    + crate::devices::DeviceStore
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
        + crate::devices::DeviceStore
{
}
