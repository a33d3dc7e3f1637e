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

/// Carries events to the other processes of the instance, and provisioning envelopes to the process holding
/// their socket.
#[async_trait]
pub trait ClusterBus: Send + Sync {
    /// Sends `event`, published by the process `origin`, to every other process.
    async fn broadcast(&self, origin: uuid::Uuid, event: &Event) -> Result<(), BusError>;

    /// Lists a provisioning socket of `origin` under `address` for `lifetime`, for relays on other processes.
    async fn provisioning_opened(
        &self,
        _origin: uuid::Uuid,
        _address: &str,
        _lifetime: Duration,
    ) -> Result<(), BusError> {
        Ok(())
    }

    /// Unlists a provisioning address.
    async fn provisioning_closed(&self, _address: &str) -> Result<(), BusError> {
        Ok(())
    }

    /// Relays an envelope to a provisioning socket another process lists under `address` (each address takes
    /// one envelope): `false` when none does.
    async fn relay_provisioning(
        &self,
        _origin: uuid::Uuid,
        _address: &str,
        _envelope: &[u8],
    ) -> Result<bool, BusError> {
        Ok(false)
    }

    /// Takes the envelope another process relayed to `address` (on [`Event::Provision`]).
    async fn take_provisioning(&self, _address: &str) -> Result<Option<Vec<u8>>, BusError> {
        Ok(None)
    }
}

/// One process: nothing to send, no other process to relay to.
pub struct LocalBus;

#[async_trait]
impl ClusterBus for LocalBus {
    async fn broadcast(&self, _origin: uuid::Uuid, _event: &Event) -> Result<(), BusError> {
        Ok(())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What travels in a notification.
#[derive(Serialize, Deserialize)]
struct Notification {
    origin: uuid::Uuid,
    event: Event,
}

/// Sends `event` to every server process listening on the PostgreSQL database at `url` (from a process that is not
/// a server itself, such as the admin CLI). `Ok(false)` when the database is not PostgreSQL: with SQLite there is
/// no channel to a running server.
pub async fn announce(url: &str, event: &Event) -> Result<bool, BusError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Ok(false);
    }
    let options = <PgConnectOptions as std::str::FromStr>::from_str(url)?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?;
    PgBus { pool }
        .broadcast(uuid::Uuid::new_v4(), event)
        .await?;
    Ok(true)
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
        let first = listen(&pool).await?;
        let weak: Weak<ChatHub> = Arc::downgrade(hub);
        let listen_pool = pool.clone();
        tokio::spawn(async move {
            // `None` after the listening connection was lost. It is replaced by a fresh listener rather than left to
            // sqlx's own reconnect: after an error other than an orderly close (a connection reset, say) sqlx keeps
            // the dead connection and every later call on that listener fails, so the bus never listened again
            // (found by `faults::chat_bus_listens_again_after_a_reset_connection`). Notifications sent meanwhile
            // are gone, so once it listens again every local socket re-reads its queue.
            let mut listener = Some(first);
            loop {
                let Some(current) = listener.as_mut() else {
                    match listen(&listen_pool).await {
                        Ok(fresh) => {
                            listener = Some(fresh);
                            let Some(hub) = weak.upgrade() else { return };
                            tracing::info!("chat bus listening again");
                            hub.wake_all();
                        }
                        Err(e) => {
                            if weak.strong_count() == 0 {
                                return;
                            }
                            tracing::warn!(error = %e, "chat bus cannot listen yet; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                    continue;
                };
                match current.try_recv().await {
                    Ok(None) => {
                        tracing::warn!("chat bus listener lost its connection; reconnecting");
                        listener = None;
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
                        tracing::warn!(error = %e, "chat bus listener failed; reconnecting");
                        listener = None;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Arc::new(PgBus { pool }))
    }
}

/// A listener on [`CHANNEL`] over a connection of `pool`.
async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection is replaced by a new listener (above), not reconnected inside this one.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
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

    async fn provisioning_opened(
        &self,
        origin: uuid::Uuid,
        address: &str,
        lifetime: Duration,
    ) -> Result<(), BusError> {
        let expires_at =
            now_ms().saturating_add(i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX));
        // Stale rows (a crashed process's) are cleared on the way.
        sqlx::query("DELETE FROM provisioning_listeners WHERE expires_at < $1")
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM provisioning_envelopes WHERE expires_at < $1")
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO provisioning_listeners (address, server_id, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (address) DO UPDATE SET server_id = excluded.server_id, expires_at = excluded.expires_at",
        )
        .bind(address)
        .bind(origin.as_bytes().to_vec())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn provisioning_closed(&self, address: &str) -> Result<(), BusError> {
        sqlx::query("DELETE FROM provisioning_listeners WHERE address = $1")
            .bind(address)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn relay_provisioning(
        &self,
        origin: uuid::Uuid,
        address: &str,
        envelope: &[u8],
    ) -> Result<bool, BusError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // Claiming the listing makes the relay single-use across processes, as it is within one.
        let claimed: Option<i64> = sqlx::query_scalar(
            "DELETE FROM provisioning_listeners WHERE address = $1 AND expires_at >= $2 RETURNING expires_at",
        )
        .bind(address)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(expires_at) = claimed else {
            return Ok(false);
        };
        sqlx::query(
            "INSERT INTO provisioning_envelopes (address, envelope, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (address) DO UPDATE SET envelope = excluded.envelope, expires_at = excluded.expires_at",
        )
        .bind(address)
        .bind(envelope)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        let payload = serde_json::to_string(&Notification {
            origin,
            event: Event::Provision {
                address: address.to_owned(),
            },
        })?;
        // Sent at commit, so the holder finds the envelope when it is told.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn take_provisioning(&self, address: &str) -> Result<Option<Vec<u8>>, BusError> {
        Ok(sqlx::query_scalar(
            "DELETE FROM provisioning_envelopes WHERE address = $1 RETURNING envelope",
        )
        .bind(address)
        .fetch_optional(&self.pool)
        .await?)
    }
}
