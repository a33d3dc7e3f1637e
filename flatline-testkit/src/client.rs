//! A simulated Signal client: real identity keys, real XEdDSA signatures over real key encodings, and the wire
//! JSON a client sends. Kyber public keys are random bytes in the correct envelope (the server never runs the
//! KEM, so only their format and signatures matter).

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use flatline_core::account::{Account, AccountSettings, Device, DeviceSettings};
use flatline_core::credentials::SaltedTokenHash;
use flatline_core::crypto::{KeyPair, PrivateKey};
use flatline_core::ids::{Aci, DeviceId, IdentityType, Pni, Principal};
use flatline_core::keys::{EcPreKey, SignedPreKey};
use flatline_core::random::{SecureRandom, random_array};
use flatline_core::store::{InitialKeys, NewAccount};
use flatline_core::time::Timestamp;
use serde_json::{Value, json};

use crate::fixtures::key_id;

/// How to write the Basic username.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsernameForm {
    /// `ACI` (primary device).
    Aci,
    /// `ACI.deviceId`.
    Dot,
    /// `ACI\0deviceId` (Flatline Java fork).
    Nul,
}

/// A simulated client with its identity keys and password.
pub struct SimClient {
    /// ACI identity key pair.
    pub aci_identity: KeyPair,
    /// PNI identity key pair.
    pub pni_identity: KeyPair,
    /// Device password.
    pub password: String,
    /// Account id once registered or seeded.
    pub aci: Aci,
    /// PNI once registered or seeded.
    pub pni: Pni,
    /// Device id.
    pub device_id: DeviceId,
}

impl SimClient {
    /// A fresh client with new keys and a random 24-character password.
    pub fn new(rng: &dyn SecureRandom) -> Self {
        SimClient {
            aci_identity: KeyPair::generate(rng),
            pni_identity: KeyPair::generate(rng),
            password: STANDARD_NO_PAD.encode(random_array::<18>(rng)),
            aci: Aci::random(rng),
            pni: Pni::random(rng),
            device_id: DeviceId::PRIMARY,
        }
    }

    /// The identity key pair for `identity`.
    pub fn identity(&self, identity: IdentityType) -> &KeyPair {
        match identity {
            IdentityType::Aci => &self.aci_identity,
            IdentityType::Pni => &self.pni_identity,
        }
    }

    fn sign(&self, identity: IdentityType, message: &[u8], rng: &dyn SecureRandom) -> Vec<u8> {
        self.identity(identity)
            .private_key
            .sign(message, rng)
            .to_vec()
    }

    /// A signed EC prekey signed by `identity`.
    pub fn signed_ec(
        &self,
        identity: IdentityType,
        id: u32,
        rng: &dyn SecureRandom,
    ) -> SignedPreKey {
        let public_key = PrivateKey::generate(rng).public_key().serialize().to_vec();
        let signature = self.sign(identity, &public_key, rng);
        SignedPreKey {
            key_id: key_id(id),
            public_key,
            signature,
        }
    }

    /// A one-time EC prekey.
    pub fn one_time_ec(&self, id: u32, rng: &dyn SecureRandom) -> EcPreKey {
        EcPreKey {
            key_id: key_id(id),
            public_key: PrivateKey::generate(rng).public_key().serialize().to_vec(),
        }
    }

    /// A Kyber1024 prekey envelope (random key material) signed by `identity`.
    pub fn kem(&self, identity: IdentityType, id: u32, rng: &dyn SecureRandom) -> SignedPreKey {
        let mut public_key = vec![0u8; 1569];
        rng.fill(&mut public_key[1..]);
        public_key[0] = 0x08;
        let signature = self.sign(identity, &public_key, rng);
        SignedPreKey {
            key_id: key_id(id),
            public_key,
            signature,
        }
    }

    /// An account as registration would create it, with this client's real keys (for seeding a store).
    pub fn new_account(
        &self,
        principal: &str,
        rng: &dyn SecureRandom,
        now: Timestamp,
    ) -> NewAccount {
        NewAccount {
            account: Account {
                aci: self.aci,
                pni: self.pni,
                principal: Principal::parse(principal).expect("test principal is valid"),
                principal_opaque: false,
                aci_identity_key: self.aci_identity.public_key.serialize().to_vec(),
                pni_identity_key: self.pni_identity.public_key.serialize().to_vec(),
                settings: AccountSettings::default(),
                username_hash: None,
                username_link_handle: None,
                created_at: now,
                devices: vec![Device {
                    id: DeviceId::PRIMARY,
                    credential: SaltedTokenHash::generate(&self.password, rng),
                    settings: DeviceSettings {
                        registration_id: 11,
                        pni_registration_id: 12,
                        name: None,
                        fetches_messages: true,
                    },
                    created_at: now,
                    last_seen: now,
                    capabilities: BTreeSet::new(),
                }],
            },
            keys: InitialKeys {
                aci_signed: self.signed_ec(IdentityType::Aci, 1, rng),
                pni_signed: self.signed_ec(IdentityType::Pni, 1, rng),
                aci_last_resort: self.kem(IdentityType::Aci, 1, rng),
                pni_last_resort: self.kem(IdentityType::Pni, 1, rng),
            },
        }
    }

    /// The `Authorization` header value in the given username form.
    pub fn basic_auth(&self, form: UsernameForm) -> String {
        let user = match form {
            UsernameForm::Aci => self.aci.to_string(),
            UsernameForm::Dot => format!("{}.{}", self.aci, self.device_id),
            UsernameForm::Nul => format!("{}\0{}", self.aci, self.device_id),
        };
        format!(
            "Basic {}",
            STANDARD.encode(format!("{user}:{}", self.password))
        )
    }

    /// A `PUT /v2/keys` body: `ec` one-time EC keys and `kem` Kyber keys starting at `first_id`, plus a new signed
    /// prekey and last-resort key, all signed by `identity`.
    pub fn set_keys_body(
        &self,
        identity: IdentityType,
        first_id: u32,
        ec: u32,
        kem: u32,
        rng: &dyn SecureRandom,
    ) -> Value {
        let ec: Vec<Value> = (0..ec)
            .map(|i| ec_json(&self.one_time_ec(first_id + i, rng)))
            .collect();
        let kem: Vec<Value> = (0..kem)
            .map(|i| signed_json(&self.kem(identity, first_id + i, rng)))
            .collect();
        json!({
            "preKeys": ec,
            "signedPreKey": signed_json(&self.signed_ec(identity, first_id + 10_000, rng)),
            "pqPreKeys": kem,
            "pqLastResortPreKey": signed_json(&self.kem(identity, first_id + 20_000, rng)),
        })
    }
}

impl SimClient {
    /// A `POST /v1/registration` body for `session_id`: attributes (websocket delivery) and freshly signed keys
    /// for both identities.
    pub fn registration_body(&self, session_id: &str, rng: &dyn SecureRandom) -> Value {
        json!({
            "sessionId": session_id,
            "accountAttributes": {
                "fetchesMessages": true,
                "registrationId": 11,
                "pniRegistrationId": 12,
                "capabilities": {"storage": true},
                "unidentifiedAccessKey": STANDARD.encode([5u8; 16]),
            },
            "skipDeviceTransfer": true,
            "aciIdentityKey": STANDARD.encode(self.aci_identity.public_key.serialize()),
            "pniIdentityKey": STANDARD.encode(self.pni_identity.public_key.serialize()),
            "aciSignedPreKey": signed_json(&self.signed_ec(IdentityType::Aci, 1, rng)),
            "pniSignedPreKey": signed_json(&self.signed_ec(IdentityType::Pni, 1, rng)),
            "aciPqLastResortPreKey": signed_json(&self.kem(IdentityType::Aci, 1, rng)),
            "pniPqLastResortPreKey": signed_json(&self.kem(IdentityType::Pni, 1, rng)),
        })
    }

    /// A `PUT /v1/devices/link` body for a new device of this client's account: its attributes with
    /// `registration_id` (and `registration_id + 1` for the PNI) and keys signed by the account's identity keys.
    pub fn link_body(
        &self,
        verification_code: &str,
        registration_id: u16,
        rng: &dyn SecureRandom,
    ) -> Value {
        json!({
            "verificationCode": verification_code,
            "accountAttributes": {
                "fetchesMessages": true,
                "registrationId": registration_id,
                "pniRegistrationId": registration_id + 1,
                "name": STANDARD.encode(b"linked device name"),
                "capabilities": {"deleteSync": true, "storage": false},
            },
            "aciSignedPreKey": signed_json(&self.signed_ec(IdentityType::Aci, 7, rng)),
            "pniSignedPreKey": signed_json(&self.signed_ec(IdentityType::Pni, 7, rng)),
            "aciPqLastResortPreKey": signed_json(&self.kem(IdentityType::Aci, 7, rng)),
            "pniPqLastResortPreKey": signed_json(&self.kem(IdentityType::Pni, 7, rng)),
        })
    }

    /// The Basic header registration uses: the principal as username (split at the last `:` by the server).
    pub fn registration_auth(&self, principal: &str) -> String {
        format!(
            "Basic {}",
            STANDARD.encode(format!("{principal}:{}", self.password))
        )
    }
}

/// A PKCE pair: (verifier, S256 challenge).
pub fn pkce(rng: &dyn SecureRandom) -> (String, String) {
    use sha2::Digest as _;
    let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_array::<32>(rng));
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// Wire JSON of a one-time EC key.
pub fn ec_json(k: &EcPreKey) -> Value {
    json!({"keyId": k.key_id.get(), "publicKey": STANDARD.encode(&k.public_key)})
}

/// Wire JSON of a signed key (public key padded, signature unpadded, as Signal-Server writes them).
pub fn signed_json(k: &SignedPreKey) -> Value {
    json!({"keyId": k.key_id.get(), "publicKey": STANDARD.encode(&k.public_key), "signature": STANDARD_NO_PAD.encode(&k.signature)})
}
