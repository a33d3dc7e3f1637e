//! Contact invite codes: the 80-bit codes of [`crate::code`]. Only the SHA-256 of the canonical form is ever
//! stored.

use crate::code;
use crate::random::SecureRandom;

pub use crate::code::{CODE_BYTES, CODE_CHARS};

/// A contact invite code in canonical form (16 upper-case alphabet characters, no hyphens). Never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct ContactCode(String);

impl std::fmt::Debug for ContactCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs and panic messages.
        f.write_str("ContactCode(…)")
    }
}

impl ContactCode {
    /// A fresh code from `rng`.
    pub fn generate(rng: &dyn SecureRandom) -> Self {
        ContactCode(code::generate(rng))
    }

    /// Normalizes user input; `None` when it cannot be a code (wrong length or a character outside the alphabet).
    pub fn parse(input: &str) -> Option<Self> {
        code::normalize(input).map(ContactCode)
    }

    /// The grouped display form `XXXX-XXXX-XXXX-XXXX`.
    pub fn display(&self) -> String {
        code::display(&self.0)
    }

    /// The canonical form (no hyphens).
    pub fn canonical(&self) -> &str {
        &self.0
    }

    /// The SHA-256 of the canonical form: what the store keeps and looks codes up by.
    pub fn hash(&self) -> [u8; 32] {
        code::hash(&self.0)
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
        let zero = ContactCode::generate(&Fixed(0));
        assert_eq!(zero.display(), "0000-0000-0000-0000");
        let ones = ContactCode::generate(&Fixed(0xff));
        assert_eq!(ones.display(), "ZZZZ-ZZZZ-ZZZZ-ZZZZ");
        // 0x42 repeated: bits 01000010… → groups 01000 01001 00001 …
        let c = ContactCode::generate(&Fixed(0x42));
        assert_eq!(&c.canonical()[..3], "891");
        assert_eq!(ContactCode::parse(&c.display()), Some(c.clone()));
    }

    #[test]
    fn parsing_normalizes_confusables_case_and_hyphens() {
        let c = ContactCode::parse("7KQ2-M9XD-4R1B-ZC0E").unwrap();
        for variant in [
            "7kq2m9xd4r1bzc0e",
            "7KQ2 M9XD 4RIB ZCOE",
            "7kq2-m9xd-4rlb-zcoe",
            "7-K-Q-2-M9XD4R1BZC0E",
        ] {
            assert_eq!(ContactCode::parse(variant), Some(c.clone()), "{variant}");
            assert_eq!(ContactCode::parse(variant).unwrap().hash(), c.hash());
        }
        for bad in [
            "",
            "7KQ2-M9XD-4R1B-ZC0",
            "7KQ2-M9XD-4R1B-ZC0EE",
            "7KQ2-M9XD-4R1B-ZCUE",
            "7KQ2-M9XD-4R1B-ZC0É",
            "7KQ2_M9XD_4R1B_ZC0E",
        ] {
            assert_eq!(ContactCode::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn debug_hides_the_code() {
        let c = ContactCode::parse("7KQ2-M9XD-4R1B-ZC0E").unwrap();
        assert!(!format!("{c:?}").contains("7KQ2"));
    }
}
