//! Versioned profiles (M§4): the stored model, the rules of `PUT /v1/profile`, and what a reader may see.
//!
//! Profile content is encrypted by the client under its profile key; the server only checks sizes and keeps the
//! ciphertexts per (ACI, version). `version` is derived by the client from the profile key, so a reader that knows
//! a version knows the key.

pub mod service;
pub mod store;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::random::SecureRandom;

pub use service::{ProfileError, ProfileRequester, ProfileService, ProfileView, VersionedView};
pub use store::ProfileStore;

/// Length of a serialized `ProfileKeyCommitment`.
pub const COMMITMENT_LEN: usize = 97;

/// Allowed decoded lengths of `name` (padded ciphertexts of a 53- or 257-byte plaintext).
pub const NAME_LENS: &[usize] = &[81, 285];
/// Allowed decoded lengths of `aboutEmoji` (0: none).
pub const ABOUT_EMOJI_LENS: &[usize] = &[0, 60];
/// Allowed decoded lengths of `about`.
pub const ABOUT_LENS: &[usize] = &[0, 156, 282, 540];
/// Allowed decoded lengths of `paymentAddress`.
pub const PAYMENT_ADDRESS_LENS: &[usize] = &[0, 582];
/// Allowed decoded lengths of `phoneNumberSharing`.
pub const PHONE_NUMBER_SHARING_LENS: &[usize] = &[0, 29];

/// Prefix of every avatar object key.
pub const AVATAR_PREFIX: &str = "profiles/";

/// One stored profile version. Optional ciphertexts are `None` when the client sent none (or an empty one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedProfile {
    /// 64 lowercase-or-uppercase hex characters, as sent.
    pub version: String,
    /// Encrypted name (81 or 285 bytes).
    pub name: Vec<u8>,
    /// Encrypted about emoji (60 bytes).
    pub about_emoji: Option<Vec<u8>>,
    /// Encrypted about text.
    pub about: Option<Vec<u8>>,
    /// Encrypted payment address.
    pub payment_address: Option<Vec<u8>>,
    /// Encrypted phone-number-sharing flag.
    pub phone_number_sharing: Option<Vec<u8>>,
    /// Avatar object key (`profiles/<base64url 16 bytes>`), if the profile has an avatar.
    pub avatar: Option<String>,
    /// Serialized `ProfileKeyCommitment` (97 bytes). The first commitment stored for a version is kept.
    pub commitment: Vec<u8>,
}

/// `CreateProfileRequest` as decoded from the wire (base64 already decoded), not yet validated.
#[derive(Debug, Clone, Default)]
pub struct RawProfile {
    /// `commitment`.
    pub commitment: Vec<u8>,
    /// `version`.
    pub version: String,
    /// `name` (required).
    pub name: Option<Vec<u8>>,
    /// `aboutEmoji`.
    pub about_emoji: Option<Vec<u8>>,
    /// `about`.
    pub about: Option<Vec<u8>>,
    /// `paymentAddress`.
    pub payment_address: Option<Vec<u8>>,
    /// `phoneNumberSharing`.
    pub phone_number_sharing: Option<Vec<u8>>,
    /// `avatar`: the profile has an avatar.
    pub avatar: bool,
    /// `sameAvatar`: keep the avatar stored for this version.
    pub same_avatar: bool,
}

/// What happens to the avatar (`CreateProfileRequest.getAvatarChange`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AvatarChange {
    /// `avatar=true, sameAvatar=true`: keep the one stored for this version (none if there is none).
    Unchanged,
    /// `avatar=false`: no avatar.
    Clear,
    /// `avatar=true, sameAvatar=false`: a new object key; the client uploads to it.
    Update,
}

impl AvatarChange {
    /// Decides from the two request flags.
    pub fn of(avatar: bool, same_avatar: bool) -> Self {
        match (avatar, same_avatar) {
            (false, _) => AvatarChange::Clear,
            (true, true) => AvatarChange::Unchanged,
            (true, false) => AvatarChange::Update,
        }
    }
}

/// A profile request that passed the size rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidProfile {
    /// `version`.
    pub version: String,
    /// `commitment` (length-checked; deserialization is checked by the service's commitment check).
    pub commitment: Vec<u8>,
    /// `name`.
    pub name: Vec<u8>,
    /// `aboutEmoji`, `None` when absent or empty.
    pub about_emoji: Option<Vec<u8>>,
    /// `about`, `None` when absent or empty.
    pub about: Option<Vec<u8>>,
    /// `paymentAddress`, `None` when absent or empty.
    pub payment_address: Option<Vec<u8>>,
    /// `phoneNumberSharing`, `None` when absent or empty.
    pub phone_number_sharing: Option<Vec<u8>>,
    /// The avatar decision.
    pub avatar: AvatarChange,
}

/// Why a profile was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileRuleError {
    /// The commitment does not deserialize (400 in Signal).
    #[error("commitment is not a valid ProfileKeyCommitment")]
    BadCommitment,
    /// A field has a wrong size or format (422).
    #[error("{0}")]
    Invalid(String),
}

fn sized(
    field: &str,
    value: Option<&Vec<u8>>,
    lens: &[usize],
) -> Result<Option<Vec<u8>>, ProfileRuleError> {
    let len = value.map_or(0, Vec::len);
    if !lens.contains(&len) {
        return Err(ProfileRuleError::Invalid(format!(
            "{field}: {len} bytes; must be one of {lens:?}"
        )));
    }
    Ok(value.filter(|v| !v.is_empty()).cloned())
}

/// Whether `version` is exactly 64 hex characters.
pub fn is_valid_version(version: &str) -> bool {
    version.len() == 64 && version.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Applies the size rules of `CreateProfileRequest` (M§4). The commitment is only length-checked here.
pub fn validate(raw: &RawProfile) -> Result<ValidProfile, ProfileRuleError> {
    if raw.commitment.len() != COMMITMENT_LEN {
        return Err(ProfileRuleError::BadCommitment);
    }
    if !is_valid_version(&raw.version) {
        return Err(ProfileRuleError::Invalid(
            "version: must be exactly 64 hex characters".into(),
        ));
    }
    let name = sized("name", raw.name.as_ref(), NAME_LENS)?
        .ok_or_else(|| ProfileRuleError::Invalid("name is required".into()))?;
    Ok(ValidProfile {
        version: raw.version.clone(),
        commitment: raw.commitment.clone(),
        name,
        about_emoji: sized("aboutEmoji", raw.about_emoji.as_ref(), ABOUT_EMOJI_LENS)?,
        about: sized("about", raw.about.as_ref(), ABOUT_LENS)?,
        payment_address: sized(
            "paymentAddress",
            raw.payment_address.as_ref(),
            PAYMENT_ADDRESS_LENS,
        )?,
        phone_number_sharing: sized(
            "phoneNumberSharing",
            raw.phone_number_sharing.as_ref(),
            PHONE_NUMBER_SHARING_LENS,
        )?,
        avatar: AvatarChange::of(raw.avatar, raw.same_avatar),
    })
}

/// The profile to store for `valid`, given the profile already stored under the same version (whose avatar
/// `sameAvatar` keeps, and whose commitment is kept). `new_avatar_key` is used for [`AvatarChange::Update`].
pub fn plan_profile(
    valid: &ValidProfile,
    existing: Option<&VersionedProfile>,
    new_avatar_key: Option<String>,
) -> VersionedProfile {
    let avatar = match valid.avatar {
        AvatarChange::Clear => None,
        AvatarChange::Unchanged => existing
            .and_then(|p| p.avatar.clone())
            .filter(|a| a.starts_with(AVATAR_PREFIX)),
        AvatarChange::Update => new_avatar_key,
    };
    VersionedProfile {
        version: valid.version.clone(),
        name: valid.name.clone(),
        about_emoji: valid.about_emoji.clone(),
        about: valid.about.clone(),
        payment_address: valid.payment_address.clone(),
        phone_number_sharing: valid.phone_number_sharing.clone(),
        avatar,
        commitment: existing.map_or_else(|| valid.commitment.clone(), |p| p.commitment.clone()),
    }
}

/// A fresh avatar object key: `profiles/` + base64url (unpadded) of 16 random bytes.
pub fn new_avatar_key(rng: &dyn SecureRandom) -> String {
    use base64::Engine as _;
    let bytes: [u8; 16] = crate::random::random_array(rng);
    format!(
        "{AVATAR_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// `UnidentifiedAccessChecksum`: HMAC-SHA256 keyed with the 16-byte access key over 32 zero bytes, all 32 bytes
/// (Signal-Server `UnidentifiedAccessChecksum.generateFor`; M§3.5).
pub fn unidentified_access_checksum(access_key: &[u8; 16]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(access_key) else {
        return [0; 32];
    };
    mac.update(&[0u8; 32]);
    mac.finalize().into_bytes().into()
}

/// Capabilities reported in profiles, with how an account has one from its devices.
pub const PROFILE_CAPABILITIES: &[(&str, CapabilityMode)] = &[
    ("storage", CapabilityMode::AnyDevice),
    ("transfer", CapabilityMode::PrimaryDevice),
    ("deleteSync", CapabilityMode::AllDevices),
    ("versionedExpirationTimer", CapabilityMode::AllDevices),
    (
        "storageServiceRecordKeyRotation",
        CapabilityMode::AllDevices,
    ),
    ("attachmentBackfill", CapabilityMode::AllDevices),
    ("spqr", CapabilityMode::AllDevices),
];

/// How an account-level capability follows from its devices' (Signal's `AccountCapabilityMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapabilityMode {
    /// Some device declares it.
    AnyDevice,
    /// The primary device declares it.
    PrimaryDevice,
    /// Every device declares it.
    AllDevices,
}

/// The account's profile capabilities, every known one with its value.
pub fn account_capabilities(account: &crate::account::Account) -> Vec<(&'static str, bool)> {
    PROFILE_CAPABILITIES
        .iter()
        .map(|&(name, mode)| {
            let has = |d: &crate::account::Device| d.capabilities.contains(name);
            let value = match mode {
                CapabilityMode::AnyDevice => account.devices.iter().any(has),
                CapabilityMode::PrimaryDevice => account
                    .devices
                    .iter()
                    .find(|d| d.id.get() == 1)
                    .is_some_and(has),
                CapabilityMode::AllDevices => {
                    !account.devices.is_empty() && account.devices.iter().all(has)
                }
            };
            (name, value)
        })
        .collect()
}

/// How an unversioned profile read (`GET /v1/profile/{serviceId}`) is authorized, from the credentials present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseReadAuth {
    /// A `Group-Send-Token` is present: it alone decides (verified for exactly `[serviceId]`; 401 when it does not
    /// verify, then 404 when the account is missing). Signal-Server's `getUnversionedProfile` takes this path
    /// even for an authenticated request, and applies no rate limiter on it.
    GroupSendToken,
    /// No token: the rules of every profile read (authenticated, access key, or neither).
    Standard,
}

/// The credential rule of the unversioned profile read (M§4, `ProfileController.getUnversionedProfile`): a
/// `Group-Send-Token` beside an `Unidentified-Access-Key` is a 400; a token otherwise wins.
pub fn plan_base_read(
    access_key: bool,
    group_send_token: bool,
) -> Result<BaseReadAuth, crate::messages::CredentialConflict> {
    match (group_send_token, access_key) {
        (true, true) => Err(crate::messages::CredentialConflict::TokenWithOtherCredentials),
        (true, false) => Ok(BaseReadAuth::GroupSendToken),
        (false, _) => Ok(BaseReadAuth::Standard),
    }
}

#[cfg(test)]
mod tests;
