//! The spam trainer: a background task that reads `junk_events` (moves into and out of Junk,
//! written by IMAP in the moving transaction) and teaches Rspamd `learn_spam` / `learn_ham` with
//! the message's body. IMAP only writes a row; the learning happens here, later, retried.
//!
//! One pod at a time: each pass holds a PostgreSQL advisory lock on its own connection, and the
//! cursor (`learn_cursor`, migration 0010) moves after each event, so a crash repeats at most one
//! event, which Rspamd answers "already learned" (counted as done).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sqlx::Row;

use super::rspamd::{RspamdClient, RspamdError};
use crate::store::{JunkDirection, Store, StoreError};

/// The advisory lock key of the trainer (an arbitrary constant, "LEARN" in ASCII).
const LOCK_KEY: i64 = 0x4c_45_41_52_4e;
const CURSOR_NAME: &str = "rspamd";

#[derive(Clone, Debug)]
pub struct LearnConfig {
    /// Events per pass.
    pub batch: i64,
    /// Bodies longer than this are skipped (Rspamd learns from the text; huge mails teach little).
    pub max_size: i64,
    /// Tries per event before the pass stops (the next pass starts there again).
    pub attempts: u32,
    pub retry_delay: Duration,
    /// Pause between passes when there was nothing to do.
    pub idle: Duration,
}

impl Default for LearnConfig {
    fn default() -> Self {
        Self {
            batch: 100,
            max_size: 10 * 1024 * 1024,
            attempts: 3,
            retry_delay: Duration::from_millis(500),
            idle: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("rspamd: {0}")]
    Rspamd(#[from] RspamdError),
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    pub learned: usize,
    /// Events whose message is gone or too large.
    pub skipped: usize,
    /// Another pod held the lock: nothing was done.
    pub locked_out: bool,
}

pub struct Learner {
    store: Store,
    rspamd: Arc<RspamdClient>,
    config: LearnConfig,
}

impl Learner {
    pub fn new(store: Store, rspamd: Arc<RspamdClient>, config: LearnConfig) -> Self {
        Self {
            store,
            rspamd,
            config,
        }
    }

    /// Runs passes until `shutdown` resolves. Failures are logged and retried on the next pass.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let pause = match self.pass().await {
                Ok(p) if p.learned + p.skipped > 0 => Duration::ZERO,
                Ok(_) => self.config.idle,
                Err(error) => {
                    tracing::warn!(%error, "spam training pass failed");
                    self.config.idle
                }
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One pass over at most `batch` events, under the advisory lock.
    pub async fn pass(&self) -> Result<Pass, LearnError> {
        let mut conn = self.store.db().acquire().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut *conn)
            .await?;
        if !locked {
            return Ok(Pass {
                locked_out: true,
                ..Pass::default()
            });
        }
        let result = self.pass_locked(&mut conn).await;
        // On error too: the lock is the connection's, which goes back to the pool.
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *conn)
            .await;
        result
    }

    async fn pass_locked(&self, conn: &mut sqlx::PgConnection) -> Result<Pass, LearnError> {
        let cursor: i64 =
            sqlx::query_scalar("SELECT last_event_id FROM learn_cursor WHERE name = $1")
                .bind(CURSOR_NAME)
                .fetch_optional(&mut *conn)
                .await?
                .unwrap_or(0);
        let events = self.store.junk_events(cursor, self.config.batch).await?;
        let mut pass = Pass::default();
        for event in events {
            match self.body(event.message_id).await? {
                Some(body) => {
                    self.learn(event.direction, body).await?;
                    pass.learned += 1;
                }
                None => pass.skipped += 1,
            }
            sqlx::query(
                "INSERT INTO learn_cursor (name, last_event_id) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET last_event_id = $2, updated_at = now()",
            )
            .bind(CURSOR_NAME)
            .bind(event.id)
            .execute(&mut *conn)
            .await?;
        }
        Ok(pass)
    }

    /// The message's body, or `None` when it is gone (expunged) or over the size limit.
    async fn body(&self, message_id: i64) -> Result<Option<Bytes>, LearnError> {
        let row = sqlx::query(
            "SELECT m.size, b.bucket, b.key FROM messages m JOIN blobs b ON b.id = m.blob_id
              WHERE m.id = $1",
        )
        .bind(message_id)
        .fetch_optional(self.store.db())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let size: i64 = row.try_get("size")?;
        if size > self.config.max_size {
            return Ok(None);
        }
        let bucket: String = row.try_get("bucket")?;
        let key: String = row.try_get("key")?;
        Ok(self
            .store
            .blobs()
            .get(&bucket, &key)
            .await
            .map_err(StoreError::from)?
            .map(Bytes::from))
    }

    async fn learn(&self, direction: JunkDirection, body: Bytes) -> Result<(), LearnError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match direction {
                JunkDirection::In => self.rspamd.learn_spam(body.clone()).await,
                JunkDirection::Out => self.rspamd.learn_ham(body.clone()).await,
            };
            match result {
                Ok(()) => return Ok(()),
                Err(error) if attempt >= self.config.attempts => return Err(error.into()),
                Err(error) => {
                    tracing::debug!(%error, attempt, "rspamd learn failed, retrying");
                    tokio::time::sleep(self.config.retry_delay * attempt).await;
                }
            }
        }
    }
}
