//! Conformance checks for [`MessageStore`](flatline_core::messages::store::MessageStore): FIFO queues read from a
//! cursor, at-least-once, idempotent acknowledgement, concurrent writers, TTL, the byte bound and atomic inserts.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use flatline_core::ids::{Aci, DeviceId};
use flatline_core::messages::MessageGuid;
use flatline_core::messages::store::{
    InsertOutcome, MessageCursor, NewMessage, QueueSize, QueuedMessage, SpamReport,
};
use flatline_core::store::Store;
use flatline_core::time::Timestamp;
use uuid::Uuid;

use super::{T0, rng};
use crate::fixtures::new_account;

const UNBOUNDED: u64 = u64::MAX;

fn dev(n: u8) -> DeviceId {
    DeviceId::new(n).unwrap()
}

/// A message whose envelope is `body` (its size is `body.len()`), expiring a day after T0.
fn msg(aci: Aci, device: DeviceId, body: &[u8]) -> NewMessage {
    NewMessage {
        aci,
        device,
        guid: MessageGuid(Uuid::new_v4()),
        envelope: body.to_vec(),
        server_timestamp: T0,
        expires_at: Timestamp(T0.0 + 86_400_000),
        story: false,
        source: None,
        gated: false,
        shared: None,
    }
}

async fn insert(store: &dyn Store, m: &NewMessage) {
    assert_eq!(
        store
            .insert_messages(std::slice::from_ref(m), UNBOUNDED)
            .await
            .unwrap(),
        InsertOutcome::Stored
    );
}

async fn read_all(store: &dyn Store, aci: Aci, device: DeviceId) -> Vec<QueuedMessage> {
    store
        .read_messages(aci, device, MessageCursor::START, 10_000)
        .await
        .unwrap()
}

fn bodies(ms: &[QueuedMessage]) -> Vec<Vec<u8>> {
    ms.iter().map(|m| m.envelope.clone()).collect()
}

/// Messages come back in insertion order with every field intact, from any cursor and in batches of any size;
/// queues of other devices and accounts are separate.
pub async fn message_queue_is_fifo_from_a_cursor(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let rng = rng();
    let (a, b) = (Aci::random(&rng), Aci::random(&rng));
    let mut sent = vec![];
    for i in 0..7u8 {
        let mut m = msg(a, dev(1), &[i; 3]);
        m.story = i % 3 == 0;
        m.server_timestamp = Timestamp(T0.0 + i64::from(i));
        insert(s, &m).await;
        sent.push(m);
    }
    insert(s, &msg(a, dev(2), b"other device")).await;
    insert(s, &msg(b, dev(1), b"other account")).await;

    let all = read_all(s, a, dev(1)).await;
    assert_eq!(all.len(), 7);
    for (got, want) in all.iter().zip(&sent) {
        assert_eq!(
            (
                got.guid,
                &got.envelope,
                got.server_timestamp,
                got.expires_at,
                got.story
            ),
            (
                want.guid,
                &want.envelope,
                want.server_timestamp,
                want.expires_at,
                want.story
            )
        );
    }
    assert!(all.windows(2).all(|w| w[0].cursor < w[1].cursor));
    assert!(all[0].cursor > MessageCursor::START);

    for batch in [1, 2, 3, 7, 100] {
        let mut cursor = MessageCursor::START;
        let mut got = vec![];
        loop {
            let page = s.read_messages(a, dev(1), cursor, batch).await.unwrap();
            assert!(page.len() <= batch as usize);
            let Some(last) = page.last() else { break };
            cursor = last.cursor;
            got.extend(page);
        }
        assert_eq!(got, all, "batch {batch}");
    }
    assert_eq!(
        bodies(&read_all(s, a, dev(2)).await),
        vec![b"other device".to_vec()]
    );
    assert_eq!(
        bodies(&read_all(s, b, dev(1)).await),
        vec![b"other account".to_vec()]
    );
    assert!(read_all(s, b, dev(2)).await.is_empty());
    let after_last = s.read_messages(a, dev(1), all[6].cursor, 10).await.unwrap();
    assert!(after_last.is_empty());
}

/// Reading never removes: two reads without an acknowledgement return the same messages, and only the
/// acknowledged one disappears. Cursors are not reused after a deletion.
pub async fn message_reads_are_at_least_once(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let a = Aci::random(&rng());
    for i in 0..3u8 {
        insert(s, &msg(a, dev(1), &[i])).await;
    }
    let first = read_all(s, a, dev(1)).await;
    let second = read_all(s, a, dev(1)).await;
    assert_eq!(first, second);
    assert_eq!(first.len(), 3);
    assert!(
        s.delete_message(a, dev(1), first[2].guid)
            .await
            .unwrap()
            .is_some()
    );
    insert(s, &msg(a, dev(1), &[9])).await;
    let third = read_all(s, a, dev(1)).await;
    assert_eq!(bodies(&third), vec![vec![0], vec![1], vec![9]]);
    assert!(
        third[2].cursor > first[2].cursor,
        "a cursor was reused after a deletion"
    );
}

/// Deleting by guid returns the message once and `None` afterwards; another device's or account's guid, or an
/// unknown one, deletes nothing. Sizes follow.
pub async fn message_delete_by_guid_is_idempotent(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let rng = rng();
    let (a, b) = (Aci::random(&rng), Aci::random(&rng));
    let m1 = msg(a, dev(1), b"hello");
    let m2 = msg(a, dev(1), b"world!");
    insert(s, &m1).await;
    insert(s, &m2).await;
    assert_eq!(
        s.queue_size(a, dev(1)).await.unwrap(),
        QueueSize {
            messages: 2,
            bytes: 11
        }
    );
    assert!(
        s.delete_message(a, dev(2), m1.guid)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.delete_message(b, dev(1), m1.guid)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.delete_message(a, dev(1), MessageGuid(Uuid::new_v4()))
            .await
            .unwrap()
            .is_none()
    );
    let removed = s.delete_message(a, dev(1), m1.guid).await.unwrap().unwrap();
    assert_eq!(
        (removed.guid, removed.envelope),
        (m1.guid, b"hello".to_vec())
    );
    assert!(
        s.delete_message(a, dev(1), m1.guid)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.queue_size(a, dev(1)).await.unwrap(),
        QueueSize {
            messages: 1,
            bytes: 6
        }
    );
    assert_eq!(
        bodies(&read_all(s, a, dev(1)).await),
        vec![b"world!".to_vec()]
    );
    assert!(
        s.delete_message(a, dev(1), m2.guid)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(s.queue_size(a, dev(1)).await.unwrap(), QueueSize::default());
    assert_eq!(s.queue_size(b, dev(3)).await.unwrap(), QueueSize::default());
}

/// Many writers append to one queue while one reader follows it with a cursor: the reader sees every message
/// exactly once, and each writer's messages in the order that writer sent them.
pub async fn message_concurrent_writers_one_reader(store: Arc<dyn Store>) {
    const WRITERS: u8 = 6;
    const EACH: u8 = 20;
    let a = Aci::random(&rng());
    let done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    insert(store.as_ref(), &msg(a, dev(1), &[w, i])).await;
                }
            })
        })
        .collect();
    let reader = {
        let store = store.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut cursor = MessageCursor::START;
            let mut seen = vec![];
            loop {
                // Read the flag before the page: after the writers are done, one more full pass drains the rest.
                let finished = done.load(Ordering::SeqCst);
                let page = store.read_messages(a, dev(1), cursor, 7).await.unwrap();
                if let Some(last) = page.last() {
                    cursor = last.cursor;
                }
                let empty = page.is_empty();
                seen.extend(page.into_iter().map(|m| m.envelope));
                if empty && finished {
                    return seen;
                }
                if empty {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.unwrap();
    assert_eq!(
        seen.len(),
        usize::from(WRITERS) * usize::from(EACH),
        "lost or duplicated messages"
    );
    let mut next: HashMap<u8, u8> = HashMap::new();
    for body in &seen {
        let (w, i) = (body[0], body[1]);
        let expected = next.entry(w).or_default();
        assert_eq!(i, *expected, "writer {w} out of order");
        *expected += 1;
    }
    assert_eq!(
        s_bytes(store.as_ref(), a).await,
        2 * u64::from(WRITERS) * u64::from(EACH)
    );
}

async fn s_bytes(store: &dyn Store, a: Aci) -> u64 {
    store.queue_size(a, dev(1)).await.unwrap().bytes
}

/// Expiry removes exactly the messages whose `expires_at` is at or before `now`, from every queue, and sizes
/// follow.
pub async fn message_expiry_by_ttl(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let rng = rng();
    let (a, b) = (Aci::random(&rng), Aci::random(&rng));
    for (aci, device, at, body) in [
        (a, dev(1), 10, b"a1".as_slice()),
        (a, dev(1), 20, b"a2"),
        (a, dev(2), 10, b"a3"),
        (b, dev(1), 30, b"b1"),
    ] {
        let mut m = msg(aci, device, body);
        m.expires_at = Timestamp(T0.0 + at);
        insert(s, &m).await;
    }
    assert_eq!(s.expire_messages(Timestamp(T0.0 + 9)).await.unwrap(), 0);
    assert_eq!(s.expire_messages(Timestamp(T0.0 + 10)).await.unwrap(), 2);
    assert_eq!(bodies(&read_all(s, a, dev(1)).await), vec![b"a2".to_vec()]);
    assert!(read_all(s, a, dev(2)).await.is_empty());
    assert_eq!(
        s.queue_size(a, dev(1)).await.unwrap(),
        QueueSize {
            messages: 1,
            bytes: 2
        }
    );
    assert_eq!(s.queue_size(a, dev(2)).await.unwrap(), QueueSize::default());
    assert_eq!(s.expire_messages(Timestamp(T0.0 + 10)).await.unwrap(), 0);
    assert_eq!(s.expire_messages(Timestamp(T0.0 + 1_000)).await.unwrap(), 2);
    assert!(read_all(s, b, dev(1)).await.is_empty());
}

/// A batch that would take any queue over the bound stores nothing, on any of its devices, and names the full
/// queue; filling a queue exactly to the bound is allowed; acknowledging frees room.
pub async fn message_queue_bound_refuses_whole_batch(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let rng = rng();
    let (a, b) = (Aci::random(&rng), Aci::random(&rng));
    let first = msg(a, dev(2), &[1; 60]);
    assert_eq!(
        s.insert_messages(std::slice::from_ref(&first), 100)
            .await
            .unwrap(),
        InsertOutcome::Stored
    );
    // Device 1 and account b have room, device 2 does not: nothing of the batch is stored.
    let batch = vec![
        msg(a, dev(1), &[2; 50]),
        msg(a, dev(2), &[3; 41]),
        msg(b, dev(1), &[4; 10]),
    ];
    assert_eq!(
        s.insert_messages(&batch, 100).await.unwrap(),
        InsertOutcome::QueueFull {
            aci: a,
            device: dev(2)
        }
    );
    assert!(read_all(s, a, dev(1)).await.is_empty());
    assert!(read_all(s, b, dev(1)).await.is_empty());
    assert_eq!(
        s.queue_size(a, dev(2)).await.unwrap(),
        QueueSize {
            messages: 1,
            bytes: 60
        }
    );
    // Two entries for one queue count together.
    let pair = vec![msg(a, dev(1), &[5; 60]), msg(a, dev(1), &[6; 41])];
    assert_eq!(
        s.insert_messages(&pair, 100).await.unwrap(),
        InsertOutcome::QueueFull {
            aci: a,
            device: dev(1)
        }
    );
    assert!(read_all(s, a, dev(1)).await.is_empty());
    // Exactly at the bound is fine.
    let fits = vec![msg(a, dev(2), &[7; 40]), msg(b, dev(1), &[8; 100])];
    assert_eq!(
        s.insert_messages(&fits, 100).await.unwrap(),
        InsertOutcome::Stored
    );
    assert_eq!(s.queue_size(a, dev(2)).await.unwrap().bytes, 100);
    assert_eq!(
        s.insert_messages(&[msg(a, dev(2), &[9])], 100)
            .await
            .unwrap(),
        InsertOutcome::QueueFull {
            aci: a,
            device: dev(2)
        }
    );
    // Nothing already stored was dropped to make room.
    assert_eq!(
        bodies(&read_all(s, a, dev(2)).await),
        vec![vec![1; 60], vec![7; 40]]
    );
    assert!(
        s.delete_message(a, dev(2), first.guid)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        s.insert_messages(&[msg(a, dev(2), &[9; 60])], 100)
            .await
            .unwrap(),
        InsertOutcome::Stored
    );
}

/// A multi-device insert lands in every queue at once; concurrent inserts near the bound never overshoot it.
pub async fn message_multi_device_insert_is_atomic(store: Arc<dyn Store>) {
    let rng = rng();
    let a = Aci::random(&rng);
    let batch: Vec<_> = (1..=3)
        .map(|d| msg(a, dev(d), format!("to {d}").as_bytes()))
        .collect();
    assert_eq!(
        store.insert_messages(&batch, UNBOUNDED).await.unwrap(),
        InsertOutcome::Stored
    );
    for (d, m) in (1..=3).zip(&batch) {
        let got = read_all(store.as_ref(), a, dev(d)).await;
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].guid, &got[0].envelope), (m.guid, &m.envelope));
    }
    // 12 concurrent two-device sends of 30 bytes per device against a bound of 100: exactly 3 fit.
    let b = Aci::random(&rng);
    let tasks: Vec<_> = (0..12u8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let batch = vec![msg(b, dev(1), &[i; 30]), msg(b, dev(2), &[i; 30])];
                store.insert_messages(&batch, 100).await.unwrap()
            })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        if t.await.unwrap() == InsertOutcome::Stored {
            stored += 1;
        }
    }
    assert_eq!(stored, 3);
    let one = read_all(store.as_ref(), b, dev(1)).await;
    let two = read_all(store.as_ref(), b, dev(2)).await;
    assert_eq!(
        bodies(&one),
        bodies(&two),
        "a batch landed on one device only"
    );
    assert_eq!(store.queue_size(b, dev(1)).await.unwrap().bytes, 90);
}

/// Deleting a device's queue removes only that queue; deleting the account removes all of its queues and the
/// reports it filed, but keeps reports about it.
pub async fn message_queues_go_with_device_and_account(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let rng = rng();
    let alice = new_account(&rng, "alice", "pw", T0);
    let bob = new_account(&rng, "bob", "pw", T0);
    let (a, b) = (alice.account.aci, bob.account.aci);
    s.create_account(alice).await.unwrap();
    s.create_account(bob).await.unwrap();
    for d in 1..=3 {
        insert(s, &msg(a, dev(d), b"x")).await;
        insert(s, &msg(a, dev(d), b"y")).await;
    }
    insert(s, &msg(b, dev(1), b"z")).await;
    assert_eq!(s.delete_queue(a, dev(2)).await.unwrap(), 2);
    assert_eq!(s.delete_queue(a, dev(2)).await.unwrap(), 0);
    assert!(read_all(s, a, dev(2)).await.is_empty());
    assert_eq!(s.queue_size(a, dev(2)).await.unwrap(), QueueSize::default());
    assert_eq!(read_all(s, a, dev(1)).await.len(), 2);

    let report = |reporter, source| SpamReport {
        reporter,
        source,
        guid: MessageGuid(Uuid::new_v4()),
        token: None,
        reported_at: T0,
    };
    let by_alice = report(a, b);
    let about_alice = report(b, a);
    s.record_spam_report(&by_alice).await.unwrap();
    s.record_spam_report(&about_alice).await.unwrap();

    assert!(s.delete_account(a, T0).await.unwrap());
    for d in 1..=3 {
        assert!(read_all(s, a, dev(d)).await.is_empty());
        assert_eq!(s.queue_size(a, dev(d)).await.unwrap(), QueueSize::default());
    }
    assert_eq!(bodies(&read_all(s, b, dev(1)).await), vec![b"z".to_vec()]);
    assert_eq!(s.spam_reports(10).await.unwrap(), vec![about_alice]);
}

/// Spam reports are kept newest first; the same reporter reporting the same guid twice counts once.
pub async fn spam_reports_recorded_once(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let rng = rng();
    let (a, b) = (Aci::random(&rng), Aci::random(&rng));
    let mut reports = vec![];
    for i in 0..3i64 {
        let r = SpamReport {
            reporter: a,
            source: b,
            guid: MessageGuid(Uuid::new_v4()),
            token: (i == 1).then(|| vec![1, 2, 3]),
            reported_at: Timestamp(T0.0 + i),
        };
        s.record_spam_report(&r).await.unwrap();
        reports.push(r);
    }
    let mut again = reports[0].clone();
    again.reported_at = Timestamp(T0.0 + 99);
    s.record_spam_report(&again).await.unwrap();
    // Another reporter may report the same guid.
    let other = SpamReport {
        reporter: b,
        ..reports[0].clone()
    };
    s.record_spam_report(&other).await.unwrap();
    let got = s.spam_reports(10).await.unwrap();
    assert_eq!(
        got,
        vec![
            other,
            reports[2].clone(),
            reports[1].clone(),
            reports[0].clone()
        ]
    );
    assert_eq!(s.spam_reports(2).await.unwrap().len(), 2);
}

/// The envelopes of a multi-recipient send keep one shared part: every queue reads its envelope back spliced byte
/// for byte, the queue bound and byte totals count delivered bytes, an acknowledgement of one copy leaves the others
/// whole, and expiry takes them all.
pub async fn shared_parts_are_stored_once_and_read_whole(store: Arc<dyn Store>) {
    use flatline_core::messages::store::{SharedPart, SharedPayload};
    let s = store.as_ref();
    let rng = rng();
    let alice = new_account(&rng, "alice", "pw", T0);
    let bob = new_account(&rng, "bob", "pw", T0);
    let (a, b) = (alice.account.aci, bob.account.aci);
    s.create_account(alice).await.unwrap();
    s.create_account(bob).await.unwrap();
    let payload = SharedPayload {
        id: Uuid::new_v4(),
        bytes: std::sync::Arc::from(vec![0x5a_u8; 3000].as_slice()),
    };
    let part = |aci: Aci, d: u8, head: &[u8], offset: usize| NewMessage {
        shared: Some(SharedPart {
            payload: payload.clone(),
            offset,
        }),
        ..msg(aci, dev(d), head)
    };
    let batch = vec![
        part(a, 1, b"alice-1-head|tail", 13),
        part(a, 2, b"alice-2-head|tail", 13),
        part(b, 1, b"bob-head", 8),
    ];
    // The bound counts what is delivered: 3017 bytes do not fit under 3016.
    assert_eq!(
        s.insert_messages(&batch[..1], 3016).await.unwrap(),
        InsertOutcome::QueueFull {
            aci: a,
            device: dev(1)
        }
    );
    assert_eq!(
        s.insert_messages(&batch, UNBOUNDED).await.unwrap(),
        InsertOutcome::Stored
    );
    for (m, (aci, d)) in batch.iter().zip([(a, 1), (a, 2), (b, 1)]) {
        let read = read_all(s, aci, dev(d)).await;
        assert_eq!(bodies(&read), vec![m.delivered()]);
        assert_eq!(
            s.queue_size(aci, dev(d)).await.unwrap(),
            QueueSize {
                messages: 1,
                bytes: m.delivered_len() as u64
            }
        );
    }
    // Acknowledging Alice's first copy returns it whole and leaves the others readable.
    let removed = s
        .delete_message(a, dev(1), batch[0].guid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(removed.envelope, batch[0].delivered());
    assert_eq!(s.queue_size(a, dev(1)).await.unwrap(), QueueSize::default());
    assert_eq!(
        bodies(&read_all(s, b, dev(1)).await),
        vec![batch[2].delivered()]
    );
    let removed = s
        .delete_message(b, dev(1), batch[2].guid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(removed.envelope, batch[2].delivered());
    assert_eq!(
        bodies(&read_all(s, a, dev(2)).await),
        vec![batch[1].delivered()]
    );
    // Expiry takes the last copy; a new send with the same id stores its own part again.
    assert_eq!(
        s.expire_messages(Timestamp(T0.0 + 86_400_000))
            .await
            .unwrap(),
        1
    );
    assert!(read_all(s, a, dev(2)).await.is_empty());
    assert_eq!(s.queue_size(a, dev(2)).await.unwrap(), QueueSize::default());
    let again = part(a, 2, b"again|", 6);
    assert_eq!(
        s.insert_messages(std::slice::from_ref(&again), UNBOUNDED)
            .await
            .unwrap(),
        InsertOutcome::Stored
    );
    assert_eq!(
        bodies(&read_all(s, a, dev(2)).await),
        vec![again.delivered()]
    );
}
