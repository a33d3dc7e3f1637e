//! Accounts cached for authentication ([`AccountStore::account_for_auth`]), so that a busy device does not cost
//! one account load per request.
//!
//! Invariants:
//! - What this process commits through its [`PgStore`] is never missed: every write to `accounts` or `devices`
//!   drops the account's entry after it commits.
//! - What another process commits reaches this one through `NOTIFY flatline_accounts`, sent by triggers on both
//!   tables (migration 0019) at commit, so no code path can forget it; the entry is dropped on arrival.
//! - A load that overlaps any drop is not stored (`epoch`), so a notification that arrives while an old row is in
//!   flight cannot be outlived by it.
//! - While the listener is not connected nothing is served from the cache, and everything is dropped when it
//!   (re)connects: notifications lost in between cannot leave a stale entry.
//! - Entries also expire after `database.auth_cache_seconds`, a bound for what nothing above foresaw.
//!
//! [`AccountStore::account_for_auth`]: flatline_core::store::AccountStore::account_for_auth
//! [`PgStore`]: super::PgStore

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use flatline_core::account::Account;
use flatline_core::ids::Aci;
use sqlx::postgres::{PgListener, PgPool};

/// The notification channel the triggers of migration 0019 send on; the payload is the ACI in hex.
pub const ACCOUNTS_CHANNEL: &str = "flatline_accounts";

/// Entries kept at most; when full, everything is dropped (a cold start, not an error).
const CAPACITY: usize = 100_000;

pub(super) struct AuthCache {
    ttl: Duration,
    entries: Mutex<HashMap<Aci, (Account, Instant)>>,
    /// Bumped by every drop; a load stores its result only if the epoch did not move while it ran.
    epoch: AtomicU64,
    /// Whether the listener is connected and listening.
    live: AtomicBool,
    /// The listener, stopped when the cache goes (it would otherwise hold its connection until a notification).
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for AuthCache {
    fn drop(&mut self) {
        if let Ok(mut task) = self.listener.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
    }
}

impl AuthCache {
    /// A cache whose entries live `ttl` (zero: a cache that never serves), listening through `listen_pool`.
    pub(super) fn start(ttl: Duration, listen_pool: PgPool) -> Arc<AuthCache> {
        let cache = Arc::new(AuthCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            live: AtomicBool::new(false),
            listener: Mutex::new(None),
        });
        if !ttl.is_zero() {
            let task = tokio::spawn(listen(Arc::downgrade(&cache), listen_pool));
            if let Ok(mut slot) = cache.listener.lock() {
                *slot = Some(task);
            }
        }
        cache
    }

    /// The cached account, if it is there and fresh.
    pub(super) fn get(&self, aci: Aci) -> Option<Account> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let entries = self.entries.lock().ok()?;
        let (account, at) = entries.get(&aci)?;
        (at.elapsed() < self.ttl).then(|| account.clone())
    }

    /// The epoch to pass to [`AuthCache::put`] after loading.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Stores an account loaded since `epoch`, unless something was dropped meanwhile.
    pub(super) fn put(&self, epoch: u64, account: &Account) {
        if !self.live.load(Ordering::Acquire) || self.ttl.is_zero() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        // Checked under the lock that `drop_account` takes too, so a drop cannot slip between check and insert.
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(account.aci, (account.clone(), Instant::now()));
    }

    /// Forgets one account (it changed).
    pub(super) fn drop_account(&self, aci: Aci) {
        if let Ok(mut entries) = self.entries.lock() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            entries.remove(&aci);
        }
    }

    fn drop_all(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            entries.clear();
        }
    }
}

/// Listens for account changes of other processes for as long as the cache exists, reconnecting with backoff.
async fn listen(cache: Weak<AuthCache>, pool: PgPool) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if cache.strong_count() == 0 {
            return;
        }
        let listener = async {
            let mut l = PgListener::connect_with(&pool).await?;
            l.listen(ACCOUNTS_CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        }
        .await;
        let mut listener = match listener {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "account cache: listener not connected; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        {
            let Some(c) = cache.upgrade() else { return };
            // Whatever was notified while not listening is unknown: start empty.
            c.drop_all();
            c.live.store(true, Ordering::Release);
        }
        loop {
            // `try_recv` reports a lost connection as `None` instead of reconnecting silently.
            let next = listener.try_recv().await;
            let Some(c) = cache.upgrade() else { return };
            match next {
                Ok(Some(n)) => match parse_aci(n.payload()) {
                    Some(aci) => c.drop_account(aci),
                    None => c.drop_all(),
                },
                Ok(None) | Err(_) => {
                    c.live.store(false, Ordering::Release);
                    c.drop_all();
                    tracing::debug!(
                        "account cache: listener lost its connection; cache off until it is back"
                    );
                    break;
                }
            }
        }
    }
}

fn parse_aci(hex_text: &str) -> Option<Aci> {
    let bytes = hex::decode(hex_text).ok()?;
    let bytes: [u8; 16] = bytes.try_into().ok()?;
    Some(Aci(uuid::Uuid::from_bytes(bytes)))
}
