//! Curve25519 identity/prekey keys and the Kyber public-key envelope, in Signal's wire formats.

use core::fmt;

use curve25519_dalek::montgomery::MontgomeryPoint;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::random::{SecureRandom, random_array};

/// Type byte of a serialized Curve25519 ("Djb") public key.
pub const DJB_KEY_TYPE: u8 = 0x05;
/// Length of a serialized EC public key: type byte plus 32-byte u-coordinate.
pub const PUBLIC_KEY_LEN: usize = 33;
/// Length of a serialized EC private key.
pub const PRIVATE_KEY_LEN: usize = 32;
/// Type byte of a serialized Kyber1024 (round-3 Kyber, not ML-KEM) public key.
pub const KYBER1024_KEY_TYPE: u8 = 0x08;
/// Length of a serialized Kyber1024 public key: type byte plus 1568 key bytes.
pub const KEM_PUBLIC_KEY_LEN: usize = 1569;

/// Why a serialized key was rejected. Messages follow libsignal's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    /// The input was empty, so there is no type byte.
    #[error("no key type identifier")]
    NoKeyType,
    /// The EC key's type byte is not `0x05`.
    #[error("bad key type <{0:#04x}>")]
    BadKeyType(u8),
    /// The EC public key is not exactly 33 bytes (libsignal tolerates trailing bytes; we do not).
    #[error("bad key length <{0}> for key with type <Djb>")]
    BadKeyLength(usize),
    /// The private key is not exactly 32 bytes.
    #[error("bad private key length <{0}>")]
    BadPrivateKeyLength(usize),
    /// The KEM key's type byte is not `0x08` (Kyber768 `0x07` and ML-KEM-1024 `0x0a` included).
    #[error("bad KEM key type <{0:#04x}>")]
    BadKemKeyType(u8),
    /// The KEM public key is not exactly 1569 bytes.
    #[error("bad KEM key length <{0}> for key with type <Kyber1024 key>")]
    BadKemKeyLength(usize),
}

/// A Curve25519 public key: the X25519 u-coordinate, serialized as `0x05 ‖ u`.
///
/// The u bytes are kept exactly as received (including the ignored bit 255), so equality is
/// byte equality, as Signal compares identity keys.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey {
    pub(crate) u: [u8; 32],
}

impl PublicKey {
    /// Parses a serialized key: exactly 33 bytes starting with `0x05`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyParseError> {
        let (&ty, rest) = bytes.split_first().ok_or(KeyParseError::NoKeyType)?;
        if ty != DJB_KEY_TYPE {
            return Err(KeyParseError::BadKeyType(ty));
        }
        let u: [u8; 32] = rest
            .try_into()
            .map_err(|_| KeyParseError::BadKeyLength(bytes.len()))?;
        Ok(Self { u })
    }

    /// Wraps a raw 32-byte u-coordinate (no type byte).
    pub fn from_u_bytes(u: [u8; 32]) -> Self {
        Self { u }
    }

    /// The 33-byte wire form `0x05 ‖ u`.
    pub fn serialize(&self) -> [u8; PUBLIC_KEY_LEN] {
        let mut out = [0u8; PUBLIC_KEY_LEN];
        out[0] = DJB_KEY_TYPE;
        out[1..].copy_from_slice(&self.u);
        out
    }

    /// The raw 32-byte u-coordinate.
    pub fn u_bytes(&self) -> &[u8; 32] {
        &self.u
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.serialize()))
    }
}

/// A Curve25519 private key: 32 bytes, clamped on construction, wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PrivateKey {
    pub(crate) bytes: [u8; 32],
}

/// X25519 clamping: clear the low 3 bits (cofactor) and bit 255, set bit 254.
fn clamp(mut k: [u8; 32]) -> [u8; 32] {
    k[0] &= 0xf8;
    k[31] &= 0x7f;
    k[31] |= 0x40;
    k
}

impl PrivateKey {
    /// Builds a key from 32 bytes, clamping them as libsignal does on deserialize.
    pub fn from_array(bytes: [u8; 32]) -> Self {
        Self {
            bytes: clamp(bytes),
        }
    }

    /// Parses a serialized private key (exactly 32 bytes), clamping it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyParseError> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyParseError::BadPrivateKeyLength(bytes.len()))?;
        Ok(Self::from_array(arr))
    }

    /// Draws a fresh key from `rng`.
    pub fn generate(rng: &dyn SecureRandom) -> Self {
        let mut raw = random_array::<32>(rng);
        let key = Self::from_array(raw);
        raw.zeroize();
        key
    }

    /// The clamped 32 bytes (what libsignal serializes).
    pub fn serialize(&self) -> [u8; PRIVATE_KEY_LEN] {
        self.bytes
    }

    /// The matching public key: the u-coordinate of `k·basepoint` (X25519).
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            u: MontgomeryPoint::mul_base_clamped(self.bytes).to_bytes(),
        }
    }

    /// X25519 key agreement with `their` public key. Like libsignal, no all-zero output check.
    pub fn agree(&self, their: &PublicKey) -> [u8; 32] {
        MontgomeryPoint(their.u).mul_clamped(self.bytes).to_bytes()
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// A private key with its public key.
#[derive(Clone, Debug)]
pub struct KeyPair {
    /// The public half.
    pub public_key: PublicKey,
    /// The private half.
    pub private_key: PrivateKey,
}

impl KeyPair {
    /// Generates a fresh key pair from `rng`.
    pub fn generate(rng: &dyn SecureRandom) -> Self {
        Self::from_private(PrivateKey::generate(rng))
    }

    /// Derives the public key for `private_key`.
    pub fn from_private(private_key: PrivateKey) -> Self {
        Self {
            public_key: private_key.public_key(),
            private_key,
        }
    }
}

/// A serialized Kyber1024 public key (`0x08 ‖ 1568 bytes`). The server only checks the envelope,
/// stores it and verifies its signature; it never encapsulates.
#[derive(Clone, PartialEq, Eq)]
pub struct KemPublicKey {
    bytes: Box<[u8]>,
}

impl KemPublicKey {
    /// Parses a serialized KEM public key: type `0x08` and exactly 1569 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyParseError> {
        let &ty = bytes.first().ok_or(KeyParseError::NoKeyType)?;
        if ty != KYBER1024_KEY_TYPE {
            return Err(KeyParseError::BadKemKeyType(ty));
        }
        if bytes.len() != KEM_PUBLIC_KEY_LEN {
            return Err(KeyParseError::BadKemKeyLength(bytes.len()));
        }
        Ok(Self {
            bytes: bytes.into(),
        })
    }

    /// The full 1569-byte serialization, including the type byte (this is what gets signed).
    pub fn serialize(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for KemPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = self.bytes.get(..8).unwrap_or(&self.bytes);
        write!(f, "KemPublicKey({}…)", hex::encode(prefix))
    }
}
