//! Where message bodies live: an S3 bucket per domain in production, a directory per bucket in
//! the embedded default. Callers see one trait; a `put` has returned only once the bytes are
//! durable, which is what lets the mail server answer `250` safely.
#![forbid(unsafe_code)]

mod fs;
mod s3;
mod source;

pub use fs::FsBlobStore;
pub use s3::{S3BlobStore, S3Config};
pub use source::{BlobReader, BlobSource};

use std::ops::Range;

use async_trait::async_trait;

/// What went wrong talking to the blob store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("bucket {0:?} does not exist")]
    NoSuchBucket(String),
    #[error("invalid bucket or key name {0:?}")]
    InvalidName(String),
    #[error("blob store I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("S3 {operation} {bucket}/{key}: {message}")]
    S3 {
        operation: &'static str,
        bucket: String,
        key: String,
        message: String,
    },
}

/// A store of immutable blobs grouped in buckets.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Creates the bucket; succeeds when it exists already.
    async fn create_bucket(&self, bucket: &str) -> Result<(), BlobError>;
    /// Deletes every object of the bucket and then the bucket; succeeds when it is gone already.
    async fn delete_bucket(&self, bucket: &str) -> Result<(), BlobError>;
    /// Whether the bucket exists.
    async fn bucket_exists(&self, bucket: &str) -> Result<bool, BlobError>;
    /// Stores the bytes of `source` under `key`, durably, replacing what was there. A file
    /// source is streamed (S3: multipart past the part size), never read whole into memory.
    async fn put_source(
        &self,
        bucket: &str,
        key: &str,
        source: &BlobSource,
    ) -> Result<(), BlobError>;
    /// Stores `data` under `key`, durably, replacing what was there.
    async fn put(&self, bucket: &str, key: &str, data: &[u8]) -> Result<(), BlobError> {
        let source = BlobSource::Bytes(bytes::Bytes::copy_from_slice(data));
        self.put_source(bucket, key, &source).await
    }
    /// The blob's bytes, or `None` when there is no such blob.
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, BlobError>;
    /// The blob as a stream of bytes, or `None` when there is no such blob.
    async fn open(&self, bucket: &str, key: &str) -> Result<Option<BlobReader>, BlobError>;
    /// The bytes `range` of the blob (cut at its end), or `None` when there is no such blob.
    async fn get_range(
        &self,
        bucket: &str,
        key: &str,
        range: Range<u64>,
    ) -> Result<Option<Vec<u8>>, BlobError>;
    /// Removes the blob; succeeds when it is gone already.
    async fn delete(&self, bucket: &str, key: &str) -> Result<(), BlobError>;
}

/// Bucket and key names we accept: what S3 allows and a filesystem cannot misread as a path.
pub(crate) fn check_name(name: &str) -> Result<(), BlobError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(BlobError::InvalidName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["mail-example-test", "abc", "0a1b.c_d"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", "é"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
