//! Linked devices (the reference for [`DeviceStore`]).

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use flatline_core::account::Device;
use flatline_core::devices::{DeviceLinkOutcome, DeviceStore, NewLinkedDevice, next_device_id};
use flatline_core::ids::{Aci, DeviceId, ServiceId};
use flatline_core::store::StoreResult;
use flatline_core::time::Timestamp;

use super::cascade::{AccountCascade, Gone};
use super::{DeviceKeys, MemoryStore, State};

/// A used link token: who it linked, and until when the marker is kept.
struct UsedToken {
    aci: Aci,
    device: DeviceId,
    created_at: Timestamp,
    expires_at: Timestamp,
}

#[derive(Default)]
pub(super) struct DeviceState {
    used_tokens: HashMap<[u8; 32], UsedToken>,
}

impl AccountCascade for DeviceState {
    /// Removes the link tokens its devices used.
    fn remove_account(&mut self, gone: &Gone) {
        self.used_tokens.retain(|_, t| t.aci != gone.aci);
    }
}

impl State {
    /// Deletes what a device of `aci` with id `device` owns besides its row: keys of both identities, its queue.
    fn purge_device(&mut self, aci: Aci, device: DeviceId) {
        let pni = self.accounts.get(&aci).map(|a| a.pni);
        self.keys.remove(&(ServiceId::Aci(aci), device));
        if let Some(pni) = pni {
            self.keys.remove(&(ServiceId::Pni(pni), device));
        }
        self.messages.remove_device(aci, device);
    }
}

#[async_trait]
impl DeviceStore for MemoryStore {
    async fn link_device(&self, new: NewLinkedDevice) -> StoreResult<DeviceLinkOutcome> {
        let mut s = self.state();
        s.devices
            .used_tokens
            .retain(|_, t| t.aci != new.aci || t.expires_at >= new.now);
        let Some(account) = s.accounts.get(&new.aci) else {
            return Ok(DeviceLinkOutcome::NoAccount);
        };
        if s.devices.used_tokens.contains_key(&new.token_hash) {
            return Ok(DeviceLinkOutcome::TokenUsed);
        }
        let Ok(id) = next_device_id(account.devices.iter().map(|d| d.id), new.max_devices) else {
            return Ok(DeviceLinkOutcome::TooManyDevices);
        };
        let pni = account.pni;
        s.purge_device(new.aci, id);
        let device = Device { id, ..new.device };
        let created_at = device.created_at;
        if let Some(account) = s.accounts.get_mut(&new.aci) {
            account.devices.push(device);
        }
        let k = new.keys;
        for (owner, signed, last_resort) in [
            (ServiceId::Aci(new.aci), k.aci_signed, k.aci_last_resort),
            (ServiceId::Pni(pni), k.pni_signed, k.pni_last_resort),
        ] {
            s.keys.insert(
                (owner, id),
                DeviceKeys {
                    signed: Some(signed),
                    last_resort: Some(last_resort),
                    ..DeviceKeys::default()
                },
            );
        }
        s.devices.used_tokens.insert(
            new.token_hash,
            UsedToken {
                aci: new.aci,
                device: id,
                created_at,
                expires_at: new.token_expires_at,
            },
        );
        Ok(DeviceLinkOutcome::Linked(id))
    }

    async fn device_linked_with(
        &self,
        aci: Aci,
        token_hash: &[u8; 32],
    ) -> StoreResult<Option<Device>> {
        let s = self.state();
        let Some(used) = s.devices.used_tokens.get(token_hash) else {
            return Ok(None);
        };
        if used.aci != aci {
            return Ok(None);
        }
        Ok(s.accounts
            .get(&aci)
            .and_then(|a| a.device(used.device))
            .filter(|d| d.created_at == used.created_at)
            .cloned())
    }

    async fn remove_device(&self, aci: Aci, device: DeviceId) -> StoreResult<bool> {
        let mut s = self.state();
        let Some(account) = s.accounts.get_mut(&aci) else {
            return Ok(false);
        };
        let before = account.devices.len();
        account.devices.retain(|d| d.id != device);
        if account.devices.len() == before {
            return Ok(false);
        }
        s.purge_device(aci, device);
        Ok(true)
    }

    async fn set_capabilities(
        &self,
        aci: Aci,
        device: DeviceId,
        capabilities: &BTreeSet<String>,
    ) -> StoreResult<bool> {
        let mut s = self.state();
        let Some(d) = s
            .accounts
            .get_mut(&aci)
            .and_then(|a| a.devices.iter_mut().find(|d| d.id == device))
        else {
            return Ok(false);
        };
        d.capabilities = capabilities.clone();
        Ok(true)
    }
}
