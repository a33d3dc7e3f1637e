//! Vector tests against npm libsignal-client 0.103.0 (`testdata/zkgroup.json`), plus negative cases.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use super::sho::{Sho, ShoHmacSha256, ShoSha256};
use super::*;

const ZKGROUP: &str = include_str!("../../testdata/zkgroup.json");

fn vectors() -> Value {
    serde_json::from_str(ZKGROUP).unwrap()
}

fn hex32(v: &Value, field: &str) -> [u8; 32] {
    hex::decode(v[field].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

fn b64(v: &Value, field: &str) -> Vec<u8> {
    B64.decode(v[field].as_str().unwrap()).unwrap()
}

fn server_params() -> ServerSecretParams {
    ServerSecretParams::generate(&hex32(&vectors()["server_secret_params"], "randomness_hex"))
}

// ---------------------------------------------------------------- step 1: SHO

#[test]
fn sho_sha256_matches_poksho_vectors() {
    let mut sho = ShoSha256::new(b"asd");
    sho.absorb_and_ratchet(b"asdasd");
    let mut out = [0u8; 64];
    sho.squeeze_into(&mut out);
    assert_eq!(
        hex::encode(out),
        "ebe4ef29e18aa54137edd89c23f8bfeac2731c9f675da20e7c67d5ad68d7ee2d\
         40a45232b599552d46b520082fb2705971f07b3158b072b63ab0934a05e6af64"
    );

    let mut sho = ShoSha256::new(b"asd");
    sho.absorb_and_ratchet(b"asdasd");
    let mut out = [0u8; 65];
    sho.squeeze_into(&mut out);
    assert_eq!(out[64], 0x48);

    let mut sho = ShoSha256::new(b"");
    sho.absorb_and_ratchet(b"abc");
    for n in [63usize, 64, 65, 127, 128, 129] {
        sho.absorb_and_ratchet(&vec![0u8; n]);
    }
    for n in [63usize, 64, 65, 127, 128, 129] {
        let mut out = vec![0u8; n];
        sho.squeeze_into(&mut out);
    }
    sho.absorb_and_ratchet(b"def");
    let mut out = [0u8; 63];
    sho.squeeze_into(&mut out);
    assert_eq!(
        hex::encode(out),
        "0ddeea973f3210f7725a3cdb2473f873aeab8feb32b80dee67f0cde7954e929a\
         4e787aefee6dbe91d3fff1621aab8d0d29194f8af986d6f357add0150df7d9"
    );
}

#[test]
fn sho_trait_matches_inherent_hmac() {
    let mut a = ShoHmacSha256::new(b"label");
    let mut b = a.clone();
    a.absorb_and_ratchet(b"data");
    Sho::absorb_and_ratchet(&mut b, b"data");
    assert_eq!(a.squeeze::<64>(), {
        let mut o = [0u8; 64];
        Sho::squeeze_into(&mut b, &mut o);
        o
    });
}

// ---------------------------------------------------------------- step 2: params

#[test]
fn server_secret_params_match_vector() {
    let v = vectors();
    let expected = b64(&v["server_secret_params"], "serialized_b64");
    let params = server_params();
    let bytes = params.to_bytes();
    assert_eq!(bytes.len(), SERVER_SECRET_PARAMS_LEN);
    assert_eq!(hex::encode(&bytes), hex::encode(&expected));
    // Parse and re-serialize identically.
    let parsed = ServerSecretParams::from_bytes(&expected).unwrap();
    assert_eq!(parsed.to_bytes(), expected);
}

#[test]
fn server_public_params_match_vector() {
    let v = vectors();
    let expected = b64(&v["server_public_params"], "serialized_b64");
    let public = server_params().public_params();
    assert_eq!(hex::encode(public.to_bytes()), hex::encode(&expected));
    assert_eq!(
        ServerPublicParams::from_bytes(&expected)
            .unwrap()
            .to_bytes(),
        expected
    );
    assert_eq!(
        public.endorsement_public_key().len(),
        v["server_public_params"]["endorsement_public_key_len"]
            .as_u64()
            .unwrap() as usize
    );
}

#[test]
fn notary_signature_matches_vector() {
    let v = &vectors()["notary_signature"];
    let message = hex::decode(v["message_hex"].as_str().unwrap()).unwrap();
    let params = server_params();
    let sig = params.sign(&hex32(v, "randomness_hex"), &message).unwrap();
    assert_eq!(hex::encode(sig), v["signature_hex"].as_str().unwrap());
    let public = params.public_params();
    public.verify_signature(&message, &sig).unwrap();
    assert_eq!(
        public.verify_signature(b"other message", &sig),
        Err(ZkError::Verification)
    );
    for i in 0..sig.len() {
        let mut bad = sig;
        bad[i] ^= 0x01;
        assert!(public.verify_signature(&message, &bad).is_err(), "byte {i}");
    }
    assert!(public.verify_signature(&message, &sig[..63]).is_err());
}

#[test]
fn generic_server_params_match_vector() {
    let v = vectors();
    let seed = hex32(&v["generic_server_secret_params"], "randomness_hex");
    let secret = GenericServerSecretParams::generate(&seed);
    let expected = b64(&v["generic_server_secret_params"], "serialized_b64");
    assert_eq!(hex::encode(secret.to_bytes()), hex::encode(&expected));
    assert_eq!(
        hex::encode(secret.public_params().to_bytes()),
        hex::encode(b64(&v["generic_server_public_params"], "serialized_b64"))
    );
    let parsed = GenericServerSecretParams::from_bytes(&expected).unwrap();
    assert_eq!(parsed.to_bytes(), expected);
}

#[test]
fn params_parsers_reject_mutations() {
    let v = vectors();
    let secret = b64(&v["server_secret_params"], "serialized_b64");
    let public = b64(&v["server_public_params"], "serialized_b64");
    for bytes in [&secret, &public] {
        let mut long = bytes.clone();
        long.push(0);
        assert!(ServerSecretParams::from_bytes(&long).is_err());
        assert!(ServerPublicParams::from_bytes(&long).is_err());
        assert!(ServerSecretParams::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(ServerPublicParams::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    }
    let mut bad_version = public.clone();
    bad_version[0] = 1;
    assert_eq!(
        ServerPublicParams::from_bytes(&bad_version).err(),
        Some(ZkError::Deserialization)
    );
    // A non-canonical scalar (all 0xff) in the first secret scalar.
    let mut bad_scalar = secret.clone();
    bad_scalar[1..33].fill(0xff);
    assert!(ServerSecretParams::from_bytes(&bad_scalar).is_err());
}

// ---------------------------------------------------------------- step 3: auth credentials

fn aci(s: &str) -> crate::ids::Aci {
    s.parse().unwrap()
}

fn pni(s: &str) -> crate::ids::Pni {
    s.strip_prefix("PNI:").unwrap().parse().unwrap()
}

#[test]
fn auth_credential_with_pni_zkc_response_matches_vector() {
    let v = &vectors()["auth_credential_with_pni_zkc"];
    let params = server_params();
    let (a, p) = (
        aci(v["aci"].as_str().unwrap()),
        pni(v["pni"].as_str().unwrap()),
    );
    let t = v["redemption_time"].as_u64().unwrap();
    let response =
        issue_auth_credential_with_pni_zkc(&params, a, p, t, &hex32(v, "randomness_hex")).unwrap();
    let expected = b64(v, "response_b64");
    assert_eq!(response.len(), AUTH_CREDENTIAL_WITH_PNI_RESPONSE_LEN);
    assert_eq!(hex::encode(&response), hex::encode(&expected));

    let public = params.public_params();
    receive_auth_credential_with_pni_zkc(&public, a, p, t, &expected).unwrap();
    // Wrong redemption time, wrong identities, mutated bytes: all rejected.
    assert!(
        receive_auth_credential_with_pni_zkc(&public, a, p, t + SECONDS_PER_DAY, &expected)
            .is_err()
    );
    assert!(
        receive_auth_credential_with_pni_zkc(&public, a, pni(&format!("PNI:{a}")), t, &expected)
            .is_err()
    );
    for i in 0..expected.len() {
        let mut bad = expected.clone();
        bad[i] ^= 0x04;
        assert!(
            receive_auth_credential_with_pni_zkc(&public, a, p, t, &bad).is_err(),
            "byte {i}"
        );
    }
    assert!(receive_auth_credential_with_pni_zkc(&public, a, p, t, &expected[..424]).is_err());
    let mut long = expected.clone();
    long.push(0);
    assert!(receive_auth_credential_with_pni_zkc(&public, a, p, t, &long).is_err());
}

#[test]
fn auth_credential_rejects_unaligned_redemption_time() {
    let params = server_params();
    let a = aci("9d0652a3-dcc3-4d11-975f-74d61598733f");
    let p = pni("PNI:f2a6c04e-0bd2-4a5c-b9a1-3b2f7e5d8c01");
    assert_eq!(
        issue_auth_credential_with_pni_zkc(&params, a, p, 1_767_225_601, &[7; 32]),
        Err(ZkError::Verification)
    );
}

#[test]
fn call_link_auth_credential_response_matches_vector() {
    let v = vectors();
    let c = &v["call_link_auth_credential"];
    let generic = GenericServerSecretParams::generate(&hex32(
        &v["generic_server_secret_params"],
        "randomness_hex",
    ));
    let a = aci(c["aci"].as_str().unwrap());
    let t = c["redemption_time"].as_u64().unwrap();
    let response =
        issue_call_link_auth_credential(&generic, a, t, &hex32(c, "randomness_hex")).unwrap();
    let expected = b64(c, "response_b64");
    assert_eq!(response.len(), CALL_LINK_AUTH_CREDENTIAL_RESPONSE_LEN);
    assert_eq!(hex::encode(&response), hex::encode(&expected));
    let public = generic.public_params();
    receive_call_link_auth_credential(&public, a, t, &expected).unwrap();
    let mut bad = expected.clone();
    bad[200] ^= 1;
    assert!(receive_call_link_auth_credential(&public, a, t, &bad).is_err());
    assert!(receive_call_link_auth_credential(&public, a, t + SECONDS_PER_DAY, &expected).is_err());
}

// ---------------------------------------------------------------- step 4: profile key credentials

#[test]
fn expiring_profile_key_credential_response_matches_vector() {
    let v = &vectors()["expiring_profile_key_credential"];
    let params = server_params();
    let a = aci(v["aci"].as_str().unwrap());
    let commitment_bytes = b64(v, "commitment_b64");
    let request_bytes = b64(v, "request_b64");
    assert_eq!(commitment_bytes.len(), PROFILE_KEY_COMMITMENT_LEN);
    assert_eq!(request_bytes.len(), PROFILE_KEY_CREDENTIAL_REQUEST_LEN);
    let commitment = ProfileKeyCommitment::from_bytes(&commitment_bytes).unwrap();
    assert_eq!(commitment.to_bytes(), commitment_bytes);
    let request = ProfileKeyCredentialRequest::from_bytes(&request_bytes).unwrap();
    request.verify(&commitment).unwrap();
    let expiration = v["expiration"].as_u64().unwrap();
    let response = issue_expiring_profile_key_credential(
        &params,
        &hex32(v, "randomness_hex"),
        &request,
        a,
        &commitment,
        expiration,
    )
    .unwrap();
    let expected = b64(v, "response_b64");
    assert_eq!(response.len(), EXPIRING_PROFILE_KEY_CREDENTIAL_RESPONSE_LEN);
    assert_eq!(hex::encode(&response), hex::encode(&expected));
    let public = params.public_params();
    assert_eq!(
        verify_expiring_profile_key_credential_response(&public, &request, a, &expected),
        Ok(expiration)
    );
    let mut bad = expected.clone();
    bad[300] ^= 1;
    assert!(verify_expiring_profile_key_credential_response(&public, &request, a, &bad).is_err());
}

#[test]
fn profile_key_request_mutations_rejected() {
    let v = &vectors()["expiring_profile_key_credential"];
    let commitment = ProfileKeyCommitment::from_bytes(&b64(v, "commitment_b64")).unwrap();
    let request_bytes = b64(v, "request_b64");
    for i in 0..request_bytes.len() {
        let mut bad = request_bytes.clone();
        bad[i] ^= 0x10;
        let ok = ProfileKeyCredentialRequest::from_bytes(&bad).and_then(|r| r.verify(&commitment));
        assert!(ok.is_err(), "byte {i}");
    }
    assert!(ProfileKeyCredentialRequest::from_bytes(&request_bytes[..328]).is_err());
    let mut long = request_bytes.clone();
    long.push(0);
    assert!(ProfileKeyCredentialRequest::from_bytes(&long).is_err());
    // The request does not verify against another commitment.
    let mut other = b64(v, "commitment_b64");
    other.swap(1, 33);
    if let Ok(other) = ProfileKeyCommitment::from_bytes(&other) {
        let request = ProfileKeyCredentialRequest::from_bytes(&request_bytes).unwrap();
        assert_eq!(request.verify(&other), Err(ZkError::Verification));
    }
    let commitment_bytes = b64(v, "commitment_b64");
    assert!(ProfileKeyCommitment::from_bytes(&commitment_bytes[..96]).is_err());
}

#[test]
fn expiring_profile_key_credential_rejects_bad_request_and_unaligned_expiration() {
    let v = &vectors()["expiring_profile_key_credential"];
    let params = server_params();
    let a = aci(v["aci"].as_str().unwrap());
    let commitment = ProfileKeyCommitment::from_bytes(&b64(v, "commitment_b64")).unwrap();
    let request = ProfileKeyCredentialRequest::from_bytes(&b64(v, "request_b64")).unwrap();
    let expiration = v["expiration"].as_u64().unwrap();
    assert_eq!(
        issue_expiring_profile_key_credential(
            &params,
            &[1; 32],
            &request,
            a,
            &commitment,
            expiration + 1
        ),
        Err(ZkError::Verification)
    );
    let mut bad = b64(v, "request_b64");
    let last = bad.len() - 1;
    bad[last] ^= 1;
    if let Ok(bad) = ProfileKeyCredentialRequest::from_bytes(&bad) {
        assert_eq!(
            issue_expiring_profile_key_credential(
                &params,
                &[1; 32],
                &bad,
                a,
                &commitment,
                expiration
            ),
            Err(ZkError::Verification)
        );
    }
}

// ---------------------------------------------------------------- step 5: group send

fn ids(v: &Value) -> Vec<crate::ids::ServiceId> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn group_send_full_token_verifies_for_vector_members() {
    let v = &vectors()["group_send"];
    let params = server_params();
    let expiration = v["expiration"].as_u64().unwrap();
    let key = GroupSendDerivedKeyPair::for_expiration(expiration, &params);
    assert_eq!(
        key.to_bytes().len(),
        v["derived_key_pair_len"].as_u64().unwrap() as usize
    );
    let token_bytes = b64(v, "full_token_b64");
    assert_eq!(token_bytes.len(), GROUP_SEND_FULL_TOKEN_LEN);
    let token = GroupSendFullToken::from_bytes(&token_bytes).unwrap();
    assert_eq!(token.to_bytes(), token_bytes);
    assert_eq!(token.expiration(), expiration);
    let now = v["verify_now"].as_u64().unwrap();
    let members = ids(&v["full_token_verifies_for"]);
    token.verify(&members, now, &key).unwrap();
    // Order of members does not matter.
    let reversed: Vec<_> = members.iter().rev().copied().collect();
    token.verify(&reversed, now, &key).unwrap();
    token.verify_with_params(&members, now, &params).unwrap();
}

#[test]
fn group_send_full_token_rejects_wrong_members() {
    let v = &vectors()["group_send"];
    let params = server_params();
    let token = GroupSendFullToken::from_bytes(&b64(v, "full_token_b64")).unwrap();
    let now = v["verify_now"].as_u64().unwrap();
    let all = ids(&v["members"]);
    let good = ids(&v["full_token_verifies_for"]);
    // The vector's wrong set: only the second member.
    assert_eq!(
        token.verify_with_params(&good[..1], now, &params),
        Err(ZkError::Verification)
    );
    assert_eq!(
        token.verify_with_params(&all, now, &params),
        Err(ZkError::Verification)
    );
    assert_eq!(
        token.verify_with_params(&[], now, &params),
        Err(ZkError::Verification)
    );
    // The same UUID as a PNI is a different member.
    let as_pni: Vec<_> = good
        .iter()
        .map(|m| crate::ids::ServiceId::Pni(crate::ids::Pni(m.uuid())))
        .collect();
    assert_eq!(
        token.verify_with_params(&as_pni, now, &params),
        Err(ZkError::Verification)
    );
}

#[test]
fn group_send_full_token_rejects_wrong_expiration() {
    let v = &vectors()["group_send"];
    let params = server_params();
    let token_bytes = b64(v, "full_token_b64");
    let token = GroupSendFullToken::from_bytes(&token_bytes).unwrap();
    let members = ids(&v["full_token_verifies_for"]);
    let expiration = v["expiration"].as_u64().unwrap();
    // Expired: one second past the expiration (at the expiration itself it is still valid).
    token
        .verify_with_params(&members, expiration, &params)
        .unwrap();
    assert_eq!(
        token.verify_with_params(&members, expiration + 1, &params),
        Err(ZkError::Verification)
    );
    // A key for another day.
    let other_day = GroupSendDerivedKeyPair::for_expiration(expiration + SECONDS_PER_DAY, &params);
    assert_eq!(
        token.verify(&members, expiration - 3600, &other_day),
        Err(ZkError::Verification)
    );
    // The expiration field rewritten by the client: the token no longer verifies.
    let mut moved = token_bytes.clone();
    let n = moved.len();
    moved[n - 8..].copy_from_slice(&(expiration + SECONDS_PER_DAY).to_le_bytes());
    let moved = GroupSendFullToken::from_bytes(&moved).unwrap();
    assert_eq!(
        moved.verify_with_params(&members, expiration - 3600, &params),
        Err(ZkError::Verification)
    );
}

#[test]
fn group_send_full_token_mutations_rejected() {
    let v = &vectors()["group_send"];
    let params = server_params();
    let token_bytes = b64(v, "full_token_b64");
    let members = ids(&v["full_token_verifies_for"]);
    let now = v["verify_now"].as_u64().unwrap();
    for i in 0..token_bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = token_bytes.clone();
            bad[i] ^= bit;
            let r = GroupSendFullToken::from_bytes(&bad)
                .and_then(|t| t.verify_with_params(&members, now, &params));
            assert!(r.is_err(), "byte {i} bit {bit:#x}");
        }
    }
    assert!(GroupSendFullToken::from_bytes(&token_bytes[..32]).is_err());
    let mut long = token_bytes.clone();
    long.push(0);
    assert!(GroupSendFullToken::from_bytes(&long).is_err());
}

// ---------------------------------------------------------------- the 20-case set

const CASES: &str = include_str!("../../testdata/zkgroup_cases.json");

/// Every object of `zkgroup_cases.json` (20 seeds, made by
/// flatline-testkit/libsignal/gen_zkgroup_cases.mjs with libsignal 0.103.0), byte for byte.
#[test]
fn twenty_case_vector_set_is_byte_exact() {
    let v: Value = serde_json::from_str(CASES).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 20);
    for (i, c) in cases.iter().enumerate() {
        let params = ServerSecretParams::generate(&hex32(c, "server_seed_hex"));
        assert_eq!(
            params.to_bytes(),
            b64(c, "server_secret_params_b64"),
            "case {i} secret"
        );
        let public = params.public_params();
        assert_eq!(
            public.to_bytes(),
            b64(c, "server_public_params_b64"),
            "case {i} public"
        );

        let msg = hex::decode(c["notary_message_hex"].as_str().unwrap()).unwrap();
        let sig = params
            .sign(&hex32(c, "notary_randomness_hex"), &msg)
            .unwrap();
        assert_eq!(
            hex::encode(sig),
            c["notary_signature_hex"].as_str().unwrap(),
            "case {i} sig"
        );

        let generic = GenericServerSecretParams::generate(&hex32(c, "generic_seed_hex"));
        assert_eq!(
            generic.to_bytes(),
            b64(c, "generic_secret_params_b64"),
            "case {i} generic"
        );
        assert_eq!(
            generic.public_params().to_bytes(),
            b64(c, "generic_public_params_b64"),
            "case {i} generic public"
        );

        let a = aci(c["aci"].as_str().unwrap());
        let p = pni(c["pni"].as_str().unwrap());
        let t = c["redemption_time"].as_u64().unwrap();
        let auth =
            issue_auth_credential_with_pni_zkc(&params, a, p, t, &hex32(c, "auth_randomness_hex"))
                .unwrap();
        assert_eq!(auth, b64(c, "auth_response_b64"), "case {i} auth");

        let call_link =
            issue_call_link_auth_credential(&generic, a, t, &hex32(c, "call_link_randomness_hex"))
                .unwrap();
        assert_eq!(
            call_link,
            b64(c, "call_link_response_b64"),
            "case {i} call link"
        );

        let commitment =
            ProfileKeyCommitment::from_bytes(&b64(c, "profile_commitment_b64")).unwrap();
        let request =
            ProfileKeyCredentialRequest::from_bytes(&b64(c, "profile_request_b64")).unwrap();
        let profile = issue_expiring_profile_key_credential(
            &params,
            &hex32(c, "profile_randomness_hex"),
            &request,
            a,
            &commitment,
            c["profile_expiration"].as_u64().unwrap(),
        )
        .unwrap();
        assert_eq!(profile, b64(c, "profile_response_b64"), "case {i} profile");

        let exp = c["group_send_expiration"].as_u64().unwrap();
        let key = GroupSendDerivedKeyPair::for_expiration(exp, &params);
        assert_eq!(
            key.to_bytes(),
            b64(c, "group_send_derived_key_pair_b64"),
            "case {i} key"
        );
        let token = GroupSendFullToken::from_bytes(&b64(c, "group_send_full_token_b64")).unwrap();
        let recipients = ids(&c["group_send_recipients"]);
        let now = c["group_send_now"].as_u64().unwrap();
        token.verify(&recipients, now, &key).unwrap();
        assert!(
            token.verify(&recipients[1..], now, &key).is_err(),
            "case {i} subset"
        );
        assert!(
            token.verify(&recipients, exp + 1, &key).is_err(),
            "case {i} expired"
        );
    }
}

#[test]
fn zk_params_key_file_round_trips() {
    struct Counter(std::sync::atomic::AtomicU8);
    impl crate::random::SecureRandom for Counter {
        fn fill(&self, dest: &mut [u8]) {
            let v = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            dest.fill(v);
        }
    }
    let params = ZkParams::generate(&Counter(std::sync::atomic::AtomicU8::new(1)));
    assert_eq!(
        params.server.to_bytes(),
        ServerSecretParams::generate(&[1; 32]).to_bytes()
    );
    assert_eq!(
        params.generic.to_bytes(),
        GenericServerSecretParams::generate(&[2; 32]).to_bytes()
    );
    let pem = params.to_pem();
    let back = ZkParams::from_pem(&pem).unwrap();
    assert_eq!(back.server.to_bytes(), params.server.to_bytes());
    assert_eq!(back.generic.to_bytes(), params.generic.to_bytes());
    assert_eq!(back.fingerprint(), params.fingerprint());
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(params.public_base64())
            .unwrap()
            .len(),
        SERVER_PUBLIC_PARAMS_LEN
    );
    assert!(ZkParams::from_pem("nothing").is_err());
    let truncated: String = pem.lines().filter(|l| !l.contains("GENERIC")).collect();
    assert!(ZkParams::from_pem(&truncated).is_err());
    // A corrupted blob is a wrong key, not a panic.
    let corrupted = pem.replacen("-----\nA", "-----\nB", 1);
    assert!(ZkParams::from_pem(&corrupted).is_err());
}

#[test]
fn redemption_range_rules() {
    use super::service::{GroupCredentialError, redemption_days};
    let today = 1_767_225_600u64;
    let now = today + 5000;
    assert_eq!(redemption_days(today, today, now).unwrap(), vec![today]);
    assert_eq!(
        redemption_days(today, today + 7 * SECONDS_PER_DAY, now)
            .unwrap()
            .len(),
        8
    );
    for (s, e) in [
        (today, today + 8 * SECONDS_PER_DAY),
        (today - SECONDS_PER_DAY, today),
        (today + SECONDS_PER_DAY, today),
        (today + 1, today + SECONDS_PER_DAY),
        (today, today + SECONDS_PER_DAY - 1),
    ] {
        assert!(
            matches!(
                redemption_days(s, e, now),
                Err(GroupCredentialError::InvalidRange(_))
            ),
            "{s}..{e}"
        );
    }
}

#[test]
fn group_send_token_header_checks() {
    use super::service::{GroupSendTokenError, parse_group_send_token, verify_group_send_token};
    let v = &vectors()["group_send"];
    let params = server_params();
    let header = v["full_token_b64"].as_str().unwrap();
    let token = parse_group_send_token(header).unwrap();
    let members = ids(&v["full_token_verifies_for"]);
    let now = v["verify_now"].as_u64().unwrap();
    assert_eq!(
        verify_group_send_token(&params, &token, &members, now),
        Ok(())
    );
    assert_eq!(
        verify_group_send_token(&params, &token, &members[..1], now),
        Err(GroupSendTokenError::Invalid)
    );
    assert_eq!(
        verify_group_send_token(&params, &token, &members, token.expiration() + 1),
        Err(GroupSendTokenError::Invalid)
    );
    for bad in ["", "!!!", "AAAA", &header[..header.len() - 4]] {
        assert_eq!(
            parse_group_send_token(bad).err(),
            Some(GroupSendTokenError::Malformed),
            "{bad}"
        );
    }
}

#[test]
fn profile_key_credential_service_rules() {
    use super::service::{
        ProfileCredentialError, issue_profile_key_credential, profile_key_credential_expiration,
    };
    struct Fixed;
    impl crate::random::SecureRandom for Fixed {
        fn fill(&self, dest: &mut [u8]) {
            dest.fill(9);
        }
    }
    let v = &vectors()["expiring_profile_key_credential"];
    let params = server_params();
    let a = aci(v["aci"].as_str().unwrap());
    let commitment = b64(v, "commitment_b64");
    let request_hex = hex::encode(b64(v, "request_b64"));
    let day = 1_767_225_600u64;
    assert_eq!(
        profile_key_credential_expiration(day + 3600),
        day + 7 * SECONDS_PER_DAY
    );
    assert_eq!(
        profile_key_credential_expiration(day),
        day + 7 * SECONDS_PER_DAY
    );
    let response =
        issue_profile_key_credential(&params, a, &commitment, &request_hex, day + 3600, &Fixed)
            .unwrap();
    let request = ProfileKeyCredentialRequest::from_bytes(&b64(v, "request_b64")).unwrap();
    assert_eq!(
        verify_expiring_profile_key_credential_response(
            &params.public_params(),
            &request,
            a,
            &response
        ),
        Ok(day + 7 * SECONDS_PER_DAY)
    );
    // Upper-case hex is hex too.
    assert!(
        issue_profile_key_credential(
            &params,
            a,
            &commitment,
            &request_hex.to_uppercase(),
            day,
            &Fixed
        )
        .is_ok()
    );
    for bad in ["", "zz", &request_hex[..request_hex.len() - 2]] {
        assert_eq!(
            issue_profile_key_credential(&params, a, &commitment, bad, day, &Fixed),
            Err(ProfileCredentialError::InvalidRequest)
        );
    }
    let other = b64(
        &vectors()["expiring_profile_key_credential"],
        "commitment_b64",
    );
    let mut other_commitment = other.clone();
    other_commitment[1..33].copy_from_slice(&b64(v, "request_b64")[1..33]);
    assert_eq!(
        issue_profile_key_credential(&params, a, &other_commitment, &request_hex, day, &Fixed),
        Err(ProfileCredentialError::Verification)
    );
    assert_eq!(
        issue_profile_key_credential(&params, a, &commitment[..96], &request_hex, day, &Fixed),
        Err(ProfileCredentialError::InvalidCommitment)
    );
}
