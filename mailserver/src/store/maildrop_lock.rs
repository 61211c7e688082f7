//! The POP3 maildrop lock (RFC 1939 section 4): one session per mailbox at a time, across
//! every server process on the database.
//!
//! A lock is a lease row in `pop3_locks` (migration 0006): the mailbox, the holding process and
//! session, and an expiry. Taking it inserts the row, or takes over one whose lease ran out; a
//! live lease makes the second session fail with `[IN-USE]`. One task per process renews all of
//! the process's leases in one statement every third of the TTL, so a session holds no pooled
//! connection while its client reads mail for minutes. A process that dies stops renewing and
//! its leases expire after the TTL.
//!
//! Why not a PostgreSQL advisory lock: a session-level advisory lock lives on one server
//! connection, so each POP3 session would pin a pooled connection for its whole length (500
//! sessions, 500 connections), and a connection the pool recycles would drop its locks.
//!
//! A session also checks its lease before it commits deletions ([`MaildropLease::confirm`]):
//! when renewals failed long enough for the lease to lapse, another session may own the
//! maildrop, and nothing is deleted.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use sqlx::PgPool;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::StoreError;

/// How long a lease lives without renewal unless configured otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// The leases of one server process.
pub struct MaildropLocks {
    db: PgPool,
    /// Names this process in the lease rows: unique per start.
    process: String,
    ttl: Duration,
    next_session: AtomicI64,
    state: Mutex<Held>,
    renewer: OnceLock<tokio::task::JoinHandle<()>>,
}

#[derive(Default)]
struct Held {
    /// Session number of each lease held, with when it was taken.
    leases: HashMap<i64, Instant>,
    /// Leases a renewal found gone (taken over, or the mailbox deleted).
    lost: HashSet<i64>,
    /// When the last successful renewal began: every lease held then is good until this plus
    /// the TTL.
    renewed: Option<Instant>,
}

impl std::fmt::Debug for MaildropLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaildropLocks")
            .field("process", &self.process)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl MaildropLocks {
    pub fn new(db: PgPool, ttl: Duration) -> Arc<Self> {
        use argon2::password_hash::rand_core::{OsRng, RngCore};
        let process = format!("{}-{:016x}", std::process::id(), OsRng.next_u64());
        Arc::new(Self {
            db,
            process,
            ttl: ttl.max(Duration::from_millis(300)),
            next_session: AtomicI64::new(1),
            state: Mutex::new(Held::default()),
            renewer: OnceLock::new(),
        })
    }

    /// The lease time.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes the maildrop lock of the mailbox: `None` while another live session holds it.
    pub async fn acquire(
        self: &Arc<Self>,
        mailbox_id: i64,
    ) -> Result<Option<MaildropLease>, StoreError> {
        self.spawn_renewer();
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let taken = Instant::now();
        let got: Option<i64> = sqlx::query_scalar(
            "INSERT INTO pop3_locks (mailbox_id, process, session, expires_at)
             VALUES ($1, $2, $3, now() + make_interval(secs => $4))
             ON CONFLICT (mailbox_id) DO UPDATE
                SET process = EXCLUDED.process, session = EXCLUDED.session,
                    acquired_at = now(), expires_at = EXCLUDED.expires_at
              WHERE pop3_locks.expires_at < now()
             RETURNING session",
        )
        .bind(mailbox_id)
        .bind(&self.process)
        .bind(session)
        .bind(self.ttl.as_secs_f64())
        .fetch_optional(&self.db)
        .await?;
        if got.is_none() {
            crate::metrics::pop3_in_use();
            return Ok(None);
        }
        self.lock_state().leases.insert(session, taken);
        crate::metrics::pop3_lock(true);
        debug!(mailbox = mailbox_id, session, "maildrop locked");
        Ok(Some(MaildropLease {
            locks: self.clone(),
            mailbox_id,
            session,
            released: false,
        }))
    }

    /// Gives up every lease of this process (its server has stopped serving): the next
    /// session on another process need not wait for them to expire.
    pub async fn release_all(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM pop3_locks WHERE process = $1")
            .bind(&self.process)
            .execute(&self.db)
            .await?;
        Ok(done.rows_affected())
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, Held> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the lease of `session` is certainly still ours, without asking the database:
    /// taken or renewed recently enough, and not found gone.
    fn is_held(&self, session: i64) -> bool {
        let state = self.lock_state();
        let Some(&taken) = state.leases.get(&session) else {
            return false;
        };
        if state.lost.contains(&session) {
            return false;
        }
        let since = state.renewed.map_or(taken, |renewed| renewed.max(taken));
        // A margin for the clocks of this process and the database to differ in pace.
        since.elapsed() < self.ttl - self.ttl / 4
    }

    /// Called once per lease, when it is released or dropped.
    fn forget(&self, session: i64) {
        let mut state = self.lock_state();
        if state.leases.remove(&session).is_some() {
            crate::metrics::pop3_lock(false);
        }
        state.lost.remove(&session);
    }

    /// Renews every lease this process holds, in one statement.
    async fn renew(&self) -> Result<(), StoreError> {
        let sessions: Vec<i64> = self.lock_state().leases.keys().copied().collect();
        if sessions.is_empty() {
            return Ok(());
        }
        let began = Instant::now();
        let renewed: Vec<i64> = sqlx::query_scalar(
            "UPDATE pop3_locks SET expires_at = now() + make_interval(secs => $3)
              WHERE process = $1 AND session = ANY($2) RETURNING session",
        )
        .bind(&self.process)
        .bind(&sessions)
        .bind(self.ttl.as_secs_f64())
        .fetch_all(&self.db)
        .await?;
        let renewed: HashSet<i64> = renewed.into_iter().collect();
        let mut state = self.lock_state();
        state.renewed = Some(began);
        for session in sessions {
            // Only leases present both before and after: one released meanwhile is gone anyway.
            if !renewed.contains(&session) && state.leases.contains_key(&session) {
                warn!(session, "maildrop lease lost");
                state.lost.insert(session);
            }
        }
        Ok(())
    }

    fn spawn_renewer(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.renewer.get_or_init(|| {
            let locks: Weak<Self> = Arc::downgrade(self);
            let every = self.ttl / 3;
            runtime.spawn(async move {
                let mut ticks = tokio::time::interval(every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    // Ends with the store that owns the leases.
                    let Some(locks) = locks.upgrade() else { return };
                    if let Err(error) = locks.renew().await {
                        warn!(%error, "maildrop leases not renewed; retried");
                    }
                }
            })
        });
    }
}

impl Drop for MaildropLocks {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.get() {
            renewer.abort();
        }
    }
}

/// A held maildrop lock; released by [`MaildropLease::release`], or when dropped (the client
/// went away) by a task in the background.
#[derive(Debug)]
pub struct MaildropLease {
    locks: Arc<MaildropLocks>,
    mailbox_id: i64,
    session: i64,
    released: bool,
}

impl MaildropLease {
    pub fn mailbox_id(&self) -> i64 {
        self.mailbox_id
    }

    /// Whether the lease is certainly still ours (no database round trip).
    pub fn is_held(&self) -> bool {
        self.locks.is_held(self.session)
    }

    /// Asks the database whether the lease is still ours, and renews it if so.
    pub async fn confirm(&self) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar(
            "UPDATE pop3_locks SET expires_at = now() + make_interval(secs => $4)
              WHERE mailbox_id = $1 AND process = $2 AND session = $3 AND expires_at > now()
             RETURNING session",
        )
        .bind(self.mailbox_id)
        .bind(&self.locks.process)
        .bind(self.session)
        .bind(self.locks.ttl.as_secs_f64())
        .fetch_optional(&self.locks.db)
        .await?;
        Ok(found.is_some())
    }

    /// Gives the lock up now; the next session may take it as soon as this returns.
    pub async fn release(mut self) {
        self.released = true;
        self.locks.forget(self.session);
        if let Err(error) = delete(&self.locks, self.mailbox_id, self.session).await {
            // Not renewed any more: it expires after the TTL.
            warn!(mailbox = self.mailbox_id, %error, "maildrop lock not released; it expires");
        }
    }
}

impl Drop for MaildropLease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.locks.forget(self.session);
        let (locks, mailbox_id, session) = (self.locks.clone(), self.mailbox_id, self.session);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = delete(&locks, mailbox_id, session).await {
                    warn!(mailbox = mailbox_id, %error, "maildrop lock not released; it expires");
                }
            });
        }
    }
}

async fn delete(locks: &MaildropLocks, mailbox_id: i64, session: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM pop3_locks WHERE mailbox_id = $1 AND process = $2 AND session = $3")
        .bind(mailbox_id)
        .bind(&locks.process)
        .bind(session)
        .execute(&locks.db)
        .await?;
    Ok(())
}
