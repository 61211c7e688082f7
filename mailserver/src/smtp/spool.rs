//! The connection's side of DATA spooling: one temporary file that the session's
//! [`Action::Spool`](super::Action::Spool) chunks fill, and the message as the pipeline reads
//! it and the store uploads it (from the file, or from memory for a small one).

use std::io;

use bytes::Bytes;
use mail_blobstore::BlobSource;
use tempfile::TempPath;
use tokio::io::AsyncWriteExt;
use tracing::warn;

use super::session::{Body, SpoolChunk};
use crate::store::StoreError;

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

    /// The message as a blob source: its bytes when it stayed in memory (taken out of `body`),
    /// else the spool file. The file stays until [`Spool::clear`] or the next message.
    pub async fn source(&mut self, body: &mut Body) -> Result<BlobSource, StoreError> {
        match body {
            Body::Memory(bytes) => Ok(BlobSource::Bytes(Bytes::from(std::mem::take(bytes)))),
            Body::Spooled { len } => self.file_source(*len).await,
        }
    }

    /// The whole message in memory, for checks that read all of it (bounded by the message
    /// size limit).
    pub async fn read(&mut self, body: &Body) -> Result<Vec<u8>, StoreError> {
        match body {
            Body::Memory(bytes) => Ok(bytes.clone()),
            Body::Spooled { len } => match self.file_source(*len).await? {
                BlobSource::File { path, len } => {
                    let mut bytes = tokio::fs::read(&path)
                        .await
                        .map_err(mail_blobstore::BlobError::Io)?;
                    bytes.truncate(usize::try_from(len).unwrap_or(usize::MAX));
                    Ok(bytes)
                }
                BlobSource::Bytes(bytes) => Ok(bytes.to_vec()),
            },
        }
    }

    /// Removes the spool file (the message was stored or refused).
    pub fn clear(&mut self) {
        self.file = None;
        self.failed = None;
    }

    async fn file_source(&mut self, len: u64) -> Result<BlobSource, StoreError> {
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
