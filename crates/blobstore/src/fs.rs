//! Buckets as directories, blobs as files: the embedded default's store.

use std::io::{Read, Seek, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::{BlobError, BlobReader, BlobSource, BlobStore, check_name};

/// Blobs under `root/<bucket>/<key>`. A put writes a temporary file, syncs it, renames it into
/// place and syncs the directory, so a crash leaves either the whole blob or none.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn bucket_dir(&self, bucket: &str) -> Result<PathBuf, BlobError> {
        check_name(bucket)?;
        Ok(self.root.join(bucket))
    }

    fn blob_path(&self, bucket: &str, key: &str) -> Result<PathBuf, BlobError> {
        check_name(key)?;
        Ok(self.bucket_dir(bucket)?.join(key))
    }
}

static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

async fn sync_dir(dir: &Path) -> Result<(), BlobError> {
    tokio::fs::File::open(dir).await?.sync_all().await?;
    Ok(())
}

/// Writes the source's bytes to a new file at `path` and syncs it.
fn write_file(path: &Path, source: &BlobSource) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    match source {
        BlobSource::Bytes(bytes) => file.write_all(bytes)?,
        BlobSource::File { path: from, len } => {
            let mut input = std::fs::File::open(from)?;
            input.rewind()?;
            let copied = std::io::copy(&mut input.take(*len), &mut file)?;
            if copied != *len {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{} holds {copied} bytes, {len} expected", from.display()),
                ));
            }
        }
    }
    file.sync_all()
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn create_bucket(&self, bucket: &str) -> Result<(), BlobError> {
        let dir = self.bucket_dir(bucket)?;
        tokio::fs::create_dir_all(&dir).await?;
        sync_dir(&self.root).await
    }

    async fn delete_bucket(&self, bucket: &str) -> Result<(), BlobError> {
        let dir = self.bucket_dir(bucket)?;
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn bucket_exists(&self, bucket: &str) -> Result<bool, BlobError> {
        Ok(tokio::fs::metadata(self.bucket_dir(bucket)?)
            .await
            .map(|m| m.is_dir())
            .unwrap_or(false))
    }

    async fn put_source(
        &self,
        bucket: &str,
        key: &str,
        source: &BlobSource,
    ) -> Result<(), BlobError> {
        let path = self.blob_path(bucket, key)?;
        let dir = self.bucket_dir(bucket)?;
        if !self.bucket_exists(bucket).await? {
            return Err(BlobError::NoSuchBucket(bucket.to_string()));
        }
        // Unique per put: two deliveries of the same content may race to write one key.
        let n = NEXT_TMP.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".tmp-{key}-{}-{n}", std::process::id()));
        let source = source.clone();
        let written = {
            let tmp = tmp.clone();
            // Blocking std I/O: a file source is copied by the kernel (copy_file_range).
            tokio::task::spawn_blocking(move || write_file(&tmp, &source))
                .await
                .map_err(std::io::Error::other)?
        };
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e.into());
        }
        tokio::fs::rename(&tmp, &path).await?;
        sync_dir(&dir).await
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, BlobError> {
        match tokio::fs::read(self.blob_path(bucket, key)?).await {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn open(&self, bucket: &str, key: &str) -> Result<Option<BlobReader>, BlobError> {
        match tokio::fs::File::open(self.blob_path(bucket, key)?).await {
            Ok(file) => Ok(Some(Box::pin(file))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn get_range(
        &self,
        bucket: &str,
        key: &str,
        range: Range<u64>,
    ) -> Result<Option<Vec<u8>>, BlobError> {
        let mut file = match tokio::fs::File::open(self.blob_path(bucket, key)?).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        if range.end > range.start {
            file.seek(std::io::SeekFrom::Start(range.start)).await?;
            file.take(range.end - range.start)
                .read_to_end(&mut out)
                .await?;
        }
        Ok(Some(out))
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), BlobError> {
        match tokio::fs::remove_file(self.blob_path(bucket, key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
