//! Identifiers, each a newtype validated once where it enters the system.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An error parsing an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not a UUID.
    #[error("not a UUID")]
    NotUuid,
    /// A device id outside 1..=127.
    #[error("device id must be 1..=127")]
    DeviceOutOfRange,
    /// A prekey id outside 0..=2^31-1.
    #[error("key id must be 0..=2147483647")]
    KeyIdOutOfRange,
    /// An identity type other than `aci` or `pni`.
    #[error("identity must be aci or pni")]
    BadIdentityType,
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh random identifier drawn from `rng`.
            pub fn random(rng: &dyn crate::random::SecureRandom) -> Self {
                Self(uuid::Builder::from_random_bytes(crate::random::random_array(rng)).into_uuid())
            }
            /// The 16 raw bytes.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                parse_uuid(s).map(Self)
            }
        }
    };
}

/// Parses a UUID in its hyphenated form only (what every Signal client sends).
fn parse_uuid(s: &str) -> Result<Uuid, IdError> {
    if s.len() != 36 {
        return Err(IdError::NotUuid);
    }
    Uuid::try_parse(s).map_err(|_| IdError::NotUuid)
}

uuid_id!(
    /// Account identifier: stable for the life of an account, reused on re-registration.
    Aci
);
uuid_id!(
    /// Principal name identifier: one per principal, rotated when an account's principal changes.
    Pni
);

/// Which of an account's two identities a key or request concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityType {
    /// The account identity.
    Aci,
    /// The principal (phone-number successor) identity.
    Pni,
}

impl IdentityType {
    /// The lowercase wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityType::Aci => "aci",
            IdentityType::Pni => "pni",
        }
    }
}

impl FromStr for IdentityType {
    type Err = IdError;
    /// Case-insensitive, as Signal-Server reads enums.
    fn from_str(s: &str) -> Result<Self, IdError> {
        if s.eq_ignore_ascii_case("aci") {
            Ok(IdentityType::Aci)
        } else if s.eq_ignore_ascii_case("pni") {
            Ok(IdentityType::Pni)
        } else {
            Err(IdError::BadIdentityType)
        }
    }
}

/// An ACI or a PNI: the target of a key fetch. The PNI form is written `PNI:<uuid>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceId {
    /// An account identifier, written as a bare UUID.
    Aci(Aci),
    /// A principal name identifier, written `PNI:<uuid>`.
    Pni(Pni),
}

impl ServiceId {
    /// The identity type this service id names.
    pub fn identity_type(self) -> IdentityType {
        match self {
            ServiceId::Aci(_) => IdentityType::Aci,
            ServiceId::Pni(_) => IdentityType::Pni,
        }
    }
    /// The bare UUID.
    pub fn uuid(self) -> Uuid {
        match self {
            ServiceId::Aci(a) => a.0,
            ServiceId::Pni(p) => p.0,
        }
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceId::Aci(a) => a.fmt(f),
            ServiceId::Pni(p) => write!(f, "PNI:{p}"),
        }
    }
}

impl FromStr for ServiceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        match s.strip_prefix("PNI:") {
            Some(rest) => rest.parse().map(ServiceId::Pni),
            None => s.parse().map(ServiceId::Aci),
        }
    }
}

/// A device of an account: 1 is the primary, linked devices take 2..=127.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct DeviceId(u8);

impl DeviceId {
    /// The primary device.
    pub const PRIMARY: DeviceId = DeviceId(1);
    /// The largest device id Signal clients can address.
    pub const MAX: u8 = 127;

    /// Validates a raw id.
    pub fn new(id: u8) -> Result<Self, IdError> {
        if (1..=Self::MAX).contains(&id) {
            Ok(DeviceId(id))
        } else {
            Err(IdError::DeviceOutOfRange)
        }
    }
    /// The raw value.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for DeviceId {
    type Error = IdError;
    fn try_from(v: u8) -> Result<Self, IdError> {
        DeviceId::new(v)
    }
}

impl From<DeviceId> for u8 {
    fn from(d: DeviceId) -> u8 {
        d.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for DeviceId {
    type Err = IdError;
    /// Decimal digits only (no sign, no spaces), as in a URL path or a Basic auth username.
    fn from_str(s: &str) -> Result<Self, IdError> {
        if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdError::DeviceOutOfRange);
        }
        let v: u16 = s.parse().map_err(|_| IdError::DeviceOutOfRange)?;
        u8::try_from(v)
            .map_err(|_| IdError::DeviceOutOfRange)
            .and_then(DeviceId::new)
    }
}

/// A prekey id: 0..=2^31-1 (Signal-Server's `KeyIdUtil`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(u32);

impl KeyId {
    /// The largest valid key id.
    pub const MAX: u32 = (1 << 31) - 1;

    /// Validates a raw id given as any integer the wire may carry.
    pub fn new(id: i64) -> Result<Self, IdError> {
        u32::try_from(id)
            .ok()
            .filter(|v| *v <= Self::MAX)
            .map(KeyId)
            .ok_or(IdError::KeyIdOutOfRange)
    }
    /// The raw value.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// Principal validation failures (draft Annex A).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalError {
    /// Empty after trimming.
    #[error("principal is empty")]
    Empty,
    /// Longer than 2048 bytes after trimming.
    #[error("principal is longer than 2048 bytes")]
    TooLong,
    /// A character outside printable ASCII 0x20..=0x7E.
    #[error("principal contains a character outside printable ASCII")]
    BadCharacter,
}

/// The account's principal: the claim-derived (or opaque) name that took the phone number's place.
///
/// Trimmed of spaces, printable ASCII only, at most 2048 bytes, compared case-sensitively.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Principal(String);

impl Principal {
    /// The longest principal, in bytes.
    pub const MAX_LEN: usize = 2048;

    /// Trims surrounding spaces and validates.
    pub fn parse(raw: &str) -> Result<Self, PrincipalError> {
        let trimmed = raw.trim_matches(' ');
        if trimmed.is_empty() {
            return Err(PrincipalError::Empty);
        }
        if !trimmed.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(PrincipalError::BadCharacter);
        }
        if trimmed.len() > Self::MAX_LEN {
            return Err(PrincipalError::TooLong);
        }
        Ok(Principal(trimmed.to_owned()))
    }
    /// The principal text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Principal {
    type Error = PrincipalError;
    fn try_from(s: String) -> Result<Self, PrincipalError> {
        Principal::parse(&s)
    }
}

impl From<Principal> for String {
    fn from(p: Principal) -> String {
        p.0
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_id_forms() {
        let u = "0f5b3a7c-1d2e-4f60-8a9b-0c1d2e3f4a5b";
        assert_eq!(
            u.parse::<ServiceId>().map(|s| s.identity_type()),
            Ok(IdentityType::Aci)
        );
        let p: ServiceId = format!("PNI:{u}").parse().unwrap();
        assert_eq!(p.identity_type(), IdentityType::Pni);
        assert_eq!(p.to_string(), format!("PNI:{u}"));
        for bad in [
            "",
            "PNI:",
            "pni:x",
            "0f5b3a7c1d2e4f608a9b0c1d2e3f4a5b",
            "{0f5b3a7c-1d2e-4f60-8a9b-0c1d2e3f4a5b}",
        ] {
            assert!(bad.parse::<ServiceId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn device_ids() {
        for (s, ok) in [
            ("1", true),
            ("127", true),
            ("0", false),
            ("128", false),
            ("255", false),
            ("+1", false),
            ("01", true),
            ("", false),
            ("1000", false),
        ] {
            assert_eq!(s.parse::<DeviceId>().is_ok(), ok, "{s}");
        }
    }

    #[test]
    fn key_ids() {
        assert!(KeyId::new(0).is_ok());
        assert!(KeyId::new(i64::from(KeyId::MAX)).is_ok());
        assert!(KeyId::new(i64::from(KeyId::MAX) + 1).is_err());
        assert!(KeyId::new(-1).is_err());
    }

    #[test]
    fn principals() {
        assert_eq!(
            Principal::parse("  alice@example.org ").map(|p| p.0),
            Ok("alice@example.org".into())
        );
        assert_eq!(Principal::parse("   "), Err(PrincipalError::Empty));
        assert_eq!(
            Principal::parse("a\u{7}b"),
            Err(PrincipalError::BadCharacter)
        );
        assert_eq!(
            Principal::parse("caf\u{e9}"),
            Err(PrincipalError::BadCharacter)
        );
        assert!(Principal::parse(&"x".repeat(2048)).is_ok());
        assert_eq!(
            Principal::parse(&"x".repeat(2049)),
            Err(PrincipalError::TooLong)
        );
    }
}
