//! The `zkgroup` fuzz target (see [`crate::fuzzing`]): every zkgroup deserializer and verifier the server exposes to
//! clients, selected by the first byte. Invariants: a parsed object re-serializes to exactly its input (the format is
//! canonical), and nothing but the genuine object verifies.

use std::sync::OnceLock;

use flatline_core::ids::{Aci, Pni, ServiceId};
use flatline_core::zk::{
    GenericServerPublicParams, GenericServerSecretParams, GroupSendDerivedKeyPair,
    GroupSendFullToken, ProfileKeyCommitment, ProfileKeyCredentialRequest, ServerPublicParams,
    ServerSecretParams, receive_auth_credential_with_pni_zkc, receive_call_link_auth_credential,
};

/// Day-aligned redemption time and group-send expiration the seeds use.
const DAY: u64 = 1_767_225_600;
const ACI: &str = "9d0652a3-dcc3-4d11-975f-74d61598733f";
const PNI: &str = "f2a6c04e-0bd2-4a5c-b9a1-3b2f7e5d8c01";

struct Fixture {
    secret: ServerSecretParams,
    public: ServerPublicParams,
    generic: GenericServerSecretParams,
    generic_public: GenericServerPublicParams,
    key: GroupSendDerivedKeyPair,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let secret = ServerSecretParams::generate(&[0x5a; 32]);
        let generic = GenericServerSecretParams::generate(&[0xa5; 32]);
        Fixture {
            public: secret.public_params(),
            generic_public: generic.public_params(),
            key: GroupSendDerivedKeyPair::for_expiration(DAY + 86_400, &secret),
            secret,
            generic,
        }
    })
}

fn ids() -> (Aci, Pni) {
    (
        ACI.parse().unwrap_or(Aci(uuid::Uuid::nil())),
        PNI.parse().unwrap_or(Pni(uuid::Uuid::nil())),
    )
}

/// The target body.
pub fn zkgroup(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let (aci, pni) = ids();
    match selector % 8 {
        0 => {
            if let Ok(p) = ServerSecretParams::from_bytes(body) {
                assert_eq!(p.to_bytes(), body);
            }
        }
        1 => {
            if let Ok(p) = ServerPublicParams::from_bytes(body) {
                assert_eq!(p.to_bytes(), body);
            }
        }
        2 => {
            if let Ok(p) = GenericServerSecretParams::from_bytes(body) {
                assert_eq!(p.to_bytes(), body);
            }
            if let Ok(p) = GenericServerPublicParams::from_bytes(body) {
                assert_eq!(p.to_bytes(), body);
            }
        }
        3 => {
            if let Ok(c) = ProfileKeyCommitment::from_bytes(body) {
                assert_eq!(c.to_bytes(), body);
            }
        }
        4 => {
            // request ‖ commitment: a request proof verifies only for the commitment it was made for.
            let (request, commitment) = body.split_at(body.len().saturating_sub(97));
            if let (Ok(r), Ok(c)) = (
                ProfileKeyCredentialRequest::from_bytes(request),
                ProfileKeyCommitment::from_bytes(commitment),
            ) {
                let _ = r.verify(&c);
            }
        }
        5 => {
            if let Ok(t) = GroupSendFullToken::from_bytes(body) {
                assert_eq!(t.to_bytes(), body);
                let members = [ServiceId::Aci(aci), ServiceId::Pni(pni)];
                // Nobody can make a token for the fixture's key without its secret.
                assert!(t.verify(&members, DAY, &f.key).is_err());
            }
        }
        6 => {
            let _ = receive_auth_credential_with_pni_zkc(&f.public, aci, pni, DAY, body);
            let _ = receive_call_link_auth_credential(&f.generic_public, aci, DAY, body);
        }
        _ => {
            let (signature, message) = body.split_at(body.len().min(64));
            let _ = f.public.verify_signature(message, signature);
            if let Ok(sig) = f.secret.sign(&[1; 32], message) {
                assert_eq!(f.public.verify_signature(message, &sig), Ok(()));
            }
        }
    }
}

/// Seeds: genuine objects made with the fixture, under each selector.
pub fn seeds(add: &mut dyn FnMut(&'static str, &str, Vec<u8>)) {
    let f = fixture();
    let (aci, pni) = ids();
    let with = |selector: u8, bytes: &[u8]| [&[selector][..], bytes].concat();
    add("zkgroup", "server-secret", with(0, &f.secret.to_bytes()));
    add("zkgroup", "server-public", with(1, &f.public.to_bytes()));
    add("zkgroup", "generic-secret", with(2, &f.generic.to_bytes()));
    add(
        "zkgroup",
        "generic-public",
        with(2, &f.generic_public.to_bytes()),
    );
    let token = GroupSendFullToken::from_bytes(
        &[
            &[0u8][..],
            &16u64.to_le_bytes(),
            &[7; 16],
            &(DAY + 86_400).to_le_bytes(),
        ]
        .concat(),
    );
    if let Ok(t) = token {
        add("zkgroup", "full-token", with(5, &t.to_bytes()));
    }
    if let Ok(r) =
        flatline_core::zk::issue_auth_credential_with_pni_zkc(&f.secret, aci, pni, DAY, &[3; 32])
    {
        add("zkgroup", "auth-response", with(6, &r));
    }
    if let Ok(r) =
        flatline_core::zk::issue_call_link_auth_credential(&f.generic, aci, DAY, &[4; 32])
    {
        add("zkgroup", "call-link-response", with(6, &r));
    }
    // A libsignal-made request and its commitment (testdata/zkgroup.json).
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("../../flatline-core/testdata/zkgroup.json"))
            .unwrap_or_default();
    let v = &vectors["expiring_profile_key_credential"];
    let b64 = |field: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(v[field].as_str().unwrap_or_default())
            .unwrap_or_default()
    };
    let commitment = b64("commitment_b64");
    add("zkgroup", "commitment", with(3, &commitment));
    add(
        "zkgroup",
        "profile-request",
        with(4, &[b64("request_b64"), commitment].concat()),
    );
    if let Ok(sig) = f.secret.sign(&[2; 32], b"message") {
        add(
            "zkgroup",
            "notary",
            with(7, &[&sig[..], b"message"].concat()),
        );
    }
}
