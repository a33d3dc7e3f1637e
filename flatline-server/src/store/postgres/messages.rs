//! Per-device message queues and spam reports in PostgreSQL.
//!
//! An insert upserts each of its queue rows (in a fixed order, so concurrent multi-queue inserts cannot deadlock)
//! with the byte bound in the `WHERE` of the update, which locks the row until commit: inserts into one queue
//! serialize, so cursors increase in commit order and a reader that continues after its last cursor never skips a
//! message committed later. Every removal deletes the message rows first and then subtracts what it deleted from
//! the queue row (the same lock order everywhere).
//!
//! A successful insert also sends `NOTIFY` on [`MESSAGES_CHANNEL`] from its transaction, so PostgreSQL delivers it
//! exactly when the messages are committed (never for a refused or rolled-back insert): each process can
//! [`PgStore::listen_messages`] and wake its local consumers of those queues.

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
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Transaction};

use super::{PgStore, db, get, uuid_of};

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

fn id(aci: Aci) -> Vec<u8> {
    aci.as_bytes().to_vec()
}

fn dev(d: DeviceId) -> i16 {
    i16::from(d.get())
}

fn device_of(v: i16) -> StoreResult<DeviceId> {
    u8::try_from(v)
        .ok()
        .and_then(|d| DeviceId::new(d).ok())
        .ok_or_else(|| StoreError::corrupt("device id out of range"))
}

fn size(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

const COLUMNS: &str =
    "seq, guid, envelope, server_timestamp, expires_at, story, shared_id, shared_offset";

/// A row of [`COLUMNS`] plus `shared_payload` (the shared part's bytes, joined by the caller; NULL for whole
/// envelopes).
fn queued_from_row(r: &PgRow) -> StoreResult<QueuedMessage> {
    let guid: Vec<u8> = get(r, "guid")?;
    let envelope: Vec<u8> = get(r, "envelope")?;
    let shared_id: Option<Vec<u8>> = get(r, "shared_id")?;
    let envelope = match (shared_id, get::<Option<Vec<u8>>>(r, "shared_payload")?) {
        (None, _) => envelope,
        (Some(_), None) => return Err(StoreError::corrupt("a message's shared part is missing")),
        (Some(_), Some(payload)) => {
            let offset = get::<Option<i64>>(r, "shared_offset")?
                .and_then(|o| usize::try_from(o).ok())
                .filter(|o| *o <= envelope.len())
                .ok_or_else(|| StoreError::corrupt("shared part offset out of range"))?;
            flatline_core::messages::store::splice(&envelope, offset, &payload)
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

/// The distinct (destination, source) pairs of a batch's gated entries, in order (so owner locks are taken in a
/// fixed order).
fn gated_pairs(messages: &[NewMessage]) -> std::collections::BTreeSet<(Aci, Aci)> {
    messages
        .iter()
        .filter(|m| m.gated)
        .filter_map(|m| m.source.map(|s| (m.aci, s)))
        .collect()
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

/// Removes the account's queues and the spam reports it filed (inside `delete_account`'s transaction).
pub(super) async fn delete_messages_of(
    tx: &mut Transaction<'_, Postgres>,
    aci: Aci,
) -> StoreResult<()> {
    for sql in [
        "DELETE FROM messages WHERE aci = $1",
        "DELETE FROM message_queues WHERE aci = $1",
        "DELETE FROM spam_reports WHERE reporter = $1",
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
impl MessageStore for PgStore {
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
        if let Some((&(aci, device), _)) = per_queue
            .iter()
            .find(|(_, (_, b))| u64::try_from(*b).unwrap_or(u64::MAX) > max_queue_bytes)
        {
            return Ok(InsertOutcome::QueueFull { aci, device });
        }
        if per_queue.is_empty() {
            return Ok(InsertOutcome::Stored);
        }
        let max = i64::try_from(max_queue_bytes).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await.map_err(db)?;
        // The contact gate under the owner's contact lock, which a denial holds too (taken before any queue row,
        // as the denial does): a denial is wholly before this check or sees these messages. Accounts that are
        // `open` (the common case) take no lock: a denial needs `invite_only`.
        for (owner, source) in gated_pairs(messages) {
            if source == owner || !super::contacts::invite_only(&mut tx, owner).await? {
                continue;
            }
            super::contacts::lock_owner(&mut tx, owner).await?;
            let invite_only = super::contacts::invite_only(&mut tx, owner).await?;
            let grant = super::contacts::grant_of(&mut tx, owner, source)
                .await?
                .map(|g| g.state);
            if !contacts::gate_allows(owner, source, invite_only, grant) {
                return Ok(InsertOutcome::NotAllowed { aci: owner });
            }
        }
        // Every queue's cursor and byte total in one statement, in key order (the lock order of every insert). A
        // queue that would overflow updates nothing and returns no row; the transaction is rolled back on return.
        let (mut q_acis, mut q_devices, mut q_counts, mut q_bytes) =
            (vec![], vec![], vec![], vec![]);
        for (&(aci, device), &(count, bytes)) in &per_queue {
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
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let mut next: BTreeMap<(Aci, DeviceId), i64> = BTreeMap::new();
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
        if let Some(&(aci, device)) = per_queue.keys().find(|k| !next.contains_key(k)) {
            return Ok(InsertOutcome::QueueFull { aci, device });
        }
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
        // Each shared part once, however many envelopes carry it.
        let mut shared_written = std::collections::BTreeSet::new();
        for m in messages {
            if let Some(part) = &m.shared
                && shared_written.insert(part.payload.id)
            {
                sqlx::query(
                    "INSERT INTO shared_payloads (id, payload, expires_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
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
        // One statement: the rows, and the notification PostgreSQL sends when (and only if) they commit.
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
        .execute(&mut *tx)
        .await
        .map_err(db)?;
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
             WHERE m.aci = $1 AND m.device_id = $2 AND m.seq > $3 ORDER BY m.seq LIMIT $4"
        )
        .bind(id(aci))
        .bind(dev(device))
        .bind(after.0)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(queued_from_row)
        .collect()
    }

    async fn delete_message(
        &self,
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
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let message = rows.first().map(queued_from_row).transpose()?;
        if let Some(row) = rows.first()
            && let Some(sid) = get::<Option<Vec<u8>>>(row, "shared_id")?
        {
            // The last envelope of the send takes the shared part with it (a concurrent acknowledgement of the other
            // last one may keep it until it expires).
            sqlx::query(
                "DELETE FROM shared_payloads WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM messages WHERE shared_id = $1)",
            )
            .bind(sid)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        }
        Ok(message)
    }

    async fn expire_messages(&self, now: Timestamp) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await.map_err(db)?;
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

    async fn queue_size(&self, aci: Aci, device: DeviceId) -> StoreResult<QueueSize> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM messages WHERE aci = $1 AND device_id = $2) AS n,
                    COALESCE((SELECT bytes FROM message_queues WHERE aci = $1 AND device_id = $2), 0)::BIGINT AS bytes",
        )
        .bind(id(aci))
        .bind(dev(device))
        .fetch_one(&self.pool)
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
        let removed: i64 = sqlx::query_scalar(
            "WITH d AS (DELETE FROM messages WHERE aci = $1 AND device_id = $2
                        RETURNING COALESCE(size, octet_length(envelope)) AS n),
             u AS (UPDATE message_queues SET bytes = bytes - (SELECT COALESCE(SUM(n), 0) FROM d)
                   WHERE aci = $1 AND device_id = $2 AND EXISTS (SELECT 1 FROM d))
             SELECT COUNT(*) FROM d",
        )
        .bind(id(aci))
        .bind(dev(device))
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(u64::try_from(removed).unwrap_or(0))
    }

    async fn record_spam_report(&self, report: &SpamReport) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO spam_reports (reporter, source, guid, token, reported_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (reporter, guid) DO NOTHING",
        )
        .bind(id(report.reporter))
        .bind(id(report.source))
        .bind(report.guid.0.as_bytes().to_vec())
        .bind(&report.token)
        .bind(report.reported_at.as_millis())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn spam_reports(&self, limit: u32) -> StoreResult<Vec<SpamReport>> {
        sqlx::query(
            "SELECT reporter, source, guid, token, reported_at FROM spam_reports ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(|r| {
            let reporter: Vec<u8> = get(r, "reporter")?;
            let source: Vec<u8> = get(r, "source")?;
            let guid: Vec<u8> = get(r, "guid")?;
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
