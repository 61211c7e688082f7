//! `local`: manifests on disk → PostgreSQL rows and buckets, without Kubernetes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use mail_blobstore::{BlobStore, FsBlobStore, S3BlobStore, S3Config};
use mail_provision::{Error, Options, manifests};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

#[derive(clap::Args)]
pub struct Args {
    /// The directory of manifests (`*.yaml`, `*.yml`, searched recursively).
    #[arg(long)]
    manifests: PathBuf,
    /// PostgreSQL URL, e.g. postgres://user@host:5432/mail.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Keep message bodies in this directory (one subdirectory per bucket).
    #[arg(long, conflicts_with = "s3_endpoint")]
    blob_dir: Option<PathBuf>,
    /// S3 endpoint URL (path-style addressing), e.g. http://127.0.0.1:3900.
    #[arg(long, requires_all = ["s3_region", "s3_access_key_id", "s3_secret_access_key_file"])]
    s3_endpoint: Option<String>,
    #[arg(long)]
    s3_region: Option<String>,
    #[arg(long)]
    s3_access_key_id: Option<String>,
    /// A file holding the S3 secret access key.
    #[arg(long)]
    s3_secret_access_key_file: Option<PathBuf>,
    /// Buckets are named <prefix>-<domain with dashes>.
    #[arg(long, default_value = "mail")]
    bucket_prefix: String,
    /// Sync again every this many seconds instead of once.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    watch: Option<u64>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let blobs = blob_store(&args)?;
    let options = Options {
        bucket_prefix: args.bucket_prefix.clone(),
    };
    // One plain connection first: a pool hides why it cannot connect behind a timeout.
    PgConnection::connect(&args.database_url)
        .await
        .context("connecting to PostgreSQL")?
        .close()
        .await
        .context("connecting to PostgreSQL")?;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&args.database_url)
        .await
        .context("connecting to PostgreSQL")?;
    mail_provision::migrate(&pool)
        .await
        .context("migrating the database")?;

    let Some(seconds) = args.watch else {
        return once(&pool, blobs.as_ref(), &args, &options).await;
    };
    loop {
        // In watch mode a bad edit is reported and the next round tries again.
        if let Err(e) = once(&pool, blobs.as_ref(), &args, &options).await {
            eprintln!("mail-operator: {e:#}");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(seconds)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

async fn once(
    pool: &PgPool,
    blobs: &dyn BlobStore,
    args: &Args,
    options: &Options,
) -> anyhow::Result<()> {
    let loaded = manifests::load_dir(&args.manifests)?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    match mail_provision::sync(pool, blobs, &loaded.desired, options).await {
        Ok(report) => {
            println!("{report}");
            Ok(())
        }
        // One line, every problem in it.
        Err(Error::Invalid(problems)) => bail!("invalid manifests: {}", problems.0.join("; ")),
        Err(e) => Err(e.into()),
    }
}

fn blob_store(args: &Args) -> anyhow::Result<Arc<dyn BlobStore>> {
    if let Some(dir) = &args.blob_dir {
        return Ok(Arc::new(FsBlobStore::new(dir)));
    }
    let (Some(endpoint), Some(region), Some(key_id), Some(secret_file)) = (
        &args.s3_endpoint,
        &args.s3_region,
        &args.s3_access_key_id,
        &args.s3_secret_access_key_file,
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
