//! Server pushes on an authenticated chat socket (M§1.4, M§1.5), and the per-device delivery loop.
//!
//! When an authenticated socket opens, the hub's [`DeliveryLoop`] is started for its `(aci, device)` with a
//! [`DeliveryContext`]: a [`Pusher`] that sends `PUT /api/v1/message` and `PUT /api/v1/queue/empty` on that socket,
//! and a [`Wake`] that fires when [`Event::MessageAvailable`](super::Event::MessageAvailable) is published for the
//! device. When the socket closes, every outstanding push resolves to [`PushError::Closed`], [`Pusher::closed`]
//! resolves, and the loop has a few seconds to return before its task is aborted.
//!
//! Pushes are issued in order with request ids counting from 0; at most `[chat] push_window` are unacknowledged at
//! once ([`Pusher::push_message`] waits for a free slot). Each push's [`PushReceipt`] resolves to the client's
//! response status (2xx: delivered, delete it; anything else: a NACK, keep it) or to [`PushError::Closed`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flatline_core::chat::encode_request;
use flatline_core::ids::{Aci, DeviceId};
use flatline_core::time::Clock;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// The path of a pushed message.
pub const MESSAGE_PATH: &str = "/api/v1/message";
/// The path of the end-of-backlog signal.
pub const QUEUE_EMPTY_PATH: &str = "/api/v1/queue/empty";

/// A push could not be completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The socket closed before the client answered (the message stays queued).
    #[error("connection closed")]
    Closed,
}

/// A frame the socket loop writes.
pub(crate) type OutFrame = Vec<u8>;

struct Inner {
    out: mpsc::Sender<OutFrame>,
    window: Arc<Semaphore>,
    next_id: tokio::sync::Mutex<u64>,
    pending: Mutex<HashMap<u64, (oneshot::Sender<u16>, OwnedSemaphorePermit)>>,
    clock: Arc<dyn Clock>,
}

/// Sends server-initiated requests on one authenticated socket. Cheap to clone; every clone feeds the same socket.
#[derive(Clone)]
pub struct Pusher {
    inner: Arc<Inner>,
}

/// The outcome of one push, delivered when the client answers or the socket closes.
#[derive(Debug)]
pub struct PushReceipt {
    id: u64,
    rx: oneshot::Receiver<u16>,
}

impl PushReceipt {
    /// The request id the push was sent with.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The client's response status (2xx = acknowledged), or [`PushError::Closed`].
    pub async fn result(self) -> Result<u16, PushError> {
        self.rx.await.map_err(|_| PushError::Closed)
    }
}

impl Pusher {
    pub(crate) fn new(out: mpsc::Sender<OutFrame>, window: usize, clock: Arc<dyn Clock>) -> Self {
        Pusher {
            inner: Arc::new(Inner {
                out,
                window: Arc::new(Semaphore::new(window)),
                next_id: tokio::sync::Mutex::new(0),
                pending: Mutex::new(HashMap::new()),
                clock,
            }),
        }
    }

    /// Pushes one serialized `Envelope` as `PUT /api/v1/message` (headers `X-Signal-Key: false` first, then
    /// `X-Signal-Timestamp`), waiting while the window is full. Pushes go out in the order of the calls.
    pub async fn push_message(&self, envelope: &[u8]) -> Result<PushReceipt, PushError> {
        let permit = self
            .inner
            .window
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PushError::Closed)?;
        let (tx, rx) = oneshot::channel();
        let mut next = self.inner.next_id.lock().await;
        let id = *next;
        let now = self.inner.clock.now().as_millis().to_string();
        let frame = encode_request(
            Some(id),
            "PUT",
            MESSAGE_PATH,
            &[("X-Signal-Key", "false"), ("X-Signal-Timestamp", &now)],
            envelope,
        );
        self.lock_pending().insert(id, (tx, permit));
        if self.inner.out.send(frame).await.is_err() {
            self.lock_pending().remove(&id);
            return Err(PushError::Closed);
        }
        *next += 1;
        Ok(PushReceipt { id, rx })
    }

    /// Sends `PUT /api/v1/queue/empty` (the stored backlog has been handed out). libsignal does not answer it, so
    /// nothing waits for a reply. Send it once per connection.
    pub async fn queue_empty(&self) -> Result<(), PushError> {
        let mut next = self.inner.next_id.lock().await;
        let now = self.inner.clock.now().as_millis().to_string();
        let frame = encode_request(
            Some(*next),
            "PUT",
            QUEUE_EMPTY_PATH,
            &[("X-Signal-Timestamp", &now)],
            b"",
        );
        self.inner
            .out
            .send(frame)
            .await
            .map_err(|_| PushError::Closed)?;
        *next += 1;
        Ok(())
    }

    /// Resolves when the socket has closed.
    pub async fn closed(&self) {
        self.inner.out.closed().await;
    }

    /// Whether the socket has closed.
    pub fn is_closed(&self) -> bool {
        self.inner.out.is_closed()
    }

    /// Pushes sent and not yet answered.
    pub fn unacknowledged(&self) -> usize {
        self.lock_pending().len()
    }

    /// Delivers the client's response to push `id`; `false` when no push with that id is waiting.
    pub(crate) fn acknowledge(&self, id: u64, status: u16) -> bool {
        match self.lock_pending().remove(&id) {
            Some((tx, _permit)) => {
                let _ = tx.send(status);
                true
            }
            None => false,
        }
    }

    /// The socket closed: every waiting push resolves to [`PushError::Closed`] and no new push is accepted.
    pub(crate) fn close(&self) {
        self.inner.window.close();
        self.lock_pending().clear();
    }

    fn lock_pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, (oneshot::Sender<u16>, OwnedSemaphorePermit)>> {
        self.inner.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Fires when messages become available for the device (see [`super::Event::MessageAvailable`]). Wake-ups do not
/// queue up: several events before the next [`Wake::notified`] count as one.
#[derive(Clone)]
pub struct Wake(pub(crate) Arc<Notify>);

impl Wake {
    /// Waits for the next wake-up (returns at once if one arrived since the last call).
    pub async fn notified(&self) {
        self.0.notified().await;
    }
}

/// What a delivery loop gets for one authenticated socket.
pub struct DeliveryContext {
    /// The account.
    pub aci: Aci,
    /// The device.
    pub device: DeviceId,
    /// Whether the upgrade carried `X-Signal-Receive-Stories: true` (story envelopes are otherwise not pushed).
    pub receive_stories: bool,
    /// Pushes on this socket.
    pub pusher: Pusher,
    /// Wake-ups for new messages.
    pub wake: Wake,
    /// Online (ephemeral) envelopes for this socket, to push as they come (never stored).
    pub live: mpsc::Receiver<Vec<u8>>,
    pub(crate) control: mpsc::UnboundedSender<super::Control>,
}

impl DeliveryContext {
    /// The queue could not be read: the socket closes 1011 `Failed to retrieve messages` (M§1.5 step 5).
    pub fn fail(&self) {
        let _ = self
            .control
            .send(super::Control::Close(super::CloseReason::RetrieveFailed));
    }
}

/// The per-device delivery loop: started when an authenticated socket opens, and expected to return soon after it
/// closes (it is aborted a few seconds later otherwise). [`super::MessageDelivery`] implements it (hand out the
/// backlog, `queue_empty` once, then wait for [`Wake`] and push new messages, deleting each one whose receipt is a
/// 2xx); [`crate::http::AppState`] installs it with [`ChatHub::set_delivery_loop`](super::ChatHub::set_delivery_loop).
#[async_trait]
pub trait DeliveryLoop: Send + Sync {
    /// Runs until the socket closes (it may return earlier).
    async fn run(&self, ctx: DeliveryContext);
}

/// The default loop while no message storage is installed: `queue/empty` once, then idle.
pub struct QueueEmptyThenIdle;

#[async_trait]
impl DeliveryLoop for QueueEmptyThenIdle {
    async fn run(&self, ctx: DeliveryContext) {
        if ctx.pusher.queue_empty().await.is_ok() {
            ctx.pusher.closed().await;
        }
    }
}
