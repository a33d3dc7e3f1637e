//! The chat transport (API.md §9, M§1): Signal's WebSocket at `/v1/websocket/` and the linking socket at
//! `/v1/websocket/provisioning/`.
//!
//! - [`socket`]: the upgrade (credentials, limits) and the frame loop. Each request frame is dispatched into the same
//!   axum router as HTTP (`tower::ServiceExt::oneshot`), with the socket's identity attached as a [`SocketIdentity`]
//!   (authenticated socket) or [`UnauthenticatedSocket`] extension that the auth extractor honours.
//! - [`push`]: server-initiated requests on an authenticated socket ([`Pusher`]) and the per-device delivery loop
//!   run for each authenticated socket ([`DeliveryLoop`]).
//! - [`delivery`]: that loop over the message service ([`MessageDelivery`]) and the service's live-delivery hooks
//!   ([`ChatNotifier`]); [`crate::http::AppState`] installs both.
//! - [`bus`]: cluster events ([`Event`]) between server processes: in-process for SQLite, PostgreSQL
//!   `LISTEN/NOTIFY` when several processes share a database.
//! - [`provisioning`]: the provisioning socket and its address registry.
//!
//! [`ChatHub`] ties them together: one per process, in [`crate::http::AppState::chat`].

pub mod bus;
pub mod delivery;
pub mod provisioning;
pub mod push;
pub mod socket;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use flatline_core::credentials::SaltedTokenHash;
use flatline_core::ids::{Aci, DeviceId};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

pub use bus::{BusError, ClusterBus, LocalBus};
pub use delivery::{ChatNotifier, MessageDelivery};
pub use provisioning::ProvisioningRegistry;
pub use push::{
    DeliveryContext, DeliveryLoop, PushError, PushReceipt, Pusher, QueueEmptyThenIdle, Wake,
};

/// The identity of an authenticated socket, attached to every request tunnelled through it. The auth extractor
/// accepts it instead of an `Authorization` header, reloading the account for each request, so a deleted device or a
/// changed password (the stored credential differs from the one the socket authenticated against) is a 401.
#[derive(Clone, Debug)]
pub struct SocketIdentity {
    /// The account.
    pub aci: Aci,
    /// The device.
    pub device_id: DeviceId,
    /// The device's stored credential when the socket was opened.
    pub credential: SaltedTokenHash,
}

/// Marks a request tunnelled through an unauthenticated socket: device credentials are not accepted on it (as in
/// Signal-Server, where a socket's principal is fixed at the upgrade); `Unidentified-Access-Key`,
/// `Group-Send-Token` and every other header pass through unchanged.
#[derive(Clone, Copy, Debug)]
pub struct UnauthenticatedSocket;

/// A cluster event (see [`ChatHub::publish`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Event {
    /// A new authenticated socket of this device opened; older sockets of the device close with 4409.
    #[serde(rename_all = "camelCase")]
    Displace {
        /// The account.
        aci: Aci,
        /// The device.
        device: DeviceId,
        /// When the new socket opened (milliseconds of the publishing process's clock); on other processes only
        /// sockets opened at or before this close.
        connected_at_ms: i64,
    },
    /// The device (or, with `device: None`, every device of the account) must authenticate again: its sockets
    /// close with 4401 (device removed, account deleted or re-registered, password changed, credentials locked).
    #[serde(rename_all = "camelCase")]
    Disconnect {
        /// The account.
        aci: Aci,
        /// The device, or all of them.
        device: Option<DeviceId>,
    },
    /// New messages are queued for the device: its delivery loop wakes up.
    #[serde(rename_all = "camelCase")]
    MessageAvailable {
        /// The account.
        aci: Aci,
        /// The device.
        device: DeviceId,
    },
    /// A device was linked with the token of this identifier (base64url SHA-256): `wait_for_linked_device` waiters
    /// of the account look it up.
    #[serde(rename_all = "camelCase")]
    DeviceLinked {
        /// The account.
        aci: Aci,
        /// The token identifier.
        token_identifier: String,
    },
    /// A provisioning envelope for the socket listed under `address` was stored by another process
    /// ([`ClusterBus::relay_provisioning`]): the process holding that socket takes it and sends it.
    #[serde(rename_all = "camelCase")]
    Provision {
        /// The provisioning address.
        address: String,
    },
    /// An online (ephemeral) envelope for the device's socket, wherever it is; never stored, dropped when the
    /// device has no socket.
    #[serde(rename_all = "camelCase")]
    Online {
        /// The account.
        aci: Aci,
        /// The device.
        device: DeviceId,
        /// The serialized envelope, standard base64.
        envelope: String,
    },
}

/// Why a socket is closed by the server, with Signal's close codes (M§1.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// 4409 `Connected elsewhere`.
    Displaced,
    /// 4401 `Reauthentication required`.
    Reauthenticate,
    /// 1000 `OK`: a keepalive on a socket that is no longer the device's message consumer.
    NotPresent,
    /// 1011 `Failed to retrieve messages`: the message queue could not be read.
    RetrieveFailed,
}

impl CloseReason {
    /// The close code and reason string.
    pub fn code(self) -> (u16, &'static str) {
        match self {
            CloseReason::Displaced => (4409, "Connected elsewhere"),
            CloseReason::Reauthenticate => (4401, "Reauthentication required"),
            CloseReason::NotPresent => (1000, "OK"),
            CloseReason::RetrieveFailed => (1011, "Failed to retrieve messages"),
        }
    }
}

/// What the hub tells one socket.
#[derive(Debug)]
pub(crate) enum Control {
    Close(CloseReason),
}

/// One authenticated socket registered as its device's message consumer.
struct Present {
    conn: u64,
    connected_at_ms: i64,
    control: mpsc::UnboundedSender<Control>,
    wake: Arc<Notify>,
    live: mpsc::Sender<Vec<u8>>,
}

/// The process's chat state: presence (one message consumer per device), socket counts, the cluster bus, the
/// delivery loop and the provisioning registry. Cheap to share (`Arc`).
pub struct ChatHub {
    server_id: uuid::Uuid,
    next_conn: AtomicU64,
    presence: Mutex<HashMap<Aci, HashMap<DeviceId, Present>>>,
    sockets: Mutex<SocketCounts>,
    bus: RwLock<Arc<dyn ClusterBus>>,
    delivery: RwLock<Arc<dyn DeliveryLoop>>,
    provisioning: ProvisioningRegistry,
    links: tokio::sync::broadcast::Sender<(Aci, [u8; 32])>,
}

#[derive(Default)]
struct SocketCounts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// A socket's place in the per-IP and total counts; released on drop.
pub struct SocketSlot {
    hub: Arc<ChatHub>,
    ip: IpAddr,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut counts = self.hub.sockets.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

/// A registration as the device's message consumer; removed on drop (unless a newer socket replaced it).
pub(crate) struct Presence {
    hub: Arc<ChatHub>,
    aci: Aci,
    device: DeviceId,
    conn: u64,
}

impl Presence {
    /// Whether this socket is still its device's consumer (not displaced).
    pub(crate) fn is_current(&self) -> bool {
        let presence = self.hub.presence.lock().unwrap_or_else(|e| e.into_inner());
        presence
            .get(&self.aci)
            .and_then(|d| d.get(&self.device))
            .is_some_and(|p| p.conn == self.conn)
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        let mut presence = self.hub.presence.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(devices) = presence.get_mut(&self.aci) {
            if devices
                .get(&self.device)
                .is_some_and(|p| p.conn == self.conn)
            {
                devices.remove(&self.device);
            }
            if devices.is_empty() {
                presence.remove(&self.aci);
            }
        }
    }
}

impl ChatHub {
    /// A hub with the in-process bus and the default delivery loop ([`QueueEmptyThenIdle`]). The server id is
    /// drawn from the operating system, not from the injected random source: it is no secret, and tests that seed
    /// the random source keep their sequences.
    pub fn new() -> Arc<Self> {
        Arc::new(ChatHub {
            server_id: uuid::Uuid::new_v4(),
            next_conn: AtomicU64::new(1),
            presence: Mutex::new(HashMap::new()),
            sockets: Mutex::new(SocketCounts::default()),
            bus: RwLock::new(Arc::new(LocalBus)),
            delivery: RwLock::new(Arc::new(QueueEmptyThenIdle)),
            provisioning: ProvisioningRegistry::default(),
            links: tokio::sync::broadcast::channel(256).0,
        })
    }

    /// Devices linked from now on, on any process, as (account, SHA-256 of the link token).
    pub fn subscribe_links(&self) -> tokio::sync::broadcast::Receiver<(Aci, [u8; 32])> {
        self.links.subscribe()
    }

    fn bus(&self) -> Arc<dyn ClusterBus> {
        self.bus.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Lists a provisioning socket of this process under `address` for `lifetime` (so that relays on other
    /// processes find it) and returns its entry in the local registry with the channel its envelope arrives on.
    pub(crate) async fn open_provisioning(
        &self,
        address: String,
        lifetime: std::time::Duration,
    ) -> (provisioning::Registration, mpsc::Receiver<Vec<u8>>) {
        let entry = self.provisioning.register(address.clone());
        if let Err(e) = self
            .bus()
            .provisioning_opened(self.server_id, &address, lifetime)
            .await
        {
            tracing::warn!(error = %e, "provisioning address not listed for other processes");
        }
        entry
    }

    /// Unlists a provisioning address (the socket closed).
    pub(crate) fn close_provisioning(&self, address: String) {
        let bus = self.bus();
        tokio::spawn(async move {
            if let Err(e) = bus.provisioning_closed(&address).await {
                tracing::debug!(error = %e, "provisioning address not unlisted");
            }
        });
    }

    /// `PUT /v1/provisioning/{address}`: hands `envelope` to the socket listed under `address` on this process,
    /// or through the bus to the process that holds it. `false` when no socket has that address.
    pub async fn relay_provisioning(
        &self,
        address: &str,
        envelope: Vec<u8>,
    ) -> Result<bool, BusError> {
        if self.provisioning.is_listening(address) {
            let delivered = self.provisioning.relay(address, envelope).is_ok();
            if delivered {
                self.close_provisioning(address.to_owned());
            }
            return Ok(delivered);
        }
        self.bus()
            .relay_provisioning(self.server_id, address, &envelope)
            .await
    }

    /// This process's random id on the bus (its own broadcasts are not applied twice).
    pub fn server_id(&self) -> uuid::Uuid {
        self.server_id
    }

    /// Replaces the cluster bus (the PostgreSQL bus is installed at start-up when the store is PostgreSQL).
    pub fn set_bus(&self, bus: Arc<dyn ClusterBus>) {
        *self.bus.write().unwrap_or_else(|e| e.into_inner()) = bus;
    }

    /// Installs the delivery loop run for every authenticated socket (see [`DeliveryLoop`]).
    pub fn set_delivery_loop(&self, delivery: Arc<dyn DeliveryLoop>) {
        *self.delivery.write().unwrap_or_else(|e| e.into_inner()) = delivery;
    }

    pub(crate) fn delivery_loop(&self) -> Arc<dyn DeliveryLoop> {
        self.delivery
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The provisioning-address registry (for `PUT /v1/provisioning/{address}`).
    pub fn provisioning(&self) -> &ProvisioningRegistry {
        &self.provisioning
    }

    /// Open sockets of this process (chat and provisioning).
    pub fn open_sockets(&self) -> usize {
        self.sockets.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    /// Whether `(aci, device)` has an authenticated socket on this process.
    pub fn is_present(&self, aci: Aci, device: DeviceId) -> bool {
        let presence = self.presence.lock().unwrap_or_else(|e| e.into_inner());
        presence.get(&aci).is_some_and(|d| d.contains_key(&device))
    }

    /// Takes a socket slot for `ip`, or `None` when the per-IP or total limit is reached.
    pub(crate) fn take_slot(
        self: &Arc<Self>,
        ip: IpAddr,
        per_ip: usize,
        total: usize,
    ) -> Option<SocketSlot> {
        let mut counts = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.per_ip.get(&ip).copied().unwrap_or(0);
        if n >= per_ip || counts.total >= total {
            return None;
        }
        counts.per_ip.insert(ip, n + 1);
        counts.total += 1;
        Some(SocketSlot {
            hub: self.clone(),
            ip,
        })
    }

    /// Registers a new authenticated socket as the device's message consumer, closing the older one on this
    /// process with 4409 and announcing the displacement to the other processes.
    pub(crate) fn register(
        self: &Arc<Self>,
        aci: Aci,
        device: DeviceId,
        connected_at_ms: i64,
        control: mpsc::UnboundedSender<Control>,
        wake: Arc<Notify>,
        live: mpsc::Sender<Vec<u8>>,
    ) -> Presence {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let old = {
            let mut presence = self.presence.lock().unwrap_or_else(|e| e.into_inner());
            presence.entry(aci).or_default().insert(
                device,
                Present {
                    conn,
                    connected_at_ms,
                    control,
                    wake,
                    live,
                },
            )
        };
        if let Some(old) = old {
            let _ = old.control.send(Control::Close(CloseReason::Displaced));
        }
        self.broadcast(Event::Displace {
            aci,
            device,
            connected_at_ms,
        });
        Presence {
            hub: self.clone(),
            aci,
            device,
            conn,
        }
    }

    /// Publishes `event` to this process and every other process sharing the database. Returns at once; the
    /// broadcast to other processes runs in the background (a failure is logged: sockets then still notice a
    /// removed device or a changed password at their next request, which reloads the account).
    pub fn publish(&self, event: Event) {
        self.apply(&event, true);
        self.broadcast(event);
    }

    fn broadcast(&self, event: Event) {
        let bus = self.bus.read().unwrap_or_else(|e| e.into_inner()).clone();
        let server = self.server_id;
        tokio::spawn(async move {
            if let Err(e) = bus.broadcast(server, &event).await {
                tracing::warn!(error = %e, "chat event not broadcast to other processes");
            }
        });
    }

    /// Wakes the delivery loop of every authenticated socket of this process (after events may have been lost).
    pub fn wake_all(&self) {
        let presence = self.presence.lock().unwrap_or_else(|e| e.into_inner());
        for p in presence.values().flat_map(|d| d.values()) {
            p.wake.notify_one();
        }
    }

    /// Hands an online envelope to the device's socket: on this process when it is here, otherwise over the bus
    /// to the other processes (when it fits in a notification). Dropped when the device has no socket, or when its
    /// socket's live channel is full.
    pub fn deliver_online(&self, aci: Aci, device: DeviceId, envelope: Vec<u8>) {
        let sent_here = {
            let presence = self.presence.lock().unwrap_or_else(|e| e.into_inner());
            match presence.get(&aci).and_then(|d| d.get(&device)) {
                Some(p) => {
                    let _ = p.live.try_send(envelope.clone());
                    true
                }
                None => false,
            }
        };
        if sent_here {
            return;
        }
        if envelope.len() > delivery::ONLINE_MAX_BYTES {
            tracing::debug!(
                len = envelope.len(),
                "online message too large for another process; dropped"
            );
            return;
        }
        use base64::Engine as _;
        self.broadcast(Event::Online {
            aci,
            device,
            envelope: base64::engine::general_purpose::STANDARD.encode(&envelope),
        });
    }

    /// Applies an event received from another process.
    pub fn apply_remote(&self, origin: uuid::Uuid, event: &Event) {
        if origin != self.server_id {
            self.apply(event, false);
        }
    }

    fn apply(&self, event: &Event, local: bool) {
        let presence = self.presence.lock().unwrap_or_else(|e| e.into_inner());
        match *event {
            Event::Displace {
                aci,
                device,
                connected_at_ms,
            } => {
                // Locally the new socket already replaced the old one in `register`.
                if local {
                    return;
                }
                if let Some(p) = presence.get(&aci).and_then(|d| d.get(&device))
                    && p.connected_at_ms <= connected_at_ms
                {
                    let _ = p.control.send(Control::Close(CloseReason::Displaced));
                }
            }
            Event::Disconnect { aci, device } => {
                if let Some(devices) = presence.get(&aci) {
                    for (id, p) in devices {
                        if device.is_none_or(|d| d == *id) {
                            let _ = p.control.send(Control::Close(CloseReason::Reauthenticate));
                        }
                    }
                }
            }
            Event::DeviceLinked {
                aci,
                ref token_identifier,
            } => {
                if let Some(hash) = flatline_core::devices::parse_token_identifier(token_identifier)
                {
                    let _ = self.links.send((aci, hash));
                }
            }
            Event::Provision { ref address } => {
                // Only the process holding the socket takes the stored envelope.
                if !local && self.provisioning.is_listening(address) {
                    let bus = self.bus();
                    let address = address.clone();
                    let registry = self.provisioning.clone();
                    tokio::spawn(async move {
                        match bus.take_provisioning(&address).await {
                            Ok(Some(envelope)) => {
                                let _ = registry.relay(&address, envelope);
                            }
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "relayed provisioning envelope not taken")
                            }
                        }
                    });
                }
            }
            Event::MessageAvailable { aci, device } => {
                if let Some(p) = presence.get(&aci).and_then(|d| d.get(&device)) {
                    p.wake.notify_one();
                }
            }
            Event::Online {
                aci,
                device,
                ref envelope,
            } => {
                use base64::Engine as _;
                if let Some(p) = presence.get(&aci).and_then(|d| d.get(&device))
                    && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(envelope)
                {
                    let _ = p.live.try_send(bytes);
                }
            }
        }
    }
}
