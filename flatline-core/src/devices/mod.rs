//! Linked devices (API.md §12, M§5): the link token, device id assignment, who may remove which device, and the
//! checks of a link request. Pure rules over loaded state; [`service`] drives them and [`store::DeviceStore`]
//! applies a link or a removal atomically.
//!
//! The link token is Signal-Server's: `"<aci>.<epochMillis>" ‖ ":" ‖ base64url_padded(HMAC-SHA256(secret,
//! "<aci>.<epochMillis>"))`, valid for [`LINK_TOKEN_LIFETIME`] and single-use; its identifier (what
//! `wait_for_linked_device` is keyed by) is `base64url_nopad(SHA-256(token))`. Single use is enforced by the store,
//! which records SHA-256(token) inside the transaction that adds the device.

pub mod service;
pub mod store;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::account::Account;
use crate::ids::{Aci, DeviceId};
use crate::time::Timestamp;

pub use service::{DeviceError, DeviceService, DevicesConfig, LinkRequest, LinkedDevice};
pub use store::{DeviceLinkOutcome, DeviceStore, NewLinkedDevice};

/// How long a link token is valid (Signal-Server: 10 minutes).
pub const LINK_TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Signal's device limit, the primary included (`[devices] max_per_account`).
pub const DEFAULT_MAX_DEVICES: u8 = 6;
/// Token identifiers are accepted with 32..=64 characters (Signal-Server's path constraint).
pub const TOKEN_IDENTIFIER_LEN: std::ops::RangeInclusive<usize> = 32..=64;

/// A fresh link token and its identifier.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedLinkToken {
    /// The token (a bearer secret: never logged).
    pub token: String,
    /// `base64url_nopad(SHA-256(token))`.
    pub identifier: String,
}

impl std::fmt::Debug for IssuedLinkToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedLinkToken")
            .field("token", &"<redacted>")
            .field("identifier", &self.identifier)
            .finish()
    }
}

/// A link token whose signature and age were checked (not yet whether it was used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedLinkToken {
    /// The account it links to.
    pub aci: Aci,
    /// When it stops being valid.
    pub expires_at: Timestamp,
    /// SHA-256 of the token: its single-use marker and the `wait_for_linked_device` identifier.
    pub hash: [u8; 32],
}

/// Why a link token was refused (all answered 403, as Signal-Server does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkTokenError {
    /// Not of the token's shape, or a signature that does not match.
    #[error("invalid link token")]
    Invalid,
    /// Older than [`LINK_TOKEN_LIFETIME`].
    #[error("expired link token")]
    Expired,
}

fn token_mac(secret: &[u8], claims: &str) -> Option<Hmac<Sha256>> {
    // HMAC accepts keys of any length, so this is never `None`.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).ok()?;
    mac.update(claims.as_bytes());
    Some(mac)
}

/// SHA-256 of a token: the single-use marker and, base64url without padding, its identifier.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The identifier of a token hash, as `GET /v1/devices/provisioning/code` returns it.
pub fn token_identifier(hash: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(hash)
}

/// Parses a token identifier from a `wait_for_linked_device` path: `None` unless it is 32..=64 characters of
/// base64url decoding to 32 bytes (anything else can never match a token, so it is a 400 rather than a wait).
pub fn parse_token_identifier(s: &str) -> Option<[u8; 32]> {
    if !TOKEN_IDENTIFIER_LEN.contains(&s.len()) {
        return None;
    }
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()?
        .try_into()
        .ok()
}

/// Issues a link token for `aci` at `now` (`None` only if HMAC refused the key, which it never does).
pub fn issue_link_token(secret: &[u8], aci: Aci, now: Timestamp) -> Option<IssuedLinkToken> {
    let claims = format!("{aci}.{}", now.as_millis());
    let signature = token_mac(secret, &claims)?.finalize().into_bytes();
    let token = format!("{claims}:{}", URL_SAFE.encode(signature));
    let identifier = token_identifier(&token_hash(&token));
    Some(IssuedLinkToken { token, identifier })
}

/// Checks a link token's signature (in constant time) and age.
pub fn verify_link_token(
    secret: &[u8],
    token: &str,
    now: Timestamp,
) -> Result<VerifiedLinkToken, LinkTokenError> {
    let (claims, signature) = token.split_once(':').ok_or(LinkTokenError::Invalid)?;
    let signature = URL_SAFE
        .decode(signature)
        .or_else(|_| URL_SAFE_NO_PAD.decode(signature))
        .map_err(|_| LinkTokenError::Invalid)?;
    token_mac(secret, claims)
        .ok_or(LinkTokenError::Invalid)?
        .verify_slice(&signature)
        .map_err(|_| LinkTokenError::Invalid)?;
    let (aci, millis) = claims.split_once('.').ok_or(LinkTokenError::Invalid)?;
    let aci: Aci = aci.parse().map_err(|_| LinkTokenError::Invalid)?;
    let issued: i64 = millis.parse().map_err(|_| LinkTokenError::Invalid)?;
    let expires_at = Timestamp(issued).plus(LINK_TOKEN_LIFETIME);
    if expires_at < now {
        return Err(LinkTokenError::Expired);
    }
    Ok(VerifiedLinkToken {
        aci,
        expires_at,
        hash: token_hash(token),
    })
}

/// The account already has `max` devices (411).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the account already has its maximum of {max} devices")]
pub struct TooManyDevices {
    /// The limit.
    pub max: u8,
}

/// The id a new device gets: the lowest id ≥ 2 no current device has (ids of removed devices are reused, M§5), or
/// [`TooManyDevices`] when the account already has `max` devices.
pub fn next_device_id(
    used: impl IntoIterator<Item = DeviceId>,
    max: u8,
) -> Result<DeviceId, TooManyDevices> {
    let used: std::collections::BTreeSet<u8> = used.into_iter().map(DeviceId::get).collect();
    if used.len() >= usize::from(max) {
        return Err(TooManyDevices { max });
    }
    (2..=DeviceId::MAX)
        .find(|id| !used.contains(id))
        .and_then(|id| DeviceId::new(id).ok())
        .ok_or(TooManyDevices { max })
}

/// Whether the account has room for another device (checked before a token is issued, and again by the store).
pub fn has_room(account: &Account, max: u8) -> Result<(), TooManyDevices> {
    next_device_id(account.devices.iter().map(|d| d.id), max).map(|_| ())
}

/// Why a device may not be removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RemovalRefused {
    /// 401: a linked device may remove only itself.
    #[error("a linked device may remove only itself")]
    NotAllowed,
    /// 403: the primary device cannot be removed.
    #[error("the primary device cannot be removed")]
    Primary,
}

/// Signal-Server's order: a linked device naming another device is 401 before the primary target is 403.
pub fn check_removal(actor: DeviceId, target: DeviceId) -> Result<(), RemovalRefused> {
    if actor != DeviceId::PRIMARY && actor != target {
        return Err(RemovalRefused::NotAllowed);
    }
    if target == DeviceId::PRIMARY {
        return Err(RemovalRefused::Primary);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
