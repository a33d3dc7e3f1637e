//! Cluster events between server processes sharing one database.
//!
//! [`ChatHub::publish`](super::ChatHub::publish) applies an event to this process at once and hands it to the
//! installed [`ClusterBus`] for the others. With SQLite there is one process, so [`LocalBus`] sends nothing. With
//! PostgreSQL, [`PgBus`] sends `NOTIFY flatline_chat, '<json>'` and every process `LISTEN`s on that channel; a
//! process ignores its own notifications (they carry its random server id), which it has already applied.
//!
//! Delivery is best effort: a notification sent while a listener is reconnecting is lost. Nothing depends on it
//! alone for safety: a socket reloads its account on every request (a removed device or a changed password is a 401
//! there), the delivery loop re-reads the queue when a socket opens, and when the listener has reconnected every
//! socket of the process is woken to re-read its queue (a lost `MessageAvailable` delays, never loses, a message;
//! a lost online message is gone, as online messages are).

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};

use super::{ChatHub, Event};

/// The PostgreSQL notification channel.
pub const CHANNEL: &str = "flatline_chat";

/// A bus failure (logged by the hub; never shown to clients).
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The database refused or the connection failed.
    #[error("chat bus: {0}")]
    Database(#[from] sqlx::Error),
    /// The event could not be encoded.
    #[error("chat bus: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Carries events to the other processes of the instance.
#[async_trait]
pub trait ClusterBus: Send + Sync {
    /// Sends `event`, published by the process `origin`, to every other process.
    async fn broadcast(&self, origin: uuid::Uuid, event: &Event) -> Result<(), BusError>;
}

/// One process: nothing to send.
pub struct LocalBus;

#[async_trait]
impl ClusterBus for LocalBus {
    async fn broadcast(&self, _origin: uuid::Uuid, _event: &Event) -> Result<(), BusError> {
        Ok(())
    }
}

/// What travels in a notification.
#[derive(Serialize, Deserialize)]
struct Notification {
    origin: uuid::Uuid,
    event: Event,
}

/// PostgreSQL `LISTEN/NOTIFY`: one listening connection and one for sending, outside the store's pool.
pub struct PgBus {
    pool: PgPool,
}

impl PgBus {
    /// Connects, starts listening, and applies every other process's events to `hub` until the hub is dropped.
    pub async fn start(
        options: PgConnectOptions,
        hub: &Arc<ChatHub>,
    ) -> Result<Arc<Self>, BusError> {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(CHANNEL).await?;
        let weak: Weak<ChatHub> = Arc::downgrade(hub);
        tokio::spawn(async move {
            // Set when the listening connection was lost: notifications sent meanwhile are gone, so once it is back
            // (sqlx reconnects and listens again on the next call) every local socket re-reads its queue.
            let mut lost = false;
            loop {
                if lost {
                    if sqlx::query("SELECT 1").execute(&mut listener).await.is_ok() {
                        lost = false;
                        let Some(hub) = weak.upgrade() else { return };
                        hub.wake_all();
                    } else {
                        if weak.strong_count() == 0 {
                            return;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
                match listener.try_recv().await {
                    Ok(None) => {
                        tracing::warn!("chat bus listener lost its connection; reconnecting");
                        lost = true;
                    }
                    Ok(Some(n)) => {
                        let Some(hub) = weak.upgrade() else { return };
                        match serde_json::from_str::<Notification>(n.payload()) {
                            Ok(note) => hub.apply_remote(note.origin, &note.event),
                            Err(e) => tracing::warn!(error = %e, "unreadable chat notification"),
                        }
                    }
                    Err(e) => {
                        if weak.strong_count() == 0 {
                            return;
                        }
                        tracing::warn!(error = %e, "chat bus listener failed; retrying");
                        lost = true;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Arc::new(PgBus { pool }))
    }
}

#[async_trait]
impl ClusterBus for PgBus {
    async fn broadcast(&self, origin: uuid::Uuid, event: &Event) -> Result<(), BusError> {
        let payload = serde_json::to_string(&Notification {
            origin,
            event: event.clone(),
        })?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
