//! Mail storage: metadata in PostgreSQL, bodies in the blob store.
//!
//! Every protocol reads and writes mail through [`Store`]. Delivery is two-phase: the body is
//! put into the blob store first, then the rows are written in one transaction; only after the
//! commit may a protocol report success.

mod delivery;
mod imap_ops;
mod messages;
mod recipients;
mod summary;

pub use delivery::{Delivered, blob_key};
pub use messages::{FlagMode, Folder, MessageMeta};
pub use recipients::{Recipient, normalize_address};
pub use summary::{HeaderSummary, SUMMARY_KIND};

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
}

/// Handle to the mail store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: PgPool,
    blobs: Arc<dyn BlobStore>,
}

impl Store {
    pub fn new(db: PgPool, blobs: Arc<dyn BlobStore>) -> Self {
        Self { db, blobs }
    }

    pub fn db(&self) -> &PgPool {
        &self.db
    }

    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
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
