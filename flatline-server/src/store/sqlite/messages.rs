//! Per-device message queues and spam reports on SQLite: [`crate::store::shared::messages`]. Every write is one
//! transaction on the single writer, so cursors (per-queue sequence numbers) increase in commit order and the byte
//! bound is checked and applied atomically; the statements below are the ones written differently from
//! PostgreSQL (no data-modifying CTEs, no arrays).

// The shared body imports the rest (`Aci`, `PerQueue`, `Transaction`, `db`, `id`...).
use sqlx::Sqlite;

use super::SqliteStore;

crate::store::shared::messages::message_store!(super::SqliteStore);

/// The delivered size of a message row (`m`): whole envelopes have no `size`.
const SIZE: &str = "COALESCE(m.size, length(m.envelope))";

/// Raises each queue row's cursor and byte total, one statement per queue, in key order: the first cursor of each
/// queue's new entries, or the first queue that would overflow.
async fn reserve_cursors(
    tx: &mut Transaction<'_, Sqlite>,
    per_queue: &PerQueue,
    max: i64,
) -> StoreResult<Result<BTreeMap<(Aci, DeviceId), i64>, (Aci, DeviceId)>> {
    let mut next = BTreeMap::new();
    for (&(aci, device), &(count, bytes)) in per_queue {
        if bytes > max {
            return Ok(Err((aci, device)));
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
        .fetch_optional(&mut **tx)
        .await
        .map_err(db)?;
        let Some(last) = last else {
            return Ok(Err((aci, device)));
        };
        next.insert((aci, device), last - count + 1);
    }
    Ok(Ok(next))
}

/// The message rows, one statement each, with cursors from `next`.
async fn insert_rows(
    tx: &mut Transaction<'_, Sqlite>,
    messages: &[NewMessage],
    mut next: BTreeMap<(Aci, DeviceId), i64>,
    _per_queue: &PerQueue,
) -> StoreResult<()> {
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
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        *seq += 1;
    }
    Ok(())
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
        sqlx::query(&format!(
            "UPDATE message_queues SET bytes = bytes - (SELECT COALESCE(SUM({SIZE}), 0) FROM messages m
                 WHERE m.aci = message_queues.aci AND m.device_id = message_queues.device_id AND m.source = ?2)
             WHERE aci = ?1"
        ))
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

/// Deletes the first message `guid` of the queue, the shared part with the send's last envelope, and its bytes
/// from the queue row.
async fn delete_one(
    store: &SqliteStore,
    aci: Aci,
    device: DeviceId,
    guid: MessageGuid,
) -> StoreResult<Option<QueuedMessage>> {
    let mut tx = store.begin_deferred().await?;
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
            let payload = sqlx::query_scalar("SELECT payload FROM shared_payloads WHERE id = ?")
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

/// Deletes the messages (and shared parts) expired at `now`, subtracting them from their queues first.
async fn expire(store: &SqliteStore, now: Timestamp) -> StoreResult<u64> {
    let mut tx = store.begin_deferred().await?;
    sqlx::query(&format!(
        "UPDATE message_queues SET bytes = bytes - (SELECT COALESCE(SUM({SIZE}), 0) FROM messages m
             WHERE m.aci = message_queues.aci AND m.device_id = message_queues.device_id AND m.expires_at <= ?1)
         WHERE EXISTS (SELECT 1 FROM messages m
             WHERE m.aci = message_queues.aci AND m.device_id = message_queues.device_id AND m.expires_at <= ?1)"
    ))
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

/// Deletes every message of one queue and zeroes its byte total.
async fn clear_queue(store: &SqliteStore, aci: Aci, device: DeviceId) -> StoreResult<u64> {
    let mut tx = store.begin_deferred().await?;
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
