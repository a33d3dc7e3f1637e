//! The 80-bit codes people type: 16 characters of Crockford base32, shown in groups of four (`7KQ2-M9XD-4R1B-ZC0E`).
//! Registration invites ([`crate::invites::InviteCode`]) and contact invites ([`crate::contacts::ContactCode`]) are
//! distinct types over this one engine.
//!
//! Parsing is forgiving the way Crockford intended: case-insensitive, hyphens and spaces optional, `O` read as `0`,
//! `I` and `L` read as `1`. `U` is not in the alphabet (and nothing else outside it is accepted).

use sha2::{Digest, Sha256};

use crate::random::{SecureRandom, random_array};

/// Crockford's base32 alphabet (no I, L, O, U).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Random bytes in a code: 10 bytes = 80 bits.
pub const CODE_BYTES: usize = 10;
/// Characters in a code (without hyphens): 16 × 5 bits.
pub const CODE_CHARS: usize = CODE_BYTES * 8 / 5;

/// A fresh code's canonical form (16 upper-case alphabet characters) from 80 bits of `rng`.
pub(crate) fn generate(rng: &dyn SecureRandom) -> String {
    let bytes = random_array::<CODE_BYTES>(rng);
    // 80 bits split into sixteen 5-bit groups, most significant first.
    let mut acc: u128 = 0;
    for b in bytes {
        acc = (acc << 8) | u128::from(b);
    }
    (0..CODE_CHARS)
        .rev()
        .map(|i| char::from(ALPHABET[usize::try_from((acc >> (i * 5)) & 0x1f).unwrap_or(0)]))
        .collect()
}

/// The canonical form of user input, or `None` when it cannot be a code (wrong length, a character outside the
/// alphabet).
pub(crate) fn normalize(input: &str) -> Option<String> {
    let mut out = String::with_capacity(CODE_CHARS);
    for c in input.chars() {
        let c = match c.to_ascii_uppercase() {
            '-' | ' ' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c if c.is_ascii() && ALPHABET.contains(&(c as u8)) => c,
            _ => return None,
        };
        if out.len() == CODE_CHARS {
            return None;
        }
        out.push(c);
    }
    (out.len() == CODE_CHARS).then_some(out)
}

/// The grouped display form `XXXX-XXXX-XXXX-XXXX` of a canonical code.
pub(crate) fn display(canonical: &str) -> String {
    canonical
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// SHA-256 of the canonical form: all a store keeps of a code.
pub(crate) fn hash(canonical: &str) -> [u8; 32] {
    Sha256::digest(canonical.as_bytes()).into()
}
