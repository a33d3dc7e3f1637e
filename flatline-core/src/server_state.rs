//! Instance-wide state every server process must agree on (an aggregate with nothing but its store contract).

use async_trait::async_trait;

use crate::sealed::ServerCertificateRecord;
use crate::store::StoreResult;
use crate::time::Timestamp;

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
