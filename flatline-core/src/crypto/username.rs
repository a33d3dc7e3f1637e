//! Signal usernames: validation, the Ristretto username hash, and its zero-knowledge proof.
//!
//! The hash is `H = s1·G1 + s2·G2 + s3·G3`; the proof is a poksho Schnorr proof of knowledge of
//! `(s1, s2, s3)` made non-interactive with SHO-HMAC-SHA256. The server only ever verifies; the
//! prover exists for test clients.

use std::sync::OnceLock;

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_COMPRESSED;
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::VartimeMultiscalarMul;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use super::sho::ShoHmacSha256;

/// Length of a username hash (a compressed Ristretto point).
pub const USERNAME_HASH_LEN: usize = 32;
/// Length of a username proof: challenge plus three responses, 32-byte scalars each.
pub const USERNAME_PROOF_LEN: usize = 128;
/// Hard maximum nickname length applied when hashing (clients use softer limits, e.g. 3–32).
pub const MAX_NICKNAME_LEN: usize = 48;

const GENERATOR_LABEL: &[u8] = b"Signal_Username_20230130_Constant_Points_Generate";
const POKSHO_LABEL: &[u8] = b"POKSHO_Ristretto_SHOHMACSHA256";
/// poksho's encoding of the statement `H = s0·G1 + s1·G2 + s2·G3`: one equation, lhs point 1,
/// three terms, then (scalar index, point index) pairs. Point 0 is the Ristretto basepoint.
const STATEMENT: [u8; 9] = [1, 1, 3, 0, 2, 1, 3, 2, 4];

/// Why a username string is invalid. Messages are libsignal's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// No `.` separating nickname and discriminator.
    #[error("Username must contain a '.'")]
    MissingSeparator,
    /// The nickname has a character outside `_`, `a–z`, `A–Z`, `0–9`.
    #[error("Nickname contains disallowed character")]
    BadNicknameCharacter,
    /// The nickname is empty.
    #[error("Name cannot be empty")]
    NicknameCannotBeEmpty,
    /// The nickname starts with an ASCII digit.
    #[error("Name cannot start with a digit")]
    NicknameCannotStartWithDigit,
    /// The nickname is longer than [`MAX_NICKNAME_LEN`].
    #[error("Nickname is too long")]
    NicknameTooLong,
    /// Nothing after the last `.`.
    #[error("Discriminator cannot be empty")]
    DiscriminatorCannotBeEmpty,
    /// The discriminator's value is zero (`0`, `00`).
    #[error("Discriminator cannot be zero")]
    DiscriminatorCannotBeZero,
    /// A one-digit discriminator (`1`); two digits are the minimum.
    #[error("Discriminator cannot be a single digit")]
    DiscriminatorCannotBeSingleDigit,
    /// A leading zero on a discriminator longer than two digits (`042`).
    #[error("Discriminator cannot have leading zeros unless it would otherwise be a single digit")]
    DiscriminatorCannotHaveLeadingZeros,
    /// The discriminator has a non-digit (including `+`/`-` signs).
    #[error("Discriminator must only be made up of digits")]
    BadDiscriminatorCharacter,
    /// The discriminator does not fit in a u64.
    #[error("Value is too large to be a username discriminator")]
    DiscriminatorTooLarge,
}

/// Why a username proof was rejected. The server treats all of them alike ("could not be
/// verified"); the variants exist for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The proof is not exactly 128 bytes.
    #[error("username proof must be 128 bytes, got {0}")]
    BadProofLength(usize),
    /// A scalar in the proof is not reduced mod ℓ.
    #[error("username proof contains a non-canonical scalar")]
    NonCanonicalScalar,
    /// The hash is not 32 bytes or not a valid Ristretto encoding.
    #[error("username hash is not a valid Ristretto point")]
    BadHash,
    /// The recomputed challenge differs: the proof is not for this hash.
    #[error("username could not be verified")]
    Mismatch,
}

/// The three hash generators, derived from the label on first use.
struct Generators {
    points: [RistrettoPoint; 3],
    compressed: [CompressedRistretto; 3],
}

fn generators() -> &'static Generators {
    static GENERATORS: OnceLock<Generators> = OnceLock::new();
    GENERATORS.get_or_init(|| {
        let mut sho = ShoHmacSha256::new(GENERATOR_LABEL);
        sho.absorb_and_ratchet(b"");
        let points: [RistrettoPoint; 3] =
            core::array::from_fn(|_| RistrettoPoint::from_uniform_bytes(&sho.squeeze::<64>()));
        Generators {
            points,
            compressed: points.map(|p| p.compress()),
        }
    })
}

/// A validated username `nickname.discriminator`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username {
    /// The nickname as given (case preserved for display).
    nickname: String,
    /// The discriminator digits as given (`01` keeps its zero).
    discriminator_text: String,
    discriminator: u64,
}

/// Digit value of a nickname character after ASCII lowercasing, or `None` if disallowed.
fn nickname_digit(c: u8) -> Option<u64> {
    match c.to_ascii_lowercase() {
        b'_' => Some(1),
        c @ b'a'..=b'z' => Some(u64::from(c - b'a') + 2),
        c @ b'0'..=b'9' => Some(u64::from(c - b'0') + 28),
        _ => None,
    }
}

fn validate_nickname(nickname: &str) -> Result<(), UsernameError> {
    let bytes = nickname.as_bytes();
    let first = *bytes.first().ok_or(UsernameError::NicknameCannotBeEmpty)?;
    if first.is_ascii_digit() {
        return Err(UsernameError::NicknameCannotStartWithDigit);
    }
    // Any non-ASCII character has a byte outside the allowed set, so byte checks suffice.
    if bytes.iter().any(|&c| nickname_digit(c).is_none()) {
        return Err(UsernameError::BadNicknameCharacter);
    }
    if bytes.len() > MAX_NICKNAME_LEN {
        return Err(UsernameError::NicknameTooLong);
    }
    Ok(())
}

fn parse_discriminator(text: &str) -> Result<u64, UsernameError> {
    if text.is_empty() {
        return Err(UsernameError::DiscriminatorCannotBeEmpty);
    }
    if !text.bytes().all(|c| c.is_ascii_digit()) {
        return Err(UsernameError::BadDiscriminatorCharacter);
    }
    // Only digits remain, so the sole possible parse failure is overflow.
    let value: u64 = text
        .parse()
        .map_err(|_| UsernameError::DiscriminatorTooLarge)?;
    if value == 0 {
        return Err(UsernameError::DiscriminatorCannotBeZero);
    }
    if text.len() < 2 {
        return Err(UsernameError::DiscriminatorCannotBeSingleDigit);
    }
    if text.len() > 2 && text.starts_with('0') {
        return Err(UsernameError::DiscriminatorCannotHaveLeadingZeros);
    }
    Ok(value)
}

impl Username {
    /// Parses and validates `nickname.discriminator` (split at the last `.`), with the rules
    /// libsignal applies when hashing (no soft length limits).
    pub fn parse(name: &str) -> Result<Self, UsernameError> {
        let (nickname, disc) = name
            .rsplit_once('.')
            .ok_or(UsernameError::MissingSeparator)?;
        validate_nickname(nickname)?;
        let discriminator = parse_discriminator(disc)?;
        Ok(Self {
            nickname: nickname.to_owned(),
            discriminator_text: disc.to_owned(),
            discriminator,
        })
    }

    /// The nickname, in its original case.
    pub fn nickname(&self) -> &str {
        &self.nickname
    }

    /// The discriminator's numeric value.
    pub fn discriminator(&self) -> u64 {
        self.discriminator
    }

    /// The hash's witness scalars `(s1, s2, s3)`.
    fn scalars(&self) -> [Scalar; 3] {
        let lower = self.nickname.to_ascii_lowercase();
        let mut wide = [0u8; 64];
        wide.copy_from_slice(
            &Sha512::new()
                .chain_update(lower.as_bytes())
                .chain_update([0x00])
                .chain_update(self.discriminator.to_be_bytes())
                .finalize(),
        );
        let s1 = Scalar::from_bytes_mod_order_wide(&wide);

        // Mixed-radix packing: first character base 27 (it is never a digit), the rest base 37.
        let digits: Vec<u64> = lower.bytes().filter_map(nickname_digit).collect();
        let (first, rest) = digits.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
        let tail = rest.iter().rev().fold(Scalar::ZERO, |acc, &d| {
            acc * Scalar::from(37u64) + Scalar::from(d)
        });
        let s2 = Scalar::from(first) + Scalar::from(27u64) * tail;

        [s1, s2, Scalar::from(self.discriminator)]
    }

    /// The 32-byte username hash `s1·G1 + s2·G2 + s3·G3` (case-insensitive).
    pub fn hash(&self) -> [u8; USERNAME_HASH_LEN] {
        let g = generators();
        let [s1, s2, s3] = self.scalars();
        (s1 * g.points[0] + s2 * g.points[1] + s3 * g.points[2])
            .compress()
            .to_bytes()
    }
}

impl core::fmt::Display for Username {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{}", self.nickname, self.discriminator_text)
    }
}

/// Hashes a username string after validating it.
pub fn username_hash(name: &str) -> Result<[u8; USERNAME_HASH_LEN], UsernameError> {
    Ok(Username::parse(name)?.hash())
}

/// The Fiat–Shamir transcript state after absorbing the statement and its public points.
fn transcript(hash: &CompressedRistretto) -> ShoHmacSha256 {
    let g = generators();
    let mut sho = ShoHmacSha256::new(POKSHO_LABEL);
    sho.absorb(&STATEMENT);
    sho.absorb(RISTRETTO_BASEPOINT_COMPRESSED.as_bytes());
    sho.absorb(hash.as_bytes());
    for p in &g.compressed {
        sho.absorb(p.as_bytes());
    }
    sho.ratchet();
    sho
}

/// Squeezes the challenge after absorbing the commitment and the message (the hash itself).
fn challenge(mut sho: ShoHmacSha256, commitment: &CompressedRistretto, message: &[u8]) -> Scalar {
    sho.absorb(commitment.as_bytes());
    sho.absorb(message);
    sho.ratchet();
    Scalar::from_bytes_mod_order_wide(&sho.squeeze::<64>())
}

fn read_scalar(bytes: &[u8]) -> Result<Scalar, ProofError> {
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| ProofError::NonCanonicalScalar)?;
    Option::from(Scalar::from_canonical_bytes(arr)).ok_or(ProofError::NonCanonicalScalar)
}

/// Verifies a 128-byte username proof against a 32-byte username hash, as libsignal's
/// `Username::verify_proof` does.
pub fn verify_username_proof(proof: &[u8], hash: &[u8]) -> Result<(), ProofError> {
    if proof.len() != USERNAME_PROOF_LEN {
        return Err(ProofError::BadProofLength(proof.len()));
    }
    let c = read_scalar(&proof[..32])?;
    let r1 = read_scalar(&proof[32..64])?;
    let r2 = read_scalar(&proof[64..96])?;
    let r3 = read_scalar(&proof[96..])?;
    let compressed = CompressedRistretto::from_slice(hash).map_err(|_| ProofError::BadHash)?;
    let h = compressed.decompress().ok_or(ProofError::BadHash)?;

    let g = generators();
    let commitment = RistrettoPoint::vartime_multiscalar_mul(
        [r1, r2, r3, -c],
        [g.points[0], g.points[1], g.points[2], h],
    )
    .compress();
    let expected = challenge(transcript(&compressed), &commitment, hash);
    if bool::from(expected.ct_eq(&c)) {
        Ok(())
    } else {
        Err(ProofError::Mismatch)
    }
}

/// Produces a username proof (client side; used by the test kit's simulated client).
/// Deterministic in `randomness`, with poksho's synthetic nonces (randomness, witness and
/// message all feed the nonce), so repeated randomness cannot leak the witness.
pub fn generate_username_proof(
    name: &str,
    randomness: &[u8; 32],
) -> Result<[u8; USERNAME_PROOF_LEN], UsernameError> {
    let username = Username::parse(name)?;
    let witness = username.scalars();
    let hash = username.hash();
    let sho = transcript(&CompressedRistretto(hash));

    // Synthetic nonces: a fork of the transcript absorbs (randomness ‖ witness), ratchets,
    // absorbs the message, ratchets, and yields 64 bytes per scalar in a single squeeze.
    let mut nonce_sho = sho.clone();
    nonce_sho.absorb(randomness);
    for w in &witness {
        nonce_sho.absorb(w.as_bytes());
    }
    nonce_sho.ratchet();
    nonce_sho.absorb_and_ratchet(&hash);
    let wide = nonce_sho.squeeze::<{ 3 * 64 }>();
    let nonces: [Scalar; 3] = core::array::from_fn(|i| {
        let mut chunk = [0u8; 64];
        chunk.copy_from_slice(&wide[64 * i..64 * (i + 1)]);
        Scalar::from_bytes_mod_order_wide(&chunk)
    });

    let g = generators();
    let commitment =
        (nonces[0] * g.points[0] + nonces[1] * g.points[1] + nonces[2] * g.points[2]).compress();
    let c = challenge(sho, &commitment, &hash);

    let mut proof = [0u8; USERNAME_PROOF_LEN];
    proof[..32].copy_from_slice(c.as_bytes());
    for (i, (n, w)) in nonces.iter().zip(&witness).enumerate() {
        let r = n + c * w;
        proof[32 * (i + 1)..32 * (i + 2)].copy_from_slice(r.as_bytes());
    }
    Ok(proof)
}
