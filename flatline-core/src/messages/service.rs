//! The message service: the single-recipient send of M§2.1 (steps 1–9) over loaded state, acknowledgement with
//! server delivery receipts (M§2.9), the REST fetch (M§2.8), expiry and spam reports.
//!
//! Live delivery is not here: the send path calls [`MessageNotifier::messages_stored`] after every successful
//! store and returns online (ephemeral) messages, which are never stored, for the caller to push to connected
//! devices. A delivery loop reads a device's queue in batches with [`MessageService::read`] from a cursor and
//! acknowledges each delivered envelope with [`MessageService::acknowledge`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prost::Message as _;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::store::{
    InsertOutcome, MessageCursor, NewMessage, QueueSize, QueuedMessage, SpamReport,
};
use super::{
    DestinationView, DeviceCheck, Envelope, EnvelopeType, IncomingMessage, MessageGuid, SendAccess,
    SendAuth, any_oversized, check_devices, plan_access,
};
use crate::account::Account;
use crate::auth::AuthenticatedDevice;
use crate::contacts::{GrantState, is_invite_only};
use crate::ids::{Aci, DeviceId, IdentityType, ServiceId};
use crate::random::{SecureRandom, random_array};
use crate::ratelimit::{LimitError, Limiter, RateLimited, RateLimiters};
use crate::store::{Store, StoreError};
use crate::time::{Clock, Timestamp};

/// Largest client timestamp (ms) a send may carry: JavaScript's `Date` limit (M§2.1).
pub const MAX_TIMESTAMP: i64 = 8_640_000_000_000_000;

/// Most envelopes one REST fetch returns (M§2.8).
pub const FETCH_LIMIT: u32 = 100;

/// How long a client should wait before retrying a send refused because a queue is full.
pub const QUEUE_FULL_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Message settings (`[messages]` in the server config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessagesConfig {
    /// How long an unacknowledged message is kept.
    pub ttl: Duration,
    /// Largest byte total of one device queue; sends that would exceed it are refused with 429.
    pub max_queue_bytes: u64,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        MessagesConfig {
            ttl: Duration::from_secs(30 * 86_400),
            max_queue_bytes: 128 * 1024 * 1024,
        }
    }
}

/// Hooks for live delivery. The default ([`NoNotifier`]) does nothing: devices then get messages when they fetch.
#[async_trait]
pub trait MessageNotifier: Send + Sync {
    /// Messages were committed to these (account, device) queues (each listed once).
    async fn messages_stored(&self, queues: &[(Aci, DeviceId)]);

    /// Online (ephemeral) messages to push to the devices that are connected now; they were not stored and are
    /// dropped for devices that are not connected.
    async fn deliver_online(&self, messages: Vec<LiveMessage>);
}

/// A notifier that does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNotifier;

#[async_trait]
impl MessageNotifier for NoNotifier {
    async fn messages_stored(&self, _queues: &[(Aci, DeviceId)]) {}
    async fn deliver_online(&self, _messages: Vec<LiveMessage>) {}
}

/// An envelope for one device that is delivered live only (an `online` send).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveMessage {
    /// The destination account.
    pub aci: Aci,
    /// The destination device.
    pub device: DeviceId,
    /// Its server guid.
    pub guid: MessageGuid,
    /// The serialized envelope.
    pub envelope: Vec<u8>,
}

/// How a send is authorized (the story flag is separate: a story ignores credentials). The edge has applied
/// [`super::check_credential_combination`] already: a token never comes with other credentials nor on a story.
#[derive(Clone)]
pub enum SendCredentials<'a> {
    /// An authenticated device (Basic auth, or an authenticated socket).
    Device(Box<AuthenticatedDevice>),
    /// `Unidentified-Access-Key`, decoded (any length; not 16 bytes is a 401).
    AccessKey(Vec<u8>),
    /// `Group-Send-Token`, parsed (a header that does not parse is a 401 at the edge, as Signal-Server's
    /// `GroupSendTokenHeader`), with the instance's zkgroup secret params to verify it (`None`: the instance has
    /// none, so no token verifies).
    GroupSendToken {
        /// The token.
        token: crate::zk::GroupSendFullToken,
        /// The params that issued the endorsements.
        params: Option<&'a crate::zk::ServerSecretParams>,
    },
    /// None of them.
    None,
}

impl core::fmt::Debug for SendCredentials<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SendCredentials::Device(d) => f.debug_tuple("Device").field(d).finish(),
            SendCredentials::AccessKey(_) => f.write_str("AccessKey(..)"),
            SendCredentials::GroupSendToken { token, .. } => {
                f.debug_tuple("GroupSendToken").field(token).finish()
            }
            SendCredentials::None => f.write_str("None"),
        }
    }
}

/// A validated single-recipient send.
#[derive(Debug, Clone)]
pub struct SendRequest {
    /// The addressed identity (`{destination}`).
    pub destination: ServiceId,
    /// One message per destination device.
    pub messages: Vec<IncomingMessage>,
    /// Client timestamp in ms; 0 means "use the server time".
    pub timestamp: i64,
    /// Ephemeral: delivered to connected devices only, never stored.
    pub online: bool,
    /// Push priority, copied to the envelope.
    pub urgent: bool,
    /// `?story=true`.
    pub story: bool,
}

/// The result of an accepted send (200).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendOutcome {
    /// `needsSync`: the sender has other devices that should get a transcript.
    pub needs_sync: bool,
    /// Queues that received a message (already passed to [`MessageNotifier::messages_stored`]).
    pub stored: Vec<(Aci, DeviceId)>,
    /// Online messages for the caller to push live (never stored).
    pub online: Vec<LiveMessage>,
}

/// Why a send was refused; each variant is one status of M§2.1.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// 401: no or bad credentials, or a wrong access key (also for missing accounts: no existence oracle).
    #[error("unauthorized")]
    Unauthorized,
    /// 404: an identified send to an account that does not exist.
    #[error("destination not found")]
    NotFound,
    /// 403: a send to one's own PNI.
    #[error("cannot send to own PNI")]
    OwnPni,
    /// 403 `contact_not_allowed` (API.md §10).
    #[error("contact not allowed")]
    ContactNotAllowed,
    /// 403 `account_suspended`: the operator suspended the sending account (`flatline-server accounts suspend`).
    #[error("account suspended")]
    Suspended,
    /// 409: devices missing from or extra in the request.
    #[error("mismatched devices")]
    MismatchedDevices {
        /// Devices not addressed.
        missing: Vec<DeviceId>,
        /// Devices addressed that do not exist (or the sending device of a sync message).
        extra: Vec<DeviceId>,
    },
    /// 410: devices whose registration id changed.
    #[error("stale devices")]
    StaleDevices {
        /// The stale devices.
        stale: Vec<DeviceId>,
    },
    /// 413: a message's content is over the size limit.
    #[error("message too large")]
    TooLarge,
    /// 422: a value out of range.
    #[error("{0}")]
    Invalid(&'static str),
    /// 429: a limiter refused the send.
    #[error(transparent)]
    RateLimited(RateLimited),
    /// 429: a destination device queue is full; nothing was stored.
    #[error("destination queue full")]
    QueueFull(RateLimited),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LimitError> for SendError {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::Limited(r) => SendError::RateLimited(r),
            LimitError::Store(s) => SendError::Store(s),
        }
    }
}

/// The binary service id of M§2.3: 16 bytes for an ACI, `0x01` + 16 for a PNI.
pub fn service_id_binary(id: ServiceId) -> Vec<u8> {
    match id {
        ServiceId::Aci(a) => a.as_bytes().to_vec(),
        ServiceId::Pni(p) => {
            let mut v = Vec::with_capacity(17);
            v.push(0x01);
            v.extend_from_slice(p.as_bytes());
            v
        }
    }
}

/// Constant-time comparison of a presented access key with the account's. An account without a key matches none.
fn access_key_matches(account: &Account, presented: &[u8]) -> bool {
    account
        .settings
        .unidentified_access_key
        .is_some_and(|k| bool::from(k.as_slice().ct_eq(presented)))
}

fn random_guid(rng: &dyn SecureRandom) -> MessageGuid {
    MessageGuid(uuid::Builder::from_random_bytes(random_array(rng)).into_uuid())
}

fn millis(t: Timestamp) -> u64 {
    u64::try_from(t.as_millis()).unwrap_or(0)
}

/// Sends, acknowledgements and fetches of messages.
#[derive(Clone)]
pub struct MessageService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn SecureRandom>,
    limiters: RateLimiters,
    notifier: Arc<dyn MessageNotifier>,
    config: MessagesConfig,
}

impl MessageService {
    /// The service over `store`, with `notifier` told about every stored message.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn SecureRandom>,
        limiters: RateLimiters,
        notifier: Arc<dyn MessageNotifier>,
        config: MessagesConfig,
    ) -> Self {
        MessageService {
            store,
            clock,
            rng,
            limiters,
            notifier,
            config,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &MessagesConfig {
        &self.config
    }

    /// `PUT /v1/messages/{destination}` (M§2.1).
    pub async fn send(
        &self,
        credentials: &SendCredentials<'_>,
        request: SendRequest,
    ) -> Result<SendOutcome, SendError> {
        if !(0..=MAX_TIMESTAMP).contains(&request.timestamp) {
            return Err(SendError::Invalid("timestamp out of range"));
        }
        let sender = match credentials {
            SendCredentials::Device(d) => Some(d.as_ref()),
            _ => None,
        };
        let auth = if request.story {
            SendAuth::Story
        } else {
            match credentials {
                SendCredentials::Device(_) => SendAuth::Identified,
                // Not 16 bytes is a 401 before anything is looked up (M§2.1 header rule).
                SendCredentials::AccessKey(k) if k.len() != 16 => {
                    return Err(SendError::Unauthorized);
                }
                SendCredentials::AccessKey(_) => SendAuth::Unidentified { key_matches: false },
                // Verified against exactly the addressed service id, before the account is looked up.
                SendCredentials::GroupSendToken { token, params } => SendAuth::GroupSend {
                    verified: params.is_some_and(|p| {
                        let now = u64::try_from(self.clock.now().as_secs()).unwrap_or(0);
                        crate::zk::service::verify_group_send_token(
                            p,
                            token,
                            &[request.destination],
                            now,
                        )
                        .is_ok()
                    }),
                },
                SendCredentials::None => return Err(SendError::Unauthorized),
            }
        };
        let destination = match request.destination {
            ServiceId::Aci(a) => self.store.account(a).await?,
            ServiceId::Pni(p) => self.store.account_by_pni(p).await?,
        };
        let view = self
            .destination_view(sender, destination.as_ref(), request.destination)
            .await?;
        let auth = match (auth, credentials) {
            (SendAuth::Unidentified { .. }, SendCredentials::AccessKey(k)) => {
                SendAuth::Unidentified {
                    key_matches: destination
                        .as_ref()
                        .is_some_and(|a| access_key_matches(a, k)),
                }
            }
            (a, _) => a,
        };
        let sync = match plan_access(auth, view) {
            SendAccess::Proceed { sync } => sync,
            SendAccess::DropSilently => return Ok(SendOutcome::default()),
            SendAccess::Unauthorized => return Err(SendError::Unauthorized),
            SendAccess::ForbiddenOwnPni => return Err(SendError::OwnPni),
            SendAccess::ContactNotAllowed => return Err(SendError::ContactNotAllowed),
            SendAccess::NotFound => return Err(SendError::NotFound),
        };
        let Some(destination) = destination else {
            // plan_access proceeds only for existing accounts.
            return Err(SendError::NotFound);
        };
        // A suspended account reaches nobody but its own devices.
        if let (Some(s), false) = (sender, sync)
            && self.store.is_suspended(s.account.aci).await?
        {
            return Err(SendError::Suspended);
        }

        // Limiters (M§2.1 steps 2, 3 and 5).
        let dest_key = destination.aci.to_string();
        if auth == SendAuth::Story {
            self.limiters.check(Limiter::Stories, &dest_key).await?;
        } else if let (SendAuth::Identified, Some(s), false) = (auth, sender, sync) {
            let key = format!("{}__{}", s.account.aci, destination.aci);
            self.limiters.check(Limiter::Messages, &key).await?;
        }
        let bytes: usize = request.messages.iter().map(|m| m.content.len()).sum();
        self.limiters
            .check_n(
                Limiter::InboundMessageBytes,
                &dest_key,
                u32::try_from(bytes).unwrap_or(u32::MAX),
            )
            .await?;

        // Device check (steps 6–7), against the addressed identity's registration ids.
        let identity = request.destination.identity_type();
        let devices: BTreeMap<DeviceId, u32> = destination
            .devices
            .iter()
            .map(|d| {
                let reg = match identity {
                    IdentityType::Aci => d.settings.registration_id,
                    IdentityType::Pni => d.settings.pni_registration_id,
                };
                (d.id, u32::from(reg))
            })
            .collect();
        let exclude = if sync {
            sender.map(|s| s.device_id)
        } else {
            None
        };
        match check_devices(&request.messages, &devices, exclude) {
            DeviceCheck::Ok => {}
            DeviceCheck::Stale { stale } => return Err(SendError::StaleDevices { stale }),
            DeviceCheck::Mismatched { missing, extra } => {
                return Err(SendError::MismatchedDevices { missing, extra });
            }
        }
        if any_oversized(&request.messages) {
            return Err(SendError::TooLarge);
        }

        let needs_sync = matches!(auth, SendAuth::Identified)
            && !sync
            && sender.is_some_and(|s| s.account.devices.len() > 1);
        // Stories and sealed sends carry no source.
        let source = match (auth, sender) {
            (SendAuth::Identified, Some(s)) => Some((s.account.aci, s.device_id)),
            _ => None,
        };
        let now = self.clock.now();
        let client_timestamp = if request.timestamp == 0 {
            millis(now)
        } else {
            u64::try_from(request.timestamp).unwrap_or(0)
        };
        let mut built = Vec::with_capacity(request.messages.len());
        for m in request.messages {
            let guid = random_guid(self.rng.as_ref());
            let envelope = Envelope {
                r#type: Some(m.r#type.number()),
                source_device: source.map(|(_, d)| u32::from(d.get())),
                client_timestamp: Some(client_timestamp),
                content: Some(m.content),
                server_guid: Some(guid.0.hyphenated().to_string()),
                server_timestamp: Some(millis(now)),
                ephemeral: Some(request.online),
                destination_service_id: Some(request.destination.to_string()),
                urgent: Some(request.urgent),
                updated_pni: None,
                story: request.story.then_some(true),
                report_spam_token: None,
                source_service_id: source.map(|(a, _)| a.to_string()),
                source_service_id_binary: source.map(|(a, _)| a.as_bytes().to_vec()),
                destination_service_id_binary: Some(service_id_binary(request.destination)),
                server_guid_binary: Some(guid.0.as_bytes().to_vec()),
            };
            built.push((m.device, guid, envelope.encode_to_vec()));
        }
        if request.online {
            let online = built
                .into_iter()
                .map(|(device, guid, envelope)| LiveMessage {
                    aci: destination.aci,
                    device,
                    guid,
                    envelope,
                })
                .collect();
            return Ok(SendOutcome {
                needs_sync,
                stored: vec![],
                online,
            });
        }
        let expires_at = now.plus(self.config.ttl);
        let new: Vec<NewMessage> = built
            .into_iter()
            .map(|(device, guid, envelope)| NewMessage {
                aci: destination.aci,
                device,
                guid,
                envelope,
                server_timestamp: now,
                expires_at,
                story: request.story,
                source: source.map(|(a, _)| a),
                // The gate decided above is decided again inside the insert, against a racing denial.
                gated: matches!(auth, SendAuth::Identified) && !sync,
                shared: None,
            })
            .collect();
        let stored = self.store_and_notify(&new).await?;
        Ok(SendOutcome {
            needs_sync,
            stored,
            online: vec![],
        })
    }

    /// What the access decision needs about the destination: existence, self, policy and the sender's grant.
    async fn destination_view(
        &self,
        sender: Option<&AuthenticatedDevice>,
        destination: Option<&Account>,
        addressed: ServiceId,
    ) -> Result<DestinationView, SendError> {
        let is_pni = matches!(addressed, ServiceId::Pni(_));
        let Some(account) = destination else {
            return Ok(DestinationView {
                exists: false,
                is_pni,
                is_self: false,
                unrestricted: false,
                invite_only: false,
                sender_granted: false,
            });
        };
        let is_self = sender.is_some_and(|s| s.account.aci == account.aci);
        let invite_only = is_invite_only(self.store.as_ref(), account.aci).await?;
        // Only an identified sender (or an authenticated story sender) can hold a grant; own devices always pass.
        let sender_granted = match sender {
            Some(_) if is_self => true,
            Some(s) if invite_only => self
                .store
                .contact_grant(account.aci, s.account.aci)
                .await?
                .is_some_and(|g| g.state == GrantState::Active),
            _ => false,
        };
        Ok(DestinationView {
            exists: true,
            is_pni,
            is_self,
            unrestricted: account.settings.unrestricted_unidentified_access,
            invite_only,
            sender_granted,
        })
    }

    /// Inserts all or nothing and tells the notifier; a full queue is a 429 that stored nothing, a gate a denial
    /// closed since it was checked a 403 that stored nothing.
    async fn store_and_notify(
        &self,
        new: &[NewMessage],
    ) -> Result<Vec<(Aci, DeviceId)>, SendError> {
        match self
            .store
            .insert_messages(new, self.config.max_queue_bytes)
            .await?
        {
            InsertOutcome::Stored => {}
            InsertOutcome::QueueFull { .. } => {
                return Err(SendError::QueueFull(RateLimited {
                    retry_after: QUEUE_FULL_RETRY_AFTER,
                }));
            }
            InsertOutcome::NotAllowed { .. } => return Err(SendError::ContactNotAllowed),
        }
        let mut queues: Vec<(Aci, DeviceId)> = new.iter().map(|m| (m.aci, m.device)).collect();
        queues.sort();
        queues.dedup();
        if !queues.is_empty() {
            self.notifier.messages_stored(&queues).await;
        }
        Ok(queues)
    }

    /// Up to `limit` queued envelopes of the device after `after`, oldest first (for a delivery loop).
    pub async fn read(
        &self,
        aci: Aci,
        device: DeviceId,
        after: MessageCursor,
        limit: u32,
    ) -> Result<Vec<QueuedMessage>, StoreError> {
        self.store.read_messages(aci, device, after, limit).await
    }

    /// `GET /v1/messages` (M§2.8): the first [`FETCH_LIMIT`] queued envelopes and whether more may follow;
    /// stories are left out (not removed) unless the device asked for them.
    pub async fn fetch(
        &self,
        aci: Aci,
        device: DeviceId,
        include_stories: bool,
    ) -> Result<(Vec<QueuedMessage>, bool), StoreError> {
        let page = self
            .store
            .read_messages(aci, device, MessageCursor::START, FETCH_LIMIT)
            .await?;
        let more = page.len() >= FETCH_LIMIT as usize;
        Ok((
            page.into_iter()
                .filter(|m| include_stories || !m.story)
                .collect(),
            more,
        ))
    }

    /// Acknowledges (deletes) the device's envelope `guid`; idempotent. Removing an identified, non-receipt
    /// message from another account queues a server delivery receipt to every device of its sender (M§2.9).
    /// Returns whether the envelope was there.
    pub async fn acknowledge(
        &self,
        aci: Aci,
        device: DeviceId,
        guid: MessageGuid,
    ) -> Result<bool, StoreError> {
        let Some(removed) = self.store.delete_message(aci, device, guid).await? else {
            return Ok(false);
        };
        self.send_receipt(aci, device, &removed).await?;
        Ok(true)
    }

    /// Removes the device's envelope `guid` without a delivery receipt: a story the consumer did not ask for
    /// (M§1.5 step 2). Returns whether it was there.
    pub async fn discard(
        &self,
        aci: Aci,
        device: DeviceId,
        guid: MessageGuid,
    ) -> Result<bool, StoreError> {
        Ok(self
            .store
            .delete_message(aci, device, guid)
            .await?
            .is_some())
    }

    async fn send_receipt(
        &self,
        acker: Aci,
        device: DeviceId,
        removed: &QueuedMessage,
    ) -> Result<(), StoreError> {
        let Ok(original) = Envelope::decode(removed.envelope.as_slice()) else {
            return Ok(());
        };
        if original.r#type == Some(EnvelopeType::ServerDeliveryReceipt.number()) {
            return Ok(());
        }
        let Some(source) = original
            .source_service_id
            .as_deref()
            .and_then(|s| s.parse::<Aci>().ok())
        else {
            return Ok(());
        };
        if source == acker {
            return Ok(());
        }
        let Some(sender) = self.store.account(source).await? else {
            return Ok(());
        };
        // The receipt names the identity the message was addressed to.
        let addressed = original
            .destination_service_id
            .as_deref()
            .and_then(|s| s.parse::<ServiceId>().ok())
            .unwrap_or(ServiceId::Aci(acker));
        let now = self.clock.now();
        let new: Vec<NewMessage> = sender
            .devices
            .iter()
            .map(|d| {
                let guid = random_guid(self.rng.as_ref());
                let envelope = Envelope {
                    r#type: Some(EnvelopeType::ServerDeliveryReceipt.number()),
                    source_device: Some(u32::from(device.get())),
                    client_timestamp: original.client_timestamp,
                    server_guid: Some(guid.0.hyphenated().to_string()),
                    server_timestamp: Some(millis(now)),
                    ephemeral: Some(false),
                    destination_service_id: Some(source.to_string()),
                    urgent: Some(false),
                    source_service_id: Some(addressed.to_string()),
                    source_service_id_binary: Some(service_id_binary(addressed)),
                    destination_service_id_binary: Some(source.as_bytes().to_vec()),
                    server_guid_binary: Some(guid.0.as_bytes().to_vec()),
                    ..Default::default()
                };
                NewMessage {
                    aci: source,
                    device: d.id,
                    guid,
                    envelope: envelope.encode_to_vec(),
                    server_timestamp: now,
                    expires_at: now.plus(self.config.ttl),
                    story: false,
                    // The acknowledging account is the receipt's sender.
                    source: Some(acker),
                    gated: false,
                    shared: None,
                }
            })
            .collect();
        match self.store_and_notify(&new).await {
            // A full queue loses the receipt, never a stored message.
            Ok(_) | Err(SendError::QueueFull(_)) => Ok(()),
            Err(SendError::Store(e)) => Err(e),
            Err(_) => Ok(()),
        }
    }

    /// The device queue's size.
    pub async fn queue_size(&self, aci: Aci, device: DeviceId) -> Result<QueueSize, StoreError> {
        self.store.queue_size(aci, device).await
    }

    /// Removes a device's queue (device removed or re-linked).
    pub async fn delete_queue(&self, aci: Aci, device: DeviceId) -> Result<u64, StoreError> {
        self.store.delete_queue(aci, device).await
    }

    /// Removes every message past its TTL now; returns how many.
    pub async fn expire(&self) -> Result<u64, StoreError> {
        self.store.expire_messages(self.clock.now()).await
    }

    /// Records `reporter`'s spam report of `source`'s message `guid` for the operator.
    pub async fn report_spam(
        &self,
        reporter: Aci,
        source: Aci,
        guid: MessageGuid,
        token: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        self.store
            .record_spam_report(&SpamReport {
                reporter,
                source,
                guid,
                token,
                reported_at: self.clock.now(),
            })
            .await
    }
}

/// Parses a guid path segment (hyphenated UUID).
pub fn parse_guid(s: &str) -> Option<MessageGuid> {
    (s.len() == 36)
        .then(|| Uuid::try_parse(s).ok())
        .flatten()
        .map(MessageGuid)
}

/// How a multi-recipient send is authorized (M§2.5). The endpoint has refused "both" and "neither" already.
#[derive(Clone, Copy)]
pub enum MultiRecipientAuth<'a> {
    /// `Unidentified-Access-Key`: the XOR of the recipients' keys, decoded (not 16 bytes is a 401).
    AccessKey(&'a [u8]),
    /// `Group-Send-Token`, parsed, with the instance's zkgroup secret params to verify it.
    GroupSendToken {
        /// The token.
        token: &'a crate::zk::GroupSendFullToken,
        /// The params that issued the endorsements.
        params: &'a crate::zk::ServerSecretParams,
    },
    /// `?story=true`: no authorization (a combined key beside it is ignored).
    Story,
}

/// A multi-recipient send: the SSv2 SentMessage and the query.
#[derive(Debug, Clone)]
pub struct MultiRecipientRequest<'a> {
    /// The request body (`application/vnd.signal-messenger.mrm`).
    pub body: &'a [u8],
    /// `ts`: client timestamp in ms; 0 means the server's time.
    pub timestamp: i64,
    /// `online`: delivered live to connected devices, never stored.
    pub online: bool,
    /// `urgent` (default true).
    pub urgent: bool,
    /// `story`.
    pub story: bool,
}

/// The result of an accepted multi-recipient send (200 `{"uuids404"}`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MultiRecipientOutcome {
    /// Recipients without an account (group send token only; always empty for UAK sends and stories).
    pub uuids404: Vec<ServiceId>,
    /// Queues that received a message (already passed to [`MessageNotifier::messages_stored`]).
    pub stored: Vec<(Aci, DeviceId)>,
    /// Online messages for the caller to push live (never stored).
    pub online: Vec<LiveMessage>,
}

/// Why a multi-recipient send was refused; each variant is one status of M§2.5.
#[derive(Debug, thiserror::Error)]
pub enum MultiRecipientError {
    /// 400: a malformed SentMessage, no recipient, a device twice, or `ts` out of range.
    #[error("{0}")]
    BadRequest(String),
    /// 401: a wrong combined key, a token that does not verify for these recipients, or a PNI recipient with a key.
    #[error("unauthorized")]
    Unauthorized,
    /// 404: a recipient without an account (access-key sends only).
    #[error("recipient not found")]
    NotFound,
    /// 409: recipients whose devices are missing or extra (only those), before any 410.
    #[error("mismatched devices")]
    MismatchedDevices(Vec<crate::sealed::multi_recipient::RecipientMismatch>),
    /// 410: recipients with stale devices (only those).
    #[error("stale devices")]
    StaleDevices(Vec<(ServiceId, Vec<DeviceId>)>),
    /// 413: the per-recipient payload is over the content limit.
    #[error("message too large")]
    TooLarge,
    /// 429: a limiter refused the send.
    #[error(transparent)]
    RateLimited(RateLimited),
    /// 429: a destination device queue is full; nothing was stored.
    #[error("destination queue full")]
    QueueFull(RateLimited),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<SendError> for MultiRecipientError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::QueueFull(r) => MultiRecipientError::QueueFull(r),
            SendError::RateLimited(r) => MultiRecipientError::RateLimited(r),
            SendError::Store(s) => MultiRecipientError::Store(s),
            SendError::Unauthorized => MultiRecipientError::Unauthorized,
            SendError::NotFound => MultiRecipientError::NotFound,
            SendError::TooLarge => MultiRecipientError::TooLarge,
            other => MultiRecipientError::BadRequest(other.to_string()),
        }
    }
}

impl From<LimitError> for MultiRecipientError {
    fn from(e: LimitError) -> Self {
        SendError::from(e).into()
    }
}

/// What the multi-recipient access decision needs about one resolved recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultiRecipientView {
    /// Addressed by PNI.
    pub is_pni: bool,
    /// `unrestrictedUnidentifiedAccess` (ignored for invite_only accounts).
    pub unrestricted: bool,
    /// The account's contact policy is `invite_only`.
    pub invite_only: bool,
    /// The account's access key, if it has one.
    pub access_key: Option<[u8; 16]>,
}

/// The combined-key decision of M§2.5 step 4 with API.md §10 gating: no PNI recipient, every recipient that is
/// not unrestricted (invite_only accounts never are) has a key, and the XOR of those keys equals `presented`
/// (constant time). True when the send may proceed.
pub fn combined_key_authorizes(recipients: &[MultiRecipientView], presented: &[u8]) -> bool {
    if presented.len() != 16 || recipients.iter().any(|r| r.is_pni) {
        return false;
    }
    let mut keys = Vec::with_capacity(recipients.len());
    for r in recipients {
        if r.unrestricted && !r.invite_only {
            continue;
        }
        match &r.access_key {
            Some(k) => keys.push(k),
            None => return false,
        }
    }
    let expected = crate::sealed::multi_recipient::combined_access_key(keys);
    crate::sealed::multi_recipient::access_key_matches(&expected, presented)
}

impl MessageService {
    /// `PUT /v1/messages/multi_recipient` (M§2.5 server checks 1-9, API.md §10 gating). Every stored envelope of
    /// every recipient goes to the store in one all-or-nothing insert.
    pub async fn send_multi_recipient(
        &self,
        auth: MultiRecipientAuth<'_>,
        request: MultiRecipientRequest<'_>,
    ) -> Result<MultiRecipientOutcome, MultiRecipientError> {
        use crate::sealed::multi_recipient::{MultiDeviceCheck, check_recipient_devices, parse};

        let message =
            parse(request.body).map_err(|e| MultiRecipientError::BadRequest(e.to_string()))?;
        message
            .check_recipients()
            .map_err(|e| MultiRecipientError::BadRequest(e.to_string()))?;
        if !(0..=MAX_TIMESTAMP).contains(&request.timestamp) {
            return Err(MultiRecipientError::BadRequest("Illegal timestamp".into()));
        }
        let auth = if request.story {
            MultiRecipientAuth::Story
        } else {
            auth
        };
        let now = self.clock.now();
        if let MultiRecipientAuth::GroupSendToken { token, params } = auth {
            let ids: Vec<ServiceId> = message.recipients.iter().map(|r| r.service_id).collect();
            let secs = u64::try_from(now.as_secs()).unwrap_or(0);
            crate::zk::service::verify_group_send_token(params, token, &ids, secs)
                .map_err(|_| MultiRecipientError::Unauthorized)?;
        }
        if let MultiRecipientAuth::AccessKey(k) = auth
            && k.len() != 16
        {
            return Err(MultiRecipientError::Unauthorized);
        }

        // Resolve every recipient (M§2.5 step 4).
        let mut resolved: Vec<(ServiceId, Account, MultiRecipientView)> = vec![];
        let mut uuids404 = vec![];
        let ids: Vec<ServiceId> = message.recipients.iter().map(|r| r.service_id).collect();
        let accounts = self.store.accounts_of(&ids).await?;
        for (r, account) in message.recipients.iter().zip(accounts) {
            let Some(account) = account else {
                match auth {
                    MultiRecipientAuth::AccessKey(_) => return Err(MultiRecipientError::NotFound),
                    MultiRecipientAuth::GroupSendToken { .. } => uuids404.push(r.service_id),
                    MultiRecipientAuth::Story => {}
                }
                continue;
            };
            let view = MultiRecipientView {
                is_pni: matches!(r.service_id, ServiceId::Pni(_)),
                unrestricted: account.settings.unrestricted_unidentified_access,
                invite_only: is_invite_only(self.store.as_ref(), account.aci).await?,
                access_key: account.settings.unidentified_access_key,
            };
            resolved.push((r.service_id, account, view));
        }
        match auth {
            MultiRecipientAuth::AccessKey(k) => {
                let views: Vec<MultiRecipientView> = resolved.iter().map(|(_, _, v)| *v).collect();
                if !combined_key_authorizes(&views, k) {
                    return Err(MultiRecipientError::Unauthorized);
                }
            }
            // A story has no sender that could hold a grant: invite_only recipients are dropped silently, before
            // the device check, so nothing about their devices leaks.
            MultiRecipientAuth::Story => resolved.retain(|(_, _, v)| !v.invite_only),
            MultiRecipientAuth::GroupSendToken { .. } => {}
        }
        if resolved.is_empty() {
            return Ok(MultiRecipientOutcome {
                uuids404,
                ..Default::default()
            });
        }
        if matches!(auth, MultiRecipientAuth::Story) {
            for (_, account, _) in &resolved {
                self.limiters
                    .check(Limiter::Stories, &account.aci.to_string())
                    .await?;
            }
        }

        // Device check (step 6): 409 wins over 410.
        let devices: Vec<(ServiceId, BTreeMap<DeviceId, u32>)> = resolved
            .iter()
            .map(|(id, account, _)| {
                let map = account
                    .devices
                    .iter()
                    .map(|d| {
                        let reg = match id.identity_type() {
                            IdentityType::Aci => d.settings.registration_id,
                            IdentityType::Pni => d.settings.pni_registration_id,
                        };
                        (d.id, u32::from(reg))
                    })
                    .collect();
                (*id, map)
            })
            .collect();
        match check_recipient_devices(&message, |id| {
            devices.iter().find(|(d, _)| d == id).map(|(_, m)| m)
        }) {
            MultiDeviceCheck::Ok => {}
            MultiDeviceCheck::Mismatched(m) => {
                return Err(MultiRecipientError::MismatchedDevices(m));
            }
            MultiDeviceCheck::Stale(s) => return Err(MultiRecipientError::StaleDevices(s)),
        }
        if message.payload_len() > super::MAX_CONTENT_BYTES {
            return Err(MultiRecipientError::TooLarge);
        }

        let client_timestamp = if request.timestamp == 0 {
            millis(now)
        } else {
            u64::try_from(request.timestamp).unwrap_or(0)
        };
        let expires_at = now.plus(self.config.ttl);
        let mut new = vec![];
        let mut online = vec![];
        // The shared part (`e_pub ‖ ciphertext`) is the same for every device of every recipient: one copy for the
        // whole send, kept once by the store; each envelope holds only its own bytes and its 49-byte prefix.
        let shared = super::store::SharedPayload {
            id: random_guid(self.rng.as_ref()).0,
            bytes: std::sync::Arc::from(message.shared),
        };
        for (r, listed) in message.recipients_with_devices() {
            let Some((_, account, _)) = resolved.iter().find(|(id, _, _)| *id == r.service_id)
            else {
                continue;
            };
            let prefix = message.prefix_for(r);
            for d in listed {
                let guid = random_guid(self.rng.as_ref());
                let envelope = Envelope {
                    r#type: Some(EnvelopeType::UnidentifiedSender.number()),
                    client_timestamp: Some(client_timestamp),
                    server_guid: Some(guid.0.hyphenated().to_string()),
                    server_timestamp: Some(millis(now)),
                    ephemeral: Some(request.online),
                    destination_service_id: Some(r.service_id.to_string()),
                    urgent: Some(request.urgent),
                    story: request.story.then_some(true),
                    destination_service_id_binary: Some(service_id_binary(r.service_id)),
                    server_guid_binary: Some(guid.0.as_bytes().to_vec()),
                    ..Default::default()
                };
                let (template, offset) =
                    super::encode_without_shared(envelope, &prefix, shared.bytes.len())
                        .ok_or_else(|| StoreError::corrupt("envelope without its content field"))?;
                if request.online {
                    online.push(LiveMessage {
                        aci: account.aci,
                        device: d.device,
                        guid,
                        envelope: super::store::splice(&template, offset, &shared.bytes),
                    });
                } else {
                    new.push(NewMessage {
                        aci: account.aci,
                        device: d.device,
                        guid,
                        envelope: template,
                        server_timestamp: now,
                        expires_at,
                        story: request.story,
                        source: None,
                        gated: false,
                        shared: Some(super::store::SharedPart {
                            payload: shared.clone(),
                            offset,
                        }),
                    });
                }
            }
        }
        let stored = if new.is_empty() {
            vec![]
        } else {
            self.store_and_notify(&new).await?
        };
        Ok(MultiRecipientOutcome {
            uuids404,
            stored,
            online,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{MultiRecipientView, combined_key_authorizes};

    fn view(key: Option<[u8; 16]>, unrestricted: bool, invite_only: bool) -> MultiRecipientView {
        MultiRecipientView {
            is_pni: false,
            unrestricted,
            invite_only,
            access_key: key,
        }
    }

    #[test]
    fn combined_key_is_the_xor_of_restricted_recipients_keys() {
        let (a, b) = ([1u8; 16], [6u8; 16]);
        let both = [7u8; 16];
        assert!(combined_key_authorizes(
            &[view(Some(a), false, false), view(Some(b), false, false)],
            &both
        ));
        assert!(!combined_key_authorizes(
            &[view(Some(a), false, false), view(Some(b), false, false)],
            &a
        ));
        // Unrestricted recipients are left out (even without a key) ...
        assert!(combined_key_authorizes(
            &[view(Some(a), false, false), view(None, true, false)],
            &a
        ));
        // ... except invite_only ones, whose real key is needed.
        assert!(!combined_key_authorizes(
            &[view(Some(a), false, false), view(Some(b), true, true)],
            &a
        ));
        assert!(combined_key_authorizes(
            &[view(Some(a), false, false), view(Some(b), true, true)],
            &both
        ));
        // A recipient without a key, a PNI recipient, or a key that is not 16 bytes: never.
        assert!(!combined_key_authorizes(
            &[view(Some(a), false, false), view(None, false, false)],
            &a
        ));
        let mut pni = view(Some(a), false, false);
        pni.is_pni = true;
        assert!(!combined_key_authorizes(&[pni], &a));
        assert!(!combined_key_authorizes(
            &[view(Some(a), false, false)],
            &a[..15]
        ));
    }
}
