//! Bodies of the fuzz targets, one function per parser of untrusted input.
//!
//! `fuzz/fuzz_targets/<name>.rs` (cargo-fuzz, nightly) calls `fuzzing::<name>(data)`; the stable test
//! `tests/it/fuzz_corpus.rs` runs every committed input of `fuzz/corpus/<name>/` through the same function, so a
//! crash found once stays a regression test without nightly. Each function asserts invariants (round trips,
//! agreement between parsers, sign-then-verify), not only the absence of panics: a failed assertion is a finding.
//!
//! Nothing here is used by the server itself; it lives in the library so both harnesses share one copy.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use flatline_core::contacts;
use flatline_core::credentials::{DeviceCredentials, MAX_PASSWORD_LEN, decode_basic};
use flatline_core::crypto::{
    KEM_PUBLIC_KEY_LEN, KYBER1024_KEY_TYPE, KemPublicKey, KeyParseError, PUBLIC_KEY_LEN,
    PrivateKey, PublicKey, Username, VerifyingKey, generate_username_proof, username_hash,
    verify_username_proof,
};
use flatline_core::ids::Principal;
use flatline_core::invites::InviteCode;
use flatline_core::keys::{MAX_KEYS_PER_UPLOAD, RawKeyUpload, validate_upload};
use flatline_core::manifest::{self, Descriptor, InstanceSigningKey, Manifest};
use flatline_core::registration::oidc::{
    IdTokenExpectations, JwsVerifier, LogoutEffect, Provider, TokenError, check_id_token,
    check_logout_token, derive_principal,
};
use flatline_core::registration::{RawRegistration, Subject, validate_registration};
use flatline_core::shortcodes::Shortcode;
use flatline_core::time::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::keys::SetKeysDto;
use crate::http::registration::RegistrationDto;
use crate::http::wire;
use crate::oidc::JoseVerifier;

/// A fuzz target: its name (the corpus directory and the cargo-fuzz binary carry it) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    ("basic_auth", basic_auth),
    ("base64", base64),
    ("ec_key", ec_key),
    ("kem_key", kem_key),
    ("xeddsa_verify", xeddsa_verify),
    ("username_proof", username_proof),
    ("principal", principal),
    ("invite_code", invite_code),
    ("jws", jws),
    ("json_bodies", json_bodies),
    ("manifest_verify", manifest_verify),
    ("websocket_frame", websocket_frame),
    ("zkgroup", crate::fuzzing_zk::zkgroup),
    ("shortcode", shortcode),
    (
        "sealed_sender_multi_recipient",
        sealed_sender_multi_recipient,
    ),
];

/// "Now" for every time-dependent check: 2026-11-01, so that committed seeds stay valid or expired as written.
const NOW: Timestamp = Timestamp(1_793_491_200_000);

fn text(data: &[u8]) -> &str {
    // Lossy decoding would change the input; the parsers under test take &str, so invalid UTF-8 is out of scope.
    std::str::from_utf8(data).unwrap_or("")
}

/// `Authorization: Basic …` in both split modes, and the device-credential parser on top of them.
pub fn basic_auth(data: &[u8]) {
    let header = text(data);
    for last in [false, true] {
        if let Ok((user, password)) = decode_basic(header, last) {
            assert!(!password.is_empty() && password.len() <= MAX_PASSWORD_LEN);
            // The split is at the first (normal) or last (registration) colon.
            let (colon_free, name) = if last {
                (&password, "password")
            } else {
                (&user, "user")
            };
            assert!(!colon_free.contains(':'), "{name} holds a colon");
            // Re-encoding what was decoded yields the same pair.
            let again = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
            assert_eq!(
                decode_basic(&again, last),
                Ok((user.clone(), password.clone()))
            );
        }
    }
    if let Ok(creds) = DeviceCredentials::from_header(header) {
        assert!((1..=127).contains(&creds.device_id.get()));
        // Any accepted credential re-encodes in the two explicit forms to the same credential.
        for sep in ['.', '\0'] {
            let user = format!("{}{sep}{}", creds.aci, creds.device_id);
            let again = format!(
                "Basic {}",
                STANDARD.encode(format!("{user}:{}", creds.password))
            );
            assert_eq!(DeviceCredentials::from_header(&again).as_ref(), Ok(&creds));
        }
    }
}

#[derive(Deserialize)]
struct AccessKeyProbe {
    #[serde(default, deserialize_with = "wire::access_key")]
    k: Option<Vec<u8>>,
}

/// The per-field base64 decoders: padding is optional, encoders round-trip, and the two alphabets agree where
/// they overlap.
pub fn base64(data: &[u8]) {
    let s = text(data);
    if let Ok(bytes) = wire::decode_std(s) {
        assert_eq!(
            wire::decode_std(&wire::std_padded::encode(&bytes)).as_ref(),
            Ok(&bytes)
        );
        assert_eq!(
            wire::decode_std(&wire::std_unpadded::encode(&bytes)).as_ref(),
            Ok(&bytes)
        );
        assert_eq!(
            wire::decode_std(s.trim_end_matches('=')).as_ref(),
            Ok(&bytes),
            "padding must be optional"
        );
        if !s.contains(['+', '/']) {
            assert_eq!(wire::decode_url(s).as_ref(), Ok(&bytes));
        }
    }
    if let Ok(bytes) = wire::decode_url(s) {
        assert_eq!(
            wire::decode_url(&wire::url::encode(&bytes)).as_ref(),
            Ok(&bytes)
        );
        if !s.contains(['-', '_']) {
            assert_eq!(wire::decode_std(s).as_ref(), Ok(&bytes));
        }
    }
    // The access-key field takes a string or an array of (signed or unsigned) byte values.
    if let Ok(probe) = serde_json::from_slice::<AccessKeyProbe>(data)
        && let Some(k) = probe.k
    {
        let as_array = json!({ "k": k });
        let again: AccessKeyProbe =
            serde_json::from_value(as_array).expect("re-parse of a byte array");
        assert_eq!(again.k, Some(k));
    }
}

/// EC public keys: accepted exactly when 33 bytes with type `0x05`, and re-serialized to the same bytes.
pub fn ec_key(data: &[u8]) {
    match PublicKey::from_bytes(data) {
        Ok(key) => {
            assert_eq!(data.len(), PUBLIC_KEY_LEN);
            assert_eq!(key.serialize().as_slice(), data);
            assert_eq!(PublicKey::from_bytes(&key.serialize()), Ok(key));
        }
        Err(KeyParseError::NoKeyType) => assert!(data.is_empty()),
        Err(KeyParseError::BadKeyType(t)) => assert!(t != 0x05 && data.first() == Some(&t)),
        Err(KeyParseError::BadKeyLength(n)) => assert!(n == data.len() && n != PUBLIC_KEY_LEN),
        Err(e) => panic!("unexpected error {e:?}"),
    }
    // Private keys: any 32 bytes, clamped; the public key derived from them parses back.
    if let Ok(private) = PrivateKey::from_bytes(data) {
        let public = private.public_key();
        assert_eq!(PublicKey::from_bytes(&public.serialize()), Ok(public));
        assert_eq!(private.serialize()[0] & 7, 0);
    }
}

/// Kyber public-key envelopes: accepted exactly when 1569 bytes with type `0x08`, bytes kept verbatim.
pub fn kem_key(data: &[u8]) {
    match KemPublicKey::from_bytes(data) {
        Ok(key) => {
            assert_eq!(data.len(), KEM_PUBLIC_KEY_LEN);
            assert_eq!(key.serialize(), data);
        }
        Err(KeyParseError::NoKeyType) => assert!(data.is_empty()),
        Err(KeyParseError::BadKemKeyType(t)) => {
            assert!(t != KYBER1024_KEY_TYPE && data.first() == Some(&t))
        }
        Err(KeyParseError::BadKemKeyLength(n)) => {
            assert!(n == data.len() && n != KEM_PUBLIC_KEY_LEN)
        }
        Err(e) => panic!("unexpected error {e:?}"),
    }
    // A Kyber-sized input of any type byte is judged by the type alone.
    if data.len() == KEM_PUBLIC_KEY_LEN {
        assert_eq!(
            KemPublicKey::from_bytes(data).is_ok(),
            data[0] == KYBER1024_KEY_TYPE
        );
    }
}

/// XEdDSA: arbitrary (key, signature, message) triples give the same verdict through every verifier, and a
/// signature made with a key derived from the input always verifies (and not for another message).
pub fn xeddsa_verify(data: &[u8]) {
    if data.len() < 33 + 64 {
        return;
    }
    let (key, rest) = data.split_at(33);
    let (sig, msg) = rest.split_at(64);
    if let Ok(key) = PublicKey::from_bytes(key) {
        let lone = key.verify_signature(msg, sig);
        let verifier = VerifyingKey::new(&key);
        assert_eq!(verifier.verify(msg, sig), lone);
        assert_eq!(
            verifier.verify_many(&[(msg, sig), (msg, sig)]),
            vec![lone; 2]
        );
        // A signature with the wrong length never verifies.
        assert!(!key.verify_signature(msg, &sig[..63]));
    }
    // Sign-then-verify with a private key taken from the input.
    let private = PrivateKey::from_array(data[1..33].try_into().unwrap_or([0; 32]));
    let z: [u8; 64] = sig.try_into().unwrap_or([0; 64]);
    let signature = private.sign_with_z(msg, &z);
    let public = private.public_key();
    assert!(public.verify_signature(msg, &signature));
    assert!(VerifyingKey::new(&public).verify(msg, &signature));
    let mut other = msg.to_vec();
    other.push(0);
    assert!(!public.verify_signature(&other, &signature));
}

/// Username proofs on arbitrary (proof, hash) pairs, and username parsing: a parsed name re-displays and
/// re-parses to itself, hashes case-insensitively, and a proof made for it verifies against its hash only.
pub fn username_proof(data: &[u8]) {
    let (proof, rest) = data.split_at(data.len().min(128));
    let (hash, name) = rest.split_at(rest.len().min(32));
    if verify_username_proof(proof, hash).is_ok() {
        assert_eq!((proof.len(), hash.len()), (128, 32));
    }
    let name = text(name);
    let Ok(username) = Username::parse(name) else {
        assert!(username_hash(name).is_err());
        return;
    };
    assert_eq!(username.to_string(), name);
    assert_eq!(
        Username::parse(&username.to_string()).as_ref(),
        Ok(&username)
    );
    let h = username.hash();
    assert_eq!(username_hash(name), Ok(h));
    assert_eq!(username_hash(&name.to_ascii_uppercase()), Ok(h));
    let randomness: [u8; 32] = proof
        .get(..32)
        .and_then(|p| p.try_into().ok())
        .unwrap_or([7; 32]);
    let made = generate_username_proof(name, &randomness).expect("valid name");
    assert_eq!(verify_username_proof(&made, &h), Ok(()));
    if hash.len() == 32 && hash != h {
        assert!(verify_username_proof(&made, hash).is_err());
    }
}

fn provider(principal_claim: Option<&str>) -> Provider {
    Provider {
        id: "idp".into(),
        name: "IdP".into(),
        issuer: "https://idp.example".into(),
        client_id: "flatline".into(),
        trusted_audiences: vec!["trusted".into()],
        scopes: vec!["openid".into()],
        principal_claim: principal_claim.map(str::to_owned),
        redirect_uris: vec![],
        allowed_algs: vec!["EdDSA".into(), "ES256".into()],
        invite_required: false,
        logout_effect: LogoutEffect::Lock,
    }
}

/// Principals: parsing is idempotent and yields trimmed printable ASCII; derivation from claims agrees with it.
pub fn principal(data: &[u8]) {
    let s = text(data);
    if let Ok(p) = Principal::parse(s) {
        let t = p.as_str();
        assert!(!t.is_empty() && t.len() <= Principal::MAX_LEN);
        assert!(t.bytes().all(|b| (0x20..=0x7e).contains(&b)));
        assert!(!t.starts_with(' ') && !t.ends_with(' '));
        assert_eq!(Principal::parse(t).as_ref(), Ok(&p));
        assert_eq!(t, s.trim_matches(' '));
    }
    let claims = serde_json::from_slice::<Value>(data)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({"preferred_username": s, "email": s, "email_verified": true}));
    let subject = Subject {
        provider: "idp".into(),
        sub: s.into(),
    };
    for claim in [Some("preferred_username"), Some("email"), None] {
        match derive_principal(&provider(claim), &subject, &claims, b"secret") {
            Ok((p, opaque)) => {
                assert_eq!(opaque, claim.is_none());
                match claim {
                    None => assert!(
                        p.as_str().len() == 64 && p.as_str().bytes().all(|b| b.is_ascii_hexdigit())
                    ),
                    Some(c) => {
                        let value = claims[c].as_str().expect("claim was a string");
                        assert_eq!(Principal::parse(value).as_ref(), Ok(&p));
                        if c == "email" {
                            assert_eq!(claims["email_verified"], Value::Bool(true));
                        }
                    }
                }
            }
            Err(_) => assert!(claim.is_some(), "opaque derivation cannot fail"),
        }
    }
}

/// Registration and contact invite codes: the two parsers agree, a parsed code displays and re-parses to
/// itself (in any case), and its hash depends only on the canonical form.
pub fn invite_code(data: &[u8]) {
    let s = text(data);
    let registration = InviteCode::parse(s);
    let contact = contacts::ContactCode::parse(s);
    assert_eq!(registration.is_ok(), contact.is_some(), "parsers disagree");
    if let Ok(code) = registration {
        let shown = code.display();
        assert_eq!(shown.len(), 19);
        assert_eq!(InviteCode::parse(&shown).as_ref(), Ok(&code));
        assert_eq!(InviteCode::parse(&shown.to_lowercase()).as_ref(), Ok(&code));
        assert_eq!(
            InviteCode::parse(&shown.replace('-', "")).map(|c| c.hash()),
            Ok(code.hash())
        );
        assert!(
            !format!("{code:?}").contains(&shown[..4]),
            "Debug shows the code"
        );
    }
    if let Some(code) = contact {
        let shown = code.display();
        assert_eq!(code.canonical().len(), 16);
        assert_eq!(contacts::ContactCode::parse(&shown).as_ref(), Some(&code));
        assert_eq!(
            contacts::ContactCode::parse(&shown.to_lowercase()).map(|c| c.hash()),
            Some(code.hash())
        );
        // Both kinds hash the same canonical text the same way.
        assert_eq!(
            InviteCode::parse(code.canonical()).map(|c| c.hash().0),
            Ok(code.hash())
        );
    }
}

const JWS_SEED: [u8; 32] = [0x11; 32];
const JWS_KID: &str = "fuzz-ed";

/// The fixed pinned key set: one Ed25519 signing key.
fn fixed_jwks() -> String {
    let x = InstanceSigningKey::from_seed(&JWS_SEED).public_jwk().x;
    json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": JWS_KID, "alg": "EdDSA", "use": "sig"},
        {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "enc-only", "use": "enc"}
    ]})
    .to_string()
}

fn sign_claims(claims: &Value) -> String {
    // PKCS#8 v1 for Ed25519 is a fixed 16-byte prefix followed by the seed.
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&JWS_SEED);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(JWS_KID.into());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_ed_der(&der),
    )
    .expect("signing with a fixed key")
}

/// JWS verification of arbitrary tokens against the fixed pinned set, and the ID-token and logout-token claim
/// checks on arbitrary JSON. Claims the fuzzer writes are also signed with the pinned key: such a token must
/// verify to exactly those claims, and must not verify once its signature is altered.
pub fn jws(data: &[u8]) {
    let jwks = fixed_jwks();
    let algs = provider(None).allowed_algs;
    let token = text(data);
    if let Ok(v) = JoseVerifier.verify(token, &jwks, &algs) {
        assert!(v.claims.is_object());
        // Only the signing key can have produced it: the header names it.
        let header = token.split('.').next().unwrap_or_default();
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("verified header"))
                .expect("verified header JSON");
        assert_eq!(header["kid"], JWS_KID);
    }
    let Ok(claims) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let p = provider(None);
    let expect = IdTokenExpectations {
        provider: &p,
        nonce: "n-0S6_WzA2Mj",
        now: NOW,
    };
    if let Ok(facts) = check_id_token(&claims, &expect) {
        assert_eq!(claims["iss"], p.issuer.as_str());
        assert_eq!(claims["nonce"], expect.nonce);
        assert!(!facts.sub.is_empty() && facts.sub.len() <= 255);
        assert!(claims.get("exp").is_some() && claims.get("iat").is_some());
    }
    if let Ok(facts) = check_logout_token(&claims, &p, NOW) {
        assert!(claims.get("nonce").is_none());
        assert!(!facts.jti.is_empty() && facts.jti.len() <= 255);
        assert!(facts.sub.is_some() || facts.sid.is_some());
        assert!(facts.remember_until >= NOW);
    }
    if claims.is_object() {
        let signed = sign_claims(&claims);
        // The token carries the claims' serialization; compare with its parse (float parsing is not exact).
        let carried: Value =
            serde_json::from_str(&serde_json::to_string(&claims).expect("serialize"))
                .expect("parse");
        match JoseVerifier.verify(&signed, &jwks, &algs) {
            Ok(verified) => assert_eq!(verified.claims, carried),
            // jsonwebtoken may refuse registered claims of the wrong type; it must not blame the key.
            Err(TokenError::Malformed(_)) => {}
            Err(e) => panic!("a token signed with the pinned key was refused: {e}"),
        }
        // Flip one bit of the first signature byte (base64url of the signature starts after the last dot).
        let dot = signed.rfind('.').expect("compact JWS");
        let mut tampered = signed.into_bytes();
        let c = tampered[dot + 1];
        tampered[dot + 1] = if c == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ASCII");
        assert!(JoseVerifier.verify(&tampered, &jwks, &algs).is_err());
        // The same token is refused when EdDSA is not allowed.
        assert!(
            JoseVerifier
                .verify(&sign_claims(&claims), &jwks, &["ES256".to_owned()])
                .is_err()
        );
    }
}

/// The fixed identity key the key-upload bodies are validated against (private key bytes all 0x42).
fn identity() -> (PrivateKey, PublicKey) {
    let private = PrivateKey::from_array([0x42; 32]);
    let public = private.public_key();
    (private, public)
}

/// JSON request bodies: the key upload (`SetKeysRequest`) and the registration request, decoded as the HTTP
/// layer does and validated as the core does. Whatever validates obeys the limits and carries only signatures
/// that verify.
pub fn json_bodies(data: &[u8]) {
    let (_, identity) = identity();
    let identity_bytes = identity.serialize();
    if let Ok(dto) = serde_json::from_slice::<SetKeysDto>(data) {
        let raw = RawKeyUpload::from(&dto);
        if let Ok(upload) = validate_upload(&identity_bytes, &raw) {
            let ec = upload.ec.as_deref().unwrap_or_default();
            let kem = upload.kem.as_deref().unwrap_or_default();
            assert!(ec.len() <= MAX_KEYS_PER_UPLOAD && kem.len() <= MAX_KEYS_PER_UPLOAD);
            assert!(upload.ec.as_ref().is_none_or(|v| !v.is_empty()));
            for k in ec {
                assert!(PublicKey::from_bytes(&k.public_key).is_ok());
            }
            for k in kem.iter().chain(&upload.last_resort) {
                assert!(KemPublicKey::from_bytes(&k.public_key).is_ok());
                assert!(identity.verify_signature(&k.public_key, &k.signature));
            }
            if let Some(k) = &upload.signed {
                assert!(PublicKey::from_bytes(&k.public_key).is_ok());
                assert!(identity.verify_signature(&k.public_key, &k.signature));
            }
        }
    }
    if let Ok(dto) = serde_json::from_slice::<RegistrationDto>(data) {
        let raw = RawRegistration::from(dto);
        if let Ok(valid) = validate_registration(&raw) {
            for (id_key, signed, last_resort) in [
                (
                    &valid.aci_identity_key,
                    &valid.keys.aci_signed,
                    &valid.keys.aci_last_resort,
                ),
                (
                    &valid.pni_identity_key,
                    &valid.keys.pni_signed,
                    &valid.keys.pni_last_resort,
                ),
            ] {
                let key = PublicKey::from_bytes(id_key).expect("validated identity key");
                assert!(key.verify_signature(&signed.public_key, &signed.signature));
                assert!(key.verify_signature(&last_resort.public_key, &last_resort.signature));
                assert!(KemPublicKey::from_bytes(&last_resort.public_key).is_ok());
            }
            assert!(raw.session_id.is_some() && !raw.recovery_password);
        }
    }
}

const MANIFEST_SEED: [u8; 32] = [0x22; 32];

/// Manifest verification and descriptor parsing on arbitrary input. An accepted manifest re-verifies under its
/// own fingerprint and honours the version floor; a manifest the fuzzer writes, signed with a fixed key, verifies
/// back to itself; descriptors round-trip through `Display`.
pub fn manifest_verify(data: &[u8]) {
    let s = text(data);
    if let Ok(m) = manifest::verify(s, None, None, NOW) {
        let fp = m.fingerprint();
        assert!(m.issued_at <= m.expires_at && !m.is_expired(NOW));
        assert_eq!(
            manifest::verify(s, Some(&fp), Some(m.version), NOW),
            Ok(m.clone())
        );
        if let Some(next) = m.version.checked_add(1) {
            assert!(manifest::verify(s, Some(&fp), Some(next), NOW).is_err());
        }
        assert_eq!(manifest::check_update(&m, &m), Ok(()));
    }
    if let Ok(d) = Descriptor::parse(s) {
        assert_eq!(Descriptor::parse(&d.to_string()).as_ref(), Ok(&d));
    }
    if let Ok(mut m) = serde_json::from_slice::<Manifest>(data) {
        let key = InstanceSigningKey::from_seed(&MANIFEST_SEED);
        m.signing_key = key.public_jwk();
        let jws = key.sign(&m);
        let fp = key.fingerprint();
        match manifest::verify(&jws, Some(&fp), None, NOW) {
            Ok(back) => assert_eq!(back, m),
            Err(manifest::VerifyError::Expired { .. }) => assert!(m.is_expired(NOW)),
            Err(manifest::VerifyError::BadValidity) => assert!(m.issued_at > m.expires_at),
            Err(e) => panic!("a freshly signed manifest was refused: {e}"),
        }
        // Another key's fingerprint is refused.
        let other = InstanceSigningKey::from_seed(&[0x23; 32]).fingerprint();
        assert!(manifest::verify(&jws, Some(&other), None, NOW).is_err());
    }
}

/// The chat socket's frame decoder: never panics; an accepted frame re-encodes to a frame that decodes to the same
/// value (header lines as parsed, empty bodies omitted).
pub fn websocket_frame(data: &[u8]) {
    use flatline_core::chat::{Frame, decode_frame, encode_request, encode_response, parse_header};
    let Ok(frame) = decode_frame(data) else {
        return;
    };
    let again = match &frame {
        Frame::Request(r) => {
            let headers: Vec<(&str, &str)> = r
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            encode_request(r.id, &r.verb, &r.path, &headers, &r.body)
        }
        Frame::Response(r) => {
            let headers: Vec<(&str, &str)> = r
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            match u16::try_from(r.status) {
                Ok(status) => encode_response(r.id, status, &r.message, &headers, &r.body),
                Err(_) => return,
            }
        }
    };
    assert_eq!(decode_frame(&again).as_ref(), Ok(&frame));
    let headers = match &frame {
        Frame::Request(r) => &r.headers,
        Frame::Response(r) => &r.headers,
    };
    for (name, value) in headers {
        assert!(!name.is_empty() && name.trim() == name && value.trim() == value);
        assert!(!name.chars().any(|c| c.is_ascii_uppercase()));
        assert_eq!(
            parse_header(&format!("{name}:{value}")),
            Some((name.clone(), value.clone()))
        );
    }
}

/// The canonical SSv2 SentMessage of a parse: one entry per recipient with all its devices, then the excluded
/// recipients, then the shared part (the test-side encoder of the fuzz target).
fn encode_sent_message(m: &flatline_core::sealed::SentMessage<'_>) -> Vec<u8> {
    use flatline_core::ids::ServiceId;
    let mut out = vec![m.version];
    let mut n = (m.recipients.len() + m.excluded.len()) as u64;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    let id = |out: &mut Vec<u8>, sid: &ServiceId| {
        if m.version == 0x23 {
            out.push(u8::from(matches!(sid, ServiceId::Pni(_))));
        }
        out.extend_from_slice(sid.uuid().as_bytes());
    };
    for (r, devices) in m.recipients_with_devices() {
        id(&mut out, &r.service_id);
        for (i, d) in devices.iter().enumerate() {
            out.push(d.device.get());
            let more = if i + 1 < devices.len() { 0x8000 } else { 0 };
            out.extend_from_slice(&(d.registration_id | more).to_be_bytes());
        }
        out.extend_from_slice(r.key_material);
    }
    for sid in &m.excluded {
        id(&mut out, sid);
        out.push(0);
    }
    out.extend_from_slice(m.shared);
    out
}

/// The SSv2 SentMessage parser of `PUT /v1/messages/multi_recipient`: never panics; an accepted message keeps at
/// least 32 shared bytes at the end of the input, lists every recipient once (excluded ones apart, never with
/// devices), 14-bit registration ids, payloads of `1 + 48 + shared` bytes starting `0x22`; its canonical re-encoding
/// parses to the same message. The same bytes as a sender certificate: no panic, and an accepted one re-serializes
/// to its input.
pub fn sealed_sender_multi_recipient(data: &[u8]) {
    use flatline_core::sealed::{SenderCertificate, multi_recipient};
    if let Ok(c) = SenderCertificate::deserialize(data) {
        assert_eq!(c.serialized(), data);
        let _ = c.validate(&[*c.signer().key()], NOW);
    }
    let Ok(m) = multi_recipient::parse(data) else {
        return;
    };
    assert!(m.version == 0x22 || m.version == 0x23);
    assert!(m.shared.len() >= 32 && data.ends_with(m.shared));
    let mut ids: Vec<_> = m
        .recipients
        .iter()
        .map(|r| r.service_id.to_string())
        .chain(m.excluded.iter().map(ToString::to_string))
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "a recipient listed twice");
    for (r, devices) in m.recipients_with_devices() {
        assert!(!devices.is_empty());
        assert!(devices.iter().all(|d| d.registration_id <= 0x3fff));
        let p = m.payload_for(r);
        assert_eq!(p.len(), m.payload_len());
        assert_eq!(p[0], 0x22);
        if m.version == 0x22 {
            assert!(matches!(
                r.service_id,
                flatline_core::ids::ServiceId::Aci(_)
            ));
        }
    }
    let _ = m.check_recipients();
    let again = encode_sent_message(&m);
    let reparsed = multi_recipient::parse(&again).expect("the canonical encoding parses");
    assert_eq!(reparsed.version, m.version);
    assert_eq!(reparsed.excluded, m.excluded);
    assert_eq!(reparsed.shared, m.shared);
    assert_eq!(reparsed.recipients.len(), m.recipients.len());
    for ((a, da), (b, db)) in m
        .recipients_with_devices()
        .zip(reparsed.recipients_with_devices())
    {
        assert_eq!(a.service_id, b.service_id);
        assert_eq!(a.key_material, b.key_material);
        assert_eq!(da, db);
    }
}

/// Hand-made seed inputs, valid and invalid, per target: `(target, file name, bytes)`. They are committed under
/// `fuzz/corpus/<target>/` (regenerate with the ignored test `fuzz_corpus::write_seeds`) and also run directly by
/// the corpus test. Built from fixed keys, so they are deterministic.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out: Vec<(&'static str, String, Vec<u8>)> = vec![];
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        out.push((target, name.to_owned(), bytes));
    };
    let basic = |user: &str, pw: &str| format!("Basic {}", STANDARD.encode(format!("{user}:{pw}")));
    let aci = "0f5b3a7c-1d2e-4f60-8a9b-0c1d2e3f4a5b";

    // basic_auth
    for (name, h) in [
        ("primary", basic(aci, "pw")),
        ("dotted", basic(&format!("{aci}.2"), "secret:with:colons")),
        ("nul", basic(&format!("{aci}\0127"), "pw")),
        ("principal", basic("user:with:colons", "secret")),
        ("device-0", basic(&format!("{aci}.0"), "pw")),
        ("device-128", basic(&format!("{aci}.128"), "pw")),
        ("empty-password", basic(aci, "")),
        ("bearer", "Bearer abc".into()),
        ("bad-base64", "Basic !!!".into()),
        (
            "lower-scheme",
            format!("basic  {}  ", STANDARD.encode(format!("{aci}:pw"))),
        ),
    ] {
        add("basic_auth", name, h.into_bytes());
    }

    // base64
    for (name, s) in [
        ("padded", "YQ=="),
        ("unpadded", "YQ"),
        ("url", "_-8"),
        ("std", "/+8"),
        ("empty", ""),
        ("junk", "!!"),
        ("bad-padding", "YQ="),
        ("access-key-array", r#"{"k":[1,2,-1,255]}"#),
        ("access-key-text", r#"{"k":"AQI="}"#),
        ("access-key-range", r#"{"k":[256]}"#),
    ] {
        add("base64", name, s.as_bytes().to_vec());
    }

    // ec_key and kem_key
    let (private, public) = identity();
    let ec = public.serialize().to_vec();
    add("ec_key", "valid", ec.clone());
    add("ec_key", "private-32", [0x42; 32].to_vec());
    add("ec_key", "bad-type", [&[0x06][..], &ec[1..]].concat());
    add("ec_key", "long", [&ec[..], &[0][..]].concat());
    add("ec_key", "short", ec[..32].to_vec());
    add("ec_key", "empty", vec![]);
    let mut kem = vec![0x5a; KEM_PUBLIC_KEY_LEN];
    kem[0] = KYBER1024_KEY_TYPE;
    add("kem_key", "valid", kem.clone());
    add(
        "kem_key",
        "kyber768-type",
        [&[0x07][..], &kem[1..]].concat(),
    );
    add("kem_key", "mlkem-type", [&[0x0a][..], &kem[1..]].concat());
    add("kem_key", "short", kem[..1568].to_vec());
    add("kem_key", "type-only", vec![KYBER1024_KEY_TYPE]);

    // xeddsa_verify: key ‖ signature ‖ message
    let msg = ec.clone();
    let sig = private.sign_with_z(&msg, &[9; 64]);
    add(
        "xeddsa_verify",
        "valid",
        [&ec[..], &sig[..], &msg[..]].concat(),
    );
    let mut flipped = sig;
    flipped[63] ^= 0x80;
    add(
        "xeddsa_verify",
        "sign-bit",
        [&ec[..], &flipped[..], &msg[..]].concat(),
    );
    let mut high = sig;
    high[63] |= 0x40;
    add(
        "xeddsa_verify",
        "high-bits",
        [&ec[..], &high[..], &msg[..]].concat(),
    );
    add(
        "xeddsa_verify",
        "other-message",
        [&ec[..], &sig[..], b"x"].concat(),
    );
    let mut bad_type = ec.clone();
    bad_type[0] = 0x06;
    add(
        "xeddsa_verify",
        "bad-key",
        [&bad_type[..], &sig[..], &msg[..]].concat(),
    );

    // username_proof: proof ‖ hash ‖ name
    let name = "alice_01.42";
    let hash = username_hash(name).unwrap_or_default();
    let proof = generate_username_proof(name, &[3; 32]).unwrap_or([0; 128]);
    add(
        "username_proof",
        "valid",
        [&proof[..], &hash[..], name.as_bytes()].concat(),
    );
    let mut bad = proof;
    bad[0] ^= 1;
    add(
        "username_proof",
        "tampered",
        [&bad[..], &hash[..], name.as_bytes()].concat(),
    );
    let mut noncanonical = proof;
    noncanonical[31] = 0xff;
    add(
        "username_proof",
        "noncanonical",
        [&noncanonical[..], &hash[..], b"Bob.01"].concat(),
    );
    for (n, bad_name) in [
        ("digit-first", "1abc.01"),
        ("zero", "abc.0"),
        ("leading-zero", "abc.042"),
        ("single-digit", "abc.1"),
        ("too-large", "abc.99999999999999999999"),
        ("no-dot", "abcdef"),
        ("unicode", "ab\u{e9}.01"),
    ] {
        add(
            "username_proof",
            n,
            [&proof[..], &hash[..], bad_name.as_bytes()].concat(),
        );
    }

    // principal
    for (name, s) in [
        ("email", "alice@example.com".to_owned()),
        ("padded", "  bob  ".to_owned()),
        ("spaces-only", "   ".to_owned()),
        ("control", "a\u{7f}b".to_owned()),
        ("non-ascii", "j\u{f6}rg".to_owned()),
        ("too-long", "a".repeat(2049)),
        ("max", "a".repeat(2048)),
        (
            "claims-verified",
            r#"{"email":"a@b.c","email_verified":true,"preferred_username":"ab"}"#.into(),
        ),
        (
            "claims-unverified",
            r#"{"email":"a@b.c","email_verified":"true"}"#.into(),
        ),
        ("claims-number", r#"{"preferred_username":5}"#.into()),
    ] {
        add("principal", name, s.into_bytes());
    }

    // invite_code
    for (name, s) in [
        ("grouped", "7KQ2-M9XD-4R1B-ZC0E"),
        ("lower", "7kq2m9xd4r1bzc0e"),
        ("confusables", "oOoO-iIlL-2222-3333"),
        ("spaces", "7KQ2 M9XD 4RIB ZCOE"),
        ("short", "7KQ2-M9XD-4R1B-ZC0"),
        ("long", "7KQ2-M9XD-4R1B-ZC0EE"),
        ("u", "7KQ2-M9XD-4R1B-ZCUE"),
        ("accent", "7KQ2-M9XD-4R1B-ZC0\u{c9}"),
        ("underscores", "7KQ2_M9XD_4R1B_ZC0E"),
    ] {
        add("invite_code", name, s.as_bytes().to_vec());
    }

    // jws: tokens and claim sets
    let now = NOW.as_secs();
    let id_claims = json!({"iss": "https://idp.example", "aud": "flatline", "sub": "u1", "nonce": "n-0S6_WzA2Mj",
        "iat": now, "exp": now + 300, "sid": "s1"});
    let logout_claims = json!({"iss": "https://idp.example", "aud": ["flatline", "trusted"], "azp": "flatline",
        "iat": now, "exp": now + 120, "jti": "j1", "sid": "s1",
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}}});
    add("jws", "id-token", sign_claims(&id_claims).into_bytes());
    add(
        "jws",
        "logout-token",
        sign_claims(&logout_claims).into_bytes(),
    );
    add("jws", "id-claims", id_claims.to_string().into_bytes());
    add(
        "jws",
        "logout-claims",
        logout_claims.to_string().into_bytes(),
    );
    add(
        "jws",
        "expired-claims",
        json!({"iss": "https://idp.example", "aud": "flatline", "sub": "u1", "nonce": "n-0S6_WzA2Mj",
            "iat": now - 7200, "exp": now - 3600})
        .to_string()
        .into_bytes(),
    );
    add(
        "jws",
        "untrusted-aud",
        json!({"iss": "https://idp.example", "aud": ["flatline", "evil"], "azp": "flatline", "sub": "u1",
            "nonce": "n-0S6_WzA2Mj", "iat": now, "exp": now + 300})
        .to_string()
        .into_bytes(),
    );
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"fuzz-ed"}"#);
    let body = URL_SAFE_NO_PAD.encode(id_claims.to_string());
    add(
        "jws",
        "alg-none",
        format!("{none_header}.{body}.").into_bytes(),
    );
    let hs_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","kid":"fuzz-ed"}"#);
    add(
        "jws",
        "alg-hs256",
        format!("{hs_header}.{body}.AAAA").into_bytes(),
    );
    let enc_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","kid":"enc-only"}"#);
    add(
        "jws",
        "enc-key",
        format!("{enc_header}.{body}.AAAA").into_bytes(),
    );
    add("jws", "two-parts", b"a.b".to_vec());

    // json_bodies: a full key upload and a registration body signed by the fixed identity key
    let signed_key = |key: &[u8], id: i64| {
        json!({"keyId": id, "publicKey": STANDARD.encode(key),
            "signature": STANDARD.encode(private.sign_with_z(key, &[id as u8; 64]))})
    };
    let ec_one_time = |seed: u8| PrivateKey::from_array([seed; 32]).public_key().serialize();
    let upload = json!({
        "preKeys": [
            {"keyId": 1, "publicKey": STANDARD.encode(ec_one_time(1))},
            {"keyId": 2, "publicKey": STANDARD.encode(ec_one_time(2))}
        ],
        "signedPreKey": signed_key(&ec_one_time(3), 3),
        "pqPreKeys": [signed_key(&kem, 4)],
        "pqLastResortPreKey": signed_key(&kem, 5)
    });
    add("json_bodies", "upload", upload.to_string().into_bytes());
    let mut dup = upload.clone();
    dup["preKeys"][1]["keyId"] = json!(1);
    add(
        "json_bodies",
        "upload-duplicate-id",
        dup.to_string().into_bytes(),
    );
    let mut bad_sig = upload.clone();
    bad_sig["signedPreKey"]["signature"] = json!(STANDARD.encode([1u8; 64]));
    add(
        "json_bodies",
        "upload-bad-signature",
        bad_sig.to_string().into_bytes(),
    );
    add(
        "json_bodies",
        "upload-bad-base64",
        br#"{"preKeys":[{"keyId":1,"publicKey":"!!"}]}"#.to_vec(),
    );
    add(
        "json_bodies",
        "upload-key-id-range",
        json!({"preKeys": [{"keyId": 2147483648i64, "publicKey": STANDARD.encode(ec_one_time(1))}]})
            .to_string()
            .into_bytes(),
    );
    let registration = json!({
        "sessionId": "AAAAAAAAAAAAAAAAAAAAAA",
        "accountAttributes": {"fetchesMessages": true, "registrationId": 42, "pniRegistrationId": 43,
            "unidentifiedAccessKey": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16], "capabilities": {"storage": true}},
        "skipDeviceTransfer": true,
        "aciIdentityKey": STANDARD.encode(&ec),
        "pniIdentityKey": STANDARD.encode(&ec),
        "aciSignedPreKey": signed_key(&ec_one_time(6), 6),
        "pniSignedPreKey": signed_key(&ec_one_time(7), 7),
        "aciPqLastResortPreKey": signed_key(&kem, 8),
        "pniPqLastResortPreKey": signed_key(&kem, 9)
    });
    add(
        "json_bodies",
        "registration",
        registration.to_string().into_bytes(),
    );
    let mut two_channels = registration.clone();
    two_channels["gcmToken"] = json!("t");
    add(
        "json_bodies",
        "registration-two-channels",
        two_channels.to_string().into_bytes(),
    );
    let mut recovery = registration.clone();
    recovery["recoveryPassword"] = json!("AAAA");
    add(
        "json_bodies",
        "registration-recovery",
        recovery.to_string().into_bytes(),
    );
    add("json_bodies", "not-json", b"{\"preKeys\":".to_vec());

    // manifest_verify
    let key = InstanceSigningKey::from_seed(&MANIFEST_SEED);
    let mut m = Manifest {
        version: 3,
        issued_at: now - 60,
        expires_at: now + 30 * 86_400,
        name: "fuzz".into(),
        endpoints: [("chat".to_owned(), "https://chat.example".to_owned())].into(),
        tls_pins: vec!["sha256:AAAA".into()],
        trust_roots: manifest::TrustRoots {
            sealed_sender: STANDARD.encode(&ec),
            zk_params: None,
            generic_zk_params: None,
        },
        identity_providers: vec![manifest::IdentityProvider {
            id: "idp".into(),
            name: "IdP".into(),
            issuer: "https://idp.example".into(),
            authorization_endpoint: "https://idp.example/auth".into(),
        }],
        signing_key: key.public_jwk(),
    };
    add("manifest_verify", "valid", key.sign(&m).into_bytes());
    add(
        "manifest_verify",
        "payload",
        serde_json::to_vec(&m).unwrap_or_default(),
    );
    m.expires_at = now - 1;
    add("manifest_verify", "expired", key.sign(&m).into_bytes());
    let mut tampered = key.sign(&m).into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    add("manifest_verify", "tampered", tampered);
    let descriptor = Descriptor {
        manifest_url: "https://chat.example/.well-known/flatline/manifest".into(),
        fingerprint: key.fingerprint(),
    };
    add(
        "manifest_verify",
        "descriptor",
        descriptor.to_string().into_bytes(),
    );
    add(
        "manifest_verify",
        "descriptor-bad-percent",
        b"flatline://server?url=%zz&fp=sha256:AAAA".to_vec(),
    );
    add("manifest_verify", "garbage", b"a.b.c".to_vec());
    // websocket_frame
    {
        use flatline_core::chat::{encode_request, encode_response};
        add(
            "websocket_frame",
            "request-id-0",
            encode_request(
                Some(0),
                "GET",
                "/v1/accounts/whoami",
                &[("content-type", "application/json")],
                b"",
            ),
        );
        add(
            "websocket_frame",
            "request-no-id",
            encode_request(None, "PUT", "/v1/messages/x", &[("X-Test", " a:b ")], b"{}"),
        );
        add(
            "websocket_frame",
            "response",
            encode_response(7, 200, "OK", &[("Content-Length", "0")], b""),
        );
        add("websocket_frame", "type-only", vec![0x08, 0x01]);
        add("websocket_frame", "junk", vec![0xff, 0xff, 0xff, 0x0f]);
    }
    crate::fuzzing_zk::seeds(&mut |t, n, b| add(t, n, b));

    // shortcode
    for (name, s) in [
        ("canonical", "42-velvet-harbor"),
        ("spoken", "  42 VELVET__harbor "),
        ("tabs", "7\tzoo\tabandon"),
        ("largest", "999999999-abandon-zoo"),
        ("too-large", "1000000000-abandon-zoo"),
        ("leading-zero", "042-velvet-harbor"),
        ("zero", "0-velvet-harbor"),
        ("four-parts", "42-velvet-harbor-zoo"),
        ("not-a-word", "42-velvet-harbour"),
        ("accent", "42-velvét-harbor"),
        ("empty", ""),
    ] {
        add("shortcode", name, s.as_bytes().to_vec());
    }
    // sealed_sender_multi_recipient: SentMessages made by npm libsignal (the core's committed test data), a
    // libsignal-made sender certificate, and hand-made edge cases.
    {
        let vectors: Value = serde_json::from_str(include_str!(
            "../../flatline-core/src/sealed/testdata/libsignal_ssv2.json"
        ))
        .unwrap_or(Value::Null);
        let b64 = |v: &Value| {
            STANDARD
                .decode(v.as_str().unwrap_or_default())
                .unwrap_or_default()
        };
        for (i, case) in vectors["cases"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            add(
                "sealed_sender_multi_recipient",
                &format!("libsignal-{i}"),
                b64(&case["message"]),
            );
        }
        add(
            "sealed_sender_multi_recipient",
            "libsignal-sender-certificate",
            b64(&vectors["senderCertificate"]["certificate"]),
        );
        let t = "sealed_sender_multi_recipient";
        let uuid = [0x11u8; 16];
        // Version 0x22, one ACI with two devices (the "more" bit), key material, 32 shared bytes.
        let mut v22 = vec![0x22, 0x01];
        v22.extend_from_slice(&uuid);
        v22.extend_from_slice(&[1, 0x80, 0x05, 2, 0x3f, 0xff]);
        v22.extend_from_slice(&[0xaa; 48]);
        v22.extend_from_slice(&[0xbb; 32]);
        add(t, "v22-two-devices", v22);
        // Version 0x23: a PNI recipient listed twice (merged) and an excluded ACI.
        let mut v23 = vec![0x23, 0x03, 0x01];
        v23.extend_from_slice(&uuid);
        v23.extend_from_slice(&[3, 0x00, 0x07]);
        v23.extend_from_slice(&[0xcc; 48]);
        v23.push(0x01);
        v23.extend_from_slice(&uuid);
        v23.extend_from_slice(&[4, 0x40, 0x08]);
        v23.extend_from_slice(&[0xdd; 48]);
        v23.push(0x00);
        v23.extend_from_slice(&[0x22; 16]);
        v23.push(0);
        v23.extend_from_slice(&[0xee; 40]);
        add(t, "v23-repeat-and-excluded", v23);
        add(
            t,
            "empty-recipients",
            [&[0x23u8, 0x00][..], &[0u8; 32]].concat(),
        );
        add(t, "padded-count", vec![0x23, 0x81, 0x00]);
        add(t, "huge-count", vec![0x23, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        add(t, "bad-version", vec![0x11, 0x01]);
    }
    out
}

/// Contact shortcodes: whatever parses renders canonically and parses back from that rendering in any case and with
/// any separators, and is the input itself once case and separators are normalized; `Debug` never shows the words.
pub fn shortcode(data: &[u8]) {
    let s = text(data);
    let Some(code) = Shortcode::parse(s) else {
        return;
    };
    let shown = code.render();
    assert_eq!(Shortcode::parse(&shown), Some(code));
    assert_eq!(
        Shortcode::parse(&format!(" {} ", shown.to_uppercase().replace('-', " _ "))),
        Some(code)
    );
    let strip = |t: &str| {
        t.chars()
            .filter(|c| !matches!(c, '-' | '_') && !c.is_ascii_whitespace())
            .map(|c| c.to_ascii_lowercase())
            .collect::<String>()
    };
    assert_eq!(
        strip(&shown),
        strip(s),
        "parsed something other than a rendering"
    );
    let words = shown.split_once('-').map_or("", |(_, w)| w);
    assert!(
        !format!("{code:?}").contains(words),
        "Debug shows the words"
    );
}
