//! Contact invite codes: 80 random bits shown as Crockford base32 in groups of four (`7KQ2-M9XD-4R1B-ZC0E`).
//!
//! Parsing is forgiving the way Crockford intended: case-insensitive, hyphens and spaces optional, `O` read as `0`,
//! `I` and `L` read as `1`. `U` is not in the alphabet (and nothing else outside it is accepted). Only the SHA-256
//! of the canonical form is ever stored.

use sha2::{Digest, Sha256};

use crate::random::{SecureRandom, random_array};

/// Crockford's base32 alphabet (no I, L, O, U).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Random bytes in a code: 10 bytes = 80 bits = 16 characters.
pub const CODE_BYTES: usize = 10;
/// Characters in a code (without hyphens).
pub const CODE_CHARS: usize = CODE_BYTES * 8 / 5;

/// A contact invite code in canonical form (16 upper-case alphabet characters, no hyphens). Never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct InviteCode(String);

impl std::fmt::Debug for InviteCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs and panic messages.
        f.write_str("InviteCode(…)")
    }
}

impl InviteCode {
    /// A fresh code from `rng`.
    pub fn generate(rng: &dyn SecureRandom) -> Self {
        let bytes = random_array::<CODE_BYTES>(rng);
        let mut out = String::with_capacity(CODE_CHARS);
        // 80 bits split into sixteen 5-bit groups, most significant first.
        let mut acc: u128 = 0;
        for b in bytes {
            acc = (acc << 8) | u128::from(b);
        }
        for i in (0..CODE_CHARS).rev() {
            let idx = usize::try_from((acc >> (i * 5)) & 0x1f).unwrap_or(0);
            out.push(char::from(ALPHABET[idx]));
        }
        InviteCode(out)
    }

    /// Normalizes user input; `None` when it cannot be a code (wrong length or a character outside the alphabet).
    pub fn parse(input: &str) -> Option<Self> {
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
        (out.len() == CODE_CHARS).then_some(InviteCode(out))
    }

    /// The grouped display form `XXXX-XXXX-XXXX-XXXX`.
    pub fn display(&self) -> String {
        self.0
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("-")
    }

    /// The canonical form (no hyphens).
    pub fn canonical(&self) -> &str {
        &self.0
    }

    /// The SHA-256 of the canonical form: what the store keeps and looks codes up by.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(u8);
    impl SecureRandom for Fixed {
        fn fill(&self, dest: &mut [u8]) {
            dest.fill(self.0);
        }
    }

    #[test]
    fn generated_codes_have_80_bits_in_groups() {
        let zero = InviteCode::generate(&Fixed(0));
        assert_eq!(zero.display(), "0000-0000-0000-0000");
        let ones = InviteCode::generate(&Fixed(0xff));
        assert_eq!(ones.display(), "ZZZZ-ZZZZ-ZZZZ-ZZZZ");
        // 0x42 repeated: bits 01000010… → groups 01000 01001 00001 …
        let c = InviteCode::generate(&Fixed(0x42));
        assert_eq!(&c.canonical()[..3], "891");
        assert_eq!(InviteCode::parse(&c.display()), Some(c.clone()));
    }

    #[test]
    fn parsing_normalizes_confusables_case_and_hyphens() {
        let c = InviteCode::parse("7KQ2-M9XD-4R1B-ZC0E").unwrap();
        for variant in [
            "7kq2m9xd4r1bzc0e",
            "7KQ2 M9XD 4RIB ZCOE",
            "7kq2-m9xd-4rlb-zcoe",
            "7-K-Q-2-M9XD4R1BZC0E",
        ] {
            assert_eq!(InviteCode::parse(variant), Some(c.clone()), "{variant}");
            assert_eq!(InviteCode::parse(variant).unwrap().hash(), c.hash());
        }
        for bad in [
            "",
            "7KQ2-M9XD-4R1B-ZC0",
            "7KQ2-M9XD-4R1B-ZC0EE",
            "7KQ2-M9XD-4R1B-ZCUE",
            "7KQ2-M9XD-4R1B-ZC0É",
            "7KQ2_M9XD_4R1B_ZC0E",
        ] {
            assert_eq!(InviteCode::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn debug_hides_the_code() {
        let c = InviteCode::parse("7KQ2-M9XD-4R1B-ZC0E").unwrap();
        assert!(!format!("{c:?}").contains("7KQ2"));
    }
}
