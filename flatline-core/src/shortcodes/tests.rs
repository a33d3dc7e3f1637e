use proptest::prelude::*;

use super::*;
use crate::contacts::Via;

const MIN: Duration = Duration::from_secs(60);

fn at(mins: u32) -> Timestamp {
    Timestamp(1_767_225_600_000).plus(MIN * mins)
}

struct Fixed(u8);
impl SecureRandom for Fixed {
    fn fill(&self, dest: &mut [u8]) {
        dest.fill(self.0);
    }
}

fn index(word: &str) -> u16 {
    word_index(word).unwrap()
}

#[test]
fn word_list_is_2048_sorted_distinct_short_lowercase_words() {
    let list = word_list();
    assert_eq!(list.len(), WORD_COUNT);
    assert!(list.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
    assert!(
        list.iter()
            .all(|w| (3..=8).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_lowercase()))
    );
    // The first four letters identify a word.
    let mut prefixes: Vec<&str> = list.iter().map(|w| &w[..w.len().min(4)]).collect();
    prefixes.dedup();
    assert_eq!(prefixes.len(), WORD_COUNT);
    assert_eq!((list[0], list[2047]), ("abandon", "zoo"));
}

#[test]
fn renders_and_parses_leniently() {
    let code = Shortcode::new(42, [index("velvet"), index("harbor")]).unwrap();
    assert_eq!(code.render(), "42-velvet-harbor");
    for variant in [
        "42-velvet-harbor",
        "42 Velvet Harbor",
        "42_VELVET_HARBOR",
        "  42 - velvet -- harbor \n",
        "42\tvelvet_-harbor",
        "-42-velvet-harbor-",
    ] {
        assert_eq!(Shortcode::parse(variant), Some(code), "{variant:?}");
    }
    for bad in [
        "",
        "42",
        "42-velvet",
        "42-velvet-harbor-extra",
        "042-velvet-harbor",
        "0-velvet-harbor",
        "+1-velvet-harbor",
        "x42-velvet-harbor",
        "42-velvet-harbour",
        "42-velv-harbor",
        "42velvet-harbor",
        "42.velvet.harbor",
        "42-velvét-harbor",
        "velvet-harbor-42",
        "1000000000-velvet-harbor",
        "99999999999999999999-velvet-harbor",
    ] {
        assert_eq!(Shortcode::parse(bad), None, "{bad:?}");
    }
    assert_eq!(
        Shortcode::parse("999999999-zoo-abandon").map(|c| c.nameplate()),
        Some(MAX_NAMEPLATE)
    );
    assert_eq!(Shortcode::parse(&"1-zoo-zoo ".repeat(10)), None);
}

#[test]
fn debug_hides_the_words_and_the_verifier() {
    let code = Shortcode::new(7, [index("velvet"), index("harbor")]).unwrap();
    let shown = format!("{code:?}");
    assert!(shown.contains('7') && !shown.contains("velvet"));
    let stored = ContactShortcode::new(&Fixed(1), Aci(Uuid::nil()), 7, code.words(), at(0), MIN);
    assert!(!format!("{stored:?}").contains("mac"));
}

#[test]
fn random_words_use_eleven_bits_each() {
    assert_eq!(Shortcode::random_words(&Fixed(0xff)), [2047, 2047]);
    assert_eq!(Shortcode::random_words(&Fixed(0)), [0, 0]);
    // 0x4242 & 0x7ff
    assert_eq!(Shortcode::random_words(&Fixed(0x42)), [0x242, 0x242]);
}

#[test]
fn macs_are_salted_and_bind_the_words() {
    let (a, b) = ([1u8; SALT_BYTES], [2u8; SALT_BYTES]);
    assert_ne!(words_mac(&a, [1, 2]), words_mac(&b, [1, 2]));
    assert_ne!(words_mac(&a, [1, 2]), words_mac(&a, [2, 1]));
    assert_eq!(words_mac(&a, [1, 2]), words_mac(&a, [1, 2]));
}

#[test]
fn smallest_free_nameplate_fills_gaps() {
    assert_eq!(smallest_free_nameplate(&[]), Some(1));
    assert_eq!(smallest_free_nameplate(&[1, 2, 3]), Some(4));
    assert_eq!(smallest_free_nameplate(&[3, 1, 1, 4]), Some(2));
    assert_eq!(smallest_free_nameplate(&[2]), Some(1));
    assert_eq!(smallest_free_nameplate(&[0, 1]), Some(2));
}

#[test]
fn states_follow_status_then_expiry() {
    let mut c = ContactShortcode::new(&Fixed(1), Aci(Uuid::nil()), 1, [1, 2], at(0), 10 * MIN);
    assert_eq!(c.state(at(9)), ShortcodeState::Live);
    assert_eq!(c.state(at(10)), ShortcodeState::Expired);
    assert!(c.holds_nameplate(at(9)) && !c.holds_nameplate(at(10)));
    for (status, state) in [
        (ShortcodeStatus::Used, ShortcodeState::Used),
        (ShortcodeStatus::Burned, ShortcodeState::Burned),
        (ShortcodeStatus::Revoked, ShortcodeState::Revoked),
    ] {
        c.status = status;
        assert_eq!((c.state(at(1)), c.state(at(11))), (state, state));
        assert_eq!(status.as_str().parse(), Ok(status));
    }
}

fn owner() -> Aci {
    Aci(Uuid::from_u128(1))
}

fn me() -> Aci {
    Aci(Uuid::from_u128(2))
}

fn code_on(nameplate: u32, words: [u16; 2]) -> ContactShortcode {
    ContactShortcode::new(&Fixed(9), owner(), nameplate, words, at(0), 10 * MIN)
}

fn plan(
    code: Option<&ContactShortcode>,
    guess: Shortcode,
    existing: Option<&Grant>,
    recent: u32,
) -> AttemptPlan {
    plan_shortcode_redemption(
        code,
        &guess,
        me(),
        existing,
        recent,
        at(1),
        &FloodConfig::default(),
    )
}

#[test]
fn attempt_plans() {
    let words = [index("velvet"), index("harbor")];
    let right = Shortcode::new(3, words).unwrap();
    let wrong = Shortcode::new(3, [words[1], words[0]]).unwrap();
    let c = code_on(3, words);
    assert_eq!(plan(None, right, None, 0), AttemptPlan::Invalid);
    assert_eq!(
        plan(Some(&c), right, None, 0),
        AttemptPlan::Grant(GrantState::Active)
    );
    // The owner window quarantines, exactly as for contact invites.
    assert_eq!(
        plan(Some(&c), right, None, 20),
        AttemptPlan::Grant(GrantState::Quarantined)
    );
    assert_eq!(
        plan(Some(&c), wrong, None, 0),
        AttemptPlan::FailedGuess {
            failed_guesses: 1,
            burned: false
        }
    );
    let mut twice = c.clone();
    twice.failed_guesses = 2;
    assert_eq!(
        plan(Some(&twice), wrong, None, 0),
        AttemptPlan::FailedGuess {
            failed_guesses: 3,
            burned: true
        }
    );
    // A code on another nameplate is not this one.
    assert_eq!(
        plan(Some(&code_on(4, words)), right, None, 0),
        AttemptPlan::Invalid
    );
    // Ended codes are invalid, right words or not, and count nothing.
    for status in [
        ShortcodeStatus::Used,
        ShortcodeStatus::Burned,
        ShortcodeStatus::Revoked,
    ] {
        let mut ended = c.clone();
        ended.status = status;
        assert_eq!(plan(Some(&ended), right, None, 0), AttemptPlan::Invalid);
        assert_eq!(plan(Some(&ended), wrong, None, 0), AttemptPlan::Invalid);
    }
    let expired = plan_shortcode_redemption(
        Some(&c),
        &right,
        me(),
        None,
        0,
        at(10),
        &FloodConfig::default(),
    );
    assert_eq!(expired, AttemptPlan::Invalid);
    let grant = |state| Grant {
        owner: owner(),
        grantee: me(),
        state,
        via: Via::Direct,
        created_at: at(0),
    };
    assert_eq!(
        plan(Some(&c), right, Some(&grant(GrantState::Denied)), 0),
        AttemptPlan::Invalid
    );
    assert_eq!(
        plan(Some(&c), right, Some(&grant(GrantState::Pending)), 0),
        AttemptPlan::Existing(GrantState::Pending)
    );
    // A denied or already granted account guessing wrong still counts.
    assert!(matches!(
        plan(Some(&c), wrong, Some(&grant(GrantState::Denied)), 0),
        AttemptPlan::FailedGuess { .. }
    ));
    assert_eq!(
        plan_shortcode_redemption(
            Some(&c),
            &right,
            owner(),
            None,
            0,
            at(1),
            &FloodConfig::default()
        ),
        AttemptPlan::OwnShortcode
    );
}

fn separators() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![Just('-'), Just('_'), Just(' '), Just('\t')],
        1..3,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn recase(word: &str, mask: u8) -> String {
    word.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 8) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

proptest! {
    /// Any rendering of a valid code — any casing, any separators, padding — parses back to it.
    #[test]
    fn any_rendering_parses_back(
        nameplate in 1u32..=MAX_NAMEPLATE,
        w1 in 0u16..2048, w2 in 0u16..2048,
        s1 in separators(), s2 in separators(), lead in "[ _-]{0,2}", trail in "[ _-]{0,2}",
        m1 in any::<u8>(), m2 in any::<u8>(),
    ) {
        let code = Shortcode::new(nameplate, [w1, w2]).unwrap();
        prop_assert_eq!(Shortcode::parse(&code.render()), Some(code));
        let list = word_list();
        let input = format!(
            "{lead}{nameplate}{s1}{}{s2}{}{trail}",
            recase(list[usize::from(w1)], m1),
            recase(list[usize::from(w2)], m2),
        );
        prop_assert_eq!(Shortcode::parse(&input), Some(code));
    }

    /// A valid rendering with one character inserted, deleted or replaced parses only when the edit left a
    /// rendering of some valid code (a separator or case change, or another listed word), never into anything
    /// the input does not spell.
    #[test]
    fn edited_renderings_parse_only_as_what_they_spell(
        nameplate in 1u32..100_000, w1 in 0u16..2048, w2 in 0u16..2048,
        at in 0usize..40, edit in 0u8..3, c in any::<char>(),
    ) {
        let mut chars: Vec<char> = Shortcode::new(nameplate, [w1, w2]).unwrap().render().chars().collect();
        let at = at % (chars.len() + 1);
        match edit {
            0 => chars.insert(at, c),
            1 if at < chars.len() => { chars.remove(at); }
            _ if at < chars.len() => chars[at] = c,
            _ => chars.push(c),
        }
        let input: String = chars.into_iter().collect();
        if let Some(code) = Shortcode::parse(&input) {
            let strip = |s: &str| s.chars()
                .filter(|c| !matches!(c, '-' | '_') && !c.is_ascii_whitespace())
                .map(|c| c.to_ascii_lowercase())
                .collect::<String>();
            prop_assert_eq!(strip(&code.render()), strip(&input));
        }
    }

    /// Whatever parses is a valid code whose canonical rendering, stripped of case and separators, is the input
    /// stripped the same way: nothing else parses.
    #[test]
    fn only_renderings_parse(input in "[0-9a-zA-Z _-]{0,40}|\\PC{0,20}") {
        if let Some(code) = Shortcode::parse(&input) {
            let strip = |s: &str| s.chars()
                .filter(|c| !matches!(c, '-' | '_') && !c.is_ascii_whitespace())
                .map(|c| c.to_ascii_lowercase())
                .collect::<String>();
            prop_assert_eq!(strip(&code.render()), strip(&input));
            prop_assert!(Shortcode::new(code.nameplate(), code.words()).is_some());
        }
    }
}

/// The bound of docs/SECURITY.md, from the defaults: at most three guesses ever reach one code, so the chance that
/// any one code is found is 3 / 2048², below the goal of 10⁻⁶; the limiter alone (20 guesses per identity over a
/// default lifetime) would miss it.
#[test]
fn guessing_bound_meets_the_goal() {
    let n = (WORD_COUNT * WORD_COUNT) as f64;
    assert_eq!(n, 4_194_304.0);
    // Three distinct guesses without replacement: 1 - (1 - 1/n)(1 - 1/(n-1))(1 - 1/(n-2)) = 3/n.
    let exact = 1.0
        - (0..FAILED_GUESS_LIMIT)
            .map(|i| 1.0 - 1.0 / (n - f64::from(i)))
            .product::<f64>();
    let per_code = f64::from(FAILED_GUESS_LIMIT) / n;
    assert!((exact - per_code).abs() < 1e-15);
    assert!(per_code < 1e-6 && (per_code - 7.152_557e-7).abs() < 1e-12);
    let limit = crate::ratelimit::Limiter::ShortcodeAttempt.default_config();
    let lifetime = ShortcodesConfig::default().default_lifetime;
    let per_identity = f64::from(limit.bucket_size)
        + lifetime.as_secs_f64() / limit.permit_regeneration.as_secs_f64();
    assert_eq!(per_identity, 20.0);
    assert!(
        per_identity / n > 1e-6,
        "without the burn the defaults would miss the goal"
    );
    // Burns per identity and hour, steady state: 60 attempts / 3.
    assert_eq!(
        3600 / limit.permit_regeneration.as_secs() / u64::from(FAILED_GUESS_LIMIT),
        20
    );
}
