//! Vector-driven tests against outputs of libsignal 0.103.0 (see `testdata/`), plus properties.

use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::*;
use crate::random::SecureRandom;

const KEYS: &str = include_str!("../../testdata/keys.json");
const USERNAMES: &str = include_str!("../../testdata/usernames.json");
const XEDDSA_DET: &str = include_str!("../../testdata/xeddsa_sign_deterministic.json");

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn hexf(v: &Value, field: &str) -> Vec<u8> {
    hex::decode(
        v[field]
            .as_str()
            .unwrap_or_else(|| panic!("missing {field}")),
    )
    .unwrap()
}

fn s<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("missing {field}"))
}

fn arr(v: &Value, field: &str) -> Vec<Value> {
    v[field].as_array().unwrap().clone()
}

/// libsignal's error text without the JS error-class prefix.
fn libsignal_error(v: &Value) -> &str {
    s(v, "error").trim_start_matches("LibSignalErrorBase: ")
}

fn kyber_key_bytes() -> Vec<u8> {
    use base64::Engine;
    let keys = json(KEYS);
    base64::engine::general_purpose::STANDARD
        .decode(s(&keys["kyber_prekey"], "public_key_serialized_b64"))
        .unwrap()
}

/// Deterministic test RNG: SHA-256 of a counter.
struct CounterRng(AtomicU64);

impl SecureRandom for CounterRng {
    fn fill(&self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(32) {
            let n = self.0.fetch_add(1, Ordering::Relaxed);
            chunk.copy_from_slice(&Sha256::digest(n.to_le_bytes())[..chunk.len()]);
        }
    }
}

// ---------------------------------------------------------------- EC keys and XEdDSA

#[test]
fn signature_cases_match_libsignal() {
    let keys = json(KEYS);
    let cases = arr(&keys, "signature_cases");
    assert_eq!(cases.len(), 19);
    for case in &cases {
        let name = s(case, "name");
        let key = PublicKey::from_bytes(&hexf(case, "public_key_hex")).unwrap();
        let msg = hexf(case, "message_hex");
        let sig = hexf(case, "signature_hex");
        let expected = case["libsignal_verify"].as_bool().unwrap();
        assert_eq!(key.verify_signature(&msg, &sig), expected, "{name}");
        let vk = VerifyingKey::new(&key);
        assert_eq!(vk.verify(&msg, &sig), expected, "{name} (VerifyingKey)");
        assert_eq!(
            vk.verify_many(&[(&msg, &sig)]),
            vec![expected],
            "{name} (many)"
        );
    }
}

#[test]
fn signature_batch_all_verify() {
    let keys = json(KEYS);
    let batch = arr(&keys, "signature_batch");
    assert_eq!(batch.len(), 48);
    let mut sign_bit_one = 0;
    for case in &batch {
        let key = PublicKey::from_bytes(&hexf(case, "identity_public_hex")).unwrap();
        let msg = hexf(case, "message_hex");
        let sig = hexf(case, "signature_hex");
        assert!(case["libsignal_verify"].as_bool().unwrap());
        assert_eq!(u64::from(sig[63] >> 7), case["sign_bit"].as_u64().unwrap());
        sign_bit_one += usize::from(sig[63] >> 7);
        assert!(key.verify_signature(&msg, &sig));
        assert!(VerifyingKey::new(&key).verify(&msg, &sig));
    }
    assert_eq!(sign_bit_one, 22);
}

#[test]
fn verify_many_mixes_verdicts_in_order() {
    let keys = json(KEYS);
    let ident =
        PublicKey::from_bytes(&hexf(&keys["identity"], "public_key_serialized_hex")).unwrap();
    let spk = hexf(&keys["signed_prekey"], "public_key_serialized_hex");
    let sig1 = hexf(&keys["signed_prekey"], "signature_hex");
    let sig2 = hexf(&keys["signed_prekey"], "signature2_hex");
    let kyber = kyber_key_bytes();
    let ksig = hexf(&keys["kyber_prekey"], "signature_hex");
    let mut flipped = sig1.clone();
    flipped[63] ^= 0x80; // other sign bit: exercises the second precomputation
    let items: Vec<(&[u8], &[u8])> = vec![
        (&spk, &sig1),
        (&spk, &flipped),
        (&kyber, &ksig),
        (&spk, &sig1[..63]),
        (&kyber[1..], &ksig),
        (&spk, &sig2),
    ];
    let vk = VerifyingKey::new(&ident);
    assert_eq!(
        vk.verify_many(&items),
        vec![true, false, true, false, false, true]
    );
    assert_eq!(vk.verify_many(&[]), Vec::<bool>::new());
    assert_eq!(vk.public_key(), &ident);
}

#[test]
fn deterministic_signing_is_byte_exact() {
    let det = json(XEDDSA_DET);
    let cases = arr(&det, "cases");
    assert_eq!(cases.len(), 32);
    for (i, case) in cases.iter().enumerate() {
        let sk = PrivateKey::from_bytes(&hexf(case, "private_key_hex")).unwrap();
        let pk = sk.public_key();
        assert_eq!(
            pk.serialize().to_vec(),
            hexf(case, "public_key_hex"),
            "case {i}"
        );
        let z: [u8; 64] = hexf(case, "nonce_z_hex").try_into().unwrap();
        let msg = hexf(case, "message_hex");
        let sig = sk.sign_with_z(&msg, &z);
        assert_eq!(sig.to_vec(), hexf(case, "signature_hex"), "case {i}");
        assert_eq!(u64::from(sig[63] >> 7), case["sign_bit"].as_u64().unwrap());
        assert!(pk.verify_signature(&msg, &sig));
    }
}

#[test]
fn identity_and_prekey_vectors() {
    let keys = json(KEYS);
    for field in ["identity", "signed_prekey"] {
        let v = &keys[field];
        let sk = PrivateKey::from_bytes(&hexf(v, "private_key_input_hex")).unwrap();
        assert_eq!(
            sk.serialize().to_vec(),
            hexf(v, "private_key_serialized_hex"),
            "{field}"
        );
        let kp = KeyPair::from_private(sk);
        assert_eq!(
            kp.public_key.serialize().to_vec(),
            hexf(v, "public_key_serialized_hex")
        );
    }
    // The signed prekey's input changes when clamped (last byte f9 -> 79).
    let spk = &keys["signed_prekey"];
    assert_ne!(
        hexf(spk, "private_key_input_hex"),
        hexf(spk, "private_key_serialized_hex")
    );

    let ident =
        PublicKey::from_bytes(&hexf(&keys["identity"], "public_key_serialized_hex")).unwrap();
    assert_eq!(
        ident.u_bytes().to_vec(),
        hexf(&keys["identity"], "public_key_raw_hex")
    );
    let spk_bytes = hexf(spk, "public_key_serialized_hex");
    assert!(ident.verify_signature(&spk_bytes, &hexf(spk, "signature_hex")));
    assert!(ident.verify_signature(&spk_bytes, &hexf(spk, "signature2_hex")));

    let kyber = KemPublicKey::from_bytes(&kyber_key_bytes()).unwrap();
    assert_eq!(kyber.serialize().len(), KEM_PUBLIC_KEY_LEN);
    let ksig = hexf(&keys["kyber_prekey"], "signature_hex");
    assert!(ident.verify_signature(kyber.serialize(), &ksig));

    let example = &keys["random_identity_example"];
    let sk = PrivateKey::from_bytes(&hexf(example, "private_key_serialized_hex")).unwrap();
    assert_eq!(
        sk.public_key().serialize().to_vec(),
        hexf(example, "public_key_serialized_hex")
    );
}

#[test]
fn x25519_agreement_vector() {
    let keys = json(KEYS);
    let v = &keys["x25519_agreement"];
    let sk = PrivateKey::from_bytes(&hexf(v, "private_key_serialized_hex")).unwrap();
    let theirs = PublicKey::from_bytes(&hexf(v, "their_public_serialized_hex")).unwrap();
    assert_eq!(sk.agree(&theirs).to_vec(), hexf(v, "shared_secret_hex"));
    // Agreement is symmetric.
    let other =
        PrivateKey::from_bytes(&hexf(&keys["signed_prekey"], "private_key_input_hex")).unwrap();
    assert_eq!(other.agree(&sk.public_key()), sk.agree(&other.public_key()));
}

#[test]
fn public_key_parse_cases() {
    let keys = json(KEYS);
    let cases = arr(&keys, "public_key_parse_cases");
    assert_eq!(cases.len(), 6);
    for case in &cases {
        let name = s(case, "name");
        let input = hexf(case, "input_hex");
        let parsed = PublicKey::from_bytes(&input);
        if name == "trailing_byte_34" {
            // Documented strictness: libsignal accepts trailing bytes, Flatline does not.
            assert!(case["ok"].as_bool().unwrap());
            assert_eq!(parsed, Err(KeyParseError::BadKeyLength(34)));
            continue;
        }
        if case["ok"].as_bool().unwrap() {
            assert_eq!(
                parsed.unwrap().serialize().to_vec(),
                hexf(case, "reserialized_hex"),
                "{name}"
            );
        } else {
            assert_eq!(
                parsed.unwrap_err().to_string(),
                libsignal_error(case),
                "{name}"
            );
        }
    }
    assert_eq!(PublicKey::from_bytes(&[]), Err(KeyParseError::NoKeyType));
    assert_eq!(
        PublicKey::from_bytes(&[6; 33]),
        Err(KeyParseError::BadKeyType(6))
    );
    assert_eq!(
        PublicKey::from_bytes(&[5; 20]),
        Err(KeyParseError::BadKeyLength(20))
    );
    assert_eq!(
        PrivateKey::from_bytes(&[1; 31]).unwrap_err(),
        KeyParseError::BadPrivateKeyLength(31)
    );
}

#[test]
fn kem_public_key_parse_cases() {
    let keys = json(KEYS);
    let valid = kyber_key_bytes();
    let cases = arr(&keys, "kem_public_key_parse_cases");
    assert_eq!(cases.len(), 5);
    for case in &cases {
        let name = s(case, "name");
        let input = match name {
            "valid_1569" => valid.clone(),
            "raw_1568_no_type" => valid[1..].to_vec(),
            "trailing_byte_1570" => [&valid[..], &[0u8]].concat(),
            "type_0x07_kyber768" => [&[0x07], &valid[1..]].concat(),
            "type_0x0a_mlkem1024" => [&[0x0a], &valid[1..]].concat(),
            other => panic!("unknown KEM case {other}"),
        };
        assert_eq!(
            input.len() as u64,
            case["input_len"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            input[..4].to_vec(),
            hexf(case, "input_prefix_hex"),
            "{name}"
        );
        let parsed = KemPublicKey::from_bytes(&input);
        if case["ok"].as_bool().unwrap() {
            assert_eq!(parsed.unwrap().serialize(), &input[..], "{name}");
        } else {
            assert_eq!(
                parsed.unwrap_err().to_string(),
                libsignal_error(case),
                "{name}"
            );
        }
    }
}

#[test]
fn explicit_rejections() {
    let keys = json(KEYS);
    let ident =
        PublicKey::from_bytes(&hexf(&keys["identity"], "public_key_serialized_hex")).unwrap();
    let spk = hexf(&keys["signed_prekey"], "public_key_serialized_hex");
    let sig = hexf(&keys["signed_prekey"], "signature_hex");
    assert!(ident.verify_signature(&spk, &sig));
    // Signature checked over the raw 32-byte key (no type byte).
    assert!(!ident.verify_signature(&spk[1..], &sig));
    // Over the raw 1568 Kyber bytes.
    let kyber = kyber_key_bytes();
    let ksig = hexf(&keys["kyber_prekey"], "signature_hex");
    assert!(!ident.verify_signature(&kyber[1..], &ksig));
    // Kyber768 / ML-KEM-1024 type bytes.
    for ty in [0x07u8, 0x0a, 0x05, 0x00] {
        let mut k = kyber.clone();
        k[0] = ty;
        assert_eq!(
            KemPublicKey::from_bytes(&k),
            Err(KeyParseError::BadKemKeyType(ty))
        );
    }
    assert_eq!(KemPublicKey::from_bytes(&[]), Err(KeyParseError::NoKeyType));
    assert_eq!(
        KemPublicKey::from_bytes(&kyber[..100]),
        Err(KeyParseError::BadKemKeyLength(100))
    );
    // 63- and 65-byte signatures.
    assert!(!ident.verify_signature(&spk, &sig[..63]));
    assert!(!ident.verify_signature(&spk, &[&sig[..], &[0]].concat()));
    assert!(!VerifyingKey::new(&ident).verify(&spk, &sig[..63]));
    assert!(!ident.verify_signature(&spk, &[]));
}

#[test]
fn random_signing_round_trip() {
    let rng = CounterRng(AtomicU64::new(1));
    let kp = KeyPair::generate(&rng);
    let a = kp.private_key.sign(b"hello", &rng);
    let b = kp.private_key.sign(b"hello", &rng);
    assert_ne!(a, b, "signatures are randomized");
    assert!(kp.public_key.verify_signature(b"hello", &a));
    assert!(kp.public_key.verify_signature(b"hello", &b));
    assert!(!kp.public_key.verify_signature(b"hellO", &a));
    assert_eq!(format!("{:?}", kp.private_key), "PrivateKey(<redacted>)");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sign_verify_round_trip(
        key in any::<[u8; 32]>(),
        z in proptest::collection::vec(any::<u8>(), 64),
        msg in proptest::collection::vec(any::<u8>(), 0..200),
        bit in 0usize..(64 * 8),
    ) {
        let z: [u8; 64] = z.try_into().unwrap();
        let sk = PrivateKey::from_array(key);
        let pk = sk.public_key();
        let sig = sk.sign_with_z(&msg, &z);
        prop_assert!(pk.verify_signature(&msg, &sig));
        let vk = VerifyingKey::new(&pk);
        prop_assert!(vk.verify(&msg, &sig));

        let mut bad = sig;
        bad[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(!pk.verify_signature(&msg, &bad));
        prop_assert!(!vk.verify(&msg, &bad));
        prop_assert_eq!(vk.verify_many(&[(&msg, &sig), (&msg, &bad)]), vec![true, false]);
        if !msg.is_empty() {
            let mut bad_msg = msg.clone();
            bad_msg[bit % msg.len()] ^= 1 << (bit % 8);
            prop_assert!(!pk.verify_signature(&bad_msg, &sig));
        }
    }
}

// ---------------------------------------------------------------- usernames

fn error_for(text: &str) -> UsernameError {
    use UsernameError::*;
    [
        MissingSeparator,
        BadNicknameCharacter,
        NicknameCannotBeEmpty,
        NicknameCannotStartWithDigit,
        NicknameTooLong,
        DiscriminatorCannotBeEmpty,
        DiscriminatorCannotBeZero,
        DiscriminatorCannotBeSingleDigit,
        DiscriminatorCannotHaveLeadingZeros,
        BadDiscriminatorCharacter,
        DiscriminatorTooLarge,
    ]
    .into_iter()
    .find(|e| e.to_string() == text)
    .unwrap_or_else(|| panic!("no variant for libsignal error {text:?}"))
}

#[test]
fn username_hash_cases() {
    let u = json(USERNAMES);
    let cases = arr(&u, "hash_cases");
    assert_eq!(cases.len(), 35);
    let (mut ok, mut bad) = (0, 0);
    for case in &cases {
        let name = s(case, "username");
        if case["ok"].as_bool().unwrap() {
            assert_eq!(
                username_hash(name).unwrap().to_vec(),
                hexf(case, "hash_hex"),
                "{name}"
            );
            ok += 1;
        } else {
            assert_eq!(
                username_hash(name),
                Err(error_for(libsignal_error(case))),
                "{name}"
            );
            bad += 1;
        }
    }
    assert_eq!((ok, bad), (18, 17));
}

#[test]
fn username_parts_and_display() {
    let name = Username::parse("FlatLine.01").unwrap();
    assert_eq!(name.nickname(), "FlatLine");
    assert_eq!(name.discriminator(), 1);
    assert_eq!(name.to_string(), "FlatLine.01");
    assert_eq!(name.hash(), username_hash("flatline.01").unwrap());
    assert_eq!(
        Username::parse("a.b.42"),
        Err(UsernameError::BadNicknameCharacter)
    );
}

#[test]
fn username_proof_cases() {
    let u = json(USERNAMES);
    let cases = arr(&u, "proof_cases");
    assert_eq!(cases.len(), 12);
    for case in &cases {
        let name = s(case, "name");
        let verdict = verify_username_proof(&hexf(case, "proof_hex"), &hexf(case, "hash_hex"));
        assert_eq!(
            verdict.is_ok(),
            case["ok"].as_bool().unwrap(),
            "{name}: {verdict:?}"
        );
    }
}

#[test]
fn username_proof_vectors() {
    let u = json(USERNAMES);
    let vectors = arr(&u, "proof_vectors");
    assert_eq!(vectors.len(), 5);
    for v in &vectors {
        let name = s(v, "username");
        let hash = hexf(v, "hash_hex");
        let proof = hexf(v, "proof_hex");
        assert_eq!(username_hash(name).unwrap().to_vec(), hash, "{name}");
        assert_eq!(verify_username_proof(&proof, &hash), Ok(()), "{name}");
        let randomness: [u8; 32] = hexf(v, "randomness_hex").try_into().unwrap();
        let generated = generate_username_proof(name, &randomness).unwrap();
        assert_eq!(verify_username_proof(&generated, &hash), Ok(()), "{name}");
        assert_eq!(generated.to_vec(), proof, "{name}: byte-exact proof");
    }
}

#[test]
fn username_proof_rejections() {
    let proof = generate_username_proof("flatline.42", &[7; 32]).unwrap();
    let hash = username_hash("flatline.42").unwrap();
    let other = username_hash("flatline.43").unwrap();
    assert_eq!(verify_username_proof(&proof, &hash), Ok(()));
    // A proof for one hash does not verify against another.
    assert_eq!(
        verify_username_proof(&proof, &other),
        Err(ProofError::Mismatch)
    );
    // Non-canonical scalar: add ℓ to the last response (still < 2^256, same value mod ℓ).
    let mut noncanon = proof;
    add_group_order(&mut noncanon[96..]);
    assert_eq!(
        verify_username_proof(&noncanon, &hash),
        Err(ProofError::NonCanonicalScalar)
    );
    let mut noncanon_c = proof;
    add_group_order(&mut noncanon_c[..32]);
    assert_eq!(
        verify_username_proof(&noncanon_c, &hash),
        Err(ProofError::NonCanonicalScalar)
    );
    // Lengths.
    assert_eq!(
        verify_username_proof(&proof[..96], &hash),
        Err(ProofError::BadProofLength(96))
    );
    assert_eq!(
        verify_username_proof(&[], &hash),
        Err(ProofError::BadProofLength(0))
    );
    // Hash that is not a point, or the wrong length.
    assert_eq!(
        verify_username_proof(&proof, &[0xff; 32]),
        Err(ProofError::BadHash)
    );
    assert_eq!(
        verify_username_proof(&proof, &hash[..31]),
        Err(ProofError::BadHash)
    );
    // Different randomness gives a different, equally valid proof.
    let proof2 = generate_username_proof("FLATLINE.42", &[8; 32]).unwrap();
    assert_ne!(proof, proof2);
    assert_eq!(verify_username_proof(&proof2, &hash), Ok(()));
    assert_eq!(
        generate_username_proof("flatline.0", &[7; 32]),
        Err(UsernameError::DiscriminatorCannotBeZero)
    );
}

/// Adds the group order ℓ to a 32-byte little-endian scalar in place.
fn add_group_order(bytes: &mut [u8]) {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for (b, l) in bytes.iter_mut().zip(L) {
        let sum = u16::from(*b) + u16::from(l) + carry;
        *b = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "test scalar too large");
}

#[test]
fn sho_is_deterministic_and_label_separated() {
    let mut a = ShoHmacSha256::new(b"label");
    let mut b = ShoHmacSha256::new(b"label");
    let mut c = ShoHmacSha256::new(b"other");
    for sho in [&mut a, &mut b, &mut c] {
        sho.absorb(b"ab");
        sho.absorb(b"c");
        sho.ratchet();
    }
    let mut d = ShoHmacSha256::new(b"label");
    d.absorb_and_ratchet(b"abc");
    let (x, y, z, w) = (
        a.squeeze::<80>(),
        b.squeeze::<80>(),
        c.squeeze::<80>(),
        d.squeeze::<80>(),
    );
    assert_eq!(x, y);
    assert_eq!(x, w, "consecutive absorbs concatenate");
    assert_ne!(x, z);
    // Squeezing ratchets: the next output differs, and a prefix squeeze equals the long one's prefix.
    assert_ne!(a.squeeze::<32>()[..], x[..32]);
    let mut e = ShoHmacSha256::new(b"label");
    e.absorb_and_ratchet(b"abc");
    assert_eq!(e.squeeze::<32>()[..], x[..32]);
}
