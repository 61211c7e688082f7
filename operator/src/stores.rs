//! The PostgreSQL and blob-store settings both modes take, and connecting to them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use mail_blobstore::{BlobStore, FsBlobStore, S3BlobStore, S3Config};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

#[derive(clap::Args)]
pub struct StoreArgs {
    /// PostgreSQL URL, e.g. postgres://user@host:5432/mail.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Keep message bodies in this directory (one subdirectory per bucket).
    #[arg(long, conflicts_with = "s3_endpoint")]
    pub blob_dir: Option<PathBuf>,
    /// S3 endpoint URL (path-style addressing), e.g. http://127.0.0.1:3900.
    #[arg(long, env = "S3_ENDPOINT", requires_all = ["s3_region", "s3_access_key_id", "s3_secret_access_key_file"])]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "S3_REGION")]
    pub s3_region: Option<String>,
    #[arg(long, env = "S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    /// A file holding the S3 secret access key.
    #[arg(long, env = "S3_SECRET_ACCESS_KEY_FILE")]
    pub s3_secret_access_key_file: Option<PathBuf>,
    /// Buckets are named <prefix>-<domain with dashes>.
    #[arg(long, env = "BUCKET_PREFIX", default_value = "mail")]
    pub bucket_prefix: String,
}

impl StoreArgs {
    /// A migrated pool.
    pub async fn database(&self) -> anyhow::Result<PgPool> {
        // One plain connection first: a pool hides why it cannot connect behind a timeout.
        PgConnection::connect(&self.database_url)
            .await
            .context("connecting to PostgreSQL")?
            .close()
            .await
            .context("connecting to PostgreSQL")?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&self.database_url)
            .await
            .context("connecting to PostgreSQL")?;
        mail_provision::migrate(&pool)
            .await
            .context("migrating the database")?;
        Ok(pool)
    }

    pub fn blob_store(&self) -> anyhow::Result<Arc<dyn BlobStore>> {
        if let Some(dir) = &self.blob_dir {
            return Ok(Arc::new(FsBlobStore::new(dir)));
        }
        let (Some(endpoint), Some(region), Some(key_id), Some(secret_file)) = (
            &self.s3_endpoint,
            &self.s3_region,
            &self.s3_access_key_id,
            &self.s3_secret_access_key_file,
        ) else {
            bail!(
                "give --blob-dir, or --s3-endpoint with --s3-region, --s3-access-key-id and --s3-secret-access-key-file"
            );
        };
        let secret = std::fs::read_to_string(secret_file)
            .with_context(|| format!("reading {}", secret_file.display()))?;
        Ok(Arc::new(S3BlobStore::new(&S3Config {
            endpoint: endpoint.clone(),
            region: region.clone(),
            access_key_id: key_id.clone(),
            secret_access_key: secret.trim().to_string(),
            path_style: true,
        })))
    }
}
