//! The provisioning-address registry (M§5): each open provisioning socket is listed under the random address it was
//! sent in `PUT /v1/address`, so that `PUT /v1/provisioning/{address}` (the devices module) can hand it the
//! `ProvisionEnvelope`.
//!
//! The registry is per process. A relay for an address another process holds goes through the cluster bus
//! ([`super::ClusterBus::relay_provisioning`]): with PostgreSQL the address is listed in a table while its socket
//! is open, and the envelope is stored for the holding process to take (it may be larger than a notification).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

/// Why a provisioning message was not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// No provisioning socket has that address here (closed, timed out, never existed); answer 404.
    #[error("no provisioning socket with that address")]
    NotFound,
}

type Listeners = Arc<Mutex<HashMap<String, mpsc::Sender<Vec<u8>>>>>;

/// Open provisioning sockets by address (cheap to clone: clones share the listing).
#[derive(Default, Clone)]
pub struct ProvisioningRegistry {
    listeners: Listeners,
}

/// A provisioning socket's entry; removed on drop.
pub(crate) struct Registration {
    listeners: Listeners,
    address: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.address);
    }
}

impl ProvisioningRegistry {
    /// Lists a socket under `address`; it receives relayed envelopes on the returned channel.
    pub(crate) fn register(&self, address: String) -> (Registration, mpsc::Receiver<Vec<u8>>) {
        let (tx, rx) = mpsc::channel(1);
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(address.clone(), tx);
        (
            Registration {
                listeners: self.listeners.clone(),
                address,
            },
            rx,
        )
    }

    /// Hands `envelope` (the decoded `ProvisionEnvelope` bytes) to the socket listed under `address`, which sends it
    /// as `PUT /v1/message` and closes once the client answered. One envelope per socket; the address is
    /// unlisted at once, so a second relay to it is [`RelayError::NotFound`].
    pub fn relay(&self, address: &str, envelope: Vec<u8>) -> Result<(), RelayError> {
        let sender = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(address)
            .ok_or(RelayError::NotFound)?;
        sender.try_send(envelope).map_err(|_| RelayError::NotFound)
    }

    /// Whether a provisioning socket is listed under `address`.
    pub fn is_listening(&self, address: &str) -> bool {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(address)
    }
}
