//! The connection's side of DATA spooling: one temporary file that the session's
//! [`Action::Spool`](super::Action::Spool) chunks fill, and the store call that uploads a
//! delivery's message from it (or from memory, for a small one).

use std::io;

use bytes::Bytes;
use mail_blobstore::BlobSource;
use tempfile::TempPath;
use tokio::io::AsyncWriteExt;
use tracing::warn;

use super::session::{Body, Delivery, SpoolChunk};
use crate::store::{Delivered, Store, StoreError};

/// A connection's spool file, created at a message's first chunk and removed when the next
/// message starts or the connection ends.
#[derive(Default)]
pub struct Spool {
    file: Option<(TempPath, tokio::fs::File)>,
    /// A write failed (disk full): the message cannot be delivered, the session goes on.
    failed: Option<io::Error>,
}

impl Spool {
    /// Appends a chunk of the message being received.
    pub async fn write(&mut self, chunk: SpoolChunk) {
        if chunk.first {
            self.file = None;
            self.failed = None;
        }
        if self.failed.is_some() {
            return;
        }
        if let Err(error) = self.append(&chunk.bytes).await {
            warn!(%error, "cannot write the SMTP spool; the message will be refused");
            self.failed = Some(error);
        }
    }

    async fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            let (file, path) = tempfile::NamedTempFile::new()?.into_parts();
            self.file = Some((path, tokio::fs::File::from_std(file)));
        }
        match &mut self.file {
            Some((_, file)) => file.write_all(bytes).await,
            None => Ok(()),
        }
    }

    /// Stores the delivery's message (the spool's bytes when it was spooled) for its
    /// recipients; the spool is emptied afterwards.
    pub async fn deliver(
        &mut self,
        store: &Store,
        delivery: &mut Delivery,
    ) -> Result<Vec<Delivered>, StoreError> {
        let source = match &mut delivery.message {
            Body::Memory(bytes) => BlobSource::Bytes(Bytes::from(std::mem::take(bytes))),
            Body::Spooled { len } => self.source(*len).await?,
        };
        let result = store.deliver_source(&source, &delivery.recipients).await;
        self.file = None;
        result
    }

    async fn source(&mut self, len: u64) -> Result<BlobSource, StoreError> {
        if let Some(error) = self.failed.take() {
            return Err(mail_blobstore::BlobError::Io(error).into());
        }
        let Some((path, file)) = &mut self.file else {
            let missing = io::Error::new(io::ErrorKind::NotFound, "no spooled message");
            return Err(mail_blobstore::BlobError::Io(missing).into());
        };
        file.flush().await.map_err(mail_blobstore::BlobError::Io)?;
        Ok(BlobSource::File {
            path: path.to_path_buf(),
            len,
        })
    }
}
