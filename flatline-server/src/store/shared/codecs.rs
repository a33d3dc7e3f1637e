//! Row codecs and constants that do not depend on the dialect, shared by every aggregate body.

use std::collections::{BTreeMap, BTreeSet};

use flatline_core::ids::{IdentityType, KeyId, ServiceId};
use flatline_core::store::{Conflict, StoreError, StoreResult};
use uuid::Uuid;

/// `signed_keys.kind` of a signed EC prekey.
pub(crate) const SIGNED_EC: i64 = 0;
/// `signed_keys.kind` of a last-resort Kyber key.
pub(crate) const LAST_RESORT: i64 = 1;

/// Advisory lock class serializing registrations (and deletions) of one OIDC subject: "fsub".
pub(crate) const SUBJECT_LOCK_CLASS: i32 = 0x6673_7562;
/// Advisory lock class serializing registrations that claim one principal: "fprn".
pub(crate) const PRINCIPAL_LOCK_CLASS: i32 = 0x6670_726e;
/// Advisory lock class serializing key uploads to one device (of one identity): "fkey".
pub(crate) const KEY_UPLOAD_LOCK_CLASS: i32 = 0x666b_6579;

/// A database error as a store error.
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    StoreError::backend(e)
}

/// A UUID column.
pub(crate) fn uuid_of(bytes: &[u8]) -> StoreResult<Uuid> {
    Uuid::from_slice(bytes).map_err(|_| StoreError::corrupt("uuid column is not 16 bytes"))
}

/// Capabilities are stored as a comma-separated list; names containing commas (refused at the edge) are dropped.
pub(crate) fn join_capabilities(c: &BTreeSet<String>) -> String {
    c.iter()
        .filter(|n| !n.contains(','))
        .cloned()
        .collect::<Vec<_>>()
        .join(",")
}

/// The inverse of [`join_capabilities`].
pub(crate) fn split_capabilities(s: &str) -> BTreeSet<String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The `identity` column of the key tables.
pub(crate) fn identity_code(owner: ServiceId) -> i64 {
    match owner.identity_type() {
        IdentityType::Aci => 0,
        IdentityType::Pni => 1,
    }
}

/// The `owner` column of the key tables.
pub(crate) fn owner_bytes(owner: ServiceId) -> Vec<u8> {
    owner.uuid().as_bytes().to_vec()
}

/// A stored key id.
pub(crate) fn key_id(v: i64) -> StoreResult<KeyId> {
    KeyId::new(v).map_err(|_| StoreError::corrupt("stored key id out of range"))
}

/// Deduplicates an upload by key id, the last occurrence winning (as the memory store's maps do), lowest id first.
pub(crate) fn dedup<T>(keys: impl IntoIterator<Item = (KeyId, T)>) -> BTreeMap<KeyId, T> {
    keys.into_iter().collect()
}

/// Maps a unique violation on `accounts` to the rule it breaks, where the database names the constraint
/// (PostgreSQL; SQLite's errors do not, so it checks first, see `taken`).
pub(crate) fn account_conflict(e: &sqlx::Error) -> Option<Conflict> {
    let d = e.as_database_error()?;
    if !d.is_unique_violation() {
        return None;
    }
    match d.constraint()? {
        "accounts_pkey" => Some(Conflict::Aci),
        "accounts_pni_key" => Some(Conflict::Pni),
        "accounts_principal_key" => Some(Conflict::Principal),
        _ => None,
    }
}

/// Defines `get`, the checked column read of dialect `$db` every body uses: a missing column or a value of another
/// type is a store error, never a panic.
macro_rules! checked_get {
    ($db:ty) => {
        /// A column of `row`; a missing column or a value of another type is a store error, never a panic.
        fn get<'r, T>(row: &'r <$db as sqlx::Database>::Row, column: &str) -> StoreResult<T>
        where
            T: sqlx::Decode<'r, $db> + sqlx::Type<$db>,
        {
            sqlx::Row::try_get(row, column).map_err(db)
        }
    };
}
pub(crate) use checked_get;
