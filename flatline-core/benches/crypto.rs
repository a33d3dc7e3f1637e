//! Server-side cryptography: XEdDSA verify/sign, an upload's 102 signatures, full upload validation and
//! username proofs. docs/PERFORMANCE.md compares these numbers with libsignal's on the same machine.
//!
//! Run with `cargo bench -p flatline-core --bench crypto`.

use std::hint::black_box;
use std::sync::Mutex;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flatline_core::crypto::{
    KeyPair, PrivateKey, PublicKey, VerifyingKey, generate_username_proof, username_hash,
    verify_username_proof,
};
use flatline_core::keys::{RawKey, RawKeyUpload, validate_upload};
use flatline_core::random::SecureRandom;
use sha2::{Digest, Sha256};

/// Deterministic bytes (SHA-256 of a counter), so every run measures the same keys and signatures. The test
/// kit's `SeededRng` does the same, but flatline-testkit depends on this crate and a dev-dependency cycle
/// would make every `cargo test -p flatline-core` build the test kit's HTTP stack.
struct BenchRng(Mutex<u64>);

impl SecureRandom for BenchRng {
    fn fill(&self, dest: &mut [u8]) {
        let mut counter = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for chunk in dest.chunks_mut(32) {
            let block = Sha256::new()
                .chain_update(b"flatline bench")
                .chain_update(counter.to_be_bytes())
                .finalize();
            *counter += 1;
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }
}

/// CPU time of the benchmarking thread. The benchmarks run on a shared 2-core machine; wall time would also
/// count the time other processes hold the core, CPU time mostly does not (contention for caches and a shared
/// physical core still shows). The libsignal script in docs/PERFORMANCE.md measures CPU time as well.
struct ThreadCpuTime;

fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    // Both fields are non-negative for a CPU-time clock.
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, ns: &u64) -> f64 {
        *ns as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Values are nanoseconds, exactly what the wall-time formatter expects.
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

/// A serialized EC public key (33 bytes), what a signed EC prekey signature covers.
fn ec_public_key(rng: &dyn SecureRandom) -> Vec<u8> {
    PrivateKey::generate(rng).public_key().serialize().to_vec()
}

/// A Kyber1024 public-key envelope (1569 bytes, random key material), as the test kit's SimClient builds it;
/// the server only checks its format and signature.
fn kyber_public_key(rng: &dyn SecureRandom) -> Vec<u8> {
    let mut key = vec![0u8; 1569];
    rng.fill(&mut key[1..]);
    key[0] = 0x08;
    key
}

fn signed(identity: &KeyPair, key_id: i64, public_key: Vec<u8>, rng: &dyn SecureRandom) -> RawKey {
    let signature = identity.private_key.sign(&public_key, rng).to_vec();
    RawKey {
        key_id,
        public_key,
        signature,
    }
}

/// The largest upload a client sends (`PUT /v2/keys`): 100 one-time EC keys, 100 signed one-time Kyber keys,
/// a signed EC prekey and a signed last-resort Kyber key, i.e. 102 signatures by the identity key.
fn full_upload(identity: &KeyPair, rng: &dyn SecureRandom) -> RawKeyUpload {
    RawKeyUpload {
        ec: (0..100)
            .map(|id| RawKey {
                key_id: id,
                public_key: ec_public_key(rng),
                signature: Vec::new(),
            })
            .collect(),
        signed: Some(signed(identity, 10_000, ec_public_key(rng), rng)),
        kem: (0..100)
            .map(|id| signed(identity, id, kyber_public_key(rng), rng))
            .collect(),
        last_resort: Some(signed(identity, 20_000, kyber_public_key(rng), rng)),
    }
}

fn xeddsa(c: &mut Criterion<ThreadCpuTime>) {
    let rng = BenchRng(Mutex::new(0));
    let identity = KeyPair::generate(&rng);
    let public = identity.public_key;
    let ec = ec_public_key(&rng);
    let kyber = kyber_public_key(&rng);
    let ec_sig = identity.private_key.sign(&ec, &rng);
    let kyber_sig = identity.private_key.sign(&kyber, &rng);
    assert!(public.verify_signature(&ec, &ec_sig));
    assert!(public.verify_signature(&kyber, &kyber_sig));

    let mut g = c.benchmark_group("xeddsa");
    // A lone verification from the serialized key, as libsignal's PublicKey.verify does it.
    g.bench_function("verify/33B", |b| {
        b.iter(|| {
            let key = PublicKey::from_bytes(black_box(&public.serialize())).ok();
            key.is_some_and(|k| k.verify_signature(black_box(&ec), black_box(&ec_sig)))
        })
    });
    g.bench_function("verify/1569B", |b| {
        b.iter(|| {
            let key = PublicKey::from_bytes(black_box(&public.serialize())).ok();
            key.is_some_and(|k| k.verify_signature(black_box(&kyber), black_box(&kyber_sig)))
        })
    });
    // One more signature by a key whose precomputation is already done (the 2nd..102nd of an upload).
    let prepared = VerifyingKey::new(&public);
    g.bench_function("verify_prepared/33B", |b| {
        b.iter(|| prepared.verify(black_box(&ec), black_box(&ec_sig)))
    });
    g.bench_function("sign/33B", |b| {
        b.iter(|| identity.private_key.sign(black_box(&ec), &rng))
    });

    // An upload's signatures: the signed EC prekey, 100 one-time Kyber keys and the last-resort Kyber key.
    let mut messages = vec![ec.clone()];
    messages.extend((0..101).map(|_| kyber_public_key(&rng)));
    let signatures: Vec<_> = messages
        .iter()
        .map(|m| identity.private_key.sign(m, &rng))
        .collect();
    let pairs: Vec<(&[u8], &[u8])> = messages
        .iter()
        .zip(&signatures)
        .map(|(m, s)| (m.as_slice(), s.as_slice()))
        .collect();
    g.throughput(Throughput::Elements(102));
    g.bench_function("verify_many/102", |b| {
        b.iter(|| {
            let verifier = VerifyingKey::new(black_box(&public));
            verifier.verify_many(black_box(&pairs))
        })
    });
    g.bench_function("verify_separately/102", |b| {
        b.iter(|| {
            pairs
                .iter()
                .all(|(m, s)| black_box(&public).verify_signature(m, s))
        })
    });
    g.finish();

    let upload = full_upload(&identity, &rng);
    let identity_bytes = public.serialize();
    assert!(validate_upload(&identity_bytes, &upload).is_ok());
    let mut g = c.benchmark_group("upload");
    g.bench_function("validate_upload/100ec+100kem+signed+last_resort", |b| {
        b.iter(|| validate_upload(black_box(&identity_bytes), black_box(&upload)))
    });
    g.finish();
}

fn usernames(c: &mut Criterion<ThreadCpuTime>) {
    let name = "benchmark_user.42";
    let hash = username_hash(name).expect("valid username");
    let proof = generate_username_proof(name, &[7u8; 32]).expect("valid username");
    assert!(verify_username_proof(&proof, &hash).is_ok());

    let mut g = c.benchmark_group("username");
    g.bench_function("verify_proof", |b| {
        b.iter(|| verify_username_proof(black_box(&proof), black_box(&hash)))
    });
    g.bench_function("generate_proof", |b| {
        b.iter(|| generate_username_proof(black_box(name), black_box(&[7u8; 32])))
    });
    g.bench_function("hash", |b| b.iter(|| username_hash(black_box(name))));
    g.finish();
}

/// zkgroup issuance and group send token verification, on the inputs of `testdata/zkgroup.json` (libsignal's
/// own objects), so the libsignal script in docs/PERFORMANCE.md measures the same operations on the same bytes.
fn zkgroup(c: &mut Criterion<ThreadCpuTime>) {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use flatline_core::ids::ServiceId;
    use flatline_core::zk;

    let v: serde_json::Value =
        serde_json::from_str(include_str!("../testdata/zkgroup.json")).expect("vectors");
    let hex32 = |v: &serde_json::Value, f: &str| -> [u8; 32] {
        hex::decode(v[f].as_str().expect(f))
            .expect("hex")
            .try_into()
            .expect("32 bytes")
    };
    let b64 =
        |v: &serde_json::Value, f: &str| STANDARD.decode(v[f].as_str().expect(f)).expect("b64");
    let params =
        zk::ServerSecretParams::generate(&hex32(&v["server_secret_params"], "randomness_hex"));
    let generic = zk::GenericServerSecretParams::generate(&hex32(
        &v["generic_server_secret_params"],
        "randomness_hex",
    ));
    let a = &v["auth_credential_with_pni_zkc"];
    let aci: flatline_core::ids::Aci = a["aci"].as_str().expect("aci").parse().expect("aci");
    let pni: flatline_core::ids::Pni = a["pni"]
        .as_str()
        .expect("pni")
        .trim_start_matches("PNI:")
        .parse()
        .expect("pni");
    let t = a["redemption_time"].as_u64().expect("time");
    let p = &v["expiring_profile_key_credential"];
    let commitment =
        zk::ProfileKeyCommitment::from_bytes(&b64(p, "commitment_b64")).expect("commitment");
    let request =
        zk::ProfileKeyCredentialRequest::from_bytes(&b64(p, "request_b64")).expect("request");
    let expiration = p["expiration"].as_u64().expect("expiration");
    let gs = &v["group_send"];
    let token = zk::GroupSendFullToken::from_bytes(&b64(gs, "full_token_b64")).expect("token");
    let members: Vec<ServiceId> = gs["full_token_verifies_for"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m.as_str().expect("member").parse().expect("member"))
        .collect();
    let now = gs["verify_now"].as_u64().expect("now");
    let key = zk::GroupSendDerivedKeyPair::for_expiration(token.expiration(), &params);
    assert!(token.verify(&members, now, &key).is_ok());

    let mut g = c.benchmark_group("zkgroup");
    g.bench_function("issue_auth_credential_with_pni_zkc", |b| {
        b.iter(|| zk::issue_auth_credential_with_pni_zkc(&params, aci, pni, t, black_box(&[1; 32])))
    });
    g.bench_function("issue_call_link_auth_credential", |b| {
        b.iter(|| zk::issue_call_link_auth_credential(&generic, aci, t, black_box(&[2; 32])))
    });
    g.bench_function("issue_expiring_profile_key_credential", |b| {
        b.iter(|| {
            zk::issue_expiring_profile_key_credential(
                &params,
                black_box(&[3; 32]),
                &request,
                aci,
                &commitment,
                expiration,
            )
        })
    });
    g.bench_function("group_send_full_token_verify/2_members", |b| {
        b.iter(|| black_box(&token).verify(&members, now, &key))
    });
    g.bench_function("group_send_derived_key_pair", |b| {
        b.iter(|| zk::GroupSendDerivedKeyPair::for_expiration(black_box(expiration), &params))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = xeddsa, usernames, zkgroup
}
criterion_main!(benches);
