//! The in-memory reference implementation of every storage trait.
//!
//! One mutex over all state makes every method trivially atomic; it never awaits while holding the lock.

mod cascade;
mod contacts;
mod devices;
mod messages;
mod profiles;
mod server_state;
mod shortcodes;
mod usernames;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use flatline_core::account::{Account, AccountAttributes};
use flatline_core::ids::{Aci, DeviceId, IdentityType, KeyId, Pni, Principal, ServiceId};
use flatline_core::keys::{EcPreKey, KeyCounts, KeyUpload, SignedPreKey, TakenKeys};
use flatline_core::ratelimit::{self, Admission, BucketConfig, BucketState};
use flatline_core::store::{
    AccountStore, Conflict, DeviceGeneration, KeyStore, NewAccount, RateLimitStore, StoreError,
    StoreResult,
};
use flatline_core::time::Timestamp;

mod invites;
mod registration;

#[derive(Default)]
struct DeviceKeys {
    ec: BTreeMap<KeyId, Vec<u8>>,
    kem: BTreeMap<KeyId, SignedPreKey>,
    signed: Option<SignedPreKey>,
    last_resort: Option<SignedPreKey>,
}

/// Every device's keys, by identity (an ACI or a PNI) and device.
type Keys = HashMap<(ServiceId, DeviceId), DeviceKeys>;

#[derive(Default)]
struct State {
    accounts: HashMap<Aci, Account>,
    by_pni: HashMap<Pni, Aci>,
    by_principal: HashMap<Principal, Aci>,
    keys: Keys,
    buckets: HashMap<String, (BucketState, Timestamp)>,
    registration: registration::RegistrationState,
    invites: invites::InviteState,
    usernames: usernames::Usernames,
    contacts: contacts::ContactState,
    server: server_state::ServerState,
    profiles: profiles::ProfileState,
    messages: messages::MessageState,
    devices: devices::DeviceState,
}

impl State {
    fn remove_keys_of(&mut self, owner: ServiceId) {
        self.keys.retain(|(o, _), _| *o != owner);
    }

    fn put_keys(&mut self, owner: ServiceId, device: DeviceId, upload: &KeyUpload) {
        let entry = self.keys.entry((owner, device)).or_default();
        if let Some(ec) = &upload.ec {
            entry.ec = ec
                .iter()
                .map(|k| (k.key_id, k.public_key.clone()))
                .collect();
        }
        if let Some(kem) = &upload.kem {
            entry.kem = kem.iter().map(|k| (k.key_id, k.clone())).collect();
        }
        if let Some(signed) = &upload.signed {
            entry.signed = Some(signed.clone());
        }
        if let Some(last_resort) = &upload.last_resort {
            entry.last_resort = Some(last_resort.clone());
        }
    }
}

/// In-memory store; cheap to create, one per test.
#[derive(Default)]
pub struct MemoryStore(Mutex<State>);

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not poison the store for the others.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl AccountStore for MemoryStore {
    async fn create_account(&self, new: NewAccount) -> StoreResult<()> {
        let mut s = self.state();
        let a = new.account;
        if s.accounts.contains_key(&a.aci) {
            return Err(StoreError::Conflict(Conflict::Aci));
        }
        if s.by_pni.contains_key(&a.pni) {
            return Err(StoreError::Conflict(Conflict::Pni));
        }
        if s.by_principal.contains_key(&a.principal) {
            return Err(StoreError::Conflict(Conflict::Principal));
        }
        let device = DeviceId::PRIMARY;
        let k = new.keys;
        for (owner, signed, last_resort) in [
            (ServiceId::Aci(a.aci), k.aci_signed, k.aci_last_resort),
            (ServiceId::Pni(a.pni), k.pni_signed, k.pni_last_resort),
        ] {
            let entry = s.keys.entry((owner, device)).or_default();
            entry.signed = Some(signed);
            entry.last_resort = Some(last_resort);
        }
        s.by_pni.insert(a.pni, a.aci);
        s.by_principal.insert(a.principal.clone(), a.aci);
        s.accounts.insert(a.aci, a);
        Ok(())
    }

    async fn account(&self, aci: Aci) -> StoreResult<Option<Account>> {
        Ok(self.state().accounts.get(&aci).cloned())
    }

    async fn account_by_pni(&self, pni: Pni) -> StoreResult<Option<Account>> {
        let s = self.state();
        Ok(s.by_pni
            .get(&pni)
            .and_then(|aci| s.accounts.get(aci))
            .cloned())
    }

    async fn account_by_principal(&self, principal: &Principal) -> StoreResult<Option<Account>> {
        let s = self.state();
        Ok(s.by_principal
            .get(principal)
            .and_then(|aci| s.accounts.get(aci))
            .cloned())
    }

    async fn update_attributes(
        &self,
        writer: &DeviceGeneration,
        attributes: &AccountAttributes,
    ) -> StoreResult<bool> {
        let mut s = self.state();
        let Some(account) = s.accounts.get_mut(&writer.aci) else {
            return Ok(false);
        };
        let Some(d) = account
            .devices
            .iter_mut()
            .find(|d| d.id == writer.device && d.credential.salt == writer.credential_salt)
        else {
            return Ok(false);
        };
        d.settings = attributes.device.clone();
        d.capabilities = attributes.capabilities.clone();
        account.settings = attributes.account.clone();
        Ok(true)
    }

    async fn touch_device(
        &self,
        aci: Aci,
        device: DeviceId,
        last_seen: Timestamp,
    ) -> StoreResult<()> {
        let mut s = self.state();
        if let Some(d) = s
            .accounts
            .get_mut(&aci)
            .and_then(|a| a.devices.iter_mut().find(|d| d.id == device))
        {
            d.last_seen = d.last_seen.max(last_seen);
        }
        Ok(())
    }

    async fn lock_credentials(&self, aci: Aci) -> StoreResult<bool> {
        let mut s = self.state();
        let Some(account) = s.accounts.get_mut(&aci) else {
            return Ok(false);
        };
        for d in &mut account.devices {
            d.credential = d.credential.locked();
        }
        Ok(true)
    }

    async fn delete_account(&self, aci: Aci, now: Timestamp) -> StoreResult<bool> {
        Ok(self.state().delete_account(aci, now))
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn store_keys(
        &self,
        owner: ServiceId,
        device: DeviceId,
        upload: &KeyUpload,
    ) -> StoreResult<()> {
        self.state().put_keys(owner, device, upload);
        Ok(())
    }

    async fn store_keys_as(
        &self,
        writer: &DeviceGeneration,
        owner: ServiceId,
        upload: &KeyUpload,
    ) -> StoreResult<bool> {
        let mut s = self.state();
        let current = s
            .accounts
            .get(&writer.aci)
            .and_then(|a| a.device(writer.device))
            .is_some_and(|d| d.credential.salt == writer.credential_salt);
        if current {
            s.put_keys(owner, writer.device, upload);
        }
        Ok(current)
    }

    async fn take_one_time_keys(
        &self,
        owner: ServiceId,
        device: DeviceId,
    ) -> StoreResult<TakenKeys> {
        let mut s = self.state();
        let Some(entry) = s.keys.get_mut(&(owner, device)) else {
            return Ok(TakenKeys::default());
        };
        Ok(TakenKeys {
            ec: entry
                .ec
                .pop_first()
                .map(|(key_id, public_key)| EcPreKey { key_id, public_key }),
            kem: entry.kem.pop_first().map(|(_, k)| k),
        })
    }

    async fn signed_pre_key(
        &self,
        owner: ServiceId,
        device: DeviceId,
    ) -> StoreResult<Option<SignedPreKey>> {
        Ok(self
            .state()
            .keys
            .get(&(owner, device))
            .and_then(|k| k.signed.clone()))
    }

    async fn last_resort_key(
        &self,
        owner: ServiceId,
        device: DeviceId,
    ) -> StoreResult<Option<SignedPreKey>> {
        Ok(self
            .state()
            .keys
            .get(&(owner, device))
            .and_then(|k| k.last_resort.clone()))
    }

    async fn key_counts(&self, owner: ServiceId, device: DeviceId) -> StoreResult<KeyCounts> {
        let s = self.state();
        Ok(s.keys
            .get(&(owner, device))
            .map_or_else(KeyCounts::default, |k| KeyCounts {
                ec: u32::try_from(k.ec.len()).unwrap_or(u32::MAX),
                kem: u32::try_from(k.kem.len()).unwrap_or(u32::MAX),
            }))
    }

    async fn one_time_ec_keys(
        &self,
        owner: ServiceId,
        device: DeviceId,
    ) -> StoreResult<Vec<EcPreKey>> {
        let s = self.state();
        Ok(s.keys.get(&(owner, device)).map_or_else(Vec::new, |k| {
            k.ec.iter()
                .map(|(id, pk)| EcPreKey {
                    key_id: *id,
                    public_key: pk.clone(),
                })
                .collect()
        }))
    }
}

#[async_trait]
impl RateLimitStore for MemoryStore {
    async fn acquire(
        &self,
        key: &str,
        config: &BucketConfig,
        amount: u32,
        now: Timestamp,
    ) -> StoreResult<Admission> {
        let mut s = self.state();
        let previous = s.buckets.get(key).map(|(state, _)| *state);
        let (state, admission) = ratelimit::apply(config, previous, amount, now);
        s.buckets
            .insert(key.to_owned(), (state, ratelimit::full_at(config, &state)));
        Ok(admission)
    }

    async fn peek(&self, key: &str) -> StoreResult<Option<ratelimit::BucketState>> {
        Ok(self.state().buckets.get(key).map(|(state, _)| *state))
    }

    async fn purge_full_buckets(&self, now: Timestamp) -> StoreResult<u64> {
        let mut s = self.state();
        let before = s.buckets.len();
        s.buckets.retain(|_, (_, full_at)| *full_at > now);
        Ok((before - s.buckets.len()) as u64)
    }
}

/// Which identity a key owner is (used by tests that sweep both).
pub fn owner_of(account: &Account, identity: IdentityType) -> ServiceId {
    match identity {
        IdentityType::Aci => ServiceId::Aci(account.aci),
        IdentityType::Pni => ServiceId::Pni(account.pni),
    }
}
