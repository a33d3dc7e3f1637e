//! Contact shortcodes (API §15): a code short enough to say aloud — `42-velvet-harbor` — that makes the listener a
//! contact of the speaker, once, for a few minutes.
//!
//! A shortcode is a **nameplate** (a small number, the smallest one free when the code was made) and **two words**
//! from a fixed list of 2048, so 22 bits of secret per code. Twenty-two bits are guessable by brute force, which is
//! why the rules here are what makes a shortcode safe, not its length:
//! - a wrong word pair for a live nameplate counts a failed guess on that code, and the third one burns it
//!   ([`FAILED_GUESS_LIMIT`]): whoever guesses, from however many accounts, gets at most three tries at one code,
//!   so the chance that any one code is found is at most 3 / 2²² ≈ 7.2 · 10⁻⁷ (see `docs/SECURITY.md`);
//! - a nameplate stays reserved until its code's expiry, whatever happens to the code (used, burned, revoked), so a
//!   retry of an old code never counts a failed guess against somebody else's new one, and a burned code's owner
//!   gets a different nameplate for the next one;
//! - only an HMAC-SHA-256 of the words under a per-code random salt is stored, compared in constant time, and the
//!   comparison runs on every attempt, also when the nameplate has no code ([`plan_shortcode_redemption`]).
//!
//! Redemption creates a contact grant exactly like a contact invite does: the decision is
//! [`crate::contacts::plan_redemption`] over a one-use invite view of the shortcode ([`ContactShortcode::invite_view`]),
//! so the owner window and the flood breaker of §6 apply unchanged.
//!
//! Pure types and decisions only; the stores apply them inside their transactions ([`ShortcodeStore`]) and the
//! [`Shortcodes`] service adds validation and the `shortcodeAttempt` limiter.

mod service;
mod store;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::contacts::{
    self, ContactInvite, ContactInviteId, FloodConfig, Grant, GrantState, RedeemPlan,
};
use crate::ids::{Aci, IdError};
use crate::random::{SecureRandom, random_array};
use crate::time::Timestamp;

pub use service::{NewShortcodeRequest, ShortcodeError, Shortcodes, ShortcodesConfig};
pub use store::{CreateShortcode, ShortcodeRedemption, ShortcodeStore};

/// Words in the list: 2¹¹, so two words carry 22 bits.
pub const WORD_COUNT: usize = 2048;

/// Failed guesses that burn a shortcode (the third wrong word pair on its nameplate).
pub const FAILED_GUESS_LIMIT: u32 = 3;

/// Bytes of the per-code salt that keys the stored HMAC.
pub const SALT_BYTES: usize = 16;

/// Longest input [`Shortcode::parse`] looks at; anything longer is not a shortcode (the longest valid rendering
/// is far shorter: ten digits and two words of at most eight letters).
pub const MAX_INPUT_BYTES: usize = 64;

/// Largest nameplate. Nameplates are the smallest free number, so real ones stay tiny; the bound only keeps the
/// parser and the column types simple.
pub const MAX_NAMEPLATE: u32 = 999_999_999;

/// The fixed list of 2048 words.
///
/// It is the BIP-39 English list, taken from the `bip39` crate (rust-bitcoin's, well kept, CC0; with default
/// features off it brings only `bitcoin_hashes`) rather than shipped by us: 2048 common, short (3–8 letters),
/// lower-case ASCII words, chosen so that the first four letters identify a word — which keeps two words distinct
/// when said aloud or mistyped a little. The list is sorted, so a word's index is found by binary search.
pub fn word_list() -> &'static [&'static str; WORD_COUNT] {
    bip39::Language::English.word_list()
}

/// The index of `word` (lower-case) in [`word_list`].
fn word_index(word: &str) -> Option<u16> {
    word_list()
        .binary_search(&word)
        .ok()
        .and_then(|i| u16::try_from(i).ok())
}

/// A shortcode's id (random, not secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShortcodeId(pub Uuid);

impl ShortcodeId {
    /// A fresh id from `rng`.
    pub fn random(rng: &dyn SecureRandom) -> Self {
        ShortcodeId(uuid::Builder::from_random_bytes(random_array(rng)).into_uuid())
    }
}

impl fmt::Display for ShortcodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for ShortcodeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        if s.len() != 36 {
            return Err(IdError::NotUuid);
        }
        Uuid::try_parse(s)
            .map(ShortcodeId)
            .map_err(|_| IdError::NotUuid)
    }
}

/// A validated shortcode: a nameplate in `1..=MAX_NAMEPLATE` and two word indices. Secret: never logged (its
/// `Debug` shows the nameplate only).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Shortcode {
    nameplate: u32,
    words: [u16; 2],
}

impl fmt::Debug for Shortcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Shortcode({}-…)", self.nameplate)
    }
}

impl Shortcode {
    /// The shortcode with this nameplate and these word indices; `None` when one is out of range.
    pub fn new(nameplate: u32, words: [u16; 2]) -> Option<Self> {
        ((1..=MAX_NAMEPLATE).contains(&nameplate)
            && words.iter().all(|w| usize::from(*w) < WORD_COUNT))
        .then_some(Shortcode { nameplate, words })
    }

    /// Two random words (uniform: 11 bits each from `rng`) for `nameplate`.
    pub fn random_words(rng: &dyn SecureRandom) -> [u16; 2] {
        let b: [u8; 4] = random_array(rng);
        let mask = u16::try_from(WORD_COUNT - 1).unwrap_or(u16::MAX);
        [
            u16::from_be_bytes([b[0], b[1]]) & mask,
            u16::from_be_bytes([b[2], b[3]]) & mask,
        ]
    }

    /// Parses user input leniently: ASCII case does not matter, and the three parts may be separated by any
    /// mix of `-`, `_` and whitespace (leading and trailing ones are ignored). The nameplate is a decimal number
    /// without leading zeros; the words must be on the list exactly. Anything else is `None`.
    pub fn parse(input: &str) -> Option<Self> {
        if input.len() > MAX_INPUT_BYTES || !input.is_ascii() {
            return None;
        }
        let mut parts = input
            .split(|c: char| c == '-' || c == '_' || c.is_ascii_whitespace())
            .filter(|p| !p.is_empty());
        let (Some(number), Some(first), Some(second), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        if number.starts_with('0') || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let nameplate: u32 = number.parse().ok()?;
        let word = |w: &str| {
            if w.bytes().all(|b| b.is_ascii_alphabetic()) {
                word_index(&w.to_ascii_lowercase())
            } else {
                None
            }
        };
        Shortcode::new(nameplate, [word(first)?, word(second)?])
    }

    /// The canonical rendering: `42-velvet-harbor` (lower case, hyphen-joined).
    pub fn render(&self) -> String {
        let list = word_list();
        let w = |i: u16| list.get(usize::from(i)).copied().unwrap_or("");
        format!(
            "{}-{}-{}",
            self.nameplate,
            w(self.words[0]),
            w(self.words[1])
        )
    }

    /// The nameplate.
    pub fn nameplate(&self) -> u32 {
        self.nameplate
    }

    /// The word indices.
    pub fn words(&self) -> [u16; 2] {
        self.words
    }
}

/// The stored verifier of a code's words: `HMAC-SHA-256(salt, "flatline-shortcode-v1" ‖ word₁ ‖ word₂)`, word
/// indices as big-endian `u16`. A per-code salt rather than a server secret: a leaked database row then still does
/// not give the words without 2²² HMACs of work for that one code, which is cheap — but the code is live for
/// minutes and the same leak gives far more than a shortcode (see `docs/SECURITY.md`).
pub fn words_mac(salt: &[u8; SALT_BYTES], words: [u16; 2]) -> [u8; 32] {
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(salt) else {
        return [0; 32];
    };
    mac.update(b"flatline-shortcode-v1");
    mac.update(&words[0].to_be_bytes());
    mac.update(&words[1].to_be_bytes());
    mac.finalize().into_bytes().into()
}

/// What happened to a shortcode, as stored. Expiry is not stored: it follows from `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShortcodeStatus {
    /// Not used, burned or revoked (it may still be past its expiry).
    Live,
    /// Redeemed.
    Used,
    /// The third failed guess hit it.
    Burned,
    /// The owner deleted it.
    Revoked,
}

impl ShortcodeStatus {
    /// Storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            ShortcodeStatus::Live => "live",
            ShortcodeStatus::Used => "used",
            ShortcodeStatus::Burned => "burned",
            ShortcodeStatus::Revoked => "revoked",
        }
    }
}

impl FromStr for ShortcodeStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "live" => Ok(ShortcodeStatus::Live),
            "used" => Ok(ShortcodeStatus::Used),
            "burned" => Ok(ShortcodeStatus::Burned),
            "revoked" => Ok(ShortcodeStatus::Revoked),
            _ => Err(()),
        }
    }
}

/// A shortcode's state at some moment, as its owner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShortcodeState {
    /// Redeemable.
    Live,
    /// Redeemed.
    Used,
    /// Burned by the third failed guess.
    Burned,
    /// Past its expiry without being used, burned or revoked.
    Expired,
    /// Deleted by the owner.
    Revoked,
}

impl ShortcodeState {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ShortcodeState::Live => "live",
            ShortcodeState::Used => "used",
            ShortcodeState::Burned => "burned",
            ShortcodeState::Expired => "expired",
            ShortcodeState::Revoked => "revoked",
        }
    }
}

/// A shortcode as stored. The words are never stored, only their salted HMAC.
#[derive(Clone, PartialEq, Eq)]
pub struct ContactShortcode {
    /// Id.
    pub id: ShortcodeId,
    /// The account whose contact the redeemer becomes.
    pub owner: Aci,
    /// The nameplate (reserved for this code until `expires_at`).
    pub nameplate: u32,
    /// Key of [`ContactShortcode::mac`].
    pub salt: [u8; SALT_BYTES],
    /// [`words_mac`] of the words.
    pub mac: [u8; 32],
    /// Wrong word pairs tried on the nameplate while the code was live.
    pub failed_guesses: u32,
    /// What happened to it.
    pub status: ShortcodeStatus,
    /// Creation time.
    pub created_at: Timestamp,
    /// It stops working, and its nameplate becomes free, at this time.
    pub expires_at: Timestamp,
}

impl fmt::Debug for ContactShortcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The verifier stays out of logs and panic messages.
        f.debug_struct("ContactShortcode")
            .field("id", &self.id)
            .field("owner", &self.owner)
            .field("nameplate", &self.nameplate)
            .field("failed_guesses", &self.failed_guesses)
            .field("status", &self.status)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl ContactShortcode {
    /// A new live code for `owner` with `words` on `nameplate`, salted from `rng`.
    pub fn new(
        rng: &dyn SecureRandom,
        owner: Aci,
        nameplate: u32,
        words: [u16; 2],
        created_at: Timestamp,
        lifetime: Duration,
    ) -> Self {
        let salt = random_array::<SALT_BYTES>(rng);
        ContactShortcode {
            id: ShortcodeId::random(rng),
            owner,
            nameplate,
            mac: words_mac(&salt, words),
            salt,
            failed_guesses: 0,
            status: ShortcodeStatus::Live,
            created_at,
            expires_at: created_at.plus(lifetime),
        }
    }

    /// Whether the code still reserves its nameplate at `now` (until its expiry, whatever its status).
    pub fn holds_nameplate(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }

    /// The state at `now`; what happened to the code wins over its expiry.
    pub fn state(&self, now: Timestamp) -> ShortcodeState {
        match self.status {
            ShortcodeStatus::Used => ShortcodeState::Used,
            ShortcodeStatus::Burned => ShortcodeState::Burned,
            ShortcodeStatus::Revoked => ShortcodeState::Revoked,
            ShortcodeStatus::Live if now >= self.expires_at => ShortcodeState::Expired,
            ShortcodeStatus::Live => ShortcodeState::Live,
        }
    }

    /// The code as a one-use contact invite, for [`contacts::plan_redemption`]: its bucket is full (a one-use code
    /// takes one token of a bucket of `burst ≥ 1`, so the breaker never trips on it alone), it is unused while
    /// live, and it expires with the code.
    pub fn invite_view(&self, now: Timestamp) -> ContactInvite {
        ContactInvite {
            id: ContactInviteId(self.id.0),
            owner: self.owner,
            code_hash: [0; 32],
            label: None,
            max_uses: 1,
            uses: u32::from(self.state(now) != ShortcodeState::Live),
            created_at: self.created_at,
            expires_at: self.expires_at,
            paused_until: None,
            flood: None,
            bucket: None,
        }
    }
}

/// The smallest nameplate (≥ 1) not in `taken` (the nameplates of codes that still hold theirs), or `None` when
/// every nameplate up to [`MAX_NAMEPLATE`] is taken.
pub fn smallest_free_nameplate(taken: &[u32]) -> Option<u32> {
    let mut sorted: Vec<u32> = taken.iter().copied().filter(|n| *n >= 1).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut candidate = 1u32;
    for n in sorted {
        if n != candidate {
            break;
        }
        candidate = candidate.checked_add(1)?;
    }
    (candidate <= MAX_NAMEPLATE).then_some(candidate)
}

/// What a redemption attempt will do, decided from the state read inside the store's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptPlan {
    /// No live code on the nameplate, or a right guess by an account the owner denied: change nothing, answer
    /// [`ShortcodeRedemption::Invalid`].
    Invalid,
    /// A wrong word pair for a live code: store `failed_guesses`, and burn the code when `burned`; answer
    /// [`ShortcodeRedemption::FailedGuess`].
    FailedGuess {
        /// The code's new count of failed guesses.
        failed_guesses: u32,
        /// Whether this guess burns it.
        burned: bool,
    },
    /// The owner said its own code: change nothing.
    OwnShortcode,
    /// Right words, and the owner already has a (non-denied) grant to the redeemer: mark the code used, create
    /// nothing, answer [`ShortcodeRedemption::Existing`].
    Existing(GrantState),
    /// Right words: mark the code used and create a grant owner → redeemer in this state, via the shortcode.
    Grant(GrantState),
}

/// Fixed salt of the verification that runs when the nameplate has no code, so that every attempt computes one
/// HMAC and one constant-time comparison.
const NO_CODE_SALT: [u8; SALT_BYTES] = [0x5a; SALT_BYTES];

/// Decides a redemption attempt of `guess` by `redeemer`. `code` is the code that holds `guess`'s nameplate (if
/// any), `existing` the owner's grant to the redeemer and `owner_recent` the owner's grants in the owner window, as
/// for [`contacts::plan_redemption`] — which makes the grant decision once the words are right.
pub fn plan_shortcode_redemption(
    code: Option<&ContactShortcode>,
    guess: &Shortcode,
    redeemer: Aci,
    existing: Option<&Grant>,
    owner_recent: u32,
    now: Timestamp,
    config: &FloodConfig,
) -> AttemptPlan {
    let live =
        code.filter(|c| c.nameplate == guess.nameplate && c.state(now) == ShortcodeState::Live);
    let (salt, expected) = live.map_or((NO_CODE_SALT, [0; 32]), |c| (c.salt, c.mac));
    // Always computed and compared, so that an unknown nameplate costs the same as a wrong guess.
    let right: bool = words_mac(&salt, guess.words).ct_eq(&expected).into();
    let Some(code) = live else {
        return AttemptPlan::Invalid;
    };
    if !right {
        let failed_guesses = code.failed_guesses.saturating_add(1);
        return AttemptPlan::FailedGuess {
            failed_guesses,
            burned: failed_guesses >= FAILED_GUESS_LIMIT,
        };
    }
    match contacts::plan_redemption(
        &code.invite_view(now),
        redeemer,
        existing,
        owner_recent,
        now,
        config,
    ) {
        RedeemPlan::OwnInvite => AttemptPlan::OwnShortcode,
        RedeemPlan::Invalid => AttemptPlan::Invalid,
        RedeemPlan::Existing(state) => AttemptPlan::Existing(state),
        RedeemPlan::Grant { state, .. } => AttemptPlan::Grant(state),
        // A one-use view with a full bucket neither is paused nor trips (burst ≥ 1 is a config rule); should it
        // ever, the breaker's answer to a flood is quarantine, so the grant is made quarantined.
        RedeemPlan::Paused | RedeemPlan::Trip { .. } => AttemptPlan::Grant(GrantState::Quarantined),
    }
}

#[cfg(test)]
mod tests;
