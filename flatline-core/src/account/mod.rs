//! The account and device model, and validated account attributes; the store contract in `store.rs`, the
//! account operations in `service.rs`.

mod service;
mod store;

pub use service::*;
pub use store::*;

use std::collections::BTreeSet;

use uuid::Uuid;

use crate::credentials::SaltedTokenHash;
use crate::ids::{Aci, DeviceId, IdentityType, Pni, Principal};
use crate::time::Timestamp;

/// An account: one ACI, its current PNI and principal, and its devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Stable account identifier.
    pub aci: Aci,
    /// Current principal name identifier.
    pub pni: Pni,
    /// Current principal.
    pub principal: Principal,
    /// Whether the principal is the opaque keyed hash of (provider, sub) rather than a claim: opaque principals are
    /// never shown to other users and never discoverable.
    pub principal_opaque: bool,
    /// Serialized ACI identity public key (33 bytes, `0x05‖u`).
    pub aci_identity_key: Vec<u8>,
    /// Serialized PNI identity public key (33 bytes).
    pub pni_identity_key: Vec<u8>,
    /// Account-wide settings from the attributes.
    pub settings: AccountSettings,
    /// Confirmed username hash (32 bytes), if any.
    pub username_hash: Option<Vec<u8>>,
    /// Handle of the username link, if any.
    pub username_link_handle: Option<Uuid>,
    /// When the account was first created (kept across re-registration).
    pub created_at: Timestamp,
    /// The devices, primary first.
    pub devices: Vec<Device>,
}

impl Account {
    /// The device with `id`, if present.
    pub fn device(&self, id: DeviceId) -> Option<&Device> {
        self.devices.iter().find(|d| d.id == id)
    }

    /// The identity key of the given identity.
    pub fn identity_key(&self, identity: IdentityType) -> &[u8] {
        match identity {
            IdentityType::Aci => &self.aci_identity_key,
            IdentityType::Pni => &self.pni_identity_key,
        }
    }

    /// Whether any device stores data in the storage service (Signal's `storageCapable`).
    pub fn storage_capable(&self) -> bool {
        self.devices
            .iter()
            .any(|d| d.capabilities.contains("storage"))
    }
}

/// Account-wide settings carried by `AccountAttributes`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountSettings {
    /// The 16-byte unidentified access key, if set.
    pub unidentified_access_key: Option<[u8; 16]>,
    /// Whether any access key is accepted (ignored for `invite_only` accounts).
    pub unrestricted_unidentified_access: bool,
    /// Whether the principal may be looked up by others (Flatline default: false).
    pub discoverable_by_principal: bool,
}

/// One device of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Device id; 1 is the primary.
    pub id: DeviceId,
    /// Salted hash of the device password.
    pub credential: SaltedTokenHash,
    /// Device-level settings.
    pub settings: DeviceSettings,
    /// When the device was added.
    pub created_at: Timestamp,
    /// Last authenticated use, rounded down to a day (a write at most once a day).
    pub last_seen: Timestamp,
    /// Capabilities the device declared (only `true` entries are kept).
    pub capabilities: BTreeSet<String>,
}

/// Per-device settings carried by `AccountAttributes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSettings {
    /// Signal registration id for the ACI identity (1..=16383).
    pub registration_id: u16,
    /// Registration id for the PNI identity (1..=16383).
    pub pni_registration_id: u16,
    /// Encrypted device name (≤225 bytes).
    pub name: Option<Vec<u8>>,
    /// Whether the device fetches messages over the websocket (no push).
    pub fetches_messages: bool,
}

/// Why account attributes were refused (422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributesError {
    /// A registration id outside 1..=16383.
    #[error("{0} must be between 1 and 16383")]
    RegistrationId(&'static str),
    /// An encrypted device name over 225 bytes.
    #[error("name must be at most 225 bytes")]
    NameTooLong,
    /// An unidentified access key that is not 16 bytes.
    #[error("unidentifiedAccessKey must be 16 bytes")]
    AccessKeyLength,
    /// A capability name that is empty, absurdly long or holds control characters (NUL breaks PostgreSQL TEXT).
    #[error("capability names must be 1..=64 bytes without control characters, at most 64 of them")]
    Capability,
}

/// Account attributes after validation: what `PUT /v1/accounts/attributes` and registration carry.
///
/// Registration lock and recovery password are accepted on the wire and ignored: Flatline has no PIN/SVR recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountAttributes {
    /// Device-level part.
    pub device: DeviceSettings,
    /// Account-level part.
    pub account: AccountSettings,
    /// Declared capabilities (only `true` entries).
    pub capabilities: BTreeSet<String>,
}

/// Raw, decoded but unvalidated attributes: the server fills this from its wire DTO.
#[derive(Debug, Clone, Default)]
pub struct RawAccountAttributes {
    /// `fetchesMessages`.
    pub fetches_messages: bool,
    /// `registrationId`.
    pub registration_id: i64,
    /// `pniRegistrationId`; when absent the ACI registration id is reused.
    pub pni_registration_id: Option<i64>,
    /// Decoded `name`.
    pub name: Option<Vec<u8>>,
    /// Decoded `unidentifiedAccessKey` (an empty value means none).
    pub unidentified_access_key: Option<Vec<u8>>,
    /// `unrestrictedUnidentifiedAccess`.
    pub unrestricted_unidentified_access: bool,
    /// `discoverableByPrincipal` (or upstream's `discoverableByPhoneNumber`).
    pub discoverable_by_principal: bool,
    /// `capabilities` with their values.
    pub capabilities: Vec<(String, bool)>,
}

/// Validates declared capabilities (at most 64 names of 1..=64 bytes without control characters) and keeps the
/// `true` ones.
pub fn validate_capabilities(
    capabilities: Vec<(String, bool)>,
) -> Result<BTreeSet<String>, AttributesError> {
    if capabilities.len() > 64
        || capabilities
            .iter()
            .any(|(n, _)| n.is_empty() || n.len() > 64 || n.chars().any(char::is_control))
    {
        return Err(AttributesError::Capability);
    }
    Ok(capabilities
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(n, _)| n)
        .collect())
}

/// Largest encrypted device name, in bytes.
pub const MAX_DEVICE_NAME_LEN: usize = 225;
const MAX_REGISTRATION_ID: i64 = 0x3FFF;

impl AccountAttributes {
    /// Validates decoded attributes with Signal's field rules.
    pub fn validate(raw: RawAccountAttributes) -> Result<Self, AttributesError> {
        let reg_id = |v: i64, field| {
            u16::try_from(v)
                .ok()
                .filter(|v| (1..=MAX_REGISTRATION_ID as u16).contains(v))
                .ok_or(AttributesError::RegistrationId(field))
        };
        let registration_id = reg_id(raw.registration_id, "registrationId")?;
        let pni_registration_id = match raw.pni_registration_id {
            Some(v) => reg_id(v, "pniRegistrationId")?,
            None => registration_id,
        };
        if raw
            .name
            .as_ref()
            .is_some_and(|n| n.len() > MAX_DEVICE_NAME_LEN)
        {
            return Err(AttributesError::NameTooLong);
        }
        let unidentified_access_key = match raw.unidentified_access_key {
            None => None,
            Some(k) if k.is_empty() => None,
            Some(k) => Some(
                <[u8; 16]>::try_from(k.as_slice()).map_err(|_| AttributesError::AccessKeyLength)?,
            ),
        };
        let capabilities = validate_capabilities(raw.capabilities)?;
        Ok(AccountAttributes {
            device: DeviceSettings {
                registration_id,
                pni_registration_id,
                name: raw.name.filter(|n| !n.is_empty()),
                fetches_messages: raw.fetches_messages,
            },
            account: AccountSettings {
                unidentified_access_key,
                unrestricted_unidentified_access: raw.unrestricted_unidentified_access,
                discoverable_by_principal: raw.discoverable_by_principal,
            },
            capabilities,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawAccountAttributes {
        RawAccountAttributes {
            registration_id: 42,
            ..Default::default()
        }
    }

    #[test]
    fn field_rules() {
        let cases: Vec<(RawAccountAttributes, Result<(), AttributesError>)> = vec![
            (raw(), Ok(())),
            (
                RawAccountAttributes {
                    registration_id: 0,
                    ..raw()
                },
                Err(AttributesError::RegistrationId("registrationId")),
            ),
            (
                RawAccountAttributes {
                    registration_id: 16384,
                    ..raw()
                },
                Err(AttributesError::RegistrationId("registrationId")),
            ),
            (
                RawAccountAttributes {
                    registration_id: 16383,
                    ..raw()
                },
                Ok(()),
            ),
            (
                RawAccountAttributes {
                    pni_registration_id: Some(-1),
                    ..raw()
                },
                Err(AttributesError::RegistrationId("pniRegistrationId")),
            ),
            (
                RawAccountAttributes {
                    name: Some(vec![0; 225]),
                    ..raw()
                },
                Ok(()),
            ),
            (
                RawAccountAttributes {
                    name: Some(vec![0; 226]),
                    ..raw()
                },
                Err(AttributesError::NameTooLong),
            ),
            (
                RawAccountAttributes {
                    unidentified_access_key: Some(vec![1; 16]),
                    ..raw()
                },
                Ok(()),
            ),
            (
                RawAccountAttributes {
                    unidentified_access_key: Some(vec![]),
                    ..raw()
                },
                Ok(()),
            ),
            (
                RawAccountAttributes {
                    unidentified_access_key: Some(vec![1; 15]),
                    ..raw()
                },
                Err(AttributesError::AccessKeyLength),
            ),
            (
                RawAccountAttributes {
                    capabilities: vec![(String::new(), true)],
                    ..raw()
                },
                Err(AttributesError::Capability),
            ),
        ];
        for (i, (input, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                AccountAttributes::validate(input).map(|_| ()),
                want,
                "case {i}"
            );
        }
    }

    #[test]
    fn only_true_capabilities_kept_and_pni_id_defaults() {
        let a = AccountAttributes::validate(RawAccountAttributes {
            capabilities: vec![("storage".into(), true), ("transfer".into(), false)],
            ..raw()
        })
        .unwrap();
        assert_eq!(
            a.capabilities.into_iter().collect::<Vec<_>>(),
            vec!["storage".to_owned()]
        );
        assert_eq!(a.device.pni_registration_id, 42);
    }
}
