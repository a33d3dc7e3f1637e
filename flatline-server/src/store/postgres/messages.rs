//! Per-device message queues and spam reports on PostgreSQL: [`crate::store::shared::messages`]; the statements
//! below are the ones written differently from SQLite (arrays, data-modifying CTEs, advisory locks).
//!
//! An insert upserts all its queue rows in one statement (in key order, so concurrent multi-queue inserts cannot
//! deadlock) with the byte bound in the `WHERE` of the update, which locks the rows until commit. Every removal
//! deletes the message rows first and then subtracts what it deleted from the queue row (the same lock order
//! everywhere).
//!
//! A successful insert also sends `NOTIFY` on [`MESSAGES_CHANNEL`] from its transaction, so PostgreSQL delivers it
//! exactly when the messages are committed (never for a refused or rolled-back insert): each process can
//! [`PgStore::listen_messages`] and wake its local consumers of those queues.

// The shared body imports the rest (`Aci`, `PerQueue`, `Transaction`, `db`, `id`...).
use sqlx::Postgres;

use super::PgStore;

crate::store::shared::messages::message_store!(super::PgStore);

/// The `LISTEN`/`NOTIFY` channel on which committed inserts name their queues.
pub const MESSAGES_CHANNEL: &str = "flatline_messages";

/// Longest notification payload sent (PostgreSQL's limit is 8000 bytes).
const MAX_PAYLOAD: usize = 7_900;

/// The payloads naming `queues` as `aci.device`, comma-separated, each under PostgreSQL's size limit.
fn payloads<'a>(queues: impl Iterator<Item = &'a (Aci, DeviceId)>) -> Vec<String> {
    let mut out = vec![];
    let mut current = String::new();
    for (aci, device) in queues {
        let item = format!("{aci}.{device}");
        if !current.is_empty() && current.len() + 1 + item.len() > MAX_PAYLOAD {
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(',');
        }
        current.push_str(&item);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The queues a [`MESSAGES_CHANNEL`] notification names (malformed entries are skipped).
pub fn parse_notification(payload: &str) -> Vec<(Aci, DeviceId)> {
    payload
        .split(',')
        .filter_map(|item| {
            let (aci, device) = item.split_once('.')?;
            Some((aci.parse().ok()?, device.parse().ok()?))
        })
        .collect()
}

impl PgStore {
    /// A connection listening on [`MESSAGES_CHANNEL`]: every committed insert, by any process, arrives as a
    /// notification whose payload [`parse_notification`] turns into the queues that got messages.
    pub async fn listen_messages(&self) -> StoreResult<sqlx::postgres::PgListener> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool)
            .await
            .map_err(db)?;
        listener.listen(MESSAGES_CHANNEL).await.map_err(db)?;
        Ok(listener)
    }
}

/// Advisory lock (two-key space) taken by expiry so that processes do not expire the same rows at once: "fexp".
const EXPIRY_LOCK_CLASS: i32 = 0x6665_7870;

fn device_of(v: i16) -> StoreResult<DeviceId> {
    u8::try_from(v)
        .ok()
        .and_then(|d| DeviceId::new(d).ok())
        .ok_or_else(|| StoreError::corrupt("device id out of range"))
}

/// Raises every queue row's cursor and byte total in one statement, in key order (the lock order of every insert):
/// the first cursor of each queue's new entries, or the first queue that would overflow. A queue that would
/// overflow updates nothing and returns no row.
async fn reserve_cursors(
    tx: &mut Transaction<'_, Postgres>,
    per_queue: &PerQueue,
    max: i64,
) -> StoreResult<Result<BTreeMap<(Aci, DeviceId), i64>, (Aci, DeviceId)>> {
    if let Some((&key, _)) = per_queue.iter().find(|(_, (_, b))| *b > max) {
        return Ok(Err(key));
    }
    let (mut q_acis, mut q_devices, mut q_counts, mut q_bytes) = (vec![], vec![], vec![], vec![]);
    for (&(aci, device), &(count, bytes)) in per_queue {
        q_acis.push(id(aci));
        q_devices.push(dev(device));
        q_counts.push(count);
        q_bytes.push(bytes);
    }
    let rows = sqlx::query(
        "INSERT INTO message_queues AS q (aci, device_id, last_seq, bytes)
         SELECT * FROM UNNEST($1::bytea[], $2::smallint[], $3::bigint[], $4::bigint[])
         ON CONFLICT (aci, device_id) DO UPDATE SET last_seq = q.last_seq + EXCLUDED.last_seq,
             bytes = q.bytes + EXCLUDED.bytes
         WHERE q.bytes + EXCLUDED.bytes <= $5
         RETURNING aci, device_id, last_seq",
    )
    .bind(q_acis)
    .bind(q_devices)
    .bind(q_counts)
    .bind(q_bytes)
    .bind(max)
    .fetch_all(&mut **tx)
    .await
    .map_err(db)?;
    let mut next = BTreeMap::new();
    for row in &rows {
        let key = (
            Aci(uuid_of(&get::<Vec<u8>>(row, "aci")?)?),
            device_of(get::<i16>(row, "device_id")?)?,
        );
        let count = per_queue
            .get(&key)
            .map(|(count, _)| *count)
            .ok_or_else(|| StoreError::corrupt("a queue nobody asked for"))?;
        next.insert(key, get::<i64>(row, "last_seq")? - count + 1);
    }
    if let Some(&key) = per_queue.keys().find(|k| !next.contains_key(k)) {
        return Ok(Err(key));
    }
    Ok(Ok(next))
}

/// The message rows in one statement, envelopes bound by reference, with cursors from `next`; the same statement
/// sends the notification of `per_queue`'s queues, which PostgreSQL delivers when (and only if) they commit.
async fn insert_rows(
    tx: &mut Transaction<'_, Postgres>,
    messages: &[NewMessage],
    mut next: BTreeMap<(Aci, DeviceId), i64>,
    per_queue: &PerQueue,
) -> StoreResult<()> {
    let n = messages.len();
    let (mut acis, mut devices, mut seqs, mut guids, mut envelopes) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut server_ts, mut expires, mut stories, mut sources) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::<Option<Vec<u8>>>::with_capacity(n),
    );
    let (mut shared_ids, mut shared_offsets, mut sizes) = (
        Vec::<Option<Vec<u8>>>::with_capacity(n),
        Vec::<Option<i64>>::with_capacity(n),
        Vec::<Option<i64>>::with_capacity(n),
    );
    for m in messages {
        let seq = next
            .get_mut(&(m.aci, m.device))
            .ok_or_else(|| StoreError::corrupt("queue without a cursor"))?;
        acis.push(id(m.aci));
        devices.push(dev(m.device));
        seqs.push(*seq);
        guids.push(m.guid.0.as_bytes().to_vec());
        envelopes.push(m.envelope.as_slice());
        server_ts.push(m.server_timestamp.as_millis());
        expires.push(m.expires_at.as_millis());
        stories.push(m.story);
        sources.push(m.source.map(id));
        shared_ids.push(m.shared.as_ref().map(|p| p.payload.id.as_bytes().to_vec()));
        shared_offsets.push(m.shared.as_ref().map(|p| size(p.offset)));
        sizes.push(m.shared.as_ref().map(|_| size(m.delivered_len())));
        *seq += 1;
    }
    sqlx::query(
        "WITH ins AS (
             INSERT INTO messages (aci, device_id, seq, guid, envelope, server_timestamp, expires_at, story,
                                   source, shared_id, shared_offset, size)
             SELECT * FROM UNNEST($1::bytea[], $2::smallint[], $3::bigint[], $4::bytea[], $5::bytea[],
                                  $6::bigint[], $7::bigint[], $8::boolean[], $11::bytea[], $12::bytea[],
                                  $13::bigint[], $14::bigint[]))
         SELECT pg_notify($9, p) FROM UNNEST($10::text[]) AS p",
    )
    .bind(acis)
    .bind(devices)
    .bind(seqs)
    .bind(guids)
    .bind(envelopes)
    .bind(server_ts)
    .bind(expires)
    .bind(stories)
    .bind(MESSAGES_CHANNEL)
    .bind(payloads(per_queue.keys()))
    .bind(sources)
    .bind(shared_ids)
    .bind(shared_offsets)
    .bind(sizes)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

/// Deletes every message from one of `sources` in every queue of `owner` and subtracts what it deleted from the
/// queue rows (messages first, as every removal; inside the transaction of a denial). Returns how many went.
pub(super) async fn delete_messages_from(
    tx: &mut Transaction<'_, Postgres>,
    owner: Aci,
    sources: &[Aci],
) -> StoreResult<u64> {
    if sources.is_empty() {
        return Ok(0);
    }
    let sources: Vec<Vec<u8>> = sources.iter().map(|a| id(*a)).collect();
    let removed: i64 = sqlx::query_scalar(
        "WITH d AS (DELETE FROM messages WHERE aci = $1 AND source = ANY($2::bytea[])
                    RETURNING device_id, COALESCE(size, octet_length(envelope)) AS n),
         s AS (SELECT device_id, SUM(n) AS n, COUNT(*) AS c FROM d GROUP BY device_id),
         u AS (UPDATE message_queues q SET bytes = q.bytes - s.n FROM s
               WHERE q.aci = $1 AND q.device_id = s.device_id)
         SELECT COALESCE(SUM(c), 0)::BIGINT FROM s",
    )
    .bind(id(owner))
    .bind(sources)
    .fetch_one(&mut **tx)
    .await
    .map_err(db)?;
    Ok(u64::try_from(removed).unwrap_or(0))
}

/// Deletes the first message `guid` of the queue and its bytes from the queue row in one statement, then the
/// shared part with the send's last envelope.
async fn delete_one(
    store: &PgStore,
    aci: Aci,
    device: DeviceId,
    guid: MessageGuid,
) -> StoreResult<Option<QueuedMessage>> {
    // One statement: the data-modifying CTEs both run, message rows first, then the queue row.
    let rows = sqlx::query(&format!(
        "WITH d AS (DELETE FROM messages WHERE aci = $1 AND device_id = $2 AND guid = $3
                    RETURNING {COLUMNS}, COALESCE(size, octet_length(envelope)) AS n),
         u AS (UPDATE message_queues SET bytes = bytes - (SELECT COALESCE(SUM(n), 0) FROM d)
               WHERE aci = $1 AND device_id = $2 AND EXISTS (SELECT 1 FROM d))
         SELECT d.seq, d.guid, d.envelope, d.server_timestamp, d.expires_at, d.story, d.shared_id, d.shared_offset,
                p.payload AS shared_payload
         FROM d LEFT JOIN shared_payloads p ON p.id = d.shared_id ORDER BY d.seq"
    ))
    .bind(id(aci))
    .bind(dev(device))
    .bind(guid.0.as_bytes().to_vec())
    .fetch_all(&store.pool)
    .await
    .map_err(db)?;
    let message = rows.first().map(queued_from_joined_row).transpose()?;
    if let Some(row) = rows.first()
        && let Some(sid) = get::<Option<Vec<u8>>>(row, "shared_id")?
    {
        // The last envelope of the send takes the shared part with it (a concurrent acknowledgement of the other
        // last one may keep it until it expires).
        sqlx::query(
            "DELETE FROM shared_payloads WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM messages WHERE shared_id = $1)",
        )
        .bind(sid)
        .execute(&store.pool)
        .await
        .map_err(db)?;
    }
    Ok(message)
}

/// Deletes the messages (and shared parts) expired at `now` with what they took from their queues, unless another
/// process is doing so right now.
async fn expire(store: &PgStore, now: Timestamp) -> StoreResult<u64> {
    let mut tx = store.pool.begin().await.map_err(db)?;
    let ours: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, 0)")
        .bind(EXPIRY_LOCK_CLASS)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
    if !ours {
        // Another process is expiring right now.
        return Ok(0);
    }
    let removed: i64 = sqlx::query_scalar(
        "WITH d AS (DELETE FROM messages WHERE expires_at <= $1
                    RETURNING aci, device_id, COALESCE(size, octet_length(envelope)) AS n),
         s AS (SELECT aci, device_id, SUM(n) AS n, COUNT(*) AS c FROM d GROUP BY aci, device_id),
         u AS (UPDATE message_queues q SET bytes = q.bytes - s.n FROM s
               WHERE q.aci = s.aci AND q.device_id = s.device_id)
         SELECT COALESCE(SUM(c), 0)::BIGINT FROM s",
    )
    .bind(now.as_millis())
    .fetch_one(&mut *tx)
    .await
    .map_err(db)?;
    // Shared parts expire with their messages (and so do those left behind by other removals).
    sqlx::query("DELETE FROM shared_payloads WHERE expires_at <= $1")
        .bind(now.as_millis())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(u64::try_from(removed).unwrap_or(0))
}

/// Deletes every message of one queue and what they took from its byte total, in one statement.
async fn clear_queue(store: &PgStore, aci: Aci, device: DeviceId) -> StoreResult<u64> {
    let removed: i64 = sqlx::query_scalar(
        "WITH d AS (DELETE FROM messages WHERE aci = $1 AND device_id = $2
                    RETURNING COALESCE(size, octet_length(envelope)) AS n),
         u AS (UPDATE message_queues SET bytes = bytes - (SELECT COALESCE(SUM(n), 0) FROM d)
               WHERE aci = $1 AND device_id = $2 AND EXISTS (SELECT 1 FROM d))
         SELECT COUNT(*) FROM d",
    )
    .bind(id(aci))
    .bind(dev(device))
    .fetch_one(&store.pool)
    .await
    .map_err(db)?;
    Ok(u64::try_from(removed).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_stay_under_the_limit_and_parse_back() {
        let queues: Vec<(Aci, DeviceId)> = (0..500u32)
            .map(|i| {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&i.to_be_bytes());
                (
                    Aci(uuid::Uuid::from_bytes(b)),
                    DeviceId::new(u8::try_from(i % 127 + 1).unwrap()).unwrap(),
                )
            })
            .collect();
        let chunks = payloads(queues.iter());
        assert!(chunks.len() > 1);
        assert!(chunks.iter().all(|c| c.len() <= MAX_PAYLOAD));
        let back: Vec<_> = chunks.iter().flat_map(|c| parse_notification(c)).collect();
        assert_eq!(back, queues);
        assert!(payloads([].iter()).is_empty());
        assert!(parse_notification("garbage,also.bad").is_empty());
    }
}
