//! Account deletion composed of per-part hooks, the memory store's counterpart of the SQL stores'
//! `store/shared/cascade.rs`: each part of [`State`] that keeps something of an account implements
//! [`AccountCascade`], and [`State::delete_account`] lists the parts once. A new part adds itself to that list.

use flatline_core::ids::{Aci, Pni, ServiceId};
use flatline_core::time::Timestamp;

use super::messages::MessageState;
use super::registration::RegistrationState;
use super::{Keys, State};

/// The account being deleted, as the hooks see it.
pub(super) struct Gone {
    /// Its ACI.
    pub aci: Aci,
    /// Its current PNI.
    pub pni: Pni,
    /// When it is deleted.
    pub now: Timestamp,
}

/// A part of the store that keeps something of an account.
pub(super) trait AccountCascade {
    /// Removes (or, where the rules keep a trace, retires) what it keeps of the deleted account.
    fn remove_account(&mut self, gone: &Gone);
}

impl State {
    /// Deletes the account and everything of it; false when absent.
    pub(super) fn delete_account(&mut self, aci: Aci, now: Timestamp) -> bool {
        let Some(account) = self.accounts.remove(&aci) else {
            return false;
        };
        self.by_pni.remove(&account.pni);
        self.by_principal.remove(&account.principal);
        let gone = Gone {
            aci,
            pni: account.pni,
            now,
        };
        let parts: [&mut dyn AccountCascade; 8] = [
            &mut self.keys,
            &mut self.registration,
            &mut self.invites,
            &mut self.usernames,
            &mut self.contacts,
            &mut self.profiles,
            &mut self.messages,
            &mut self.devices,
        ];
        for part in parts {
            part.remove_account(&gone);
        }
        true
    }
}

impl AccountCascade for Keys {
    /// Removes the keys of its ACI and PNI, of every device.
    fn remove_account(&mut self, gone: &Gone) {
        let (aci, pni) = (ServiceId::Aci(gone.aci), ServiceId::Pni(gone.pni));
        self.retain(|(owner, _), _| *owner != aci && *owner != pni);
    }
}

// The two below live here rather than next to their state so that the registration and message files keep the
// names other code calls (`tombstone`, `remove_account`).

impl AccountCascade for RegistrationState {
    /// Turns its subject binding into a tombstone.
    fn remove_account(&mut self, gone: &Gone) {
        self.tombstone(gone.aci, gone.now);
    }
}

impl AccountCascade for MessageState {
    /// Removes its queues and the spam reports it filed.
    fn remove_account(&mut self, gone: &Gone) {
        MessageState::remove_account(self, gone.aci);
    }
}
