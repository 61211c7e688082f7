//! The change feed's fan-out: ONE `LISTEN` connection per process, waking the sessions that
//! watch a folder (IMAP sessions with it selected, idling or not).
//!
//! A subscriber is two small shared cells (a [`Notify`] the connection driver waits on and a
//! "changed" bit); the map holds one entry per watching session and nothing that grows with
//! traffic. Sessions then read what changed with [`Store::changes_since`](super::Store).
//! When the `LISTEN` connection is lost, everyone is woken once it is back: they resync from
//! their last MODSEQ, so no update is missed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::changes::{CHANNEL, parse_payload};

/// What a watching session shares with the feed.
#[derive(Clone, Default)]
pub struct Signal {
    /// Fired on a change (the driver's wake-up hook).
    pub notify: Arc<Notify>,
    /// Set on a change, taken by the session when it syncs.
    pub changed: Arc<AtomicBool>,
}

impl Signal {
    fn fire(&self) {
        self.changed.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Whether a change came since the last call.
    pub fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::AcqRel)
    }
}

/// The per-process fan-out of folder changes.
pub struct ChangeFeed {
    db: PgPool,
    started: Once,
    watchers: Mutex<HashMap<i64, Vec<(u64, Signal)>>>,
    next_id: AtomicU64,
    /// Notifications received and reconnects, for tests and metrics.
    received: AtomicU64,
    reconnects: AtomicU64,
}

/// A session's watch on a folder; dropping it stops the wake-ups.
pub struct Watch {
    feed: Arc<ChangeFeed>,
    folder_id: i64,
    id: u64,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watchers = self.feed.lock();
        if let Some(list) = watchers.get_mut(&self.folder_id) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                watchers.remove(&self.folder_id);
            }
        }
    }
}

impl ChangeFeed {
    pub fn new(db: PgPool) -> Arc<Self> {
        Arc::new(Self {
            db,
            started: Once::new(),
            watchers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            received: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Vec<(u64, Signal)>>> {
        // A panic elsewhere while holding the map leaves it usable.
        self.watchers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes `signal` whenever `folder_id` changes, until the returned [`Watch`] is dropped.
    /// Starts the process's `LISTEN` task on first use (needs a Tokio runtime).
    pub fn watch(self: &Arc<Self>, folder_id: i64, signal: &Signal) -> Watch {
        self.started.call_once(|| {
            tokio::spawn(listen(Arc::downgrade(self)));
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .entry(folder_id)
            .or_default()
            .push((id, signal.clone()));
        Watch {
            feed: self.clone(),
            folder_id,
            id,
        }
    }

    fn wake_folder(&self, folder_id: i64) {
        if let Some(list) = self.lock().get(&folder_id) {
            for (_, signal) in list {
                signal.fire();
            }
        }
    }

    fn wake_all(&self) {
        for list in self.lock().values() {
            for (_, signal) in list {
                signal.fire();
            }
        }
    }

    /// Sessions watching some folder now.
    pub fn watchers(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Notifications received and `LISTEN` reconnects so far.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.received.load(Ordering::Relaxed),
            self.reconnects.load(Ordering::Relaxed),
        )
    }
}

/// The `LISTEN` loop; ends when the feed (its store) is gone.
async fn listen(feed: std::sync::Weak<ChangeFeed>) {
    let mut first = true;
    loop {
        let Some(db) = feed.upgrade().map(|f| f.db.clone()) else {
            return;
        };
        let mut listener = match PgListener::connect_with(&db).await {
            Ok(listener) => listener,
            Err(err) => {
                warn!(error = %err, "change feed: cannot connect, retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        drop(db);
        if let Err(err) = listener.listen(CHANNEL).await {
            warn!(error = %err, "change feed: LISTEN failed, retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Whatever happened while not listening is read back by MODSEQ.
        if let Some(feed) = feed.upgrade() {
            if !first {
                feed.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            feed.wake_all();
        }
        first = false;
        loop {
            let next = listener.try_recv().await;
            let Some(feed) = feed.upgrade() else {
                return;
            };
            match next {
                Ok(Some(notification)) => {
                    feed.received.fetch_add(1, Ordering::Relaxed);
                    if let Some((folder_id, _)) = parse_payload(notification.payload()) {
                        feed.wake_folder(folder_id);
                    }
                }
                Ok(None) => {
                    // Reconnected (and listening again) inside `try_recv`.
                    debug!("change feed: LISTEN connection lost and re-established");
                    feed.reconnects.fetch_add(1, Ordering::Relaxed);
                    feed.wake_all();
                }
                Err(err) => {
                    warn!(error = %err, "change feed: LISTEN connection failed, reconnecting");
                    feed.wake_all();
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
