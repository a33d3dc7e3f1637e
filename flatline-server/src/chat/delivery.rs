//! Live delivery of queued messages over authenticated chat sockets (M§1.4, M§1.5, M§7), and the message service's
//! [`MessageNotifier`] over the chat hub.
//!
//! [`MessageDelivery`] is the hub's [`DeliveryLoop`]: it reads the device's queue in batches of
//! [`BATCH`] from a cursor and pushes each envelope (in queue order, at most `[chat] push_window` unanswered). A 2xx
//! answer acknowledges it through [`MessageService::acknowledge`] (so a delivery receipt goes to an identified
//! sender exactly as for `DELETE /v1/messages/uuid/{guid}`); any other answer, or the socket closing, keeps it for
//! the next connection (at-least-once). Pushed envelopes have `ephemeral` stripped ([`for_delivery`]). Once the backlog present at connect time is handed out, `queue/empty` is
//! sent, once per connection. The loop then waits for [`Event::MessageAvailable`](super::Event::MessageAvailable)
//! and continues from its cursor, so a message is pushed at most once per connection. Stories are pushed only when
//! the upgrade had `X-Signal-Receive-Stories: true`; otherwise they are acknowledged silently (M§1.5), without a
//! receipt. Online (ephemeral) messages arrive on the socket's live channel and are pushed as they come; their
//! answers are ignored (nothing is stored).
//!
//! [`ChatNotifier`] turns every store into a `MessageAvailable` event (applied here and, with PostgreSQL, sent to
//! the other processes over the hub's bus) and hands online messages to the device's socket on this process, or over
//! the bus to the process that has it (when the envelope fits in one notification, see [`ONLINE_MAX_BYTES`]).

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use flatline_core::ids::{Aci, DeviceId};
use flatline_core::messages::Envelope;
use flatline_core::messages::service::{LiveMessage, MessageNotifier, MessageService};
use flatline_core::messages::store::MessageCursor;

use super::push::{DeliveryContext, DeliveryLoop, PushReceipt};
use super::{ChatHub, Event};

/// How many queued messages one read takes (upstream's demand batch).
pub const BATCH: u32 = 100;

/// Largest online envelope sent to another process (PostgreSQL notifications carry at most 8000 bytes; the
/// envelope travels base64-encoded inside JSON). Larger online messages reach only sockets of this process.
pub const ONLINE_MAX_BYTES: usize = 5000;

/// The pushed form of a stored or online envelope: `ephemeral` stripped, as upstream does before delivery (M§1.4,
/// M§2.3); identical for every redelivery. Bytes that are not an envelope go out unchanged.
pub fn for_delivery(envelope: &[u8]) -> Vec<u8> {
    match Envelope::from_bytes(envelope) {
        Some(mut e) => {
            e.ephemeral = None;
            e.to_bytes()
        }
        None => envelope.to_vec(),
    }
}

/// The delivery loop over the message service.
pub struct MessageDelivery {
    messages: MessageService,
}

impl MessageDelivery {
    /// A loop reading and acknowledging through `messages`.
    pub fn new(messages: MessageService) -> Self {
        MessageDelivery { messages }
    }

    /// Resolves one push: a 2xx deletes the message (with its receipt), anything else keeps it.
    fn settle(
        &self,
        ctx: &DeliveryContext,
        guid: flatline_core::messages::MessageGuid,
        receipt: PushReceipt,
    ) {
        let messages = self.messages.clone();
        let (aci, device) = (ctx.aci, ctx.device);
        tokio::spawn(async move {
            match receipt.result().await {
                Ok(status) if (200..300).contains(&status) => {
                    if let Err(e) = messages.acknowledge(aci, device, guid).await {
                        tracing::warn!(error = %e, "acknowledged message not deleted; it will be redelivered");
                    }
                }
                Ok(status) => {
                    tracing::debug!(
                        status,
                        "pushed message not acknowledged; kept for redelivery"
                    );
                }
                Err(_) => {}
            }
        });
    }

    /// Pushes everything after `cursor`; returns the new cursor, or `None` when the socket closed or the store
    /// failed (then the socket is closed 1011).
    async fn drain(
        &self,
        ctx: &mut DeliveryContext,
        mut cursor: MessageCursor,
    ) -> Option<MessageCursor> {
        loop {
            let batch = match self.messages.read(ctx.aci, ctx.device, cursor, BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "message queue not readable; closing the socket");
                    ctx.fail();
                    return None;
                }
            };
            let full = batch.len() >= BATCH as usize;
            for m in batch {
                cursor = m.cursor;
                if m.story && !ctx.receive_stories {
                    // Not for this consumer: removed without a receipt (M§1.5 step 2).
                    if let Err(e) = self.messages.discard(ctx.aci, ctx.device, m.guid).await {
                        tracing::warn!(error = %e, "story not discarded");
                    }
                    continue;
                }
                // Online messages that came in meanwhile go out between stored ones.
                self.push_live(ctx).await?;
                let receipt = ctx
                    .pusher
                    .push_message(&for_delivery(&m.envelope))
                    .await
                    .ok()?;
                self.settle(ctx, m.guid, receipt);
            }
            if !full {
                return Some(cursor);
            }
        }
    }

    /// Pushes the online messages waiting on the live channel (answers are ignored: nothing was stored).
    async fn push_live(&self, ctx: &mut DeliveryContext) -> Option<()> {
        while let Ok(envelope) = ctx.live.try_recv() {
            ctx.pusher
                .push_message(&for_delivery(&envelope))
                .await
                .ok()?;
        }
        Some(())
    }
}

#[async_trait]
impl DeliveryLoop for MessageDelivery {
    async fn run(&self, mut ctx: DeliveryContext) {
        let Some(mut cursor) = self.drain(&mut ctx, MessageCursor::START).await else {
            return;
        };
        if ctx.pusher.queue_empty().await.is_err() {
            return;
        }
        let pusher = ctx.pusher.clone();
        let wake = ctx.wake.clone();
        loop {
            tokio::select! {
                () = pusher.closed() => return,
                () = wake.notified() => {
                    match self.drain(&mut ctx, cursor).await {
                        Some(c) => cursor = c,
                        None => return,
                    }
                }
                Some(envelope) = ctx.live.recv() => {
                    if pusher.push_message(&for_delivery(&envelope)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// The message service's live-delivery hooks over the chat hub (held weakly: the hub owns the delivery loop, which
/// owns the message service, which owns this).
pub struct ChatNotifier {
    hub: Weak<ChatHub>,
}

impl ChatNotifier {
    /// Hooks publishing to `hub`.
    pub fn new(hub: &Arc<ChatHub>) -> Self {
        ChatNotifier {
            hub: Arc::downgrade(hub),
        }
    }
}

#[async_trait]
impl MessageNotifier for ChatNotifier {
    async fn messages_stored(&self, queues: &[(Aci, DeviceId)]) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        for &(aci, device) in queues {
            hub.publish(Event::MessageAvailable { aci, device });
        }
    }

    async fn deliver_online(&self, messages: Vec<LiveMessage>) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        for m in messages {
            hub.deliver_online(m.aci, m.device, m.envelope);
        }
    }
}
