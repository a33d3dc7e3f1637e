use super::*;

/// A deterministic `SecureRandom` for these tests (the test kit depends on this crate, so it cannot be used here).
struct Counter(std::sync::atomic::AtomicU8);

impl SecureRandom for Counter {
    fn fill(&self, dest: &mut [u8]) {
        for b in dest {
            *b = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

fn rng(start: u8) -> Counter {
    Counter(std::sync::atomic::AtomicU8::new(start))
}

const NOW: Timestamp = Timestamp(1_767_225_600_000);

fn manifest(key: &InstanceSigningKey) -> Manifest {
    Manifest {
        version: 3,
        issued_at: NOW.as_secs(),
        expires_at: NOW.as_secs() + 30 * 86_400,
        name: "Example".into(),
        endpoints: [("chat".to_owned(), "https://chat.example.org".to_owned())].into(),
        tls_pins: vec!["sha256:JmplxJmr3IPWwm/tl2+aU/+wKjcaN2Z+8AmhTlDgHXA=".into()],
        trust_roots: TrustRoots {
            sealed_sender: SealedSenderRoot::generate(&rng(9)).public_base64(),
            zk_params: None,
            generic_zk_params: None,
        },
        identity_providers: vec![IdentityProvider {
            id: "main".into(),
            name: "Main IdP".into(),
            issuer: "https://idp.example.org".into(),
            authorization_endpoint: "https://idp.example.org/authorize".into(),
        }],
        signing_key: key.public_jwk(),
    }
}

fn b64url_json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn parts(jws: &str) -> (String, String, String) {
    let v: Vec<&str> = jws.split('.').collect();
    (v[0].to_owned(), v[1].to_owned(), v[2].to_owned())
}

fn decode_part(p: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
}

#[test]
fn rfc8037_key_and_rfc7638_thumbprint() {
    // RFC 8037 appendix A.1-A.3: the example key, its public part and its JWK thumbprint.
    let seed: [u8; 32] = URL_SAFE_NO_PAD
        .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
        .unwrap()
        .try_into()
        .unwrap();
    let key = InstanceSigningKey::from_seed(&seed);
    assert_eq!(
        key.public_jwk().x,
        "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    );
    assert_eq!(
        key.fingerprint().to_string(),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
}

#[test]
fn reads_key_files_written_by_openssl() {
    // `openssl genpkey -algorithm ed25519`; public key from `openssl pkey -pubout -outform der | tail -c 32`.
    let ed = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA/fblbHh5qYwR99zClgCTdLNYP9FUKUGW78PQ+cKn8s\n-----END PRIVATE KEY-----\n";
    let key = InstanceSigningKey::from_pem(ed).unwrap();
    assert_eq!(
        STANDARD.encode(key.verifying_key().as_bytes()),
        "FprUoJKjeAbIQ2trg2gaK4MDnguK6Q+cLwNv+n2vfaY="
    );
    assert_eq!(key.to_pem().as_str(), ed);
    // `openssl genpkey -algorithm x25519`.
    let x = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VuBCIEIDhEzafU8Yoo8gzD/f8p2IglrJVDswMEqLfwkt3uf2FP\n-----END PRIVATE KEY-----\n";
    let root = SealedSenderRoot::from_pem(x).unwrap();
    assert_eq!(
        STANDARD.encode(root.public_key().u_bytes()),
        "YtLBtq1/6vGSFL9T70Huf8dwUieEzcMkDMZoYMKXIEs="
    );
    // 33 bytes: the 0x05 type byte, then the key.
    let serialized = STANDARD.decode(root.public_base64()).unwrap();
    assert_eq!(serialized.len(), 33);
    assert_eq!(serialized[0], 0x05);

    // Each reader refuses the other's key and garbage.
    assert_eq!(
        InstanceSigningKey::from_pem(x).unwrap_err(),
        KeyFileError::WrongKey("Ed25519")
    );
    assert_eq!(
        SealedSenderRoot::from_pem(ed).unwrap_err(),
        KeyFileError::WrongKey("X25519")
    );
    assert_eq!(
        InstanceSigningKey::from_pem("hello").unwrap_err(),
        KeyFileError::NotPem
    );
}

#[test]
fn generated_keys_round_trip_through_pem() {
    let key = InstanceSigningKey::generate(&rng(1));
    let again = InstanceSigningKey::from_pem(&key.to_pem()).unwrap();
    assert_eq!(key.fingerprint(), again.fingerprint());
    let root = SealedSenderRoot::generate(&rng(2));
    let again = SealedSenderRoot::from_pem(&root.to_pem()).unwrap();
    assert_eq!(root.public_base64(), again.public_base64());
    assert_ne!(
        InstanceSigningKey::generate(&rng(3)).fingerprint(),
        key.fingerprint()
    );
    assert!(!format!("{key:?}").contains(&URL_SAFE_NO_PAD.encode(key.0.as_bytes())));
}

#[test]
fn signs_a_compact_jws_with_the_documented_header() {
    let key = InstanceSigningKey::generate(&rng(1));
    let m = manifest(&key);
    let jws = key.sign(&m);
    let (h, p, s) = parts(&jws);
    assert_eq!(
        decode_part(&h),
        serde_json::json!({"alg": "EdDSA", "kid": key.fingerprint().to_string(), "typ": JWS_TYPE})
    );
    let payload = decode_part(&p);
    let keys: Vec<&str> = payload
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = vec![
        "version",
        "issuedAt",
        "expiresAt",
        "name",
        "endpoints",
        "tlsPins",
        "trustRoots",
        "identityProviders",
        "signingKey",
    ];
    let mut got = keys.clone();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(payload["trustRoots"]["zkParams"], Value::Null);
    assert_eq!(payload["trustRoots"]["genericZkParams"], Value::Null);
    // A manifest from before `genericZkParams` existed still parses.
    let old: TrustRoots =
        serde_json::from_str(r#"{"sealedSender":"BQ==","zkParams":null}"#).unwrap();
    assert_eq!(old.generic_zk_params, None);
    assert_eq!(
        payload["identityProviders"][0]["authorizationEndpoint"],
        "https://idp.example.org/authorize"
    );
    assert_eq!(URL_SAFE_NO_PAD.decode(&s).unwrap().len(), 64);
    assert_eq!(
        verify(&jws, Some(&key.fingerprint()), Some(3), NOW).unwrap(),
        m
    );
    // Without a pin it still checks the signature and the kid.
    assert_eq!(verify(&jws, None, None, NOW).unwrap(), m);
}

#[test]
fn rejects_tampering_foreign_keys_expiry_and_old_versions() {
    let key = InstanceSigningKey::generate(&rng(1));
    let fp = key.fingerprint();
    let m = manifest(&key);
    let jws = key.sign(&m);
    let (h, p, s) = parts(&jws);

    // A changed payload under the original signature.
    let mut tampered = decode_part(&p);
    tampered["endpoints"]["chat"] = "https://evil.example".into();
    let forged = format!("{h}.{}.{s}", b64url_json(&tampered));
    assert_eq!(
        verify(&forged, Some(&fp), None, NOW),
        Err(VerifyError::BadSignature)
    );
    // A changed header under the original signature.
    let other_header = b64url_json(
        &serde_json::json!({"alg": "EdDSA", "kid": fp.to_string(), "typ": JWS_TYPE, "x": 1}),
    );
    assert_eq!(
        verify(&format!("{other_header}.{p}.{s}"), Some(&fp), None, NOW),
        Err(VerifyError::BadSignature)
    );
    // A manifest re-signed by another key (consistently, with its own kid and signingKey) is refused by the pin.
    let evil = InstanceSigningKey::generate(&rng(100));
    let resigned = evil.sign(&m);
    assert!(matches!(
        verify(&resigned, Some(&fp), None, NOW),
        Err(VerifyError::WrongKey { .. })
    ));
    // Another key's signature with the victim's kid and signingKey fails the signature check.
    let victim_input = format!("{h}.{p}");
    let evil_signature = evil.0.sign(victim_input.as_bytes());
    let spliced = format!(
        "{victim_input}.{}",
        URL_SAFE_NO_PAD.encode(evil_signature.to_bytes())
    );
    assert_eq!(
        verify(&spliced, Some(&fp), None, NOW),
        Err(VerifyError::BadSignature)
    );
    // A kid that is not the embedded key's thumbprint.
    let bad_kid = b64url_json(
        &serde_json::json!({"alg": "EdDSA", "kid": evil.fingerprint().to_string(), "typ": JWS_TYPE}),
    );
    let input = format!("{bad_kid}.{p}");
    let sig = URL_SAFE_NO_PAD.encode(key.0.sign(input.as_bytes()).to_bytes());
    assert_eq!(
        verify(&format!("{input}.{sig}"), None, None, NOW),
        Err(VerifyError::KidMismatch)
    );
    // Wrong typ or alg.
    let bad_typ =
        b64url_json(&serde_json::json!({"alg": "EdDSA", "kid": fp.to_string(), "typ": "JWT"}));
    let input = format!("{bad_typ}.{p}");
    let sig = URL_SAFE_NO_PAD.encode(key.0.sign(input.as_bytes()).to_bytes());
    assert_eq!(
        verify(&format!("{input}.{sig}"), None, None, NOW),
        Err(VerifyError::Header)
    );
    // Expiry is exclusive of expiresAt.
    let end = Timestamp::from_secs(m.expires_at);
    assert!(
        verify(
            &jws,
            Some(&fp),
            None,
            end.minus(std::time::Duration::from_secs(1))
        )
        .is_ok()
    );
    assert_eq!(
        verify(&jws, Some(&fp), None, end),
        Err(VerifyError::Expired {
            expires_at: m.expires_at
        })
    );
    // Versions.
    assert!(verify(&jws, Some(&fp), Some(3), NOW).is_ok());
    assert_eq!(
        verify(&jws, Some(&fp), Some(4), NOW),
        Err(VerifyError::VersionTooLow {
            version: 3,
            minimum: 4
        })
    );
    // Garbage.
    for junk in ["", "a.b", "a.b.c.d", "!!.!!.!!", &format!("{h}.{h}.{s}")] {
        assert!(
            matches!(
                verify(junk, None, None, NOW),
                Err(VerifyError::Malformed(_))
            ),
            "{junk}"
        );
    }
}

#[test]
fn content_hash_ignores_times_and_version_only() {
    let key = InstanceSigningKey::generate(&rng(1));
    let m = manifest(&key);
    let mut later = m.clone();
    later.issued_at += 1000;
    later.expires_at += 1000;
    later.version += 7;
    assert_eq!(m.content_hash(), later.content_hash());

    let changes: [fn(&mut Manifest); 6] = [
        |m| m.name.push('!'),
        |m| {
            m.endpoints
                .insert("cdn".into(), "https://cdn.example.org".into());
        },
        |m| m.tls_pins.clear(),
        |m| m.trust_roots.zk_params = Some("AA==".into()),
        |m| m.identity_providers[0].issuer.push('/'),
        |m| m.signing_key.x = "x".into(),
    ];
    for change in changes {
        let mut other = m.clone();
        change(&mut other);
        assert_ne!(m.content_hash(), other.content_hash(), "{other:?}");
    }
}

#[test]
fn canonical_json_sorts_keys_without_whitespace() {
    let mut out = String::new();
    canonical_json(
        &serde_json::json!({"b": [1, {"z": null, "a": "x\"y"}], "a": true}),
        &mut out,
    );
    assert_eq!(out, r#"{"a":true,"b":[1,{"a":"x\"y","z":null}]}"#);
}

#[test]
fn refetch_rule() {
    let key = InstanceSigningKey::generate(&rng(1));
    let m = manifest(&key);
    let mut resigned = m.clone();
    resigned.issued_at += 10;
    resigned.expires_at += 10;
    assert_eq!(check_update(&m, &resigned), Ok(()));
    let mut changed = m.clone();
    changed.name = "Other".into();
    assert_eq!(
        check_update(&m, &changed),
        Err(VerifyError::ContentChangedWithoutNewVersion { version: 3 })
    );
    changed.version = 4;
    assert_eq!(check_update(&m, &changed), Ok(()));
    assert!(matches!(
        check_update(&changed, &m),
        Err(VerifyError::VersionTooLow { .. })
    ));
}

#[test]
fn descriptor_format_and_parse() {
    let key = InstanceSigningKey::generate(&rng(1));
    let d = Descriptor {
        manifest_url: "https://chat.example.org:8443/.well-known/flatline/manifest?a=b&c=d".into(),
        fingerprint: key.fingerprint(),
    };
    let uri = d.to_string();
    assert_eq!(
        uri,
        format!(
            "flatline://server?url=https%3A%2F%2Fchat.example.org%3A8443%2F.well-known%2Fflatline%2Fmanifest%3Fa%3Db%26c%3Dd&fp=sha256:{}",
            key.fingerprint()
        )
    );
    assert_eq!(Descriptor::parse(&uri).unwrap(), d);
    assert!(Descriptor::parse("https://x").is_err());
    assert!(Descriptor::parse("flatline://server?url=x").is_err());
    assert!(
        Descriptor::parse(&format!("flatline://server?url=x&fp={}", key.fingerprint())).is_err()
    );
    assert!(Descriptor::parse("flatline://server?url=%zz&fp=sha256:AAAA").is_err());
}

#[test]
fn fingerprint_parsing() {
    let fp = InstanceSigningKey::generate(&rng(1)).fingerprint();
    assert_eq!(Fingerprint::parse(&fp.with_hash_name()).unwrap(), fp);
    assert_eq!(Fingerprint::parse(&fp.to_string()).unwrap(), fp);
    assert_eq!(fp.to_string().len(), 43);
    assert!(Fingerprint::parse("sha256:abc").is_err());
    assert!(Fingerprint::parse(&format!("sha256:{fp}=")).is_err());
}
