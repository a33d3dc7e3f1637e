//! Device credentials: Basic auth parsing and salted password hashes.

use base64::Engine as _;
use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::ids::{Aci, DeviceId};
use crate::random::{SecureRandom, random_array};

/// Why a Basic `Authorization` header was refused. Every variant answers 401; the distinction is for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Not `Basic <base64>`, or the base64 or UTF-8 is invalid, or no `:` separator.
    #[error("malformed Basic authorization header")]
    Malformed,
    /// The username is not `ACI`, `ACI.deviceId` or `ACI\0deviceId`.
    #[error("username is not an ACI with an optional device id")]
    BadUsername,
    /// The password is empty or too long.
    #[error("password is empty or longer than {max} bytes", max = MAX_PASSWORD_LEN)]
    BadPassword,
}

/// Shortest password a new device may register with. Signal clients generate random passwords of 16 or more
/// bytes of entropy, base64 (Android and signal-cli: 18 random bytes, 24 characters; Desktop: 16 random bytes,
/// 24 characters; iOS: 16 random bytes, 32 hex digits), so every real client clears this bar; a human-chosen
/// 6-character password does not. Authentication itself accepts the old minimum (1), so nothing stored is locked
/// out.
pub const MIN_NEW_PASSWORD_LEN: usize = 16;

/// Longest password we accept. Signal clients send ~24 characters; the cap bounds hashing work per request.
pub const MAX_PASSWORD_LEN: usize = 512;

/// Decodes `Basic base64(user:password)` and splits at the first `:` (normal requests) or the last `:`
/// (registration, where the username is a principal that may contain `:`).
pub fn decode_basic(
    header: &str,
    split_at_last_colon: bool,
) -> Result<(String, String), CredentialError> {
    let (scheme, rest) = header
        .trim()
        .split_once(' ')
        .ok_or(CredentialError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(CredentialError::Malformed);
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .map_err(|_| CredentialError::Malformed)?;
    let text = String::from_utf8(raw).map_err(|_| CredentialError::Malformed)?;
    let split = if split_at_last_colon {
        text.rsplit_once(':')
    } else {
        text.split_once(':')
    };
    let (user, password) = split.ok_or(CredentialError::Malformed)?;
    if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
        return Err(CredentialError::BadPassword);
    }
    Ok((user.to_owned(), password.to_owned()))
}

/// Credentials of a device, parsed from a Basic header in any of the three username forms:
/// `ACI` (primary device), `ACI.deviceId` (Signal) or `ACI\0deviceId` (the Flatline Java fork).
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceCredentials {
    /// The account.
    pub aci: Aci,
    /// The device.
    pub device_id: DeviceId,
    /// The password as sent; never logged (see the `Debug` impl).
    pub password: String,
}

impl std::fmt::Debug for DeviceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCredentials")
            .field("aci", &self.aci)
            .field("device_id", &self.device_id)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl DeviceCredentials {
    /// Parses an `Authorization` header value.
    pub fn from_header(header: &str) -> Result<Self, CredentialError> {
        let (user, password) = decode_basic(header, false)?;
        Self::from_login(&user, &password)
    }

    /// Parses a username (any of the three forms) and password given separately, as the `login` and `password`
    /// query parameters of a WebSocket upgrade.
    pub fn from_login(user: &str, password: &str) -> Result<Self, CredentialError> {
        if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
            return Err(CredentialError::BadPassword);
        }
        let password = password.to_owned();
        let (aci, device) = match user.split_once(['.', '\0']) {
            Some((aci, device)) => (
                aci,
                device.parse().map_err(|_| CredentialError::BadUsername)?,
            ),
            None => (user, DeviceId::PRIMARY),
        };
        let aci = aci.parse().map_err(|_| CredentialError::BadUsername)?;
        Ok(DeviceCredentials {
            aci,
            device_id: device,
            password,
        })
    }
}

/// A salted password hash in Signal-Server's scheme: `salt` = 16 random bytes as lowercase hex,
/// `hash` = `"2."` ‖ hex(HKDF-SHA256(ikm = password, salt = salt-hex, info = "authtoken", 32 bytes)).
/// A locked credential carries a `!` prefix so that no password matches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaltedTokenHash {
    /// The hash string, possibly `!`-prefixed when locked.
    pub hash: String,
    /// The salt as lowercase hex.
    pub salt: String,
}

impl SaltedTokenHash {
    /// Hashes a new password with a fresh salt.
    pub fn generate(password: &str, rng: &dyn SecureRandom) -> Self {
        let salt = hex::encode(random_array::<16>(rng));
        let hash = Self::compute(password, &salt);
        SaltedTokenHash { hash, salt }
    }

    fn compute(password: &str, salt: &str) -> String {
        let mut okm = [0u8; 32];
        let hk = Hkdf::<Sha256>::new(Some(salt.as_bytes()), password.as_bytes());
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
        if hk.expand(b"authtoken", &mut okm).is_err() {
            return String::from("!");
        }
        format!("2.{}", hex::encode(okm))
    }

    /// Constant-time check of `password`. Always false for a locked credential.
    pub fn verify(&self, password: &str) -> bool {
        let candidate = Self::compute(password, &self.salt);
        // Lengths are public (fixed by the scheme); the content comparison is constant-time.
        candidate.len() == self.hash.len()
            && bool::from(candidate.as_bytes().ct_eq(self.hash.as_bytes()))
    }

    /// Whether the credential was locked (e.g. by a back-channel logout).
    pub fn is_locked(&self) -> bool {
        self.hash.starts_with('!')
    }

    /// The locked form of this credential.
    pub fn locked(&self) -> Self {
        if self.is_locked() {
            self.clone()
        } else {
            SaltedTokenHash {
                hash: format!("!{}", self.hash),
                salt: self.salt.clone(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    }

    const ACI: &str = "0f5b3a7c-1d2e-4f60-8a9b-0c1d2e3f4a5b";

    #[test]
    fn three_username_forms() {
        for (user, dev) in [
            (ACI.to_owned(), 1),
            (format!("{ACI}.2"), 2),
            (format!("{ACI}\0{}", 7), 7),
        ] {
            let c = DeviceCredentials::from_header(&header(&user, "pw")).unwrap();
            assert_eq!(
                (
                    c.aci.to_string().as_str(),
                    c.device_id.get(),
                    c.password.as_str()
                ),
                (ACI, dev, "pw")
            );
        }
    }

    #[test]
    fn malformed_headers() {
        let cases = [
            ("Bearer abc".to_owned(), CredentialError::Malformed),
            ("Basic !!!".to_owned(), CredentialError::Malformed),
            ("Basic".to_owned(), CredentialError::Malformed),
            (
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode("nocolon")
                ),
                CredentialError::Malformed,
            ),
            (header("not-a-uuid", "pw"), CredentialError::BadUsername),
            (
                header(&format!("{ACI}.0"), "pw"),
                CredentialError::BadUsername,
            ),
            (
                header(&format!("{ACI}.128"), "pw"),
                CredentialError::BadUsername,
            ),
            (
                header(&format!("{ACI}."), "pw"),
                CredentialError::BadUsername,
            ),
            (header(ACI, ""), CredentialError::BadPassword),
        ];
        for (h, want) in cases {
            assert_eq!(DeviceCredentials::from_header(&h), Err(want), "{h:?}");
        }
    }

    #[test]
    fn registration_split_uses_last_colon() {
        let h = header("user:with:colons", "secret");
        assert_eq!(
            decode_basic(&h, true),
            Ok(("user:with:colons".into(), "secret".into()))
        );
    }

    struct Counter(std::sync::atomic::AtomicU8);
    impl SecureRandom for Counter {
        fn fill(&self, dest: &mut [u8]) {
            for b in dest {
                *b = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    #[test]
    fn salted_hash_verifies_and_locks() {
        let rng = Counter(0.into());
        let h = SaltedTokenHash::generate("correct horse", &rng);
        assert_eq!(h.salt, "000102030405060708090a0b0c0d0e0f");
        assert!(h.hash.starts_with("2.") && h.hash.len() == 66);
        assert!(h.verify("correct horse"));
        assert!(!h.verify("correct horsf"));
        let locked = h.locked();
        assert!(locked.is_locked() && !locked.verify("correct horse"));
    }
}
