//! Per-device message queues and spam reports in SQLite. Every write is one transaction on the single writer, so
//! cursors (per-queue sequence numbers) increase in commit order and the byte bound is checked and applied
//! atomically.

use std::collections::BTreeMap;

use async_trait::async_trait;
use flatline_core::contacts;
use flatline_core::ids::{Aci, DeviceId};
use flatline_core::messages::MessageGuid;
use flatline_core::messages::store::{
    InsertOutcome, MessageCursor, MessageStore, NewMessage, QueueSize, QueuedMessage, SpamReport,
};
use flatline_core::store::{StoreError, StoreResult};
use flatline_core::time::Timestamp;
use sqlx::sqlite::SqliteRow;
use sqlx::{Sqlite, Transaction};

use super::{SqliteStore, db, get, uuid_of};

fn id(aci: Aci) -> Vec<u8> {
    aci.as_bytes().to_vec()
}

fn dev(d: DeviceId) -> i64 {
    i64::from(d.get())
}

fn size(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

const COLUMNS: &str =
    "seq, guid, envelope, server_timestamp, expires_at, story, shared_id, shared_offset";

/// The delivered size of a message row (`m`): whole envelopes have no `size`.
const SIZE: &str = "COALESCE(m.size, length(m.envelope))";

/// A row of [`COLUMNS`], with the shared part's bytes when it has one (`shared`, read by the caller).
fn queued_from_row(r: &SqliteRow, shared: Option<&[u8]>) -> StoreResult<QueuedMessage> {
    let guid: Vec<u8> = get(r, "guid")?;
    let envelope: Vec<u8> = get(r, "envelope")?;
    let envelope = match shared {
        None => envelope,
        Some(payload) => {
            let offset: i64 = get::<Option<i64>>(r, "shared_offset")?
                .ok_or_else(|| StoreError::corrupt("shared part without an offset"))?;
            let offset = usize::try_from(offset)
                .ok()
                .filter(|o| *o <= envelope.len())
                .ok_or_else(|| StoreError::corrupt("shared part offset out of range"))?;
            flatline_core::messages::store::splice(&envelope, offset, payload)
        }
    };
    Ok(QueuedMessage {
        cursor: MessageCursor(get(r, "seq")?),
        guid: MessageGuid(uuid_of(&guid)?),
        envelope,
        server_timestamp: Timestamp(get(r, "server_timestamp")?),
        expires_at: Timestamp(get(r, "expires_at")?),
        story: get(r, "story")?,
    })
}

/// The distinct (destination, source) pairs of a batch's gated entries, in order.
fn gated_pairs(messages: &[NewMessage]) -> std::collections::BTreeSet<(Aci, Aci)> {
    messages
        .iter()
        .filter(|m| m.gated)
        .filter_map(|m| m.source.map(|s| (m.aci, s)))
        .collect()
}

/// Deletes every message from one of `sources` in every queue of `owner`, keeping the queues' byte totals (inside
/// the transaction of a denial). Returns how many went.
pub(super) async fn delete_messages_from(
    tx: &mut Transaction<'_, Sqlite>,
    owner: Aci,
    sources: &[Aci],
) -> StoreResult<u64> {
    let mut removed = 0;
    for source in sources {
        sqlx::query(
            &format!("UPDATE message_queues SET bytes = bytes - (SELECT COALESCE(SUM({SIZE}), 0) FROM messages m
                 WHERE m.aci = message_queues.aci AND m.device_id = message_queues.device_id AND m.source = ?2)
             WHERE aci = ?1"),
        )
        .bind(id(owner))
        .bind(id(*source))
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        removed += sqlx::query("DELETE FROM messages WHERE aci = ?1 AND source = ?2")
            .bind(id(owner))
            .bind(id(*source))
            .execute(&mut **tx)
            .await
            .map_err(db)?
            .rows_affected();
    }
    Ok(removed)
}

/// Removes the account's queues and the spam reports it filed (inside `delete_account`'s transaction).
pub(super) async fn delete_messages_of(
    tx: &mut Transaction<'_, Sqlite>,
    aci: Aci,
) -> StoreResult<()> {
    for sql in [
        "DELETE FROM messages WHERE aci = ?1",
        "DELETE FROM message_queues WHERE aci = ?1",
        "DELETE FROM spam_reports WHERE reporter = ?1",
    ] {
        sqlx::query(sql)
            .bind(id(aci))
            .execute(&mut **tx)
            .await
            .map_err(db)?;
    }
    Ok(())
}

#[async_trait]
impl MessageStore for SqliteStore {
    async fn insert_messages(
        &self,
        messages: &[NewMessage],
        max_queue_bytes: u64,
    ) -> StoreResult<InsertOutcome> {
        let mut per_queue: BTreeMap<(Aci, DeviceId), (i64, i64)> = BTreeMap::new();
        for m in messages {
            let e = per_queue.entry((m.aci, m.device)).or_default();
            e.0 += 1;
            e.1 = e.1.saturating_add(size(m.delivered_len()));
        }
        let max = i64::try_from(max_queue_bytes).unwrap_or(i64::MAX);
        let mut tx = self.writer.begin().await.map_err(db)?;
        // The contact gate, on the single writer: a denial is wholly before or wholly after this insert.
        for (owner, source) in gated_pairs(messages) {
            let invite_only = super::contacts::invite_only(&mut tx, owner).await?;
            let grant = super::contacts::grant_of(&mut tx, owner, source)
                .await?
                .map(|g| g.state);
            if !contacts::gate_allows(owner, source, invite_only, grant) {
                return Ok(InsertOutcome::NotAllowed { aci: owner });
            }
        }
        // The first cursor of each queue's new entries.
        let mut next: BTreeMap<(Aci, DeviceId), i64> = BTreeMap::new();
        for (&(aci, device), &(count, bytes)) in &per_queue {
            if bytes > max {
                return Ok(InsertOutcome::QueueFull { aci, device });
            }
            // Appends only when the bound holds; no row back means the queue is full (nothing was changed).
            let last: Option<i64> = sqlx::query_scalar(
                "INSERT INTO message_queues (aci, device_id, last_seq, bytes) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (aci, device_id) DO UPDATE SET last_seq = last_seq + ?3, bytes = bytes + ?4
                 WHERE bytes + ?4 <= ?5
                 RETURNING last_seq",
            )
            .bind(id(aci))
            .bind(dev(device))
            .bind(count)
            .bind(bytes)
            .bind(max)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
            let Some(last) = last else {
                return Ok(InsertOutcome::QueueFull { aci, device });
            };
            next.insert((aci, device), last - count + 1);
        }
        // Each shared part once, however many envelopes carry it.
        let mut shared_written = std::collections::BTreeSet::new();
        for m in messages {
            if let Some(part) = &m.shared
                && shared_written.insert(part.payload.id)
            {
                sqlx::query(
                    "INSERT INTO shared_payloads (id, payload, expires_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
                )
                .bind(part.payload.id.as_bytes().to_vec())
                .bind(&part.payload.bytes[..])
                .bind(m.expires_at.as_millis())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
        }
        for m in messages {
            let seq = next
                .get_mut(&(m.aci, m.device))
                .ok_or_else(|| StoreError::corrupt("queue without a cursor"))?;
            sqlx::query(
                "INSERT INTO messages (aci, device_id, seq, guid, envelope, server_timestamp, expires_at, story, source,
                 shared_id, shared_offset, size)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(id(m.aci))
            .bind(dev(m.device))
            .bind(*seq)
            .bind(m.guid.0.as_bytes().to_vec())
            .bind(&m.envelope)
            .bind(m.server_timestamp.as_millis())
            .bind(m.expires_at.as_millis())
            .bind(m.story)
            .bind(m.source.map(id))
            .bind(m.shared.as_ref().map(|p| p.payload.id.as_bytes().to_vec()))
            .bind(m.shared.as_ref().map(|p| size(p.offset)))
            .bind(m.shared.as_ref().map(|_| size(m.delivered_len())))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            *seq += 1;
        }
        tx.commit().await.map_err(db)?;
        Ok(InsertOutcome::Stored)
    }

    async fn read_messages(
        &self,
        aci: Aci,
        device: DeviceId,
        after: MessageCursor,
        limit: u32,
    ) -> StoreResult<Vec<QueuedMessage>> {
        sqlx::query(
            "SELECT m.seq, m.guid, m.envelope, m.server_timestamp, m.expires_at, m.story, m.shared_id, m.shared_offset,
                    p.payload AS shared_payload
             FROM messages m LEFT JOIN shared_payloads p ON p.id = m.shared_id
             WHERE m.aci = ? AND m.device_id = ? AND m.seq > ? ORDER BY m.seq LIMIT ?"
        )
        .bind(id(aci))
        .bind(dev(device))
        .bind(after.0)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db)?
        .iter()
        .map(|r| {
            let shared: Option<Vec<u8>> = get(r, "shared_payload")?;
            if shared.is_none() && get::<Option<Vec<u8>>>(r, "shared_id")?.is_some() {
                return Err(StoreError::corrupt("a message's shared part is missing"));
            }
            queued_from_row(r, shared.as_deref())
        })
        .collect()
    }

    async fn delete_message(
        &self,
        aci: Aci,
        device: DeviceId,
        guid: MessageGuid,
    ) -> StoreResult<Option<QueuedMessage>> {
        let mut tx = self.writer.begin().await.map_err(db)?;
        let Some(row) = sqlx::query(&format!(
            "DELETE FROM messages WHERE rowid = (SELECT rowid FROM messages
             WHERE aci = ? AND device_id = ? AND guid = ? ORDER BY seq LIMIT 1) RETURNING {COLUMNS}"
        ))
        .bind(id(aci))
        .bind(dev(device))
        .bind(guid.0.as_bytes().to_vec())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        else {
            return Ok(None);
        };
        let shared_id: Option<Vec<u8>> = get(&row, "shared_id")?;
        let payload: Option<Vec<u8>> = match &shared_id {
            None => None,
            Some(sid) => {
                let payload =
                    sqlx::query_scalar("SELECT payload FROM shared_payloads WHERE id = ?")
                        .bind(sid)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db)?
                        .ok_or_else(|| StoreError::corrupt("a message's shared part is missing"))?;
                // The last envelope of the send takes the shared part with it.
                sqlx::query(
                    "DELETE FROM shared_payloads WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM messages WHERE shared_id = ?1)",
                )
                .bind(sid)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                Some(payload)
            }
        };
        let message = queued_from_row(&row, payload.as_deref())?;
        sqlx::query("UPDATE message_queues SET bytes = bytes - ? WHERE aci = ? AND device_id = ?")
            .bind(size(message.envelope.len()))
            .bind(id(aci))
            .bind(dev(device))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Some(message))
    }

    async fn expire_messages(&self, now: Timestamp) -> StoreResult<u64> {
        let mut tx = self.writer.begin().await.map_err(db)?;
        sqlx::query(
            &format!("UPDATE message_queues SET bytes = bytes - (SELECT COALESCE(SUM({SIZE}), 0) FROM messages m
                 WHERE m.aci = message_queues.aci AND m.device_id = message_queues.device_id AND m.expires_at <= ?1)
             WHERE EXISTS (SELECT 1 FROM messages m
                 WHERE m.aci = message_queues.aci AND m.device_id = message_queues.device_id AND m.expires_at <= ?1)"),
        )
        .bind(now.as_millis())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let removed = sqlx::query("DELETE FROM messages WHERE expires_at <= ?")
            .bind(now.as_millis())
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        // Shared parts expire with their messages (and so do those left behind by other removals).
        sqlx::query("DELETE FROM shared_payloads WHERE expires_at <= ?")
            .bind(now.as_millis())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(removed)
    }

    async fn queue_size(&self, aci: Aci, device: DeviceId) -> StoreResult<QueueSize> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM messages WHERE aci = ?1 AND device_id = ?2) AS n,
                    COALESCE((SELECT bytes FROM message_queues WHERE aci = ?1 AND device_id = ?2), 0) AS bytes",
        )
        .bind(id(aci))
        .bind(dev(device))
        .fetch_one(&self.reader)
        .await
        .map_err(db)?;
        let count =
            |v: i64| u64::try_from(v).map_err(|_| StoreError::corrupt("negative queue size"));
        Ok(QueueSize {
            messages: count(get(&row, "n")?)?,
            bytes: count(get(&row, "bytes")?)?,
        })
    }

    async fn delete_queue(&self, aci: Aci, device: DeviceId) -> StoreResult<u64> {
        let mut tx = self.writer.begin().await.map_err(db)?;
        let removed = sqlx::query("DELETE FROM messages WHERE aci = ? AND device_id = ?")
            .bind(id(aci))
            .bind(dev(device))
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        sqlx::query("UPDATE message_queues SET bytes = 0 WHERE aci = ? AND device_id = ?")
            .bind(id(aci))
            .bind(dev(device))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(removed)
    }

    async fn record_spam_report(&self, report: &SpamReport) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO spam_reports (reporter, source, guid, token, reported_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (reporter, guid) DO NOTHING",
        )
        .bind(id(report.reporter))
        .bind(id(report.source))
        .bind(report.guid.0.as_bytes().to_vec())
        .bind(&report.token)
        .bind(report.reported_at.as_millis())
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn spam_reports(&self, limit: u32) -> StoreResult<Vec<SpamReport>> {
        sqlx::query(
            "SELECT reporter, source, guid, token, reported_at FROM spam_reports ORDER BY id DESC LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db)?
        .iter()
        .map(|r| {
            let (reporter, source, guid): (Vec<u8>, Vec<u8>, Vec<u8>) =
                (get(r, "reporter")?, get(r, "source")?, get(r, "guid")?);
            Ok(SpamReport {
                reporter: Aci(uuid_of(&reporter)?),
                source: Aci(uuid_of(&source)?),
                guid: MessageGuid(uuid_of(&guid)?),
                token: get(r, "token")?,
                reported_at: Timestamp(get(r, "reported_at")?),
            })
        })
        .collect()
    }
}
