//! Buckets as directories, blobs as files: the embedded default's store.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use crate::{BlobError, BlobStore, check_name};

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

    async fn put(&self, bucket: &str, key: &str, data: &[u8]) -> Result<(), BlobError> {
        let path = self.blob_path(bucket, key)?;
        let dir = self.bucket_dir(bucket)?;
        if !self.bucket_exists(bucket).await? {
            return Err(BlobError::NoSuchBucket(bucket.to_string()));
        }
        // Unique per put: two deliveries of the same content may race to write one key.
        let n = NEXT_TMP.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".tmp-{key}-{}-{n}", std::process::id()));
        let mut file = tokio::fs::File::create(&tmp).await?;
        file.write_all(data).await?;
        file.sync_all().await?;
        drop(file);
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

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), BlobError> {
        match tokio::fs::remove_file(self.blob_path(bucket, key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
