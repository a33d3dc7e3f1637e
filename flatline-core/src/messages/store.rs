//! The message queue store: one FIFO queue per (account, device), at-least-once (M§7).
//!
//! Contracts every backend honours (checked by the conformance suite):
//! - **FIFO per queue**: each queue hands out cursors that strictly increase in commit order, so a reader that
//!   continues after the last cursor it saw never skips a message committed later by a concurrent writer;
//! - **all or nothing**: [`MessageStore::insert_messages`] stores every entry or none; when any target queue would
//!   exceed the byte bound it stores nothing and says which queue was full (a typed outcome, not an error);
//! - **at-least-once**: reading never removes; only [`MessageStore::delete_message`] (an acknowledgement),
//!   [`MessageStore::expire_messages`], [`MessageStore::delete_queue`] and account deletion do;
//! - queue byte totals count the delivered envelope bytes and are maintained by every removal path;
//! - **shared parts stored once**: the envelopes of one multi-recipient send carry the same shared part (M§2.5
//!   step 8); a [`NewMessage`] may hold only its own bytes and a [`SharedPart`], which the store keeps once for
//!   the whole send and splices back on every read, byte for byte.

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use super::MessageGuid;
use crate::ids::{Aci, DeviceId};
use crate::store::StoreResult;
use crate::time::Timestamp;

/// A position in one device's queue: the reader continues with messages after it.
///
/// Cursors are only meaningful for the queue that produced them; [`MessageCursor::START`] is before every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageCursor(pub i64);

impl MessageCursor {
    /// Before the first message of any queue.
    pub const START: MessageCursor = MessageCursor(0);
}

/// Bytes several envelopes of one send carry identically (a multi-recipient message's `e_pub ‖ ciphertext`),
/// stored once under `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedPayload {
    /// Identifies the payload in the store; unique per send.
    pub id: Uuid,
    /// The bytes.
    pub bytes: Arc<[u8]>,
}

/// Where an envelope takes a [`SharedPayload`]: the delivered envelope is `envelope[..offset] ‖ payload ‖
/// envelope[offset..]` (see [`NewMessage::delivered`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedPart {
    /// The payload.
    pub payload: SharedPayload,
    /// Its position in the envelope.
    pub offset: usize,
}

/// One envelope to queue for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The account whose device queue receives it.
    pub aci: Aci,
    /// The device.
    pub device: DeviceId,
    /// The per-device server guid (also inside `envelope`).
    pub guid: MessageGuid,
    /// The serialized [`Envelope`](super::Envelope), delivered byte for byte — without the shared part's bytes
    /// when `shared` is set.
    pub envelope: Vec<u8>,
    /// The shared part spliced into `envelope` on delivery, for the envelopes of a multi-recipient send.
    pub shared: Option<SharedPart>,
    /// Server receive time.
    pub server_timestamp: Timestamp,
    /// When the message expires if never acknowledged.
    pub expires_at: Timestamp,
    /// A story (skipped for consumers that did not ask for stories).
    pub story: bool,
    /// The identified sender (the envelope's source account); `None` for sealed-sender messages and stories. Lets a
    /// denial delete the denied account's queued messages to the owner
    /// ([`ContactStore::decide_contact_requests`](crate::store::ContactStore::decide_contact_requests)).
    pub source: Option<Aci>,
    /// Contact gating inside the insert (API.md §10): when `aci`'s policy is `invite_only`, the batch is stored
    /// only if `source` holds an **active** grant from it (see [`crate::contacts::gate_allows`]), decided in the
    /// insert's own transaction so that a denial committing concurrently either sees the message (and deletes it)
    /// or is seen by the insert (which refuses). Set for identified sends to another account; never for sync
    /// messages, receipts, sealed sends or stories.
    pub gated: bool,
}

impl NewMessage {
    /// The size of the envelope as delivered (what the queue bound counts).
    pub fn delivered_len(&self) -> usize {
        self.envelope.len() + self.shared.as_ref().map_or(0, |s| s.payload.bytes.len())
    }

    /// The envelope as delivered: `envelope` with the shared part spliced in.
    pub fn delivered(&self) -> Vec<u8> {
        match &self.shared {
            None => self.envelope.clone(),
            Some(s) => splice(&self.envelope, s.offset, &s.payload.bytes),
        }
    }
}

/// `template[..offset] ‖ shared ‖ template[offset..]`; an offset past the end appends (stores call this on what
/// they wrote themselves, so that never happens).
pub fn splice(template: &[u8], offset: usize, shared: &[u8]) -> Vec<u8> {
    let offset = offset.min(template.len());
    let mut out = Vec::with_capacity(template.len() + shared.len());
    out.extend_from_slice(&template[..offset]);
    out.extend_from_slice(shared);
    out.extend_from_slice(&template[offset..]);
    out
}

/// A queued envelope as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    /// Its position in the queue.
    pub cursor: MessageCursor,
    /// The server guid.
    pub guid: MessageGuid,
    /// The serialized envelope, identical on every redelivery.
    pub envelope: Vec<u8>,
    /// Server receive time.
    pub server_timestamp: Timestamp,
    /// Expiry time.
    pub expires_at: Timestamp,
    /// A story.
    pub story: bool,
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Every entry was stored.
    Stored,
    /// Nothing was stored: this queue would have exceeded the byte bound.
    QueueFull {
        /// The account of the full queue.
        aci: Aci,
        /// Its device.
        device: DeviceId,
    },
    /// Nothing was stored: a gated entry's source holds no active grant from this `invite_only` account.
    NotAllowed {
        /// The gated destination.
        aci: Aci,
    },
}

/// The size of one device queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueSize {
    /// Messages queued.
    pub messages: u64,
    /// Sum of their envelope sizes in bytes.
    pub bytes: u64,
}

/// A spam report filed by a recipient (`POST /v1/messages/report/{aci}/{guid}`), kept for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpamReport {
    /// Who reported.
    pub reporter: Aci,
    /// The reported sender.
    pub source: Aci,
    /// The reported message's server guid.
    pub guid: MessageGuid,
    /// The optional reporting token the client sent (opaque).
    pub token: Option<Vec<u8>>,
    /// When it was reported.
    pub reported_at: Timestamp,
}

/// Per-device message queues and spam reports.
///
/// `delete_account` (in [`AccountStore`](crate::store::AccountStore)) removes every queue of the account and
/// the spam reports it filed (reports *about* it stay for the operator).
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Appends each entry to its (account, device) queue, all in one transaction. Refuses the whole batch, storing
    /// nothing, when a gated entry does not pass the contact gate ([`NewMessage::gated`], checked first) or when
    /// any queue's byte total plus its new entries would exceed `max_queue_bytes`.
    async fn insert_messages(
        &self,
        messages: &[NewMessage],
        max_queue_bytes: u64,
    ) -> StoreResult<InsertOutcome>;

    /// Up to `limit` messages of the queue after `after`, oldest first. Reading removes nothing.
    async fn read_messages(
        &self,
        aci: Aci,
        device: DeviceId,
        after: MessageCursor,
        limit: u32,
    ) -> StoreResult<Vec<QueuedMessage>>;

    /// Removes the message with `guid` from the device's queue (an acknowledgement) and returns it; `None` when
    /// it is not (or no longer) there. Idempotent.
    async fn delete_message(
        &self,
        aci: Aci,
        device: DeviceId,
        guid: MessageGuid,
    ) -> StoreResult<Option<QueuedMessage>>;

    /// Removes every message whose `expires_at` is at or before `now`; returns how many.
    async fn expire_messages(&self, now: Timestamp) -> StoreResult<u64>;

    /// The device queue's message count and byte total.
    async fn queue_size(&self, aci: Aci, device: DeviceId) -> StoreResult<QueueSize>;

    /// Removes the device's whole queue (device removed or re-linked); returns how many messages went.
    async fn delete_queue(&self, aci: Aci, device: DeviceId) -> StoreResult<u64>;

    /// Records a spam report; a second report of the same guid by the same reporter is ignored.
    async fn record_spam_report(&self, report: &SpamReport) -> StoreResult<()>;

    /// The most recent spam reports, newest first, at most `limit`.
    async fn spam_reports(&self, limit: u32) -> StoreResult<Vec<SpamReport>>;
}
