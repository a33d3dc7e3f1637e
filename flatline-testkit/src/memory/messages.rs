//! Per-device message queues and spam reports (the reference for [`MessageStore`]).

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use flatline_core::contacts;
use flatline_core::ids::{Aci, DeviceId};
use flatline_core::messages::MessageGuid;
use flatline_core::messages::store::{
    InsertOutcome, MessageCursor, MessageStore, NewMessage, QueueSize, QueuedMessage, SpamReport,
};
use flatline_core::store::StoreResult;
use flatline_core::time::Timestamp;

use super::MemoryStore;

#[derive(Default)]
struct Queue {
    /// Last cursor handed out (cursors are never reused, even after deletions).
    last: i64,
    messages: BTreeMap<i64, QueuedMessage>,
    /// The identified sender of each message that has one.
    sources: BTreeMap<i64, Aci>,
    bytes: u64,
}

impl Queue {
    fn remove(&mut self, seq: i64) -> Option<QueuedMessage> {
        self.sources.remove(&seq);
        let m = self.messages.remove(&seq)?;
        self.bytes = self.bytes.saturating_sub(m.envelope.len() as u64);
        Some(m)
    }
}

#[derive(Default)]
pub(super) struct MessageState {
    queues: HashMap<(Aci, DeviceId), Queue>,
    reports: Vec<SpamReport>,
}

impl MessageState {
    pub(super) fn remove_account(&mut self, aci: Aci) {
        self.queues.retain(|(a, _), _| *a != aci);
        self.reports.retain(|r| r.reporter != aci);
    }

    pub(super) fn remove_device(&mut self, aci: Aci, device: DeviceId) {
        // The whole queue: a device linked later under the same id starts with fresh cursors too.
        self.queues.remove(&(aci, device));
    }

    /// Deletes every message from one of `sources` in any queue of `owner`; returns how many.
    pub(super) fn delete_from(&mut self, owner: Aci, sources: &[Aci]) -> u64 {
        if sources.is_empty() {
            return 0;
        }
        let mut removed = 0;
        for ((aci, _), q) in self.queues.iter_mut() {
            if *aci != owner {
                continue;
            }
            let seqs: Vec<i64> = q
                .sources
                .iter()
                .filter(|(_, s)| sources.contains(s))
                .map(|(seq, _)| *seq)
                .collect();
            for seq in seqs {
                if q.remove(seq).is_some() {
                    removed += 1;
                }
            }
        }
        removed
    }
}

#[async_trait]
impl MessageStore for MemoryStore {
    async fn insert_messages(
        &self,
        messages: &[NewMessage],
        max_queue_bytes: u64,
    ) -> StoreResult<InsertOutcome> {
        let mut s = self.state();
        for m in messages.iter().filter(|m| m.gated) {
            let Some(source) = m.source else { continue };
            let grant = s.contacts.grants.get(&(m.aci, source)).map(|g| g.state);
            if !contacts::gate_allows(m.aci, source, s.contacts.invite_only(m.aci), grant) {
                return Ok(InsertOutcome::NotAllowed { aci: m.aci });
            }
        }
        let q = &mut s.messages.queues;
        let mut added: BTreeMap<(Aci, DeviceId), u64> = BTreeMap::new();
        for m in messages {
            *added.entry((m.aci, m.device)).or_default() += m.delivered_len() as u64;
        }
        for (&(aci, device), &n) in &added {
            let current = q.get(&(aci, device)).map_or(0, |q| q.bytes);
            if current.saturating_add(n) > max_queue_bytes {
                return Ok(InsertOutcome::QueueFull { aci, device });
            }
        }
        for m in messages {
            let queue = q.entry((m.aci, m.device)).or_default();
            queue.last += 1;
            queue.bytes += m.delivered_len() as u64;
            if let Some(source) = m.source {
                queue.sources.insert(queue.last, source);
            }
            queue.messages.insert(
                queue.last,
                QueuedMessage {
                    cursor: MessageCursor(queue.last),
                    guid: m.guid,
                    // The reference keeps whole envelopes; the SQL stores keep a shared part once.
                    envelope: m.delivered(),
                    server_timestamp: m.server_timestamp,
                    expires_at: m.expires_at,
                    story: m.story,
                },
            );
        }
        Ok(InsertOutcome::Stored)
    }

    async fn read_messages(
        &self,
        aci: Aci,
        device: DeviceId,
        after: MessageCursor,
        limit: u32,
    ) -> StoreResult<Vec<QueuedMessage>> {
        let s = self.state();
        Ok(s.messages
            .queues
            .get(&(aci, device))
            .map_or_else(Vec::new, |q| {
                q.messages
                    .range(after.0.saturating_add(1)..)
                    .take(limit as usize)
                    .map(|(_, m)| m.clone())
                    .collect()
            }))
    }

    async fn delete_message(
        &self,
        aci: Aci,
        device: DeviceId,
        guid: MessageGuid,
    ) -> StoreResult<Option<QueuedMessage>> {
        let mut s = self.state();
        let Some(q) = s.messages.queues.get_mut(&(aci, device)) else {
            return Ok(None);
        };
        let seq = q
            .messages
            .iter()
            .find(|(_, m)| m.guid == guid)
            .map(|(s, _)| *s);
        Ok(seq.and_then(|seq| q.remove(seq)))
    }

    async fn expire_messages(&self, now: Timestamp) -> StoreResult<u64> {
        let mut s = self.state();
        let mut removed = 0;
        for q in s.messages.queues.values_mut() {
            let expired: Vec<i64> = q
                .messages
                .iter()
                .filter(|(_, m)| m.expires_at <= now)
                .map(|(s, _)| *s)
                .collect();
            for seq in expired {
                q.remove(seq);
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn queue_size(&self, aci: Aci, device: DeviceId) -> StoreResult<QueueSize> {
        let s = self.state();
        Ok(s.messages
            .queues
            .get(&(aci, device))
            .map_or_else(QueueSize::default, |q| QueueSize {
                messages: q.messages.len() as u64,
                bytes: q.bytes,
            }))
    }

    async fn delete_queue(&self, aci: Aci, device: DeviceId) -> StoreResult<u64> {
        let mut s = self.state();
        Ok(s.messages.queues.get_mut(&(aci, device)).map_or(0, |q| {
            let n = q.messages.len() as u64;
            q.messages.clear();
            q.sources.clear();
            q.bytes = 0;
            n
        }))
    }

    async fn record_spam_report(&self, report: &SpamReport) -> StoreResult<()> {
        let mut s = self.state();
        let dup = s
            .messages
            .reports
            .iter()
            .any(|r| r.reporter == report.reporter && r.guid == report.guid);
        if !dup {
            s.messages.reports.push(report.clone());
        }
        Ok(())
    }

    async fn spam_reports(&self, limit: u32) -> StoreResult<Vec<SpamReport>> {
        let s = self.state();
        // Insertion order is report order; newest first.
        Ok(s.messages
            .reports
            .iter()
            .rev()
            .take(limit as usize)
            .cloned()
            .collect())
    }
}
