//! Ready-made domain values for tests.

use std::collections::BTreeSet;

use flatline_core::account::{Account, AccountSettings, Device, DeviceSettings};
use flatline_core::credentials::SaltedTokenHash;
use flatline_core::ids::{Aci, DeviceId, KeyId, Pni, Principal};
use flatline_core::keys::{EcPreKey, SignedPreKey};
use flatline_core::random::{SecureRandom, random_array};
use flatline_core::store::{InitialKeys, NewAccount};
use flatline_core::time::Timestamp;

/// A key id, panicking on an out-of-range literal (tests only).
pub fn key_id(id: u32) -> KeyId {
    KeyId::new(i64::from(id)).expect("test key id in range")
}

/// Random bytes shaped like an EC public key (`0x05‖32 bytes`). Storage never checks signatures, so store-level
/// tests use these; HTTP tests use the simulated client's real keys.
pub fn fake_ec_key(rng: &dyn SecureRandom) -> Vec<u8> {
    let mut k = vec![0x05];
    k.extend_from_slice(&random_array::<32>(rng));
    k
}

/// A store-level signed EC prekey with random bytes.
pub fn fake_signed_ec(rng: &dyn SecureRandom, id: u32) -> SignedPreKey {
    SignedPreKey {
        key_id: key_id(id),
        public_key: fake_ec_key(rng),
        signature: random_array::<64>(rng).to_vec(),
    }
}

/// A store-level Kyber key (`0x08‖1568 bytes`) with a random signature.
pub fn fake_kem(rng: &dyn SecureRandom, id: u32) -> SignedPreKey {
    let mut public_key = vec![0u8; 1569];
    rng.fill(&mut public_key);
    public_key[0] = 0x08;
    SignedPreKey {
        key_id: key_id(id),
        public_key,
        signature: random_array::<64>(rng).to_vec(),
    }
}

/// A store-level one-time EC prekey.
pub fn fake_ec(rng: &dyn SecureRandom, id: u32) -> EcPreKey {
    EcPreKey {
        key_id: key_id(id),
        public_key: fake_ec_key(rng),
    }
}

/// A new account with one primary device whose password is `password`, and random signed keys.
pub fn new_account(
    rng: &dyn SecureRandom,
    principal: &str,
    password: &str,
    now: Timestamp,
) -> NewAccount {
    let account = Account {
        aci: Aci::random(rng),
        pni: Pni::random(rng),
        principal: Principal::parse(principal).expect("test principal is valid"),
        principal_opaque: false,
        aci_identity_key: fake_ec_key(rng),
        pni_identity_key: fake_ec_key(rng),
        settings: AccountSettings::default(),
        username_hash: None,
        username_link_handle: None,
        created_at: now,
        devices: vec![Device {
            id: DeviceId::PRIMARY,
            credential: SaltedTokenHash::generate(password, rng),
            settings: DeviceSettings {
                registration_id: 1,
                pni_registration_id: 2,
                name: None,
                fetches_messages: true,
            },
            created_at: now,
            last_seen: now,
            capabilities: BTreeSet::new(),
        }],
    };
    NewAccount {
        account,
        keys: InitialKeys {
            aci_signed: fake_signed_ec(rng, 1),
            pni_signed: fake_signed_ec(rng, 2),
            aci_last_resort: fake_kem(rng, 3),
            pni_last_resort: fake_kem(rng, 4),
        },
    }
}

/// A registration commit for session `id` at `now`: random candidate ids, fake identity keys, one primary device
/// with the password `pw`, and its initial keys.
pub fn registration_commit(
    rng: &dyn SecureRandom,
    id: &flatline_core::registration::SessionId,
    now: Timestamp,
) -> flatline_core::registration::RegistrationCommit {
    let template = new_account(rng, "template", "pw", now);
    flatline_core::registration::RegistrationCommit {
        session_id: id.clone(),
        candidate_aci: Aci::random(rng),
        candidate_pni: Pni::random(rng),
        aci_identity_key: template.account.aci_identity_key.clone(),
        pni_identity_key: template.account.pni_identity_key.clone(),
        device: template.account.devices[0].clone(),
        settings: AccountSettings::default(),
        keys: template.keys,
        now,
    }
}
