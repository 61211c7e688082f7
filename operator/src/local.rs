//! `local`: manifests on disk → PostgreSQL rows and buckets, without Kubernetes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use mail_blobstore::BlobStore;
use mail_provision::{Error, Options, manifests};
use sqlx::PgPool;

use crate::stores::StoreArgs;

#[derive(clap::Args)]
pub struct Args {
    /// The directory of manifests (`*.yaml`, `*.yml`, searched recursively).
    #[arg(long)]
    manifests: PathBuf,
    #[command(flatten)]
    stores: StoreArgs,
    /// Sync again every this many seconds instead of once.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    watch: Option<u64>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let blobs = args.stores.blob_store()?;
    let options = Options {
        bucket_prefix: args.stores.bucket_prefix.clone(),
    };
    let pool = args.stores.database().await?;

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
