//! Per-device message queues and spam reports ([`flatline_core::messages::store::MessageStore`]) on both dialects.
//!
//! A queue row holds the queue's last cursor and byte total; an insert raises both for every queue it writes to,
//! only where the byte bound holds, and takes its cursors from the result. On SQLite the single writer runs each
//! write alone, so cursors increase in commit order. On PostgreSQL the upsert locks each queue row until commit (in
//! key order, so concurrent multi-queue inserts cannot deadlock): inserts into one queue serialize, so cursors
//! increase in commit order too and a reader that continues after its last cursor never skips a message committed
//! later. Every removal deletes the message rows and subtracts what it deleted from the queue row.
//!
//! A multi-recipient send stores its shared part once (`shared_payloads`, migration 0015); each envelope keeps the
//! rest and the offset where the part goes, spliced back on read.
//!
//! The expansion site provides what the dialects write differently, for their speed:
//! - `reserve_cursors(tx, per_queue, max)`: checks the byte bound and raises the queue rows (PostgreSQL: one
//!   `UNNEST` upsert for all);
//! - `insert_rows(tx, messages, next, per_queue)`: the message rows (PostgreSQL: one statement, envelopes bound by
//!   reference, with the `NOTIFY` of the queues);
//! - `delete_one`, `expire`, `clear_queue` and `delete_messages_from`: removals (PostgreSQL: one statement with
//!   data-modifying CTEs; SQLite: a few statements in one transaction).

/// Implements [`flatline_core::messages::store::MessageStore`] for `$store` (see [the module docs](self)).
macro_rules! message_store {
    ($store:ty) => {
        use std::collections::{BTreeMap, BTreeSet};

        use async_trait::async_trait;
        use flatline_core::contacts;
        use flatline_core::ids::{Aci, DeviceId};
        use flatline_core::messages::MessageGuid;
        use flatline_core::messages::store::{
            InsertOutcome, MessageCursor, MessageStore, NewMessage, QueueSize, QueuedMessage,
            SpamReport,
        };
        use flatline_core::store::{StoreError, StoreResult};
        use flatline_core::time::Timestamp;
        use sqlx::Transaction;

        use super::{db, get, uuid_of};
        use $crate::store::shared::Dialect;

        type Db = <$store as Dialect>::Db;
        type Row = <Db as sqlx::Database>::Row;

        /// How many messages and bytes a batch adds to each of its queues, in key order (the lock order).
        type PerQueue = BTreeMap<(Aci, DeviceId), (i64, i64)>;

        fn id(aci: Aci) -> Vec<u8> {
            aci.as_bytes().to_vec()
        }

        fn dev(d: DeviceId) -> i16 {
            i16::from(d.get())
        }

        fn size(n: usize) -> i64 {
            i64::try_from(n).unwrap_or(i64::MAX)
        }

        const COLUMNS: &str =
            "seq, guid, envelope, server_timestamp, expires_at, story, shared_id, shared_offset";

        /// A row of [`COLUMNS`], with the shared part's bytes when it has one (`shared`, read by the caller).
        fn queued_from_row(r: &Row, shared: Option<&[u8]>) -> StoreResult<QueuedMessage> {
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

        /// A row of [`COLUMNS`] plus `shared_payload`, the shared part's bytes joined by the query (NULL for whole
        /// envelopes).
        fn queued_from_joined_row(r: &Row) -> StoreResult<QueuedMessage> {
            let shared: Option<Vec<u8>> = get(r, "shared_payload")?;
            if shared.is_none() && get::<Option<Vec<u8>>>(r, "shared_id")?.is_some() {
                return Err(StoreError::corrupt("a message's shared part is missing"));
            }
            queued_from_row(r, shared.as_deref())
        }

        /// The distinct (destination, source) pairs of a batch's gated entries, in order (so owner locks are taken
        /// in a fixed order).
        fn gated_pairs(messages: &[NewMessage]) -> BTreeSet<(Aci, Aci)> {
            messages
                .iter()
                .filter(|m| m.gated)
                .filter_map(|m| m.source.map(|s| (m.aci, s)))
                .collect()
        }

        /// Removes the account's queues and the spam reports it filed (inside `delete_account`'s transaction).
        pub(super) async fn delete_messages_of(
            tx: &mut Transaction<'_, Db>,
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
        impl MessageStore for $store {
            async fn insert_messages(
                &self,
                messages: &[NewMessage],
                max_queue_bytes: u64,
            ) -> StoreResult<InsertOutcome> {
                let mut per_queue = PerQueue::new();
                for m in messages {
                    let e = per_queue.entry((m.aci, m.device)).or_default();
                    e.0 += 1;
                    e.1 = e.1.saturating_add(size(m.delivered_len()));
                }
                if per_queue.is_empty() {
                    return Ok(InsertOutcome::Stored);
                }
                let max = i64::try_from(max_queue_bytes).unwrap_or(i64::MAX);
                let mut tx = self.begin_deferred().await?;
                // The contact gate. On SQLite the single writer puts a denial wholly before or after this insert.
                // On PostgreSQL it runs under the owner's contact lock, which a denial holds too (taken before any
                // queue row, as the denial does): a denial is wholly before this check or sees these messages.
                // Accounts that are `open` (the common case) take no lock: a denial needs `invite_only`.
                for (owner, source) in gated_pairs(messages) {
                    if source == owner || !super::contacts::invite_only(&mut tx, owner).await? {
                        continue;
                    }
                    if !<$store as Dialect>::SERIALIZED {
                        super::contacts::lock_owner(&mut tx, owner).await?;
                        if !super::contacts::invite_only(&mut tx, owner).await? {
                            continue;
                        }
                    }
                    let grant = super::contacts::grant_of(&mut tx, owner, source)
                        .await?
                        .map(|g| g.state);
                    if !contacts::gate_allows(owner, source, true, grant) {
                        return Ok(InsertOutcome::NotAllowed { aci: owner });
                    }
                }
                // The first cursor of each queue's new entries, or the first queue (in key order) the batch
                // would overflow; then nothing changed (and the transaction is rolled back on return anyway).
                let next = match reserve_cursors(&mut tx, &per_queue, max).await? {
                    Ok(next) => next,
                    Err((aci, device)) => return Ok(InsertOutcome::QueueFull { aci, device }),
                };
                // Each shared part once, however many envelopes carry it.
                let mut shared_written = BTreeSet::new();
                for m in messages {
                    if let Some(part) = &m.shared
                        && shared_written.insert(part.payload.id)
                    {
                        sqlx::query(
                            "INSERT INTO shared_payloads (id, payload, expires_at) VALUES ($1, $2, $3)
                             ON CONFLICT (id) DO NOTHING",
                        )
                        .bind(part.payload.id.as_bytes().to_vec())
                        .bind(&part.payload.bytes[..])
                        .bind(m.expires_at.as_millis())
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                    }
                }
                insert_rows(&mut tx, messages, next, &per_queue).await?;
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
                    "SELECT m.seq, m.guid, m.envelope, m.server_timestamp, m.expires_at, m.story, m.shared_id,
                            m.shared_offset, p.payload AS shared_payload
                     FROM messages m LEFT JOIN shared_payloads p ON p.id = m.shared_id
                     WHERE m.aci = $1 AND m.device_id = $2 AND m.seq > $3 ORDER BY m.seq LIMIT $4",
                )
                .bind(id(aci))
                .bind(dev(device))
                .bind(after.0)
                .bind(i64::from(limit))
                .fetch_all(self.reader())
                .await
                .map_err(db)?
                .iter()
                .map(queued_from_joined_row)
                .collect()
            }

            async fn delete_message(
                &self,
                aci: Aci,
                device: DeviceId,
                guid: MessageGuid,
            ) -> StoreResult<Option<QueuedMessage>> {
                delete_one(self, aci, device, guid).await
            }

            async fn expire_messages(&self, now: Timestamp) -> StoreResult<u64> {
                expire(self, now).await
            }

            async fn queue_size(&self, aci: Aci, device: DeviceId) -> StoreResult<QueueSize> {
                let row = sqlx::query(
                    "SELECT (SELECT COUNT(*) FROM messages WHERE aci = $1 AND device_id = $2) AS n,
                            CAST(COALESCE((SELECT bytes FROM message_queues WHERE aci = $1 AND device_id = $2), 0)
                                 AS BIGINT) AS bytes",
                )
                .bind(id(aci))
                .bind(dev(device))
                .fetch_one(self.reader())
                .await
                .map_err(db)?;
                let count = |v: i64| {
                    u64::try_from(v).map_err(|_| StoreError::corrupt("negative queue size"))
                };
                Ok(QueueSize {
                    messages: count(get(&row, "n")?)?,
                    bytes: count(get(&row, "bytes")?)?,
                })
            }

            async fn delete_queue(&self, aci: Aci, device: DeviceId) -> StoreResult<u64> {
                clear_queue(self, aci, device).await
            }

            async fn record_spam_report(&self, report: &SpamReport) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO spam_reports (reporter, source, guid, token, reported_at)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (reporter, guid) DO NOTHING",
                )
                .bind(id(report.reporter))
                .bind(id(report.source))
                .bind(report.guid.0.as_bytes().to_vec())
                .bind(&report.token)
                .bind(report.reported_at.as_millis())
                .execute(self.writer())
                .await
                .map_err(db)?;
                Ok(())
            }

            async fn spam_reports(&self, limit: u32) -> StoreResult<Vec<SpamReport>> {
                sqlx::query(
                    "SELECT reporter, source, guid, token, reported_at FROM spam_reports
                     ORDER BY id DESC LIMIT $1",
                )
                .bind(i64::from(limit))
                .fetch_all(self.reader())
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
    };
}
pub(crate) use message_store;
