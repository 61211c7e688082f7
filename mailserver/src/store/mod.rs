//! Mail storage: metadata in PostgreSQL, bodies in the blob store.
//!
//! Every protocol reads and writes mail through [`Store`]. Delivery is two-phase: the body is
//! put into the blob store first (staged, see [`blobs`]), then the rows are written in one
//! transaction; only after the commit may a protocol report success.
//!
//! # Lock order
//!
//! Every transaction that changes folders or messages takes its row locks in this one order,
//! so no two of them can wait on each other in a cycle (a delivery against an EXPUNGE or a
//! POP3 QUIT, STORE against MOVE):
//!
//! 0. `KEY SHARE` on the blobs a new message will reference ([`blobs::confirm`]). It conflicts
//!    only with the collector, which never waits (`SKIP LOCKED`);
//! 1. the `mailboxes` rows, ascending id ([`lock_mailboxes`], [`lock_folder`]). This alone
//!    serializes every writer of one mailbox, and also makes EXPUNGE see the flags a
//!    concurrent STORE committed;
//! 2. the mailbox's `folders` rows, ascending id;
//! 3. `messages` rows;
//! 4. `blobs` rows last, ascending id, for their refcounts ([`blobs::change_refs`]).

mod blobs;
mod delivery;
mod folders;
mod imap_ops;
mod junk;
mod maildrop_lock;
mod messages;
mod recipients;
mod summary;
mod usage;

pub use blobs::Collected;
pub use delivery::{Delivered, blob_key};
pub use folders::{FOLDER_DELIMITER, FolderError, check_folder_name};
pub use junk::{JunkDirection, JunkEvent};
pub use maildrop_lock::{MaildropLease, MaildropLocks};
pub use messages::{FlagMode, Folder, MessageMeta};
pub use recipients::{Recipient, normalize_address};
pub use summary::{HeaderSummary, SUMMARY_KIND};
pub use usage::Usage;

use std::sync::Arc;

use mail_blobstore::{BlobError, BlobStore};
use sqlx::PgPool;

/// A store failure. Protocols answer these with a temporary error (4xx, `NO [UNAVAILABLE]`,
/// `-ERR`): none of them is the client's fault, and a retry may succeed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("blob store: {0}")]
    Blob(#[from] BlobError),
    #[error("message body {bucket}/{key} is missing from the blob store")]
    MissingBlob { bucket: String, key: String },
    #[error("mailbox {mailbox_id} has no room for the message")]
    QuotaExceeded { mailbox_id: i64 },
    /// The folder does not exist in the mailbox (or belongs to another one).
    #[error("no such folder in mailbox {mailbox_id}")]
    NoSuchFolder { mailbox_id: i64 },
    /// The collector kept removing the body being stored; nothing was written.
    #[error("message body collected while it was stored, try again")]
    Contended,
}

/// Handle to the mail store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: PgPool,
    blobs: Arc<dyn BlobStore>,
    maildrop_locks: Arc<MaildropLocks>,
}

impl Store {
    pub fn new(db: PgPool, blobs: Arc<dyn BlobStore>) -> Self {
        let maildrop_locks = MaildropLocks::new(db.clone(), maildrop_lock::DEFAULT_TTL);
        Self {
            db,
            blobs,
            maildrop_locks,
        }
    }

    /// The same store with POP3 maildrop leases that expire `ttl` after their holder stops
    /// renewing them (a process that died).
    pub fn with_maildrop_lock_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.maildrop_locks = MaildropLocks::new(self.db.clone(), ttl);
        self
    }

    /// This process's POP3 maildrop locks.
    pub fn maildrop_locks(&self) -> &Arc<MaildropLocks> {
        &self.maildrop_locks
    }

    pub fn db(&self) -> &PgPool {
        &self.db
    }

    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }
}

/// Locks the mailboxes (step 1 of the lock order) in ascending id order; returns those found.
pub(crate) async fn lock_mailboxes(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    mailbox_ids: &[i64],
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM mailboxes WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(mailbox_ids)
        .fetch_all(&mut **tx)
        .await
}

/// Locks the folders `folder_ids` of one mailbox, the mailbox first (steps 1 and 2), and
/// returns the mailbox's id; [`StoreError::NoSuchFolder`] when a folder is missing or belongs
/// to another mailbox than the first one's.
pub(crate) async fn lock_folder(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    folder_ids: &[i64],
) -> Result<i64, StoreError> {
    let first = folder_ids.first().copied().unwrap_or_default();
    let owner: Option<i64> = sqlx::query_scalar("SELECT mailbox_id FROM folders WHERE id = $1")
        .bind(first)
        .fetch_optional(&mut **tx)
        .await?;
    let mailbox_id = owner.unwrap_or_default();
    let missing = StoreError::NoSuchFolder { mailbox_id };
    if owner.is_none() || lock_mailboxes(tx, &[mailbox_id]).await?.is_empty() {
        return Err(missing);
    }
    let mut ids = folder_ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let locked: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM folders WHERE id = ANY($1) AND mailbox_id = $2
          ORDER BY id FOR NO KEY UPDATE",
    )
    .bind(&ids)
    .bind(mailbox_id)
    .fetch_all(&mut **tx)
    .await?;
    if locked.len() == ids.len() {
        Ok(mailbox_id)
    } else {
        Err(missing)
    }
}

/// Tells every pod's listeners (IMAP IDLE) that a mailbox changed; PostgreSQL delivers the
/// notification when the transaction commits, and drops it when it rolls back.
pub(crate) async fn notify_changed(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    mailbox_id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify('mailbox_changed', $1)")
        .bind(mailbox_id.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
