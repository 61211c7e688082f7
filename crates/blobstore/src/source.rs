//! What a put reads from and what a get streams into: bodies need not fit in memory.

use std::path::PathBuf;
use std::pin::Pin;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

/// A blob's bytes as a stream.
pub type BlobReader = Pin<Box<dyn AsyncRead + Send>>;

/// The bytes a put stores: in memory, or the first `len` bytes of a file (a spooled message),
/// which is read as it is uploaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobSource {
    Bytes(Bytes),
    File { path: PathBuf, len: u64 },
}

impl BlobSource {
    pub fn len(&self) -> u64 {
        match self {
            Self::Bytes(bytes) => bytes.len() as u64,
            Self::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes as a stream; a file that turns out shorter than `len` is an error.
    pub async fn reader(&self) -> std::io::Result<BlobReader> {
        match self {
            Self::Bytes(bytes) => Ok(Box::pin(std::io::Cursor::new(bytes.clone()))),
            Self::File { path, len } => {
                let file = tokio::fs::File::open(path).await?;
                let have = file.metadata().await?.len();
                if have < *len {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("{} holds {have} bytes, {len} expected", path.display()),
                    ));
                }
                Ok(Box::pin(file.take(*len)))
            }
        }
    }
}
